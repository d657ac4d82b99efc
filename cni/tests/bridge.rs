//! Privileged end-to-end tests of waggle-cni on a bridge, each in namespaces
//! of its own (see `common::Fixture`).

mod common;

use common::{Fixture, addresses, ip_of, ping, shape};
use serde_json::json;

#[test]
fn two_pods_on_one_bridge_reach_each_other_and_the_gateway() {
    let fx = Fixture::new();
    let conf = fx.v4_conf("1.1.0");
    let (a, b) = (fx.pod(), fx.pod());
    let ra = fx.run("ADD", "pod-a", Some(&a), &conf).expect_ok().json();
    let rb = fx.run("ADD", "pod-b", Some(&b), &conf).expect_ok().json();
    assert_ne!(ip_of(&ra, 0), ip_of(&rb, 0));
    assert!(ping(&a, &ip_of(&rb, 0)), "pod a cannot reach pod b");
    assert!(ping(&b, &ip_of(&ra, 0)), "pod b cannot reach pod a");
    assert!(ping(&a, "10.66.0.1"), "pod a cannot reach the gateway");
    let forward = fx.host.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).expect("sysctl");
    assert_eq!(String::from_utf8_lossy(&forward.stdout).trim(), "1", "forwarding is on where the bridge is");
    for (id, pod) in [("pod-a", &a), ("pod-b", &b)] {
        fx.run("DEL", id, Some(pod), &conf).expect_ok();
    }
}

#[test]
fn dual_stack_pods_get_one_address_per_family_and_reach_each_other_over_ipv6() {
    let fx = Fixture::new();
    let conf = fx.conf("1.1.0", json!([[{"subnet": "10.67.0.0/24"}], [{"subnet": "fd67::/64"}]]));
    let (a, b) = (fx.pod(), fx.pod());
    let ra = fx.run("ADD", "pod-a", Some(&a), &conf).expect_ok().json();
    let rb = fx.run("ADD", "pod-b", Some(&b), &conf).expect_ok().json();
    assert_eq!(ra["ips"].as_array().map(Vec::len), Some(2));
    assert_eq!(ra["ips"][1]["gateway"], "fd67::1");
    let routes = ra["routes"].as_array().expect("routes");
    assert!(routes.iter().any(|r| r["dst"] == "::/0"), "default IPv6 route in {ra}");
    let v6 = ip_of(&rb, 1);
    assert!(a.exec("/bin/busybox", &["ping", "-6", "-c1", "-W2", &v6]).is_ok(), "pod a cannot reach {v6}");
    let six = String::from_utf8_lossy(&a.ip(&["-6", "route"]).expect("routes").stdout).into_owned();
    assert!(six.contains("default via fd67::1"), "{six}");
}

#[test]
fn bridge_options_mtu_mac_hairpin_and_promisc_are_applied() {
    let fx = Fixture::new();
    let mut conf = fx.v4_conf("1.1.0");
    conf["mtu"] = json!(1400);
    conf["hairpinMode"] = json!(true);
    conf["promiscMode"] = json!(true);
    conf["mac"] = json!("02:00:00:aa:bb:cc");
    let pod = fx.pod();
    let result = fx.run("ADD", "pod-opt", Some(&pod), &conf).expect_ok().json();
    assert_eq!(result["interfaces"][2]["mac"], "02:00:00:aa:bb:cc");
    assert_eq!(result["interfaces"][2]["mtu"], 1400);
    let link = String::from_utf8_lossy(&pod.ip(&["-o", "link", "show", "eth0"]).expect("link").stdout).into_owned();
    assert!(link.contains("mtu 1400") && link.contains("02:00:00:aa:bb:cc"), "{link}");
    let host_end = result["interfaces"][1]["name"].as_str().expect("host veth");
    let details =
        String::from_utf8_lossy(&fx.host.ip(&["-d", "link", "show", host_end]).expect("link").stdout).into_owned();
    assert!(details.contains("hairpin on"), "{details}");
    let bridge =
        String::from_utf8_lossy(&fx.host.ip(&["link", "show", &fx.bridge]).expect("bridge").stdout).into_owned();
    assert!(bridge.contains("PROMISC"), "{bridge}");
}

#[test]
fn a_specific_address_is_honoured_from_cni_args_args_and_runtime_config() {
    let fx = Fixture::new();
    let mut env_conf = fx.v4_conf("1.1.0");
    let pod = fx.pod();
    let mut env = common::cni_env("ADD", "pod-env", Some(&pod.path()), "eth0");
    env.push(("CNI_ARGS", "IgnoreUnknown=1;IP=10.66.0.50".to_string()));
    let by_env = fx.exec_raw(common::PLUGIN, &env, env_conf.to_string().as_bytes()).expect_ok().json();
    assert_eq!(ip_of(&by_env, 0), "10.66.0.50");

    env_conf["args"] = json!({"cni": {"ips": ["10.66.0.51"]}});
    let pod2 = fx.pod();
    assert_eq!(ip_of(&fx.run("ADD", "pod-args", Some(&pod2), &env_conf).expect_ok().json(), 0), "10.66.0.51");

    let mut rc = fx.v4_conf("1.1.0");
    rc["runtimeConfig"] = json!({"ips": ["10.66.0.52/24"]});
    let pod3 = fx.pod();
    assert_eq!(ip_of(&fx.run("ADD", "pod-rc", Some(&pod3), &rc).expect_ok().json(), 0), "10.66.0.52");

    let pod4 = fx.pod();
    fx.run("ADD", "pod-dup", Some(&pod4), &rc).expect_code(104);
    assert!(pod4.ip(&["link", "show", "eth0"]).is_err(), "the failed ADD left no interface");
    assert_eq!(fx.address_files().len(), 3);
}

#[test]
fn check_succeeds_on_a_healthy_pod_and_fails_when_an_address_is_removed_by_hand() {
    let fx = Fixture::new();
    let conf = fx.v4_conf("1.1.0");
    let pod = fx.pod();
    let result = fx.run("ADD", "pod-chk", Some(&pod), &conf).expect_ok().json();
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    fx.run("CHECK", "pod-chk", Some(&pod), &check).expect_ok();

    let cidr = result["ips"][0]["address"].as_str().expect("address");
    pod.ip(&["addr", "del", cidr, "dev", "eth0"]).expect("removing the address");
    fx.run("CHECK", "pod-chk", Some(&pod), &check).expect_code(101);
}

#[test]
fn del_twice_the_second_time_without_netns_succeeds_and_frees_the_address_and_veth() {
    let fx = Fixture::new();
    let conf = fx.v4_conf("1.1.0");
    let pod = fx.pod();
    fx.run("ADD", "pod-del", Some(&pod), &conf).expect_ok();
    assert_eq!(fx.address_files().len(), 1);
    assert_eq!(fx.bridge_ports().len(), 1);

    fx.run("DEL", "pod-del", Some(&pod), &conf).expect_ok();
    fx.run("DEL", "pod-del", None, &conf).expect_ok();
    assert!(fx.address_files().is_empty(), "address files left: {:?}", fx.address_files());
    assert!(fx.bridge_ports().is_empty(), "ports left: {:?}", fx.bridge_ports());
    assert!(!addresses(&pod, "lo").is_empty(), "the pod namespace itself is untouched");
    assert!(pod.ip(&["link", "show", "eth0"]).is_err(), "eth0 is gone from the pod");
}

#[test]
fn add_replaces_a_host_veth_left_by_a_crashed_add_of_the_same_attachment() {
    let fx = Fixture::new();
    let conf = fx.v4_conf("1.1.0");
    let pod = fx.pod();
    // What a crash between creating the pair and answering leaves: the host
    // end under the attachment's derived name, its peer outside the pod.
    let host_end = waggle_cni::bridge::host_veth_name("pod-crash", "eth0");
    fx.host.ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "wgtcrashpeer"]).expect("leftover veth");
    let result = fx.run("ADD", "pod-crash", Some(&pod), &conf).expect_ok().json();
    assert!(addresses(&pod, "eth0").contains(&ip_of(&result, 0)), "eth0 has the result's address");
    assert!(fx.host.ip(&["link", "show", "wgtcrashpeer"]).is_err(), "the leftover pair is gone");
    assert_eq!(fx.bridge_ports().len(), 1, "ports: {:?}", fx.bridge_ports());
    fx.run("DEL", "pod-crash", Some(&pod), &conf).expect_ok();
    assert!(fx.bridge_ports().is_empty(), "ports left: {:?}", fx.bridge_ports());
}

#[test]
fn del_after_the_namespace_is_gone_succeeds_and_releases_everything() {
    let fx = Fixture::new();
    let conf = fx.v4_conf("1.0.0");
    let pod = fx.pod();
    let path = pod.path();
    fx.run("ADD", "pod-gone", Some(&pod), &conf).expect_ok();
    drop(pod);
    fx.exec(common::PLUGIN, "DEL", "pod-gone", Some(&path), "eth0", &conf).expect_ok();
    assert!(fx.address_files().is_empty());
    assert!(fx.bridge_ports().is_empty());
}

#[test]
fn gc_releases_addresses_and_veths_not_listed_in_valid_attachments() {
    let fx = Fixture::new();
    let conf = fx.v4_conf("1.1.0");
    let pods: Vec<_> = (0..3).map(|_| fx.pod()).collect();
    let mut ips = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        ips.push(ip_of(&fx.run("ADD", &format!("gc-{i}"), Some(pod), &conf).expect_ok().json(), 0));
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc-1", "ifname": "eth0"}]);
    let mut env = common::cni_env("GC", "", None, "");
    env.retain(|(k, _)| *k == "CNI_COMMAND" || *k == "CNI_PATH");
    fx.exec_raw(common::PLUGIN, &env, gc.to_string().as_bytes()).expect_ok();
    assert_eq!(fx.address_files(), vec![ips[1].clone()]);
    assert_eq!(fx.bridge_ports().len(), 1, "{:?}", fx.bridge_ports());
}

#[test]
fn status_reports_ready_and_then_not_ready_when_the_range_is_full() {
    let fx = Fixture::new();
    let conf = fx.conf("1.1.0", json!([[{"subnet": "10.68.0.0/30"}]]));
    let status_env: Vec<_> = common::cni_env("STATUS", "", None, "")
        .into_iter()
        .filter(|(k, _)| *k == "CNI_COMMAND" || *k == "CNI_PATH")
        .collect();
    fx.exec_raw(common::PLUGIN, &status_env, conf.to_string().as_bytes()).expect_ok();
    let pod = fx.pod();
    fx.run("ADD", "only", Some(&pod), &conf).expect_ok();
    fx.exec_raw(common::PLUGIN, &status_env, conf.to_string().as_bytes()).expect_code(51);
}

#[test]
fn an_exhausted_range_fails_with_code_100_and_leaves_nothing_behind() {
    let fx = Fixture::new();
    let conf = fx.conf("1.1.0", json!([[{"subnet": "10.69.0.0/30"}]]));
    let (a, b) = (fx.pod(), fx.pod());
    fx.run("ADD", "first", Some(&a), &conf).expect_ok();
    fx.run("ADD", "second", Some(&b), &conf).expect_code(100);
    assert_eq!(fx.address_files().len(), 1);
    assert_eq!(fx.bridge_ports().len(), 1);
    assert!(b.ip(&["link", "show", "eth0"]).is_err());
}

#[test]
fn results_come_in_the_requested_version_shape() {
    let fx = Fixture::new();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let pod = fx.pod();
        let result = fx.run("ADD", &format!("v{i}"), Some(&pod), &fx.v4_conf(version)).expect_ok().json();
        assert_eq!(result["cniVersion"], version);
        let tagged = result["ips"][0].get("version").is_some();
        assert_eq!(tagged, version.starts_with("0."), "{version}: {result}");
        fx.run("DEL", &format!("v{i}"), Some(&pod), &fx.v4_conf(version)).expect_ok();
    }
}

#[test]
fn the_result_has_the_same_shape_as_the_reference_bridge_with_host_local() {
    for version in ["0.4.0", "1.0.0"] {
        let ours_fx = Fixture::new();
        let ours_pod = ours_fx.pod();
        let conf = ours_fx.v4_conf(version);
        let ours = ours_fx.run("ADD", "shape", Some(&ours_pod), &conf).expect_ok().json();

        let ref_fx = Fixture::new();
        let ref_pod = ref_fx.pod();
        let mut reference_conf = ref_fx.v4_conf(version);
        reference_conf["type"] = json!("bridge");
        reference_conf["ipam"]["type"] = json!("host-local");
        let bridge = format!("{}/bridge", common::REFERENCE_DIR);
        let reference =
            ref_fx.exec(&bridge, "ADD", "shape", Some(&ref_pod.path()), "eth0", &reference_conf).expect_ok().json();
        assert_eq!(shape(&ours), shape(&reference), "version {version}\nours {ours}\nreference {reference}");
        ref_fx.exec(&bridge, "DEL", "shape", Some(&ref_pod.path()), "eth0", &reference_conf).expect_ok();
    }
}

#[test]
fn delegated_ipam_execs_the_reference_host_local_from_cni_path() {
    let fx = Fixture::new();
    let mut conf = fx.v4_conf("1.0.0");
    conf["ipam"] = json!({"type": "host-local", "subnet": "10.70.0.0/24", "dataDir": fx.data_dir.path()});
    let pod = fx.pod();
    let result = fx.run("ADD", "deleg", Some(&pod), &conf).expect_ok().json();
    assert_eq!(ip_of(&result, 0), "10.70.0.2");
    assert!(addresses(&pod, "eth0").contains("10.70.0.2/24"));
    assert_eq!(fx.address_files(), vec!["10.70.0.2".to_string()], "host-local wrote its file");
    fx.run("DEL", "deleg", Some(&pod), &conf).expect_ok();
    assert!(fx.address_files().is_empty());
}

#[test]
fn a_conflist_chain_of_waggle_cni_portmap_and_tuning_works_with_prev_result() {
    let fx = Fixture::new();
    let pod = fx.pod();
    let version = "1.0.0";
    let first = fx.v4_conf(version);
    let r1 = fx.run("ADD", "chain", Some(&pod), &first).expect_ok().json();

    let portmap = format!("{}/portmap", common::REFERENCE_DIR);
    let pm_conf = json!({
        "cniVersion": version, "name": fx.network, "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": r1,
    });
    let r2 = fx.exec(&portmap, "ADD", "chain", Some(&pod.path()), "eth0", &pm_conf).expect_ok().json();

    let tuning = format!("{}/tuning", common::REFERENCE_DIR);
    let tu_conf = json!({
        "cniVersion": version, "name": fx.network, "type": "tuning", "mtu": 1300,
        "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"},
        "prevResult": r2,
    });
    let r3 = fx.exec(&tuning, "ADD", "chain", Some(&pod.path()), "eth0", &tu_conf).expect_ok().json();
    assert_eq!(r3["ips"], r1["ips"], "the chain passes our addresses through");

    let link = String::from_utf8_lossy(&pod.ip(&["link", "show", "eth0"]).expect("link").stdout).into_owned();
    assert!(link.contains("mtu 1300"), "tuning applied: {link}");
    let nat = fx.host.exec("iptables", &["-t", "nat", "-S"]).expect("iptables");
    assert!(String::from_utf8_lossy(&nat.stdout).contains("18080"), "portmap installed its DNAT");

    let mut check = first.clone();
    check["prevResult"] = r3.clone();
    fx.run("CHECK", "chain", Some(&pod), &check).expect_ok();

    // libcni deletes in reverse order.
    let mut tu_del = tu_conf.clone();
    tu_del["prevResult"] = r3.clone();
    fx.exec(&tuning, "DEL", "chain", Some(&pod.path()), "eth0", &tu_del).expect_ok();
    let mut pm_del = pm_conf.clone();
    pm_del["prevResult"] = r3.clone();
    fx.exec(&portmap, "DEL", "chain", Some(&pod.path()), "eth0", &pm_del).expect_ok();
    fx.run("DEL", "chain", Some(&pod), &first).expect_ok();
    assert!(fx.address_files().is_empty());
}
