//! Image garbage collection, as the kubelet's image GC manager does it: every
//! period the image filesystem's usage is checked; at or above the high
//! threshold, images no container uses (running or exited) are removed, least
//! recently used first, until the usage would be back at the low threshold.
//! Images first seen less than the minimum age ago are kept (a pull whose
//! container is not created yet must not lose its image).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use waggle_runtime::{ImageSummary, Runtime};

/// Upstream's kubelet defaults: 85 %, 80 %, 2 minutes, every 5 minutes.
#[derive(Clone, Debug)]
pub struct ImageGcPolicy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub min_age: Duration,
    pub period: Duration,
    /// The filesystem holding containerd's content and snapshots (default:
    /// containerd's content root, as its Introspection service says).
    pub image_fs: Option<PathBuf>,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
            image_fs: None,
        }
    }
}

impl ImageGcPolicy {
    /// Upstream's validation; a high threshold of 100 turns GC off.
    pub fn validate(&self) -> Result<(), String> {
        if self.high_threshold_percent > 100 || self.low_threshold_percent > 100 {
            return Err("image GC thresholds must be between 0 and 100".into());
        }
        if self.high_threshold_percent < 100 && self.low_threshold_percent >= self.high_threshold_percent {
            return Err(format!(
                "--image-gc-high-threshold ({}) must be greater than --image-gc-low-threshold ({})",
                self.high_threshold_percent, self.low_threshold_percent
            ));
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.high_threshold_percent < 100
    }

    /// Bytes to free for a filesystem of `capacity` bytes with `available`
    /// free, or None while usage is under the high threshold.
    pub fn bytes_to_free(&self, capacity: u64, available: u64) -> Option<u64> {
        if capacity == 0 || !self.enabled() {
            return None;
        }
        let used_percent = (capacity.saturating_sub(available) as u128 * 100 / capacity as u128) as u64;
        if used_percent < u64::from(self.high_threshold_percent) {
            return None;
        }
        let target_available = capacity as u128 * u128::from(100 - self.low_threshold_percent) / 100;
        Some((target_available as u64).saturating_sub(available))
    }
}

#[derive(Clone, Debug)]
struct Record {
    names: Vec<String>,
    size: u64,
    first_seen: Instant,
    last_used: Instant,
}

/// What the collector remembers between runs, by image digest.
#[derive(Debug, Default)]
pub struct Tracker {
    images: HashMap<String, Record>,
}

impl Tracker {
    /// Takes in what the runtime lists now; images in use count as used now.
    pub fn observe(&mut self, images: &[ImageSummary], in_use: &HashSet<String>, now: Instant) {
        let mut seen: HashMap<&str, (Vec<String>, u64)> = HashMap::new();
        for i in images {
            let e = seen.entry(i.digest.as_str()).or_insert_with(|| (Vec::new(), i.size));
            e.0.push(i.name.clone());
        }
        self.images.retain(|d, _| seen.contains_key(d.as_str()));
        for (digest, (names, size)) in seen {
            let r = self.images.entry(digest.to_owned()).or_insert(Record {
                names: Vec::new(),
                size,
                first_seen: now,
                last_used: now,
            });
            r.names = names;
            r.size = size;
            if in_use.contains(digest) {
                r.last_used = now;
            }
        }
    }

    /// The images (by digest, with their names) to remove to free `bytes`:
    /// unused, old enough, least recently used first; and the bytes they free.
    pub fn plan(
        &self,
        bytes: u64,
        in_use: &HashSet<String>,
        now: Instant,
        min_age: Duration,
    ) -> (Vec<(String, Vec<String>)>, u64) {
        let mut candidates: Vec<(&String, &Record)> = self
            .images
            .iter()
            .filter(|(d, r)| !in_use.contains(*d) && now.duration_since(r.first_seen) >= min_age)
            .collect();
        candidates.sort_by(|a, b| a.1.last_used.cmp(&b.1.last_used).then_with(|| a.0.cmp(b.0)));
        let (mut out, mut freed) = (Vec::new(), 0u64);
        for (digest, r) in candidates {
            if freed >= bytes {
                break;
            }
            out.push((digest.clone(), r.names.clone()));
            freed += r.size;
        }
        (out, freed)
    }
}

/// Size and free bytes of the filesystem holding `path`.
fn fs_usage(path: &std::path::Path) -> Result<(u64, u64), String> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statfs {}: {e}", path.display()))?;
    let frag = st.fragment_size() as u64;
    Ok((st.blocks() as u64 * frag, st.blocks_available() as u64 * frag))
}

/// One pass: observe, and remove images when the filesystem is too full.
pub async fn collect_once(runtime: &Runtime, policy: &ImageGcPolicy, tracker: &mut Tracker) -> Result<u64, String> {
    let now = Instant::now();
    let images = runtime.list_images().await.map_err(|e| format!("listing images: {e}"))?;
    let by_name: HashMap<&str, &str> = images.iter().map(|i| (i.name.as_str(), i.digest.as_str())).collect();
    let containers = runtime.list_containers(&[]).await.map_err(|e| format!("listing containers: {e}"))?;
    let in_use: HashSet<String> =
        containers.iter().filter_map(|c| by_name.get(c.image.as_str()).map(|d| (*d).to_owned())).collect();
    tracker.observe(&images, &in_use, now);
    let fs = match &policy.image_fs {
        Some(fs) => fs.clone(),
        None => runtime.content_root().await.map_err(|e| format!("finding the image filesystem: {e}"))?,
    };
    let (capacity, available) = fs_usage(&fs)?;
    let Some(wanted) = policy.bytes_to_free(capacity, available) else {
        debug!(capacity, available, "image filesystem under the high threshold");
        return Ok(0);
    };
    let (victims, eligible) = tracker.plan(wanted, &in_use, now, policy.min_age);
    let mut freed = 0u64;
    for (digest, names) in victims {
        let size = tracker.images.get(&digest).map_or(0, |r| r.size);
        let mut removed = true;
        for name in &names {
            if let Err(e) = runtime.delete_image(name).await {
                warn!(image = %name, error = %e, "removing an unused image failed");
                removed = false;
            }
        }
        if removed {
            info!(images = ?names, %digest, size, "removed an unused image");
            tracker.images.remove(&digest);
            freed += size;
        }
    }
    if eligible < wanted {
        return Err(format!(
            "Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {eligible} bytes eligible to free."
        ));
    }
    Ok(freed)
}

/// Runs the collector every period until the task is dropped.
pub async fn run(runtime: Runtime, policy: ImageGcPolicy) {
    if !policy.enabled() {
        info!("image garbage collection is off (high threshold 100)");
        return;
    }
    let mut tracker = Tracker::default();
    let mut last_error = None;
    let mut tick = tokio::time::interval(policy.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match collect_once(&runtime, &policy, &mut tracker).await {
            Ok(freed) => {
                if freed > 0 {
                    info!(freed, "image garbage collection freed space");
                }
                last_error = None;
            }
            // The same failure every period is said once.
            Err(e) if last_error.as_ref() == Some(&e) => debug!(error = %e, "image garbage collection"),
            Err(e) => {
                warn!(error = %e, "image garbage collection");
                last_error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, digest: &str, size: u64) -> ImageSummary {
        ImageSummary { name: name.into(), digest: digest.into(), size }
    }

    fn policy(high: u8, low: u8) -> ImageGcPolicy {
        ImageGcPolicy { high_threshold_percent: high, low_threshold_percent: low, ..ImageGcPolicy::default() }
    }

    #[test]
    fn usage_under_the_high_threshold_frees_nothing_and_over_it_frees_down_to_the_low_one() {
        let p = policy(85, 80);
        assert_eq!(p.bytes_to_free(1000, 200), None, "80 % used");
        assert_eq!(p.bytes_to_free(1000, 150), Some(50), "85 % used: back to 200 free");
        assert_eq!(p.bytes_to_free(1000, 0), Some(200));
        assert_eq!(policy(100, 80).bytes_to_free(1000, 0), None, "100 turns GC off");
        assert_eq!(p.bytes_to_free(0, 0), None);
    }

    #[test]
    fn thresholds_are_validated_as_upstream() {
        assert!(policy(85, 80).validate().is_ok());
        assert!(policy(100, 100).validate().is_ok(), "off");
        assert!(policy(80, 80).validate().is_err());
        assert!(policy(70, 80).validate().is_err());
        assert!(policy(101, 80).validate().is_err());
    }

    #[test]
    fn unused_images_old_enough_go_least_recently_used_first_until_enough_is_freed() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let all = [image("a:1", "sha256:a", 100), image("b:1", "sha256:b", 100), image("c:1", "sha256:c", 100)];
        let in_use = |ds: &[&str]| ds.iter().map(|d| (*d).to_owned()).collect::<HashSet<_>>();
        t.observe(&all, &in_use(&["sha256:a", "sha256:b", "sha256:c"]), t0);
        // b stops being used first, then a; c stays in use.
        t.observe(&all, &in_use(&["sha256:a", "sha256:c"]), t0 + Duration::from_secs(10));
        t.observe(&all, &in_use(&["sha256:c"]), t0 + Duration::from_secs(20));
        let now = t0 + Duration::from_secs(30);
        let used = in_use(&["sha256:c"]);
        let (plan, freed) = t.plan(150, &used, now, Duration::from_secs(5));
        let digests: Vec<&str> = plan.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(digests, ["sha256:b", "sha256:a"], "least recently used first, in use never");
        assert_eq!(freed, 200);
        let (plan, _) = t.plan(50, &used, now, Duration::from_secs(5));
        assert_eq!(plan.len(), 1, "stops once enough is freed");
        let (plan, freed) = t.plan(150, &used, now, Duration::from_secs(60));
        assert!(plan.is_empty() && freed == 0, "younger than the minimum age: kept");
    }

    #[test]
    fn names_of_one_digest_go_together_and_vanished_images_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.observe(&[image("x:1", "sha256:x", 10), image("x:latest", "sha256:x", 10)], &HashSet::new(), t0);
        let (plan, freed) = t.plan(1, &HashSet::new(), t0, Duration::ZERO);
        assert_eq!(plan, [("sha256:x".to_owned(), vec!["x:1".to_owned(), "x:latest".to_owned()])]);
        assert_eq!(freed, 10, "counted once");
        t.observe(&[], &HashSet::new(), t0);
        assert!(t.plan(1, &HashSet::new(), t0, Duration::ZERO).0.is_empty());
    }
}
