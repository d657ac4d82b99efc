//! Bad input gets the spec's error code, and leaves no address file, veth or
//! bridge port behind.

mod common;

use common::{Fixture, PLUGIN, cni_env};
use serde_json::json;

fn assert_nothing_left(fx: &Fixture) {
    assert!(fx.address_files().is_empty(), "address files left: {:?}", fx.address_files());
    assert!(fx.bridge_ports().is_empty(), "bridge ports left: {:?}", fx.bridge_ports());
    let veths: Vec<_> = fx.host_links().into_iter().filter(|l| l.contains(": wv")).collect();
    assert!(veths.is_empty(), "veths left: {veths:?}");
}

#[test]
fn malformed_json_is_rejected_with_code_6() {
    let fx = Fixture::new();
    let pod = fx.pod();
    let out = fx.exec_raw(PLUGIN, &cni_env("ADD", "bad", Some(&pod.path()), "eth0"), b"{\"cniVersion\": ");
    out.expect_code(6);
    assert_nothing_left(&fx);
}

#[test]
fn each_missing_environment_variable_is_rejected_with_code_4() {
    let fx = Fixture::new();
    let pod = fx.pod();
    let conf = fx.v4_conf("1.1.0");
    for missing in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
        let mut env = cni_env("ADD", "env", Some(&pod.path()), "eth0");
        env.retain(|(k, _)| *k != missing);
        fx.exec_raw(PLUGIN, &env, conf.to_string().as_bytes()).expect_code(4);
    }
    assert_nothing_left(&fx);
}

#[test]
fn an_unknown_cni_version_is_rejected_with_code_1() {
    let fx = Fixture::new();
    let pod = fx.pod();
    let conf = fx.v4_conf("0.2.0");
    fx.run("ADD", "ver", Some(&pod), &conf).expect_code(1);
    fx.run("ADD", "ver", Some(&pod), &fx.v4_conf("1.2.0")).expect_code(1);
    assert_nothing_left(&fx);
}

#[test]
fn an_interface_that_already_exists_in_the_netns_is_refused_without_side_effects() {
    let fx = Fixture::new();
    let pod = fx.pod();
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"]).expect("pre-existing eth0");
    fx.run("ADD", "exists", Some(&pod), &fx.v4_conf("1.1.0")).expect_code(103);
    assert_nothing_left(&fx);
    assert!(pod.ip(&["link", "show", "eth0peer"]).is_ok(), "the pod's own interfaces are untouched");
}

#[test]
fn a_netns_path_that_does_not_exist_is_unknown_container_code_3() {
    let fx = Fixture::new();
    let conf = fx.v4_conf("1.1.0");
    let path = std::path::PathBuf::from(format!("/var/run/netns/{}", waggle_tests::names::unique("wgtnone")));
    fx.exec(PLUGIN, "ADD", "nons", Some(&path), "eth0", &conf).expect_code(3);
    assert_nothing_left(&fx);
}

#[test]
fn invalid_network_configuration_is_rejected_with_code_7() {
    let fx = Fixture::new();
    let pod = fx.pod();
    let mut no_ipam = fx.v4_conf("1.1.0");
    no_ipam.as_object_mut().expect("object").remove("ipam");
    fx.run("ADD", "cfg", Some(&pod), &no_ipam).expect_code(7);
    let bad_subnet = fx.conf("1.1.0", json!([[{"subnet": "10.66.0.5/24"}]]));
    fx.run("ADD", "cfg", Some(&pod), &bad_subnet).expect_code(7);
    assert_nothing_left(&fx);
}

#[test]
fn a_failure_after_allocation_undoes_the_address_and_the_veth() {
    let fx = Fixture::new();
    // A non-bridge link squatting on the bridge name makes ADD fail after IPAM.
    fx.host.ip(&["link", "add", &fx.bridge, "type", "veth", "peer", "name", "squatpeer"]).expect("squatter");
    let pod = fx.pod();
    fx.run("ADD", "undo", Some(&pod), &fx.v4_conf("1.1.0")).expect_code(7);
    assert_nothing_left(&fx);
    assert!(pod.ip(&["link", "show", "eth0"]).is_err());
}

#[test]
fn errors_go_to_stdout_as_json_and_logs_never_do() {
    let fx = Fixture::new();
    let pod = fx.pod();
    let out = fx.run("ADD", "log", Some(&pod), &fx.v4_conf("9.9.9"));
    out.expect_code(1);
    assert_eq!(out.stdout.trim().lines().count(), 1, "stdout holds only the error object: {}", out.stdout);
}

#[test]
fn version_lists_every_supported_version() {
    let fx = Fixture::new();
    let out = fx.exec_raw(PLUGIN, &[("CNI_COMMAND", "VERSION".to_string())], br#"{"cniVersion":"1.0.0"}"#);
    let json = out.expect_ok().json();
    assert_eq!(json["cniVersion"], "1.0.0");
    assert_eq!(json["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
}
