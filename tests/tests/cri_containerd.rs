//! A real runtime invokes waggle-cni: containerd's CRI plugin, with
//! waggle-cni as its only network, runs a pod sandbox created through the
//! Kubernetes CRI gRPC API (runtime.v1). The sandbox gets its address from
//! waggle-cni, answers from the bridge's side, and StopPodSandbox /
//! RemovePodSandbox give back its address file and its veth.
//!
//! Privileged: containerd runs inside a network namespace this test creates
//! (its bridge and host-side veths live there), with its own root, state,
//! socket, runc root and sandbox namespaces under a temp directory; all of it
//! is removed on drop, also when the test fails.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use ipnet::Ipv4Net;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxState,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
    VersionRequest,
};
use serde_json::json;
use tonic::transport::Channel;
use waggle_runtime::Runtime;
use waggle_tests::containerd::{CriOptions, Options};
use waggle_tests::{Containerd, NetNs, image, is_root, names, target_bin};

/// The pod range of the test's network; it exists only inside the test's namespaces.
const SUBNET: &str = "10.93.0.0/24";
/// The namespace the CRI plugin keeps its images and containers in.
const CRI_NAMESPACE: &str = "k8s.io";

/// The directories CRI reads and the IPAM state waggle-cni writes.
struct Network {
    name: String,
    bridge: String,
    bin_dir: PathBuf,
    conf_dir: PathBuf,
    ipam_dir: PathBuf,
}

impl Network {
    /// One directory holding waggle-cni and the reference `loopback` (CRI sets
    /// up the sandbox's `lo` through it), and a conflist naming waggle-cni.
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let net = Self {
            name: names::unique("wgtcri"),
            bridge: names::unique_ifname("wbc"),
            bin_dir: dir.join("cni-bin"),
            conf_dir: dir.join("cni-conf"),
            ipam_dir: dir.join("ipam"),
        };
        std::fs::create_dir_all(&net.bin_dir)?;
        std::fs::create_dir_all(&net.conf_dir)?;
        std::os::unix::fs::symlink(target_bin("waggle-cni")?, net.bin_dir.join("waggle-cni"))?;
        std::os::unix::fs::symlink("/usr/lib/cni/loopback", net.bin_dir.join("loopback"))?;
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": net.name,
            "plugins": [{
                "type": "waggle-cni", "bridge": net.bridge, "isGateway": true, "isDefaultGateway": true,
                "ipam": {"type": "waggle", "dataDir": net.ipam_dir, "ranges": [[{"subnet": SUBNET}]]},
            }],
        });
        std::fs::write(net.conf_dir.join("10-waggle.conflist"), serde_json::to_vec_pretty(&conflist)?)?;
        Ok(net)
    }

    /// Addresses waggle-cni holds, as host-local lays them out.
    fn reserved(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir.join(&self.name)) else { return Vec::new() };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect()
    }

    /// Links enslaved to the bridge in the test's namespace.
    fn bridge_ports(&self, host: &NetNs) -> anyhow::Result<String> {
        let out = host.ip(&["-o", "link", "show", "master", &self.bridge])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_cri_runs_a_pod_sandbox_on_waggle_cni_and_releases_it() -> anyhow::Result<()> {
    assert!(is_root(), "this test runs containerd and creates namespaces: run it as root");
    let host = NetNs::new("crih")?;
    let dir = tempfile::Builder::new().prefix("wgt-cri-").tempdir_in("/var/tmp")?;
    let net = Network::create(dir.path())?;
    let containerd = Containerd::start_with(&Options {
        cri: Some(CriOptions {
            sandbox_image: image::PAUSE_IMAGE.into(),
            cni_bin_dir: net.bin_dir.clone(),
            cni_conf_dir: net.conf_dir.clone(),
        }),
        netns: Some(host.path()),
    })?;

    // Nothing can be pulled here: the sandbox image is imported beforehand.
    let tarball = dir.path().join("pause.tar");
    image::build_pause(&tarball)?;
    Runtime::connect(containerd.socket(), CRI_NAMESPACE)
        .await?
        .import_archive(&tarball)
        .await
        .with_context(|| containerd.log())?;

    let channel = containerd_client::connect(containerd.socket()).await?;
    let mut cri = RuntimeServiceClient::new(channel.clone());
    let outcome = run_and_release_a_sandbox(&mut cri, channel, &host, &net).await;
    if outcome.is_err() {
        remove_every_sandbox(&mut cri).await;
    }
    outcome.with_context(|| format!("containerd log:\n{}", containerd.log()))
}

async fn run_and_release_a_sandbox(
    cri: &mut RuntimeServiceClient<Channel>,
    channel: Channel,
    host: &NetNs,
    net: &Network,
) -> anyhow::Result<()> {
    wait_until_ready(cri, channel).await?;

    let uid = names::unique("uid");
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        ..Default::default()
    };
    let id = cri
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;

    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false })
        .await
        .context("PodSandboxStatus")?
        .into_inner()
        .status
        .context("no status")?;
    anyhow::ensure!(status.state == PodSandboxState::SandboxReady as i32, "sandbox not ready: {status:?}");
    let ip: Ipv4Addr = status.network.context("no network status")?.ip.parse().context("sandbox IP")?;
    let subnet: Ipv4Net = SUBNET.parse()?;
    anyhow::ensure!(subnet.contains(&ip), "the sandbox's IP {ip} is not from waggle-cni's range {SUBNET}");
    anyhow::ensure!(ip != subnet.hosts().next().context("gateway")?, "the sandbox got the gateway address");
    anyhow::ensure!(net.reserved() == [ip.to_string()], "IPAM holds {:?}, expected [{ip}]", net.reserved());
    anyhow::ensure!(!net.bridge_ports(host)?.is_empty(), "the sandbox's veth is not on bridge {}", net.bridge);

    // The sandbox answers from the bridge's side (the gateway address lives there).
    let pinged = host.exec("/bin/busybox", &["ping", "-c1", "-W2", &ip.to_string()]);
    anyhow::ensure!(pinged.is_ok(), "the sandbox at {ip} does not answer a ping from the bridge: {pinged:?}");

    cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.context("StopPodSandbox")?;
    anyhow::ensure!(net.reserved().is_empty(), "addresses still reserved after StopPodSandbox: {:?}", net.reserved());
    let ports = net.bridge_ports(host)?;
    anyhow::ensure!(ports.is_empty(), "veth left on the bridge after StopPodSandbox: {ports}");
    anyhow::ensure!(host.exec("/bin/busybox", &["ping", "-c1", "-W1", &ip.to_string()]).is_err(), "{ip} still answers");

    cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.context("RemovePodSandbox")?;
    let left = cri.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await?.into_inner().items;
    anyhow::ensure!(left.is_empty(), "sandboxes left after RemovePodSandbox: {left:?}");
    Ok(())
}

/// The CRI service answers, its network (the CNI config) is ready, and the
/// imported sandbox image is in its image cache (filled from containerd's
/// image events).
async fn wait_until_ready(cri: &mut RuntimeServiceClient<Channel>, channel: Channel) -> anyhow::Result<()> {
    let mut images = ImageServiceClient::new(channel);
    let mut last = String::new();
    for _ in 0..300 {
        match ready(cri, &mut images).await {
            Ok(()) => return Ok(()),
            Err(err) => last = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the CRI plugin did not become ready within 30 s: {last}")
}

async fn ready(
    cri: &mut RuntimeServiceClient<Channel>,
    images: &mut ImageServiceClient<Channel>,
) -> anyhow::Result<()> {
    let version = cri.version(VersionRequest { version: "v1".into() }).await?.into_inner();
    anyhow::ensure!(version.runtime_api_version == "v1", "CRI API {}", version.runtime_api_version);
    let status = cri.status(StatusRequest { verbose: false }).await?.into_inner().status.context("no status")?;
    let network = status.conditions.iter().find(|c| c.r#type == "NetworkReady");
    anyhow::ensure!(network.is_some_and(|c| c.status), "network not ready: {:?}", status.conditions);
    let image = ImageSpec { image: image::PAUSE_IMAGE.into(), ..Default::default() };
    let found = images.image_status(ImageStatusRequest { image: Some(image), verbose: false }).await?.into_inner();
    anyhow::ensure!(found.image.is_some(), "CRI does not see {} yet", image::PAUSE_IMAGE);
    Ok(())
}

/// After a failure: stop and remove whatever sandbox the test left, so that
/// waggle-cni's DEL runs and containerd's shims and namespaces can go.
async fn remove_every_sandbox(cri: &mut RuntimeServiceClient<Channel>) {
    let Ok(list) = cri.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await else { return };
    for sandbox in list.into_inner().items {
        let _ = cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox.id.clone() }).await;
        let _ = cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sandbox.id }).await;
    }
}
