//! Shared fixture for the privileged tests: a test-owned "host" namespace in
//! which the plugin runs (so the bridge lives there, never in the machine's
//! root namespace), a unique bridge and network name, and a temp IPAM dir.

#![allow(dead_code, reason = "each test binary uses a different part of the fixture")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use waggle_tests::{NetNs, is_root, names};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_waggle-cni");
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// What one plugin invocation returned.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("stdout {:?} is not JSON: {err}", self.stdout))
    }

    /// Asserts failure with the spec's error object carrying `code`.
    pub fn expect_code(&self, code: u64) {
        assert!(!self.success, "expected failure with code {code}, got success: {}", self.stdout);
        let json = self.json();
        assert_eq!(json["code"], code, "error was {json}; stderr: {}", self.stderr);
        assert!(json["msg"].as_str().is_some_and(|m| !m.is_empty()), "no msg in {json}");
    }

    pub fn expect_ok(&self) -> &Self {
        assert!(self.success, "plugin failed: stdout {} stderr {}", self.stdout, self.stderr);
        self
    }
}

/// One test's world. Dropping it removes the namespaces (and with them the
/// bridge and every veth) and the IPAM directory.
#[derive(Debug)]
pub struct Fixture {
    pub host: NetNs,
    pub bridge: String,
    pub network: String,
    pub data_dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        assert!(is_root(), "these tests create network namespaces and must run as root");
        Self {
            host: NetNs::new("cnih").expect("host namespace"),
            bridge: names::unique_ifname("wbr"),
            network: names::unique("wgtnet"),
            data_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn pod(&self) -> NetNs {
        NetNs::new("cnip").expect("pod namespace")
    }

    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.path().join(&self.network)
    }

    /// A dual-stack-capable bridge config for waggle-cni; `ranges` as host-local spells them.
    pub fn conf(&self, version: &str, ranges: Value) -> Value {
        json!({
            "cniVersion": version,
            "name": self.network,
            "type": "waggle-cni",
            "bridge": self.bridge,
            "isDefaultGateway": true,
            "ipam": {"type": "waggle", "dataDir": self.data_dir.path(), "ranges": ranges}
        })
    }

    pub fn v4_conf(&self, version: &str) -> Value {
        self.conf(version, json!([[{"subnet": "10.66.0.0/24"}]]))
    }

    /// Runs `program` with the host side in the fixture's host namespace.
    pub fn exec(
        &self,
        program: &str,
        command: &str,
        id: &str,
        netns: Option<&Path>,
        ifname: &str,
        stdin: &Value,
    ) -> Outcome {
        self.exec_raw(program, &cni_env(command, id, netns, ifname), stdin.to_string().as_bytes())
    }

    pub fn run(&self, command: &str, id: &str, pod: Option<&NetNs>, stdin: &Value) -> Outcome {
        self.exec(PLUGIN, command, id, pod.map(|p| p.path()).as_deref(), "eth0", stdin)
    }

    pub fn exec_raw(&self, program: &str, env: &[(&str, String)], stdin: &[u8]) -> Outcome {
        use std::io::Write as _;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.host.name(), program]);
        for key in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"] {
            cmd.env_remove(key);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the plugin");
        child.stdin.take().expect("stdin").write_all(stdin).expect("writing stdin");
        let out = child.wait_with_output().expect("waiting for the plugin");
        Outcome {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Files in the network's IPAM directory that record an address.
    pub fn address_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.network_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect();
        out.sort();
        out
    }

    /// Names of the links in the host namespace, with their master if any.
    pub fn host_links(&self) -> Vec<String> {
        let out = self.host.ip(&["-o", "link", "show"]).expect("listing links");
        String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
    }

    /// Ports attached to the fixture's bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        self.host_links().into_iter().filter(|l| l.contains(&format!("master {}", self.bridge))).collect()
    }
}

pub fn cni_env(command: &str, id: &str, netns: Option<&Path>, ifname: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_IFNAME", ifname.to_string()),
        ("CNI_PATH", REFERENCE_DIR.to_string()),
    ];
    if let Some(netns) = netns {
        env.push(("CNI_NETNS", netns.display().to_string()));
    }
    env
}

/// `ip -n <ns> -o addr show dev <ifname>` as lines.
pub fn addresses(ns: &NetNs, ifname: &str) -> String {
    String::from_utf8_lossy(&ns.ip(&["-o", "addr", "show", "dev", ifname]).expect("ip addr").stdout).into_owned()
}

/// One ping through busybox inside `ns`; true when answered.
pub fn ping(ns: &NetNs, target: &str) -> bool {
    ns.exec("/bin/busybox", &["ping", "-c1", "-W1", target]).is_ok()
}

/// The address (without prefix) of `ips[i]` in a result.
pub fn ip_of(result: &Value, i: usize) -> String {
    let cidr = result["ips"][i]["address"].as_str().expect("address in result");
    cidr.split('/').next().expect("ip").to_string()
}

/// A JSON value's shape: same keys and nesting, leaves replaced by their type.
pub fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}
