//! The Job controller: keeps `parallelism` pods running until
//! `completions` of them succeeded (condition Complete), or more than
//! `backoffLimit` failed (condition Failed, reason BackoffLimitExceeded,
//! remaining pods deleted). Status: active, ready, succeeded, failed,
//! startTime, completionTime.
//!
//! Not done: Indexed completion mode, pod failure policy, backoff delays
//! between retries, activeDeadlineSeconds, suspend, TTL after finished.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::expectations::Expectations;
use crate::informer::{Informer, Informers, Source};
use crate::{Error, informer, is_not_found, pod_state};

struct Ctx {
    client: Client,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
}

pub async fn run(client: Client, informers: &Informers) -> Result<(), Error> {
    let ctx =
        Arc::new(Ctx { client: client.clone(), pods: informers.pods.clone(), expectations: Expectations::default() });
    informer::run_owner(Source::Shared(&informers.jobs), &informers.pods, "job", ctx, reconcile).await;
    Ok(())
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"))
}

fn condition(type_: &str, reason: Option<&str>, message: Option<&str>) -> JobCondition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.map(str::to_owned),
        message: message.map(str::to_owned),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

#[tracing::instrument(skip_all, fields(kind = "Job", namespace = %job.namespace().unwrap_or_default(), name = %job.name_any()))]
async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() || finished(&job) {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let key = format!("{ns}/{name}");
    let spec = job.spec.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1);
    let parallelism = spec.parallelism.unwrap_or(1);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let pods: Vec<Arc<Pod>> = ctx.pods.controlled_by(job.as_ref());
    let succeeded = pods.iter().filter(|p| pod_state::phase(p) == "Succeeded").count() as i32;
    let failed = pods.iter().filter(|p| pod_state::phase(p) == "Failed").count() as i32;
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| pod_state::is_active(p)).collect();
    let ready = active.iter().filter(|p| pod_state::is_ready(p)).count() as i32;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    let mut conditions = Vec::new();
    let mut completion_time = None;
    let mut active_count = active.len() as i32;
    if succeeded >= completions {
        conditions.push(condition(
            "SuccessCriteriaMet",
            Some("CompletionsReached"),
            Some("Reached expected number of succeeded pods"),
        ));
        conditions.push(condition(
            "Complete",
            Some("CompletionsReached"),
            Some("Reached expected number of succeeded pods"),
        ));
        completion_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    } else if failed > backoff_limit {
        conditions.push(condition(
            "FailureTarget",
            Some("BackoffLimitExceeded"),
            Some("Job has reached the specified backoff limit"),
        ));
        conditions.push(condition(
            "Failed",
            Some("BackoffLimitExceeded"),
            Some("Job has reached the specified backoff limit"),
        ));
    }
    if !conditions.is_empty() {
        for p in &active {
            match api.delete(&p.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube(format!("deleting pod {ns}/{} of a finished job", p.name_any()))(e)),
            }
        }
        active_count = 0;
    } else if ctx.expectations.satisfied(&key, |n| pods.iter().any(|p| p.name_any() == n)) {
        let want = parallelism.min(completions - succeeded).max(0);
        let missing = want - active_count;
        if missing > 0 {
            let pod = job_pod(&job);
            let mut created = Vec::new();
            for _ in 0..missing {
                let p = api
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(Error::kube(format!("creating a pod for job {key}")))?;
                created.push(p.name_any());
            }
            active_count += missing;
            tracing::info!(created = created.len(), "created job pods");
            ctx.expectations.expect_adds(&key, created);
        }
    }
    let old = job.status.clone().unwrap_or_default();
    let status = JobStatus {
        active: Some(active_count),
        ready: Some(ready),
        succeeded: Some(succeeded),
        failed: Some(failed),
        start_time: old.start_time.clone().or_else(|| Some(Time(k8s_openapi::jiff::Timestamp::now()))),
        completion_time: completion_time.or(old.completion_time.clone()),
        conditions: if conditions.is_empty() { old.conditions.clone() } else { Some(conditions) },
        terminating: Some(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count() as i32),
        ..old.clone()
    };
    if status != old {
        let japi: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": status});
        match japi.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("updating the status of job {key}"))(e)),
        }
    }
    Ok(Action::await_change())
}

fn job_pod(job: &Job) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
    labels.insert("batch.kubernetes.io/job-name".into(), job.name_any());
    labels.insert("controller-uid".into(), uid);
    labels.insert("job-name".into(), job.name_any());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", job.name_any())),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![pod_state::owner_ref("batch/v1", "Job", job)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}
