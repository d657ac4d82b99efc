//! The real [`PodNetwork`]: a netns per pod under the node's netns directory,
//! attached through CNI; the attachment (netns path and CNI result) is kept in
//! `<state-dir>/<uid>.json`, so DEL after an agent restart gets the same
//! prevResult and a restarted agent finds its sandboxes again.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cni::{Attachment, CniInvoker};
use super::{NetworkError, PodNetwork, SandboxId, SandboxNet, create_netns, delete_netns};

const IFNAME: &str = "eth0";

#[derive(Debug, Serialize, Deserialize)]
struct SavedSandbox {
    uid: String,
    namespace: String,
    name: String,
    netns: PathBuf,
    result: Value,
}

#[derive(Debug)]
pub struct CniNetwork {
    cni: CniInvoker,
    netns_dir: PathBuf,
    state_dir: PathBuf,
    /// Netns file names start with this (unique per node).
    prefix: String,
}

impl CniNetwork {
    pub fn new(cni: CniInvoker, netns_dir: PathBuf, state_dir: PathBuf, prefix: &str) -> Self {
        Self { cni, netns_dir, state_dir, prefix: prefix.to_owned() }
    }

    fn state_file(&self, uid: &str) -> PathBuf {
        self.state_dir.join(format!("{uid}.json"))
    }

    fn load(&self, uid: &str) -> Result<Option<SavedSandbox>, NetworkError> {
        let path = self.state_file(uid);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NetworkError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NetworkError::Io { what: format!("reading {}", path.display()), source }),
        }
    }

    fn args(id: &SandboxId) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            id.namespace, id.name, id.uid, id.uid
        )
    }
}

fn ips_of(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NetworkError> {
    let io = |what: String| move |source| NetworkError::Io { what, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming {}", tmp.display())))
}

#[async_trait]
impl PodNetwork for CniNetwork {
    async fn setup(&self, id: &SandboxId) -> Result<SandboxNet, NetworkError> {
        if let Some(saved) = self.load(&id.uid)? {
            return Ok(SandboxNet { ips: ips_of(&saved.result), netns: saved.netns });
        }
        let netns = self.netns_dir.join(format!("{}-{}", self.prefix, id.uid));
        create_netns(&netns)?;
        let att = Attachment { container_id: &id.uid, netns: Some(&netns), ifname: IFNAME, args: Self::args(id) };
        let result = match self.cni.add(&att).await {
            Ok(r) => r,
            Err(e) => {
                let _ = delete_netns(&netns);
                return Err(e);
            }
        };
        let saved = SavedSandbox {
            uid: id.uid.clone(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            netns: netns.clone(),
            result,
        };
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| NetworkError::Config(e.to_string()))?;
        if let Err(e) = write_atomic(&self.state_file(&id.uid), &bytes) {
            let _ = self.cni.del(&att, Some(&saved.result)).await;
            let _ = delete_netns(&netns);
            return Err(e);
        }
        let ips = ips_of(&saved.result);
        tracing::info!(pod = %format!("{}/{}", id.namespace, id.name), ips = ?ips, netns = %netns.display(), "sandbox network ready");
        Ok(SandboxNet { netns, ips })
    }

    async fn get(&self, uid: &str) -> Result<Option<SandboxNet>, NetworkError> {
        Ok(self.load(uid)?.map(|s| SandboxNet { ips: ips_of(&s.result), netns: s.netns }))
    }

    async fn teardown(&self, uid: &str) -> Result<(), NetworkError> {
        let Some(saved) = self.load(uid)? else { return Ok(()) };
        let id = SandboxId { uid: saved.uid.clone(), namespace: saved.namespace.clone(), name: saved.name.clone() };
        let netns_present = saved.netns.exists();
        let att = Attachment {
            container_id: &saved.uid,
            netns: netns_present.then_some(saved.netns.as_path()),
            ifname: IFNAME,
            args: Self::args(&id),
        };
        self.cni.del(&att, Some(&saved.result)).await?;
        delete_netns(&saved.netns)?;
        let path = self.state_file(uid);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NetworkError::Io { what: format!("removing {}", path.display()), source }),
        }
        tracing::info!(pod = %format!("{}/{}", saved.namespace, saved.name), "sandbox network released");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, NetworkError> {
        let entries = match std::fs::read_dir(&self.state_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NetworkError::Io { what: format!("reading {}", self.state_dir.display()), source });
            }
        };
        Ok(entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned)).collect())
    }
}
