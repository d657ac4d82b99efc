//! Invoking CNI plugins as a runtime does (CNI spec 1.1, "network
//! configuration lists"): ADD runs the plugins in order, each given the
//! previous result; DEL runs them in reverse; CHECK gives each the cached result.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::NetworkError;

/// The conflist the agent writes for its node: one bridge, addresses from the
/// node's pod CIDR, IPAM state under `ipam_dir`. No masquerade: waggle's
/// dataplane is eBPF, never iptables.
pub fn conflist_for(network: &str, bridge: &str, pod_cidr: &ipnet::IpNet, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": network,
        "plugins": [{
            "type": "waggle-cni",
            "bridge": bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipMasq": false,
            "ipam": {"type": "waggle", "dataDir": ipam_dir, "ranges": [[{"subnet": pod_cidr.to_string()}]]},
        }],
    })
}

/// One network configuration list and where its plugins are.
#[derive(Clone, Debug)]
pub struct CniInvoker {
    pub conflist: Value,
    pub bin_dir: PathBuf,
    /// The namespace plugins run in (the node's host network), if not the agent's.
    pub host_netns: Option<PathBuf>,
}

/// What identifies one attachment.
#[derive(Clone, Debug)]
pub struct Attachment<'a> {
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// `K=V;K=V` (CNI_ARGS).
    pub args: String,
}

impl CniInvoker {
    /// Loads the first `.conflist` (by name) in `conf_dir`, as CRI runtimes do.
    pub fn load(conf_dir: &Path, bin_dir: &Path, host_netns: Option<PathBuf>) -> Result<Self, NetworkError> {
        let io = |what: String| move |source| NetworkError::Io { what, source };
        let mut names: Vec<PathBuf> = std::fs::read_dir(conf_dir)
            .map_err(io(format!("reading {}", conf_dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
            .collect();
        names.sort();
        let first =
            names.first().ok_or_else(|| NetworkError::Config(format!("no .conflist in {}", conf_dir.display())))?;
        let bytes = std::fs::read(first).map_err(io(format!("reading {}", first.display())))?;
        let conflist: Value = serde_json::from_slice(&bytes)
            .map_err(|e| NetworkError::Config(format!("{} is not JSON: {e}", first.display())))?;
        if conflist["plugins"].as_array().is_none_or(|p| p.is_empty()) {
            return Err(NetworkError::Config(format!("{} has no plugins", first.display())));
        }
        Ok(Self { conflist, bin_dir: bin_dir.to_path_buf(), host_netns })
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"].as_array().cloned().unwrap_or_default()
    }

    fn plugin_conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = self.conflist["cniVersion"].clone();
        conf["name"] = self.conflist["name"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    /// ADD through every plugin; the last result is the attachment's result.
    /// A failure undoes the plugins already run (DEL), as the spec asks.
    pub async fn add(&self, att: &Attachment<'_>) -> Result<Value, NetworkError> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let conf = self.plugin_conf(&plugin, prev.as_ref());
            match self.exec("ADD", &plugin, &conf, att).await {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    let _ = self.del(att, prev.as_ref()).await;
                    return Err(e);
                }
            }
        }
        prev.ok_or_else(|| NetworkError::Config("the conflist has no plugins".into()))
    }

    /// DEL through every plugin in reverse order, each given the cached result.
    pub async fn del(&self, att: &Attachment<'_>, cached: Option<&Value>) -> Result<(), NetworkError> {
        let mut first_err = None;
        for plugin in self.plugins().iter().rev() {
            let conf = self.plugin_conf(plugin, cached);
            if let Err(e) = self.exec("DEL", plugin, &conf, att).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK through every plugin, each given the cached result.
    pub async fn check(&self, att: &Attachment<'_>, cached: &Value) -> Result<(), NetworkError> {
        for plugin in self.plugins() {
            let conf = self.plugin_conf(&plugin, Some(cached));
            self.exec("CHECK", &plugin, &conf, att).await?;
        }
        Ok(())
    }

    async fn exec(
        &self,
        command: &'static str,
        plugin: &Value,
        conf: &Value,
        att: &Attachment<'_>,
    ) -> Result<Value, NetworkError> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
        if kind.is_empty() || kind.contains('/') {
            return Err(NetworkError::Config(format!("plugin type {kind:?} is not a file name")));
        }
        let program = self.bin_dir.join(&kind);
        let mut cmd = Command::new(&program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", att.container_id)
            .env("CNI_IFNAME", att.ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env("CNI_ARGS", &att.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(netns) = att.netns {
            cmd.env("CNI_NETNS", netns);
        }
        if let Some(host) = &self.host_netns {
            let file = std::fs::File::open(host)
                .map_err(|source| NetworkError::Io { what: format!("opening {}", host.display()), source })?;
            // SAFETY: between fork and exec only setns(2), which is
            // async-signal-safe, runs; `file` outlives the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    use std::os::fd::AsRawFd as _;
                    if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let stdin = serde_json::to_vec(conf).map_err(|e| NetworkError::Config(e.to_string()))?;
        let container = att.container_id.to_owned();
        let out = tokio::task::spawn_blocking(move || -> std::io::Result<std::process::Output> {
            let mut child = cmd.spawn()?;
            if let Some(mut input) = child.stdin.take() {
                input.write_all(&stdin)?;
            }
            child.wait_with_output()
        })
        .await
        .map_err(|e| NetworkError::Config(format!("the CNI exec task failed: {e}")))?
        .map_err(|source| NetworkError::Io { what: format!("running {}", program.display()), source })?;
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            return Err(NetworkError::Plugin {
                command,
                plugin: kind,
                container,
                code: stdout["code"].as_u64().unwrap_or(999),
                msg: stdout["msg"].as_str().map(str::to_owned).unwrap_or_else(|| {
                    format!("exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())
                }),
                details: stdout["details"].as_str().map(|d| format!(" ({d})")).unwrap_or_default(),
            });
        }
        tracing::debug!(command, plugin = %kind, container = %container, "CNI plugin succeeded");
        Ok(stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_conflist_names_the_bridge_and_the_pod_cidr() {
        let cidr: ipnet::IpNet = "10.244.1.0/24".parse().expect("cidr");
        let c = conflist_for("waggle", "wgbr0", &cidr, Path::new("/var/lib/x"));
        assert_eq!(c["plugins"][0]["bridge"], "wgbr0");
        assert_eq!(c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert_eq!(c["plugins"][0]["ipMasq"], false);
    }

    #[test]
    fn each_plugin_gets_the_list_name_version_and_previous_result() {
        let inv = CniInvoker {
            conflist: json!({"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "a"}]}),
            bin_dir: PathBuf::from("/x"),
            host_netns: None,
        };
        let prev = json!({"ips": []});
        let conf = inv.plugin_conf(&json!({"type": "a"}), Some(&prev));
        assert_eq!(conf, json!({"type": "a", "cniVersion": "1.1.0", "name": "n", "prevResult": {"ips": []}}));
    }
}
