//! The Python `kubernetes` client (from PyPI, installed by `cargo xtask
//! setup` into /var/tmp/waggle-venv) against waggle's API server.

mod support;

use support::TestServer;

const VENV_PYTHON: &str = "/var/tmp/waggle-venv/bin/python";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_creates_lists_watches_patches_and_deletes() -> anyhow::Result<()> {
    anyhow::ensure!(std::path::Path::new(VENV_PYTHON).exists(), "{VENV_PYTHON} is missing: run `cargo xtask setup`");
    let server = TestServer::start().await?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("client_flow.py");
    let out = tokio::process::Command::new(VENV_PYTHON)
        .arg(&script)
        .arg(&server.kubeconfig)
        .arg("python-flow")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "python client flow failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(stdout.contains("watched") && stdout.contains("deployment created and scaled"), "{stdout}");
    Ok(())
}
