//! `batch/v1`: Job and CronJob.

use k8s_pb::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use serde_json::{Map, Value, json};

use super::json::{Obj, Result, reject_set};
use super::message;
use super::meta::{label_selector, object_meta};
use super::pod::pod_template_spec;

pub(super) fn job(raw: &[u8]) -> Result<Map<String, Value>> {
    let Job { metadata, spec, status: _ } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object("spec", job_spec(spec.unwrap_or_default())?)
        .object("status", json!({}))
        .into_map())
}

fn job_spec(s: JobSpec) -> Result<Value> {
    let JobSpec {
        parallelism,
        completions,
        active_deadline_seconds,
        pod_failure_policy,
        success_policy,
        backoff_limit,
        backoff_limit_per_index,
        max_failed_indexes,
        selector,
        manual_selector,
        template,
        ttl_seconds_after_finished,
        completion_mode,
        suspend,
        pod_replacement_policy,
        managed_by,
    } = s;
    reject_set!("JobSpec",
        pod_failure_policy => "podFailurePolicy",
        success_policy => "successPolicy",
    );
    Ok(Obj::new()
        .int_ptr("parallelism", parallelism)
        .int_ptr("completions", completions)
        .int_ptr("activeDeadlineSeconds", active_deadline_seconds)
        .int_ptr("backoffLimit", backoff_limit)
        .int_ptr("backoffLimitPerIndex", backoff_limit_per_index)
        .int_ptr("maxFailedIndexes", max_failed_indexes)
        .object_ptr("selector", selector.map(label_selector))
        .bool_ptr("manualSelector", manual_selector)
        .object("template", pod_template_spec(template.unwrap_or_default())?)
        .int_ptr("ttlSecondsAfterFinished", ttl_seconds_after_finished)
        .string_ptr("completionMode", completion_mode)
        .bool_ptr("suspend", suspend)
        .string_ptr("podReplacementPolicy", pod_replacement_policy)
        .string_ptr("managedBy", managed_by)
        .build())
}

pub(super) fn cron_job(raw: &[u8]) -> Result<Map<String, Value>> {
    let CronJob { metadata, spec, status: _ } = message(raw)?;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object("spec", cron_job_spec(spec.unwrap_or_default())?)
        .object("status", json!({}))
        .into_map())
}

fn cron_job_spec(s: CronJobSpec) -> Result<Value> {
    let CronJobSpec {
        schedule,
        time_zone,
        starting_deadline_seconds,
        concurrency_policy,
        suspend,
        job_template,
        successful_jobs_history_limit,
        failed_jobs_history_limit,
    } = s;
    let JobTemplateSpec { metadata, spec } = job_template.unwrap_or_default();
    Ok(Obj::new()
        .string_always("schedule", schedule)
        .string_ptr("timeZone", time_zone)
        .int_ptr("startingDeadlineSeconds", starting_deadline_seconds)
        .string("concurrencyPolicy", concurrency_policy)
        .bool_ptr("suspend", suspend)
        .object(
            "jobTemplate",
            Obj::new()
                .object("metadata", object_meta(metadata.unwrap_or_default())?)
                .object("spec", job_spec(spec.unwrap_or_default())?)
                .build(),
        )
        .int_ptr("successfulJobsHistoryLimit", successful_jobs_history_limit)
        .int_ptr("failedJobsHistoryLimit", failed_jobs_history_limit)
        .build())
}
