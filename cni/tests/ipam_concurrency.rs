//! The file store under contention: 200 allocations at once on one network
//! never share an address, and the on-disk format is host-local's.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use waggle_cni::ipam::range::{RangeConf, RangeSet};
use waggle_cni::ipam::{self, FileStore, IpamStore as _, Owner};

fn set(subnet: &str) -> Vec<RangeSet> {
    vec![
        RangeSet::new(&[RangeConf {
            subnet: subnet.parse().expect("subnet"),
            range_start: None,
            range_end: None,
            gateway: None,
        }])
        .expect("range"),
    ]
}

#[test]
fn two_hundred_concurrent_allocations_never_hand_out_the_same_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let network = dir.path().join("net");
    let sets = Arc::new(set("10.71.0.0/23"));
    let barrier = Arc::new(Barrier::new(200));
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let (network, sets, barrier) = (network.clone(), sets.clone(), barrier.clone());
            std::thread::spawn(move || -> IpAddr {
                barrier.wait();
                // Each thread opens and locks on its own, as separate plugin processes do.
                let mut store = FileStore::open_locked(&network).expect("locks");
                let got =
                    ipam::allocate(&mut store, &sets, &Owner::new(&format!("c{i}"), "eth0"), &[]).expect("allocates");
                got[0].address.addr()
            })
        })
        .collect();
    let ips: Vec<IpAddr> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let unique: HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), 200, "duplicates handed out");
    let store = FileStore::open_locked(&network).expect("locks");
    assert_eq!(store.list().expect("list").len(), 200);
}

#[test]
fn two_hundred_concurrent_plugin_processes_never_hand_out_the_same_address() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    // Real plugin processes racing on ADD: one pod namespace, one interface
    // name per process, all on one bridge in a test-owned host namespace.
    let host = waggle_tests::NetNs::new("cnic").expect("namespace");
    let pod = waggle_tests::NetNs::new("cnicp").expect("namespace");
    let bridge = waggle_tests::names::unique_ifname("wbr");
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "race", "type": "waggle-cni", "bridge": bridge,
        "ipam": {"type": "waggle", "dataDir": dir.path(), "ranges": [[{"subnet": "10.72.0.0/23"}]]}
    })
    .to_string();
    let children: Vec<_> = (0..200)
        .map(|i| {
            let mut child = Command::new("ip")
                .args(["netns", "exec", host.name(), env!("CARGO_BIN_EXE_waggle-cni")])
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", format!("race{i}"))
                .env("CNI_NETNS", pod.path())
                .env("CNI_IFNAME", format!("e{i}"))
                .env("CNI_PATH", "/usr/lib/cni")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            child.stdin.take().expect("stdin").write_all(conf.as_bytes()).expect("stdin");
            child
        })
        .collect();
    let mut ips = HashSet::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert!(ips.insert(json["ips"][0]["address"].as_str().expect("address").to_string()), "duplicate {json}");
    }
    assert_eq!(ips.len(), 200);
}

#[test]
fn the_file_store_writes_host_local_files_and_reads_host_locals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let network = dir.path().join("net");
    let sets = set("10.73.0.0/24");
    {
        let mut store = FileStore::open_locked(&network).expect("locks");
        ipam::allocate(&mut store, &sets, &Owner::new("abc", "eth0"), &[]).expect("allocates");
    }
    assert_eq!(std::fs::read_to_string(network.join("10.73.0.2")).expect("ip file"), "abc\r\neth0");
    assert_eq!(std::fs::read_to_string(network.join("last_reserved_ip.0")).expect("last"), "10.73.0.2");
    assert!(network.join("lock").exists());

    // The reference host-local continues after our allocation in the same directory.
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "host-local",
        "ipam": {"type": "host-local", "subnet": "10.73.0.0/24", "dataDir": dir.path()}});
    let mut child = std::process::Command::new("/usr/lib/cni/host-local")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "def")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("host-local");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), conf.to_string().as_bytes()).expect("stdin");
    let out = child.wait_with_output().expect("wait");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["ips"][0]["address"], "10.73.0.3/24");

    let mut store = FileStore::open_locked(&network).expect("locks");
    let freed = ipam::release_owner(&mut store, &Owner::new("def", "eth0")).expect("release");
    assert_eq!(freed, vec!["10.73.0.3".parse::<IpAddr>().expect("ip")], "we read host-local's file");
}
