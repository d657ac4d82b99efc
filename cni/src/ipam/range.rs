//! Address ranges as host-local defines them, and the order addresses are
//! tried in: after the last reserved one, wrapping around the whole set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;

use super::IpamError;

/// One `ranges[i][j]` entry as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    pub subnet: IpNet,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// A canonical range: every field filled in and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        // Values come from within an IPv4 subnet, so they fit.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

impl Range {
    /// Fills in host-local's defaults: start = network + 1, end = last - 1
    /// (the IPv4 broadcast is never handed out), gateway = network + 1.
    pub fn new(conf: &RangeConf) -> Result<Self, IpamError> {
        let subnet = conf.subnet;
        let invalid = |why: String| IpamError::InvalidRange(format!("{subnet}: {why}"));
        if subnet.trunc() != subnet {
            return Err(invalid("the subnet has host bits set".into()));
        }
        if subnet.max_prefix_len() - subnet.prefix_len() < 2 {
            return Err(invalid("the subnet has too few addresses".into()));
        }
        let v4 = subnet.addr().is_ipv4();
        let network = to_u128(subnet.network());
        let last = to_u128(subnet.broadcast());
        let start = conf.range_start.unwrap_or_else(|| from_u128(network + 1, v4));
        let end = conf.range_end.unwrap_or_else(|| from_u128(last - 1, v4));
        for (what, ip) in [("rangeStart", start), ("rangeEnd", end)] {
            if !subnet.contains(&ip) {
                return Err(invalid(format!("{what} {ip} is outside the subnet")));
            }
        }
        if to_u128(start) > to_u128(end) {
            return Err(invalid(format!("rangeStart {start} is after rangeEnd {end}")));
        }
        let gateway = conf.gateway.unwrap_or_else(|| from_u128(network + 1, v4));
        if !subnet.contains(&gateway) {
            return Err(invalid(format!("gateway {gateway} is outside the subnet")));
        }
        Ok(Self { subnet, start, end, gateway: Some(gateway) })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4() && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    fn overlaps(&self, other: &Self) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

/// One `ranges[i]`: a container gets one address from each set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

impl RangeSet {
    pub fn new(confs: &[RangeConf]) -> Result<Self, IpamError> {
        if confs.is_empty() {
            return Err(IpamError::InvalidRange("a range set is empty".into()));
        }
        let ranges = confs.iter().map(Range::new).collect::<Result<Vec<_>, _>>()?;
        let family = ranges[0].start.is_ipv4();
        if ranges.iter().any(|r| r.start.is_ipv4() != family) {
            return Err(IpamError::InvalidRange("a range set mixes IPv4 and IPv6".into()));
        }
        Ok(Self { ranges })
    }

    pub fn is_ipv4(&self) -> bool {
        self.ranges[0].start.is_ipv4()
    }

    pub fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// Candidate addresses in host-local's order: after `last`, wrapping, with
    /// each range's gateway skipped. Lazy, so a /64 costs nothing.
    pub fn candidates(&self, last: Option<IpAddr>) -> impl Iterator<Item = (IpAddr, &Range)> + '_ {
        let v4 = self.is_ipv4();
        let mut segments: Vec<(usize, u128, u128)> = Vec::new();
        let bounds = |r: &Range| (to_u128(r.start), to_u128(r.end));
        match last.and_then(|ip| self.ranges.iter().position(|r| r.contains(ip)).map(|i| (i, to_u128(ip)))) {
            Some((i, pos)) => {
                let (lo, hi) = bounds(&self.ranges[i]);
                if pos < hi {
                    segments.push((i, pos + 1, hi));
                }
                let n = self.ranges.len();
                for k in 1..n {
                    let j = (i + k) % n;
                    let (lo, hi) = bounds(&self.ranges[j]);
                    segments.push((j, lo, hi));
                }
                segments.push((i, lo, pos));
            }
            None => {
                for (j, r) in self.ranges.iter().enumerate() {
                    let (lo, hi) = bounds(r);
                    segments.push((j, lo, hi));
                }
            }
        }
        segments.into_iter().flat_map(move |(j, lo, hi)| {
            let range = &self.ranges[j];
            (lo..=hi).map(move |v| (from_u128(v, v4), range)).filter(|(ip, r)| Some(*ip) != r.gateway)
        })
    }

    pub fn describe(&self) -> String {
        self.ranges.iter().map(|r| format!("{}-{}", r.start, r.end)).collect::<Vec<_>>().join(",")
    }
}

/// host-local refuses overlapping ranges anywhere in the configuration.
pub fn check_disjoint(sets: &[RangeSet]) -> Result<(), IpamError> {
    let all: Vec<&Range> = sets.iter().flat_map(|s| &s.ranges).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.overlaps(b) {
                return Err(IpamError::InvalidRange(format!("range {} overlaps range {}", a.subnet, b.subnet)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(subnet: &str, start: Option<&str>, end: Option<&str>) -> RangeConf {
        RangeConf {
            subnet: subnet.parse().expect("subnet"),
            range_start: start.map(|s| s.parse().expect("ip")),
            range_end: end.map(|s| s.parse().expect("ip")),
            gateway: None,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn defaults_skip_the_network_address_and_the_broadcast() {
        let r = Range::new(&conf("10.1.0.0/24", None, None)).expect("valid");
        assert_eq!((r.start, r.end, r.gateway), (ip("10.1.0.1"), ip("10.1.0.254"), Some(ip("10.1.0.1"))));
    }

    #[test]
    fn subnets_with_host_bits_or_too_few_addresses_are_refused() {
        assert!(Range::new(&conf("10.1.0.5/24", None, None)).is_err());
        assert!(Range::new(&conf("10.1.0.0/31", None, None)).is_err());
        assert!(Range::new(&conf("10.1.0.0/24", Some("10.2.0.1"), None)).is_err());
        assert!(Range::new(&conf("10.1.0.0/24", Some("10.1.0.9"), Some("10.1.0.3"))).is_err());
    }

    #[test]
    fn candidates_start_at_the_first_address_and_skip_the_gateway() {
        let set = RangeSet::new(&[conf("10.1.0.0/29", None, None)]).expect("valid");
        let ips: Vec<_> = set.candidates(None).map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(ips, ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]);
    }

    #[test]
    fn candidates_resume_after_the_last_reserved_and_wrap_across_ranges() {
        let set = RangeSet::new(&[
            conf("10.1.0.0/29", Some("10.1.0.2"), Some("10.1.0.3")),
            conf("10.2.0.0/29", Some("10.2.0.2"), Some("10.2.0.3")),
        ])
        .expect("valid");
        let ips: Vec<_> = set.candidates(Some(ip("10.1.0.2"))).map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(ips, ["10.1.0.3", "10.2.0.2", "10.2.0.3", "10.1.0.2"]);
    }

    #[test]
    fn ipv6_ranges_iterate_lazily() {
        let set = RangeSet::new(&[conf("fd00::/64", None, None)]).expect("valid");
        let first: Vec<_> = set.candidates(None).take(2).map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(first, ["fd00::2", "fd00::3"]);
    }

    #[test]
    fn overlapping_ranges_are_refused_and_mixed_families_in_one_set_too() {
        let a = RangeSet::new(&[conf("10.1.0.0/24", None, None)]).expect("valid");
        let b = RangeSet::new(&[conf("10.1.0.0/25", None, None)]).expect("valid");
        assert!(check_disjoint(&[a, b]).is_err());
        assert!(RangeSet::new(&[conf("10.1.0.0/24", None, None), conf("fd00::/64", None, None)]).is_err());
    }
}
