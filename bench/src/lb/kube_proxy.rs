//! The peer: a ruleset shaped like kube-proxy's iptables mode
//! (pkg/proxy/iptables/proxier.go), loaded with `iptables-restore` into the
//! benchmark's own node namespace (never the host's; it goes away with the
//! namespace).
//!
//! Per Service port: one `KUBE-SERVICES` rule matching VIP:port (a linear
//! list: a new connection walks it until its Service matches), a
//! `KUBE-SVC-*` chain that masquerades traffic from outside the cluster CIDR
//! and picks an endpoint with `-m statistic --mode random --probability
//! 1/n, 1/(n-1), …`, and per endpoint a `KUBE-SEP-*` chain that marks
//! hairpin traffic and DNATs. Chain names are hashes like kube-proxy's.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use sha2::{Digest as _, Sha256};

/// The cluster CIDR kube-proxy is told (`--cluster-cidr`): pods and the
/// benchmark's client both sit inside it, so nothing is masqueraded.
pub const CLUSTER_CIDR: &str = "10.244.0.0/15";

/// A Service port with its endpoints, as the ruleset sees it.
pub struct SvcPort<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub port_name: &'a str,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: &'a [(Ipv4Addr, u16)],
}

/// kube-proxy's chain name: prefix + the first 16 base32 characters of a
/// SHA-256 (here hex, upper case: the length and spread are what matter).
fn chain(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    let digest = hex::encode_upper(h.finalize());
    format!("{prefix}-{}", &digest[..16])
}

/// The `iptables-restore` input for `services` (nat and filter tables).
pub fn ruleset(services: &[SvcPort<'_>]) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for s in services {
        let svc_name = format!("{}/{}:{}", s.namespace, s.name, s.port_name);
        let svc_chain = chain("KUBE-SVC", &[&svc_name, "tcp"]);
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{svc_name} cluster IP\" -m tcp --dport {} -j {svc_chain}",
            s.vip, s.port
        );
        let _ = writeln!(
            rules,
            "-A {svc_chain} ! -s {CLUSTER_CIDR} -d {}/32 -p tcp -m comment --comment \"{svc_name} cluster IP\" -m tcp --dport {} -j KUBE-MARK-MASQ",
            s.vip, s.port
        );
        let n = s.endpoints.len();
        for (i, (addr, port)) in s.endpoints.iter().enumerate() {
            let ep = format!("{addr}:{port}");
            let sep_chain = chain("KUBE-SEP", &[&svc_name, "tcp", &ep]);
            let _ = writeln!(chains, ":{sep_chain} - [0:0]");
            let statistic = if i + 1 < n {
                format!(" -m statistic --mode random --probability {:.11}", 1.0 / (n - i) as f64)
            } else {
                String::new()
            };
            let _ =
                writeln!(rules, "-A {svc_chain} -m comment --comment \"{svc_name} -> {ep}\"{statistic} -j {sep_chain}");
            let _ =
                writeln!(rules, "-A {sep_chain} -s {addr}/32 -m comment --comment \"{svc_name}\" -j KUBE-MARK-MASQ");
            let _ = writeln!(
                rules,
                "-A {sep_chain} -p tcp -m comment --comment \"{svc_name}\" -m tcp -j DNAT --to-destination {ep}"
            );
        }
    }
    let mut out = String::new();
    out.push_str("*filter\n:KUBE-FORWARD - [0:0]\n");
    out.push_str("-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n");
    out.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    out.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
    );
    out.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    out.push_str("COMMIT\n");
    out.push_str(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    out.push_str(&chains);
    out.push_str("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    out.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    out.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    out.push_str("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n");
    out.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    out.push_str("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n");
    out.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    out.push_str(&rules);
    out.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_but_the_last_is_picked_with_kube_proxys_probabilities() {
        let eps = [
            (Ipv4Addr::new(10, 244, 0, 11), 8080),
            (Ipv4Addr::new(10, 244, 0, 12), 8080),
            (Ipv4Addr::new(10, 244, 0, 13), 8080),
        ];
        let r = ruleset(&[SvcPort {
            namespace: "ns",
            name: "web",
            port_name: "http",
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            endpoints: &eps,
        }]);
        assert!(r.contains("--probability 0.33333333333"), "{r}");
        assert!(r.contains("--probability 0.50000000000"), "{r}");
        assert_eq!(r.matches("-j DNAT --to-destination").count(), 3);
        assert_eq!(r.matches("-A KUBE-SERVICES -d 10.96.0.10/32").count(), 1);
        assert!(r.lines().filter(|l| l.contains("statistic")).count() == 2, "the last endpoint takes the rest");
    }
}
