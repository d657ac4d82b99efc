//! Images of a pod's containers: the pull policy as upstream defaults it, and
//! the back-off of failed pulls (ErrImagePull, then ImagePullBackOff until the
//! back-off ends), kept per image for one pod as the kubelet keeps it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;

/// `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The container's policy; when unset, upstream's default: `Always` for the
/// `latest` tag or no tag (and no digest), `IfNotPresent` otherwise.
pub fn policy(c: &Container) -> PullPolicy {
    match c.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ => {
            let image = c.image.as_deref().unwrap_or("");
            let (name, digest) = image.split_once('@').map_or((image, None), |(n, d)| (n, Some(d)));
            let tag = name.rsplit('/').next().and_then(|last| last.split_once(':')).map(|(_, t)| t);
            if digest.is_none() && tag.is_none_or(|t| t == "latest") {
                PullPolicy::Always
            } else {
                PullPolicy::IfNotPresent
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    until: Instant,
    delay: Duration,
    failures: u32,
}

/// Failed pulls of one pod's images and when each may be tried again.
#[derive(Debug, Default)]
pub struct PullBackoff {
    entries: HashMap<String, Entry>,
}

impl PullBackoff {
    /// True while `image` may not be pulled again yet.
    pub fn waiting(&self, image: &str, now: Instant) -> bool {
        self.entries.get(image).is_some_and(|e| now < e.until)
    }

    /// A pull failed: the first back-off is `base`, each next one doubles, up
    /// to `max`.
    pub fn failed(&mut self, image: &str, now: Instant, base: Duration, max: Duration) {
        let prev = self.entries.get(image);
        let delay = prev.map_or(base, |e| e.delay * 2).min(max);
        let failures = prev.map_or(0, |e| e.failures) + 1;
        self.entries.insert(image.to_owned(), Entry { until: now + delay, delay, failures });
    }

    /// Failed pulls of `image` in a row.
    pub fn failures(&self, image: &str) -> u32 {
        self.entries.get(image).map_or(0, |e| e.failures)
    }

    pub fn succeeded(&mut self, image: &str) {
        self.entries.remove(image);
    }

    /// The earliest end of a back-off still running.
    pub fn next_retry(&self, now: Instant) -> Option<Duration> {
        self.entries.values().filter(|e| e.until > now).map(|e| e.until - now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_policy_is_always_for_latest_or_no_tag_and_if_not_present_otherwise() {
        assert_eq!(policy(&container("busybox", None)), PullPolicy::Always);
        assert_eq!(policy(&container("busybox:latest", None)), PullPolicy::Always);
        assert_eq!(policy(&container("127.0.0.1:5000/busybox", None)), PullPolicy::Always);
        assert_eq!(policy(&container("127.0.0.1:5000/busybox:v1", None)), PullPolicy::IfNotPresent);
        assert_eq!(policy(&container("busybox@sha256:00", None)), PullPolicy::IfNotPresent);
        assert_eq!(policy(&container("busybox:latest", Some("Never"))), PullPolicy::Never);
        assert_eq!(policy(&container("busybox:v1", Some("Always"))), PullPolicy::Always);
    }

    #[test]
    fn a_failed_pull_backs_off_doubling_up_to_the_maximum_and_a_success_forgets_it() {
        let mut b = PullBackoff::default();
        let t0 = Instant::now();
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(25));
        assert!(!b.waiting("i", t0));
        b.failed("i", t0, base, max);
        assert!(b.waiting("i", t0 + Duration::from_secs(9)));
        assert!(!b.waiting("i", t0 + Duration::from_secs(10)));
        assert_eq!(b.next_retry(t0), Some(base));
        let t1 = t0 + Duration::from_secs(10);
        b.failed("i", t1, base, max);
        assert_eq!(b.next_retry(t1), Some(Duration::from_secs(20)));
        b.failed("i", t1, base, max);
        assert_eq!(b.next_retry(t1), Some(max));
        assert!(!b.waiting("other", t1));
        b.succeeded("i");
        assert!(!b.waiting("i", t1));
        assert_eq!(b.next_retry(t1), None);
    }
}
