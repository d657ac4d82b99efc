//! A private OCI registry for pull tests: Debian's `docker-registry`
//! (distribution 2.8) on 127.0.0.1 (or a given address) with a free port and its own storage
//! directory, filled with `skopeo copy` from the OCI archives the `image`
//! module builds. The process is killed and its directory removed on drop,
//! also when a test fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Debian's docker-registry binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    ip: std::net::IpAddr,
    port: u16,
    child: Option<Child>,
    /// Basic-auth user and password the registry requires, if any.
    credentials: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry and waits until it answers `/v2/`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Starts a registry listening on `ip` (an address of this namespace).
    pub fn start_on(ip: std::net::IpAddr) -> anyhow::Result<Self> {
        Self::start_with(None, ip)
    }

    /// Starts a registry that wants HTTP basic auth as `user`.
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(Some((user.to_owned(), password.to_owned())), std::net::Ipv4Addr::LOCALHOST.into())
    }

    fn start_with(credentials: Option<(String, String)>, ip: std::net::IpAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(Path::new(REGISTRY_BIN).exists(), "{REGISTRY_BIN} is missing: apt-get install docker-registry");
        let dir = tempfile::Builder::new().prefix("wgt-registry-").tempdir_in("/var/tmp")?;
        let port = std::net::TcpListener::bind((ip, 0))?.local_addr()?.port();
        let addr = std::net::SocketAddr::new(ip, port);
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = &credentials {
            // distribution's htpasswd auth takes bcrypt hashes only.
            let hash = bcrypt::hash(password, 4)?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: waggle-test\n    path: {}\n", htpasswd.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning docker-registry")?;
        let mut registry = Self { dir, ip, port, child: Some(child), credentials };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("docker-registry exited ({status}):\n{}", self.log());
            }
            let out = self
                .curl()
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"])
                .arg(format!("http://{}/v2/", self.host()))
                .output()?;
            if out.stdout == b"200" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("docker-registry did not answer within 20 s:\n{}", self.log())
    }

    /// curl with the registry's credentials, if it has any.
    fn curl(&self) -> Command {
        let mut cmd = Command::new("curl");
        if let Some((user, password)) = &self.credentials {
            cmd.arg("-u").arg(format!("{user}:{password}"));
        }
        cmd
    }

    /// `<ip>:<port>`: the registry part of image names.
    pub fn host(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the image tagged `tag` in an OCI archive to `repo:target_tag`
    /// (skopeo compresses its layers with gzip on the way, as `docker push`
    /// does).
    pub fn push_oci_archive(&self, archive: &Path, tag: &str, repo: &str, target_tag: &str) -> anyhow::Result<()> {
        let mut skopeo = Command::new("skopeo");
        skopeo.args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.credentials {
            skopeo.arg(format!("--dest-creds={user}:{password}"));
        }
        let out = skopeo
            .arg(format!("oci-archive:{}:{tag}", archive.display()))
            .arg(format!("docker://{}/{repo}:{target_tag}", self.host()))
            // skopeo's scratch files go to our directory, removed with it.
            .env("TMPDIR", self.dir.path())
            .output()
            .context("running skopeo (apt-get install skopeo)")?;
        anyhow::ensure!(
            out.status.success(),
            "skopeo copy to {repo}:{target_tag} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The digest the registry gives `repo:reference` when asked for
    /// `media_type`.
    pub fn manifest_digest(&self, repo: &str, reference: &str, media_type: &str) -> anyhow::Result<String> {
        let out = self
            .curl()
            .args(["-sS", "-I", "--max-time", "5", "-H"])
            .arg(format!("Accept: {media_type}"))
            .arg(format!("http://{}/v2/{repo}/manifests/{reference}", self.host()))
            .output()?;
        let head = String::from_utf8_lossy(&out.stdout);
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest").then(|| v.trim().to_owned())
            })
            .with_context(|| format!("no digest for {repo}:{reference}: {head}"))
    }

    /// Stores a manifest (or an index) as `repo:reference`.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> anyhow::Result<()> {
        let file = self.dir.path().join(format!("manifest-{reference}.json"));
        std::fs::write(&file, body)?;
        let out = self
            .curl()
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", "PUT", "-H"])
            .arg(format!("Content-Type: {media_type}"))
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("http://{}/v2/{repo}/manifests/{reference}", self.host()))
            .output()?;
        let code = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(code == "201", "PUT manifest {repo}:{reference}: HTTP {code}\n{}", self.log());
        Ok(())
    }

    /// Kills the registry (its address then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
