//! Leader election through a coordination.k8s.io Lease, as client-go's
//! leaderelection does it: a candidate takes the Lease when it is free or
//! expired, renews it every `retry_period`, and stops acting when it could
//! not renew for `renew_deadline`. Writes carry the Lease's resourceVersion,
//! so two candidates never both win a round.
//!
//! kube-rs has no leader election; this is the small part of client-go's
//! that the controller manager and the scheduler need.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{Error, is_not_found};

#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    /// The Lease's name: the component's (`kube-scheduler`, `kube-controller-manager`).
    pub name: String,
    /// Unique per candidate (upstream: `<hostname>_<uuid>`).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(name: &str, identity: &str) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Waits to become leader, then runs `work` while leadership lasts. Returns
/// what `work` returns, or an error once leadership is lost (the caller
/// should exit, as upstream components do).
pub async fn run_as_leader<F, Fut, E>(
    client: Client,
    config: LeaderElectionConfig,
    work: F,
) -> Result<Result<(), E>, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    loop {
        match try_acquire_or_renew(&api, &config).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, lease = %config.name, "leader election"),
        }
        tokio::time::sleep(config.retry_period).await;
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "became leader");
    let renew = async {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(config.retry_period).await;
            match try_acquire_or_renew(&api, &config).await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    return Error::Config { reason: format!("lost the lease {} to another holder", config.name) };
                }
                Err(e) => tracing::warn!(error = %e, lease = %config.name, "renewing the leader lease"),
            }
            if last_renewed.elapsed() > config.renew_deadline {
                return Error::Config { reason: format!("could not renew the lease {} in time", config.name) };
            }
        }
    };
    tokio::select! {
        r = work() => Ok(r),
        lost = renew => {
            tracing::error!(lease = %config.name, error = %lost, "leadership lost");
            Err(lost)
        }
    }
}

/// One round: true when this candidate holds the Lease afterwards.
async fn try_acquire_or_renew(api: &Api<Lease>, config: &LeaderElectionConfig) -> Result<bool, Error> {
    let now = Timestamp::now();
    let duration = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let current = match api.get(&config.name).await {
        Ok(l) => Some(l),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(Error::kube(format!("reading lease {}", config.name))(e)),
    };
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube(format!("creating lease {}", config.name))(e)),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(duration));
    let expired = spec.renew_time.as_ref().is_none_or(|t| now.as_second() - t.0.as_second() > held_for);
    let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !mine && !expired && !vacant {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(duration);
    spec.renew_time = Some(MicroTime(now));
    // The resourceVersion read above makes this a compare-and-swap.
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("updating lease {}", config.name))(e)),
    }
}
