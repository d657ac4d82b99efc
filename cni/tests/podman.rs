//! A real container runtime invokes waggle-cni: podman 4 (CNI backend, as
//! Debian ships it) runs a container on a waggle-cni network, inside a host
//! namespace this test creates; the container gets its address from
//! waggle-cni, and `--rm` gives it back (DEL).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use waggle_tests::{NetNs, image, is_root, names};

const PLUGIN: &str = env!("CARGO_BIN_EXE_waggle-cni");

struct Podman<'a> {
    dir: &'a Path,
    host: &'a NetNs,
}

impl Podman<'_> {
    /// podman with this test's storage and configuration, run with only the
    /// network namespace entered (`ip netns exec` would remount /sys and hide
    /// the cgroup mounts runc needs).
    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.host.path().display()))
            .arg("podman")
            .args([
                "--root",
                &self.dir.join("root").to_string_lossy(),
                "--runroot",
                &self.dir.join("run").to_string_lossy(),
            ])
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()?;
        Ok(out)
    }

    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        anyhow::ensure!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Containers are --rm; this removes images and storage mounts.
        let _ = self.run(&["system", "reset", "--force"]);
    }
}

#[test]
fn podman_runs_a_container_on_a_waggle_cni_network_and_releases_its_address() -> anyhow::Result<()> {
    assert!(is_root(), "this test runs podman and creates namespaces: run it as root");
    let dir = tempfile::Builder::new().prefix("wgt-podman-").tempdir_in("/var/tmp")?;
    let host = NetNs::new("pmh")?;
    let network = names::unique("wgtpm");
    let bridge = names::unique_ifname("wbp");
    let plugin_dir = Path::new(PLUGIN).parent().expect("plugin dir");
    let net_dir = dir.path().join("net");
    let ipam_dir = dir.path().join("ipam");
    std::fs::create_dir_all(&net_dir)?;
    std::fs::write(
        dir.path().join("containers.conf"),
        format!(
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n",
            plugin_dir.display(),
            net_dir.display()
        ),
    )?;
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "waggle-cni", "bridge": bridge, "isGateway": true,
            "ipam": {"type": "waggle", "dataDir": ipam_dir, "ranges": [[{"subnet": "10.76.0.0/24"}]]},
        }],
    });
    std::fs::write(net_dir.join(format!("{network}.conflist")), serde_json::to_vec(&conflist)?)?;
    let tarball = dir.path().join("busybox.tar");
    let built = image::build_busybox(&tarball)?;

    let podman = Podman { dir: dir.path(), host: &host };
    podman.ok(&["load", "-i", &tarball.to_string_lossy()])?;
    // Podman 4.3 wants limits it may set here (see ENVIRONMENT.md).
    let out = podman.ok(&[
        "run",
        "--rm",
        "--network",
        &network,
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        &built.name,
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ])?;
    anyhow::ensure!(out.contains("inet 10.76.0."), "the container's address comes from waggle-cni: {out}");
    let bridges = host.ip(&["-o", "link", "show", &bridge])?;
    anyhow::ensure!(bridges.status.success(), "the bridge lives in the test's host namespace");
    // --rm ran DEL: no address file left, no veth left on the bridge.
    let leftover: Vec<String> = std::fs::read_dir(ipam_dir.join(&network))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    anyhow::ensure!(leftover.is_empty(), "addresses still reserved after --rm: {leftover:?}");
    let ports = String::from_utf8_lossy(&host.ip(&["-o", "link", "show", "master", &bridge])?.stdout).into_owned();
    anyhow::ensure!(ports.trim().is_empty(), "no veth left on the bridge: {ports}");
    Ok(())
}
