//! The files the kubelet manages in every container: `/etc/hosts` (the pod's
//! own name and address, then its hostAliases), `/etc/resolv.conf` (the
//! node's, with the pod's dnsConfig; `dnsPolicy: None` takes dnsConfig only)
//! and `/etc/hostname`. Written once per container start in the pod's
//! directory and bound in unless the container mounts something there.

use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use waggle_runtime::BindMount;

/// Where the node's resolver configuration is read from.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
const HOST_HOSTS: &str = "/etc/hosts";

/// The pod's hostname: `spec.hostname`, else its name (at most 63 bytes).
/// (A hostNetwork pod still gets its own UTS namespace here, unlike upstream
/// where it shares the node's.)
pub fn hostname(pod: &Pod) -> String {
    let name =
        pod.spec.as_ref().and_then(|s| s.hostname.clone()).or_else(|| pod.metadata.name.clone()).unwrap_or_default();
    name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_owned()
}

pub fn hosts_file(pod: &Pod, ips: &[IpAddr]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    let spec = pod.spec.as_ref();
    let names = match (spec.and_then(|s| s.subdomain.as_deref()), pod.metadata.namespace.as_deref()) {
        (Some(sub), ns) if !sub.is_empty() => {
            format!("{host}.{sub}.{}.svc.cluster.local\t{host}", ns.unwrap_or("default"))
        }
        _ => host,
    };
    for ip in ips {
        out.push_str(&format!("{ip}\t{names}\n"));
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref()).filter(|a| !a.is_empty());
    if let Some(aliases) = aliases {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.clone().unwrap_or_default().join("\t")));
        }
    }
    out
}

/// The node's resolv.conf with the pod's dnsConfig appended (as upstream:
/// more nameservers, search domains and options; `None` uses dnsConfig alone).
pub fn resolv_conf(pod: &Pod, host: &str) -> String {
    let spec = pod.spec.as_ref();
    let only_config = spec.and_then(|s| s.dns_policy.as_deref()) == Some("None");
    let (mut servers, mut search, mut options) = (Vec::new(), Vec::new(), Vec::new());
    if !only_config {
        for line in host.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => servers.extend(words.map(str::to_owned)),
                Some("search") | Some("domain") => search.extend(words.map(str::to_owned)),
                Some("options") => options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
    }
    if let Some(c) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(c.nameservers.iter().flatten().cloned());
        search.extend(c.searches.iter().flatten().cloned());
        for o in c.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    let mut out = String::new();
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Writes the three files under `pod_dir` and returns their binds.
pub fn prepare(pod: &Pod, pod_dir: &Path, ips: &[IpAddr]) -> Result<Vec<BindMount>, String> {
    let dir = pod_dir.join("etc");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let host_resolv = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    // A hostNetwork pod sees the node's own hosts file, as upstream.
    let hosts = if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        std::fs::read_to_string(HOST_HOSTS).unwrap_or_else(|_| hosts_file(pod, ips))
    } else {
        hosts_file(pod, ips)
    };
    let files = [
        ("hosts", "/etc/hosts", hosts),
        ("resolv.conf", "/etc/resolv.conf", resolv_conf(pod, &host_resolv)),
        ("hostname", "/etc/hostname", format!("{}\n", hostname(pod))),
    ];
    let mut binds = Vec::new();
    for (file, destination, content) in files {
        let path = dir.join(file);
        std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
        binds.push(BindMount {
            source: path.to_string_lossy().into_owned(),
            destination: destination.to_owned(),
            read_only: false,
        });
    }
    Ok(binds)
}

/// Adds the managed files a container does not mount something over.
pub fn bind_unless_mounted(binds: &mut Vec<BindMount>, etc: Vec<BindMount>) {
    for b in etc {
        if !binds.iter().any(|m| m.destination.trim_end_matches('/') == b.destination) {
            binds.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec}))
            .expect("pod")
    }

    #[test]
    fn hosts_name_the_pod_with_its_subdomain_and_add_host_aliases() {
        let p = pod(serde_json::json!({
            "containers": [], "subdomain": "web",
            "hostAliases": [{"ip": "10.9.9.9", "hostnames": ["db", "db.local"]}],
        }));
        let hosts = hosts_file(&p, &["10.1.2.3".parse().expect("ip")]);
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.contains("10.1.2.3\tweb-0.web.shop.svc.cluster.local\tweb-0\n"), "{hosts}");
        assert!(hosts.ends_with("# Entries added by HostAliases.\n10.9.9.9\tdb\tdb.local\n"), "{hosts}");
    }

    #[test]
    fn resolv_conf_is_the_nodes_with_dns_config_or_dns_config_alone_for_policy_none() {
        let host = "# generated\nnameserver 10.0.0.2\nsearch corp.example\noptions ndots:2 timeout:1\n";
        let p = pod(serde_json::json!({"containers": [], "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["extra.example"], "options": [{"name": "ndots", "value": "5"}, {"name": "rotate"}],
        }}));
        assert_eq!(
            resolv_conf(&p, host),
            "nameserver 10.0.0.2\nnameserver 1.1.1.1\nsearch corp.example extra.example\noptions timeout:1 ndots:5 rotate\n"
        );
        let none =
            pod(serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["9.9.9.9"]}}));
        assert_eq!(resolv_conf(&none, host), "nameserver 9.9.9.9\n");
    }

    #[test]
    fn a_volume_over_a_managed_file_wins() {
        let mut binds = vec![BindMount { source: "/x".into(), destination: "/etc/hosts".into(), read_only: true }];
        let etc = ["/etc/hosts", "/etc/resolv.conf"]
            .map(|d| BindMount { source: "/m".into(), destination: d.into(), read_only: false })
            .to_vec();
        bind_unless_mounted(&mut binds, etc);
        let dests: Vec<&str> = binds.iter().map(|b| b.destination.as_str()).collect();
        assert_eq!(dests, ["/etc/hosts", "/etc/resolv.conf"]);
        assert_eq!(binds[0].source, "/x");
    }
}
