//! The runtime chain end to end: a private containerd, the busybox OCI image
//! built from Debian's busybox-static, imported and run through
//! containerd-client inside a network namespace this test created.
//!
//! Privileged: CI runs as root. containerd, the namespace and the container
//! are removed on drop or in the cleanup path, also when the test fails.

use std::time::Duration;

use anyhow::Context as _;
use waggle_runtime::{ContainerConfig, Runtime};
use waggle_tests::{Containerd, NetNs, VethPair, image, is_root, names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_busybox_container_inside_a_network_namespace_the_test_created() -> anyhow::Result<()> {
    assert!(is_root(), "this test runs containerd and creates namespaces: run it as root");
    let ns = NetNs::new("ctr")?;
    let peer = NetNs::new("peer")?;
    let _veth = VethPair::new(&ns, "10.202.3.4/24", &peer, "10.202.3.5/24")?;

    let containerd = Containerd::start()?;
    let work = tempfile::tempdir()?;
    let tarball = work.path().join("busybox.tar");
    let built = image::build_busybox(&tarball)?;

    let runtime = Runtime::connect(containerd.socket(), &names::unique("wgt"))
        .await?
        .with_runc_root(containerd.dir().join("runc"));
    let imported = runtime.import_archive(&tarball).await.with_context(|| containerd.log())?;
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, built.name);
    assert_eq!(imported[0].manifest_digest, built.manifest_digest);
    // A second import of the same archive changes nothing and does not fail.
    assert_eq!(runtime.import_archive(&tarball).await?, imported);

    let cfg = ContainerConfig {
        id: names::unique("wgt-c"),
        image: built.name.clone(),
        args: ["sh", "-c", "ip -o -4 addr show; echo hello from $WHO"].map(String::from).to_vec(),
        env: vec!["WHO=waggle".into()],
        netns: Some(ns.path()),
        log_path: work.path().join("out.log"),
        ..Default::default()
    };
    let outcome = run_to_completion(&runtime, &cfg).await;
    let cleanup = runtime.remove_container(&cfg.id).await;
    let code = outcome.with_context(|| containerd.log())?;
    cleanup?;
    assert!(
        containerd.dir().join("runc").read_dir()?.next().is_some(),
        "runc kept its state under the test's directory, not in /run/containerd/runc"
    );

    let output = std::fs::read_to_string(&cfg.log_path)?;
    assert_eq!(code, 0, "container output:\n{output}");
    assert!(output.contains("hello from waggle"), "container output:\n{output}");
    assert!(output.contains("10.202.3.4/24"), "the container sees the test's namespace:\n{output}");
    Ok(())
}

async fn run_to_completion(runtime: &Runtime, cfg: &ContainerConfig) -> anyhow::Result<u32> {
    runtime.create_container(cfg).await?;
    let pid = runtime.start_container(cfg).await?;
    anyhow::ensure!(pid > 0, "task started without a pid");
    let status = tokio::time::timeout(Duration::from_secs(60), runtime.wait_container(&cfg.id))
        .await
        .context("the container did not exit within 60 s")??;
    Ok(status.code)
}
