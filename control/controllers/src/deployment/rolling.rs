//! The arithmetic of a rolling update, as upstream's deployment controller
//! does it (pkg/controller/deployment/rolling.go and util): pure functions
//! over replica counts, unit-tested here.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// maxSurge and maxUnavailable as numbers for `replicas` pods: percentages
/// round up for surge and down for unavailability; both zero would block a
/// rollout, so unavailability becomes 1.
pub fn resolve_fenceposts(surge: Option<&IntOrString>, unavailable: Option<&IntOrString>, replicas: i32) -> (i32, i32) {
    let surge = scaled(surge, replicas, true).unwrap_or_else(|| percent_of(25, replicas, true));
    let unavailable = scaled(unavailable, replicas, false).unwrap_or_else(|| percent_of(25, replicas, false));
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> Option<i32> {
    match v? {
        IntOrString::Int(i) => Some((*i).max(0)),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            Some(percent_of(p, total, round_up))
        }
    }
}

fn percent_of(p: i64, total: i32, round_up: bool) -> i32 {
    let num = p.max(0) * i64::from(total.max(0));
    let v = if round_up { (num + 99) / 100 } else { num / 100 };
    v as i32
}

/// Replicas for the new ReplicaSet: grow it as far as maxSurge allows over
/// the replicas every ReplicaSet asks for, never above `replicas`.
pub fn new_rs_replicas(replicas: i32, max_surge: i32, all_spec_replicas: i32, new_spec_replicas: i32) -> i32 {
    let max_total = replicas + max_surge;
    if all_spec_replicas >= max_total {
        return new_spec_replicas;
    }
    let up = (max_total - all_spec_replicas).min(replicas - new_spec_replicas).max(0);
    new_spec_replicas + up
}

/// One old ReplicaSet as the scale-down needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldRs {
    pub spec: i32,
    pub available: i32,
}

/// New `spec.replicas` for each old ReplicaSet (given oldest first), so
/// that at least `replicas - max_unavailable` pods stay available: first
/// unhealthy old pods go, then available ones down to the minimum.
pub fn scale_down_old(
    replicas: i32,
    max_unavailable: i32,
    new_spec: i32,
    new_available: i32,
    old: &[OldRs],
) -> Vec<i32> {
    let mut specs: Vec<i32> = old.iter().map(|o| o.spec).collect();
    let old_total: i32 = specs.iter().sum();
    if old_total == 0 {
        return specs;
    }
    let all_pods = old_total + new_spec;
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new_spec - new_available).max(0);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return specs;
    }
    // Unhealthy replicas first: removing them costs no availability.
    let mut cleaned = 0;
    for (i, o) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        if specs[i] == 0 {
            continue;
        }
        let unhealthy = (specs[i] - o.available).max(0);
        let down = unhealthy.min(max_scaled_down - cleaned);
        specs[i] -= down;
        cleaned += down;
    }
    // Then available replicas, down to minAvailable.
    let available: i32 = new_available + old.iter().zip(&specs).map(|(o, s)| o.available.min(*s)).sum::<i32>();
    if available <= min_available {
        return specs;
    }
    let mut budget = available - min_available;
    for s in specs.iter_mut() {
        if budget == 0 {
            break;
        }
        let down = (*s).min(budget);
        *s -= down;
        budget -= down;
    }
    specs
}

/// Proportional scaling while several ReplicaSets are active and
/// `spec.replicas` changed: `to_add` (may be negative) is shared out in
/// proportion to each one's size; the rounding leftover goes to the first
/// (callers pass the newest or largest first).
pub fn proportional(sizes: &[i32], to_add: i32) -> Vec<i32> {
    let total: i32 = sizes.iter().sum();
    if total == 0 || sizes.is_empty() {
        let mut out = sizes.to_vec();
        if let Some(first) = out.first_mut() {
            *first = (*first + to_add).max(0);
        }
        return out;
    }
    let mut out: Vec<i32> =
        sizes.iter().map(|s| s + (i64::from(*s) * i64::from(to_add) / i64::from(total)) as i32).collect();
    let given: i32 = out.iter().sum::<i32>() - total;
    if let Some(first) = out.first_mut() {
        *first += to_add - given;
    }
    for v in out.iter_mut() {
        *v = (*v).max(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        assert_eq!(resolve_fenceposts(Some(&s("25%")), Some(&s("25%")), 10), (3, 2));
        assert_eq!(resolve_fenceposts(None, None, 50), (13, 12));
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 5), (2, 0));
    }

    #[test]
    fn zero_surge_and_zero_unavailability_allow_one_unavailable() {
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&s("0%")), 3), (0, 1));
        assert_eq!(resolve_fenceposts(None, None, 0), (0, 1));
    }

    #[test]
    fn the_new_replicaset_grows_only_within_the_surge() {
        // 10 replicas, surge 3: old at 10, new at 0 -> new may reach 3.
        assert_eq!(new_rs_replicas(10, 3, 10, 0), 3);
        // Already at the surge limit: no growth.
        assert_eq!(new_rs_replicas(10, 3, 13, 3), 3);
        // Never above replicas.
        assert_eq!(new_rs_replicas(2, 3, 2, 0), 2);
    }

    #[test]
    fn old_replicasets_shrink_without_breaking_min_available() {
        // 10 replicas, maxUnavailable 2, new has 3 pods not yet available.
        let old = [OldRs { spec: 10, available: 10 }];
        assert_eq!(scale_down_old(10, 2, 3, 0, &old), vec![8]);
        // Once the new pods are available, old can lose as many.
        assert_eq!(scale_down_old(10, 2, 3, 3, &[OldRs { spec: 8, available: 8 }]), vec![5]);
    }

    #[test]
    fn unhealthy_old_replicas_are_removed_first() {
        let old = [OldRs { spec: 5, available: 2 }, OldRs { spec: 5, available: 5 }];
        // 10 replicas, maxUnavailable 0, 3 new available: the 3 unhealthy go, nothing else.
        assert_eq!(scale_down_old(10, 0, 3, 3, &old), vec![2, 5]);
    }

    #[test]
    fn proportional_scaling_keeps_the_total_exact() {
        assert_eq!(proportional(&[6, 4], 5), vec![9, 6]);
        assert_eq!(proportional(&[6, 4], -5), vec![3, 2]);
        assert_eq!(proportional(&[1, 1, 1], 1).iter().sum::<i32>(), 4);
        assert_eq!(proportional(&[0], 4), vec![4]);
    }
}
