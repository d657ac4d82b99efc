//! The CronJob controller (upstream's cronjob_controllerv2): at each
//! scheduled time it creates the Job `<cronjob>-<scheduled minutes since the
//! epoch>` from `jobTemplate`, honouring `suspend`, `concurrencyPolicy`
//! (Allow, Forbid, Replace), `startingDeadlineSeconds`, `timeZone`, and
//! keeps `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` finished
//! Jobs. Status: active, lastScheduleTime, lastSuccessfulTime.
//!
//! Schedules are standard 5-field cron (Vixie semantics: day-of-month and
//! day-of-week are OR'ed unless one is `*`) and the `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly` descriptors,
//! parsed by `croner`. Not supported: `@every <duration>`.

use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, Zoned};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::informer::{self, Informer, Informers};
use crate::{Error, is_not_found, pod_state};

/// Annotation upstream puts on each Job: its scheduled time (RFC 3339).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream warns past this many missed start times.
const MAX_MISSED: usize = 100;

struct Ctx {
    client: Client,
    jobs: Arc<Informer<Job>>,
    /// The clock: injectable so the schedule logic is tested without waiting.
    now: fn() -> Timestamp,
}

pub async fn run(client: Client, informers: &Informers) -> Result<(), Error> {
    let ctx = Arc::new(Ctx { client: client.clone(), jobs: informers.jobs.clone(), now: Timestamp::now });
    informer::run_owner(
        informer::Source::Watch(Api::<CronJob>::all(client)),
        &informers.jobs,
        "cronjob",
        ctx,
        reconcile,
    )
    .await;
    Ok(())
}

/// A parsed schedule in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

impl Schedule {
    /// `timeZone` is an IANA name; without it the controller's local zone
    /// is used, as upstream does.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let tz = match time_zone {
            Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone {name}: {e}"))?,
            None => TimeZone::system(),
        };
        let s = schedule.trim();
        if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
            return Err("CRON_TZ or TZ used in schedule is not supported, use the timeZone field".into());
        }
        let s = if s.eq_ignore_ascii_case("@midnight") { "0 0 * * *" } else { s };
        if s.starts_with('@')
            && !["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"]
                .iter()
                .any(|d| s.eq_ignore_ascii_case(d))
        {
            return Err(format!("unsupported schedule descriptor: {s}"));
        }
        if !s.starts_with('@') && s.split_whitespace().count() != 5 {
            return Err(format!("expected exactly 5 fields, found {}: {s}", s.split_whitespace().count()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(s)
            .map_err(|e| format!("unparseable schedule {schedule:?}: {e}"))?;
        Ok(Self { cron, tz })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron.find_next_occurrence(&t.to_zoned(self.tz.clone()), false).ok().map(|z: Zoned| z.timestamp())
    }

    /// The latest scheduled time in `(earliest, now]` and how many
    /// scheduled times that interval holds (counted up to MAX_MISSED + 1).
    pub fn most_recent(&self, earliest: Timestamp, now: Timestamp) -> Option<(Timestamp, usize)> {
        let first = self.next_after(earliest).filter(|t| *t <= now)?;
        let latest = self
            .cron
            .find_previous_occurrence(&now.to_zoned(self.tz.clone()), true)
            .ok()
            .map(|z: Zoned| z.timestamp())
            .filter(|t| *t >= first)
            .unwrap_or(first);
        let mut missed = 1;
        let mut t = first;
        while t < latest && missed <= MAX_MISSED {
            match self.next_after(t) {
                Some(n) => t = n,
                None => break,
            }
            missed += 1;
        }
        Some((latest, missed))
    }
}

/// `<cronjob>-<minutes since the epoch>`, as upstream names the Job of a
/// scheduled time.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// A Job's finished condition: Some(true) Complete, Some(false) Failed.
pub fn finished(job: &Job) -> Option<bool> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds.iter().filter(|c| c.status == "True").find_map(|c| match c.type_.as_str() {
        "Complete" => Some(true),
        "Failed" => Some(false),
        _ => None,
    })
}

/// What to do at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to start; look again after this long (None: only on change).
    Wait(Option<Duration>),
    /// Start the Job of this scheduled time (after deleting the active ones
    /// under Replace).
    Start { scheduled: Timestamp, replace_active: bool },
    /// The time has come but a Job is still running under Forbid.
    Skip { scheduled: Timestamp },
}

/// Upstream's syncCronJob decision, from the spec, the last schedule time
/// (or creation time) and the number of active Jobs.
pub fn decide(cj: &CronJob, schedule: &Schedule, active: usize, now: Timestamp) -> Decision {
    let spec = cj.spec.clone().unwrap_or_default();
    let until_next = |t: Timestamp| {
        schedule.next_after(t).map(|n| {
            let d = n.as_millisecond().saturating_sub(now.as_millisecond()).max(0) as u64;
            Duration::from_millis(d + 100)
        })
    };
    if spec.suspend == Some(true) {
        return Decision::Wait(None);
    }
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let mut earliest = cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0).unwrap_or(created);
    let deadline = spec.starting_deadline_seconds.map(|s| Timestamp::from_second(now.as_second() - s).unwrap_or(now));
    if let Some(d) = deadline
        && d > earliest
    {
        earliest = d;
    }
    let Some((scheduled, missed)) = schedule.most_recent(earliest, now) else {
        return Decision::Wait(until_next(now));
    };
    if missed > MAX_MISSED {
        tracing::warn!(missed, "too many missed start times; check clock skew or startingDeadlineSeconds");
    }
    if deadline.is_some_and(|d| scheduled < d) {
        return Decision::Wait(until_next(now));
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if active > 0 => Decision::Skip { scheduled },
        "Replace" => Decision::Start { scheduled, replace_active: active > 0 },
        _ => Decision::Start { scheduled, replace_active: false },
    }
}

/// Finished Jobs beyond the history limits, oldest first.
pub fn history_to_delete(cj: &CronJob, jobs: &[Arc<Job>]) -> Vec<String> {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (success, limit) in
        [(true, spec.successful_jobs_history_limit.unwrap_or(3)), (false, spec.failed_jobs_history_limit.unwrap_or(1))]
    {
        let mut done: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(success)).collect();
        done.sort_by_key(|j| {
            let start = j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
            (start.or(j.metadata.creation_timestamp.as_ref().map(|t| t.0)), j.name_any())
        });
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        out.extend(done[..excess].iter().map(|j| j.name_any()));
    }
    out
}

fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![pod_state::owner_ref("batch/v1", "CronJob", cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

#[tracing::instrument(skip_all, fields(kind = "CronJob", namespace = %cj.namespace().unwrap_or_default(), name = %cj.name_any()))]
async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = (ctx.now)();
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let key = format!("{ns}/{name}");
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let owned: Vec<Arc<Job>> = ctx.jobs.controlled_by(cj.as_ref());
    let old = cj.status.clone().unwrap_or_default();

    // Active: unfinished Jobs in the cache, and those the status lists that
    // the cache has not seen yet but the API still has.
    let mut active: Vec<ObjectReference> = owned
        .iter()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .map(|j| reference(j))
        .collect();
    for r in old.active.iter().flatten() {
        let name = r.name.clone().unwrap_or_default();
        if owned.iter().any(|j| j.metadata.uid == r.uid) || active.iter().any(|a| a.uid == r.uid) {
            continue;
        }
        match jobs_api.get_opt(&name).await.map_err(Error::kube(format!("reading job {ns}/{name}")))? {
            Some(j) if j.metadata.uid == r.uid && finished(&j).is_none() => active.push(r.clone()),
            _ => {}
        }
    }
    let last_success = owned
        .iter()
        .filter(|j| finished(j) == Some(true))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .chain(old.last_successful_time.as_ref().map(|t| t.0))
        .max();
    let mut status = CronJobStatus {
        active: if active.is_empty() { None } else { Some(active.clone()) },
        last_schedule_time: old.last_schedule_time.clone(),
        last_successful_time: last_success.map(Time),
    };

    let spec = cj.spec.clone().unwrap_or_default();
    let mut requeue = None;
    match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Err(reason) => tracing::warn!(%reason, "invalid schedule; no jobs are started"),
        Ok(schedule) => match decide(&cj, &schedule, active.len(), now) {
            Decision::Wait(after) => requeue = after,
            Decision::Skip { scheduled } => {
                tracing::info!(scheduled = %scheduled, "a job is still active (Forbid): skipping this run");
                requeue = wait_next(&schedule, now);
            }
            Decision::Start { scheduled, replace_active } => {
                if replace_active {
                    for r in std::mem::take(&mut active) {
                        let n = r.name.unwrap_or_default();
                        tracing::info!(job = %n, "replacing active job");
                        match jobs_api.delete(&n, &DeleteParams::background()).await {
                            Ok(_) => {}
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => return Err(Error::kube(format!("deleting job {ns}/{n}"))(e)),
                        }
                    }
                }
                let job = job_from_template(&cj, scheduled, &schedule.tz);
                match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(created) => {
                        tracing::info!(job = %created.name_any(), "created job");
                        active.push(reference(&created));
                    }
                    // Made for this time already (our status write was lost).
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(Error::kube(format!("creating job {ns}/{}", job.name_any()))(e)),
                }
                status.active = if active.is_empty() { None } else { Some(active.clone()) };
                status.last_schedule_time = Some(Time(scheduled));
                requeue = wait_next(&schedule, now);
            }
        },
    }

    if status != old {
        let patch = json!({"status": {
            "active": status.active,
            "lastScheduleTime": status.last_schedule_time,
            "lastSuccessfulTime": status.last_successful_time,
        }});
        match Api::<CronJob>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(Error::kube(format!("updating the status of cronjob {key}"))(e)),
        }
    }

    for victim in history_to_delete(&cj, &owned) {
        tracing::info!(job = %victim, "deleting job beyond the history limit");
        match jobs_api.delete(&victim, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("deleting job {ns}/{victim}"))(e)),
        }
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn wait_next(schedule: &Schedule, now: Timestamp) -> Option<Duration> {
    let next = schedule.next_after(now)?;
    let ms = next.as_millisecond().saturating_sub(now.as_millisecond()).max(0) as u64;
    Some(Duration::from_millis(ms + 100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test data")
    }

    fn utc(s: &str) -> Schedule {
        Schedule::parse(s, Some("UTC")).expect("test data")
    }

    fn cronjob(schedule: &str, created: &str, last: Option<&str>, tune: impl FnOnce(&mut CronJobSpec)) -> CronJob {
        let mut spec = CronJobSpec { schedule: schedule.into(), ..Default::default() };
        tune(&mut spec);
        CronJob {
            metadata: ObjectMeta {
                name: Some("cj".into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(spec),
            status: Some(CronJobStatus { last_schedule_time: last.map(|l| Time(ts(l))), ..Default::default() }),
        }
    }

    #[test]
    fn standard_fields_and_descriptors_parse_and_bad_ones_are_refused() {
        for ok in ["* * * * *", "*/5 1-3 * JAN,MAR mon-fri", "@hourly", "@daily", "@midnight", "@weekly", "@yearly"] {
            assert!(Schedule::parse(ok, Some("UTC")).is_ok(), "{ok}");
        }
        for bad in ["* * * *", "0 * * * * *", "61 * * * *", "@every 5m", "TZ=UTC * * * * *", "hello"] {
            assert!(Schedule::parse(bad, Some("UTC")).is_err(), "{bad}");
        }
        assert!(Schedule::parse("* * * * *", Some("Not/AZone")).is_err());
    }

    #[test]
    fn next_times_follow_vixie_day_semantics() {
        let t = ts("2026-01-01T00:00:00Z"); // a Thursday
        assert_eq!(utc("@hourly").next_after(t), Some(ts("2026-01-01T01:00:00Z")));
        // Day-of-week alone: only Mondays.
        assert_eq!(utc("0 0 * * MON").next_after(t), Some(ts("2026-01-05T00:00:00Z")));
        // Both restricted: the 10th or a Monday, whichever comes first.
        assert_eq!(utc("0 0 10 * MON").next_after(t), Some(ts("2026-01-05T00:00:00Z")));
        assert_eq!(utc("0 0 2 * MON").next_after(t), Some(ts("2026-01-02T00:00:00Z")));
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let ny = Schedule::parse("0 9 * * *", Some("America/New_York")).expect("test data");
        // 09:00 in New York in January is 14:00 UTC.
        assert_eq!(ny.next_after(ts("2026-01-15T00:00:00Z")), Some(ts("2026-01-15T14:00:00Z")));
    }

    #[test]
    fn job_names_are_the_scheduled_minutes_since_the_epoch() {
        assert_eq!(job_name("hello", ts("2026-01-01T00:00:00Z")), "hello-29453760");
    }

    #[test]
    fn the_most_recent_missed_time_is_started_and_nothing_before_the_first() {
        let s = utc("*/10 * * * *");
        let cj = cronjob("*/10 * * * *", "2026-01-01T00:00:00Z", None, |_| {});
        // Created at 00:00, now 00:05: first run at 00:10.
        assert_eq!(
            decide(&cj, &s, 0, ts("2026-01-01T00:05:00Z")),
            Decision::Wait(Some(Duration::from_millis(300_100)))
        );
        // Now 00:35: three runs missed, the latest (00:30) starts.
        assert_eq!(
            decide(&cj, &s, 0, ts("2026-01-01T00:35:00Z")),
            Decision::Start { scheduled: ts("2026-01-01T00:30:00Z"), replace_active: false }
        );
        assert_eq!(s.most_recent(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:35:00Z")).expect("test data").1, 3);
        // Already started at 00:30.
        let done = cronjob("*/10 * * * *", "2026-01-01T00:00:00Z", Some("2026-01-01T00:30:00Z"), |_| {});
        assert!(matches!(decide(&done, &s, 1, ts("2026-01-01T00:35:00Z")), Decision::Wait(Some(_))));
    }

    #[test]
    fn a_run_older_than_the_starting_deadline_is_not_started() {
        let s = utc("0 * * * *");
        let cj = cronjob("0 * * * *", "2026-01-01T00:30:00Z", None, |sp| sp.starting_deadline_seconds = Some(60));
        assert!(matches!(decide(&cj, &s, 0, ts("2026-01-01T01:05:00Z")), Decision::Wait(Some(_))));
        assert_eq!(
            decide(&cj, &s, 0, ts("2026-01-01T01:00:30Z")),
            Decision::Start { scheduled: ts("2026-01-01T01:00:00Z"), replace_active: false }
        );
    }

    #[test]
    fn concurrency_policies_and_suspend_decide_what_happens_to_an_active_job() {
        let s = utc("* * * * *");
        let now = ts("2026-01-01T00:01:30Z");
        let at = ts("2026-01-01T00:01:00Z");
        let with = |policy: &str| {
            let p = policy.to_owned();
            cronjob("* * * * *", "2026-01-01T00:00:10Z", None, move |sp| sp.concurrency_policy = Some(p))
        };
        assert_eq!(decide(&with("Allow"), &s, 1, now), Decision::Start { scheduled: at, replace_active: false });
        assert_eq!(decide(&with("Forbid"), &s, 1, now), Decision::Skip { scheduled: at });
        assert_eq!(decide(&with("Forbid"), &s, 0, now), Decision::Start { scheduled: at, replace_active: false });
        assert_eq!(decide(&with("Replace"), &s, 1, now), Decision::Start { scheduled: at, replace_active: true });
        let suspended = cronjob("* * * * *", "2026-01-01T00:00:10Z", None, |sp| sp.suspend = Some(true));
        assert_eq!(decide(&suspended, &s, 0, now), Decision::Wait(None));
    }

    fn finished_job(name: &str, start: &str, ok: bool) -> Arc<Job> {
        Arc::new(Job {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: None,
            status: Some(JobStatus {
                start_time: Some(Time(ts(start))),
                conditions: Some(vec![JobCondition {
                    type_: if ok { "Complete" } else { "Failed" }.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn history_limits_delete_the_oldest_finished_jobs() {
        let cj = cronjob("* * * * *", "2026-01-01T00:00:00Z", None, |sp| {
            sp.successful_jobs_history_limit = Some(2);
            sp.failed_jobs_history_limit = Some(0);
        });
        let jobs = vec![
            finished_job("c", "2026-01-01T00:03:00Z", true),
            finished_job("a", "2026-01-01T00:01:00Z", true),
            finished_job("b", "2026-01-01T00:02:00Z", true),
            finished_job("f", "2026-01-01T00:04:00Z", false),
        ];
        assert_eq!(history_to_delete(&cj, &jobs), ["a", "f"]);
    }
}
