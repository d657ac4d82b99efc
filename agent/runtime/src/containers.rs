//! Containers and their tasks: create from an image, start, wait, remove.

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest, KillRequest,
    ReadContentRequest, StartRequest, WaitRequest,
    container::Runtime as ContainerRuntime,
    containers_client::ContainersClient,
    content_client::ContentClient,
    snapshots::{MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, snapshots_client::SnapshotsClient},
    tasks_client::TasksClient,
};
use prost_types::Any;

use crate::archive::{ImageConfig, Manifest, chain_ids};
use crate::spec::{SPEC_TYPE_URL, Security, SpecInput, runtime_spec};
use crate::{Error, RUNC_RUNTIME, Runtime, SNAPSHOTTER};

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    pub id: String,
    pub image: String,
    /// The full command; empty means the image's entrypoint + cmd.
    pub args: Vec<String>,
    /// Added after the image's environment.
    pub env: Vec<String>,
    /// Network namespace file to join.
    pub netns: Option<PathBuf>,
    /// Where stdout and stderr go (a file, appended to).
    pub log_path: PathBuf,
    /// A FIFO the process's stdin is read from, if it has one.
    pub stdin: Option<PathBuf>,
    /// FIFOs for stdout and stderr (read by the caller) instead of
    /// `log_path`.
    pub output_fifos: Option<(PathBuf, PathBuf)>,
    pub labels: HashMap<String, String>,
    /// The container's hostname (a pod's containers share the pod's name);
    /// empty means the container id.
    pub hostname: String,
    /// Volumes bound into the container.
    pub binds: Vec<crate::spec::BindMount>,
    pub memory_limit: Option<i64>,
    pub cpu_limit_millis: Option<i64>,
    pub cpu_request_millis: Option<i64>,
    /// The process's directory; empty: the image's.
    pub working_dir: String,
    pub security: SecurityRequest,
    /// Run with a terminal (`tty: true`): the shim's pty carries stdin and
    /// stdout (which then holds stderr too).
    pub tty: bool,
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: u32,
}

/// A container's securityContext (over its pod's) as the pod gives it; the
/// user is resolved against the image's `User` when the container is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityRequest {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: bool,
    pub supplemental_groups: Vec<u32>,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub read_only_root: bool,
    pub allow_privilege_escalation: Option<bool>,
    pub privileged: bool,
}

impl SecurityRequest {
    /// The identity and privileges the process gets, with the image's `User`
    /// (`uid[:gid]`, `root` or empty); runAsNonRoot is checked as the
    /// kubelet checks it, with its messages.
    pub fn resolve(&self, image_user: &str, container: &str) -> Result<Security, Error> {
        let (user, group) = image_user.split_once(':').unwrap_or((image_user, ""));
        let image_uid = match user {
            "" | "root" => Some(0),
            u => u.parse::<u32>().ok(),
        };
        let uid = match (self.run_as_user, image_uid) {
            (Some(u), _) => u,
            (None, Some(u)) => u,
            (None, None) => {
                return Err(Error::Config(format!(
                    "container {container}: the image's user {user:?} is a name; give securityContext.runAsUser"
                )));
            }
        };
        if self.run_as_non_root {
            if self.run_as_user == Some(0) {
                return Err(Error::Config(format!(
                    "container's runAsUser breaks non-root policy (container: {container})"
                )));
            }
            if uid == 0 {
                return Err(Error::Config(format!(
                    "container has runAsNonRoot and image will run as root (container: {container})"
                )));
            }
        }
        let gid = self.run_as_group.or_else(|| group.parse().ok()).unwrap_or(0);
        Ok(Security {
            uid,
            gid,
            additional_gids: self.supplemental_groups.clone(),
            capabilities_add: self.capabilities_add.clone(),
            capabilities_drop: self.capabilities_drop.clone(),
            read_only_root: self.read_only_root,
            no_new_privileges: self.allow_privilege_escalation == Some(false) && !self.privileged,
            privileged: self.privileged,
        })
    }
}

impl Runtime {
    /// Creates the container record and its writable snapshot on top of the image.
    pub async fn create_container(&self, cfg: &ContainerConfig) -> Result<(), Error> {
        let target = self.image_target(&cfg.image).await?;
        let manifest: Manifest = self.read_json(&target.digest).await?;
        let config: ImageConfig = self.read_json(&manifest.config.digest).await?;
        let parent = chain_ids(&config.rootfs.diff_ids)
            .pop()
            .ok_or_else(|| Error::Image { image: cfg.image.clone(), reason: "the image has no layers".into() })?;

        let args = if cfg.args.is_empty() {
            let mut a = config.config.entrypoint.clone().unwrap_or_default();
            a.extend(config.config.cmd.clone().unwrap_or_default());
            a
        } else {
            cfg.args.clone()
        };
        if args.is_empty() {
            return Err(Error::Image {
                image: cfg.image.clone(),
                reason: "no command given and the image has none".into(),
            });
        }
        let security = cfg.security.resolve(&config.config.user, &cfg.id)?;
        let mut env = config.config.env.clone();
        env.extend(cfg.env.iter().cloned());
        let netns = cfg.netns.as_ref().map(|p| p.to_string_lossy().into_owned());
        let cgroups_path = format!("/waggle/{}", cfg.id);
        let spec = runtime_spec(&SpecInput {
            id: &cfg.id,
            args: &args,
            env: &env,
            cwd: if cfg.working_dir.is_empty() { &config.config.working_dir } else { &cfg.working_dir },
            hostname: if cfg.hostname.is_empty() { &cfg.id } else { &cfg.hostname },
            netns: netns.as_deref(),
            cgroups_path: &cgroups_path,
            binds: &cfg.binds,
            memory_limit: cfg.memory_limit,
            cpu_limit_millis: cfg.cpu_limit_millis,
            cpu_request_millis: cfg.cpu_request_millis,
            terminal: cfg.tty,
            security,
        });
        let spec = serde_json::to_vec(&spec).map_err(|source| Error::Spec { container: cfg.id.clone(), source })?;

        let container = Container {
            id: cfg.id.clone(),
            labels: cfg.labels.clone(),
            image: cfg.image.clone(),
            runtime: Some(ContainerRuntime { name: RUNC_RUNTIME.into(), options: self.runc_options() }),
            spec: Some(Any { type_url: SPEC_TYPE_URL.into(), value: spec }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: cfg.id.clone(),
            ..Default::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(self.request(CreateContainerRequest { container: Some(container) }))
            .await
            .map_err(Error::rpc("Containers.Create", &cfg.id))?;
        // The container record now refers to the snapshot key, which keeps the
        // snapshot from the garbage collector once it exists.
        SnapshotsClient::new(self.channel.clone())
            .prepare(self.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: cfg.id.clone(),
                parent,
                labels: HashMap::new(),
            }))
            .await
            .map_err(Error::rpc("Snapshots.Prepare", &cfg.id))?;
        Ok(())
    }

    /// Creates and starts the container's task; returns its pid.
    pub async fn start_container(&self, cfg: &ContainerConfig) -> Result<u32, Error> {
        let rootfs = SnapshotsClient::new(self.channel.clone())
            .mounts(self.request(MountsRequest { snapshotter: SNAPSHOTTER.into(), key: cfg.id.clone() }))
            .await
            .map_err(Error::rpc("Snapshots.Mounts", &cfg.id))?
            .into_inner()
            .mounts;
        // The runc shim appends both streams to a file given as a file:// URI,
        // or writes them to FIFOs given as plain paths.
        let (out, mut err) = match &cfg.output_fifos {
            Some((out, err)) => (out.to_string_lossy().into_owned(), err.to_string_lossy().into_owned()),
            None => (format!("file://{}", cfg.log_path.display()), format!("file://{}", cfg.log_path.display())),
        };
        if cfg.tty {
            // A terminal has one output; the shim copies it to stdout.
            err.clear();
        }
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(self.request(CreateTaskRequest {
                container_id: cfg.id.clone(),
                rootfs,
                stdin: cfg.stdin.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
                stdout: out,
                stderr: err,
                terminal: cfg.tty,
                ..Default::default()
            }))
            .await
            .map_err(Error::rpc("Tasks.Create", &cfg.id))?;
        let pid = tasks
            .start(self.request(StartRequest { container_id: cfg.id.clone(), exec_id: String::new() }))
            .await
            .map_err(Error::rpc("Tasks.Start", &cfg.id))?
            .into_inner()
            .pid;
        tracing::info!(container = %cfg.id, pid, "started container");
        Ok(pid)
    }

    /// Waits for the container's task to exit.
    pub async fn wait_container(&self, id: &str) -> Result<ExitStatus, Error> {
        let resp = TasksClient::new(self.channel.clone())
            .wait(self.request(WaitRequest { container_id: id.to_owned(), exec_id: String::new() }))
            .await
            .map_err(Error::rpc("Tasks.Wait", id))?
            .into_inner();
        Ok(ExitStatus { code: resp.exit_status })
    }

    /// Kills (SIGKILL) and removes the task, the container and its snapshot.
    /// Whatever is already gone counts as removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let killed = tasks
            .kill(self.request(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await
            .map_err(Error::rpc("Tasks.Kill", id));
        if killed.is_ok() {
            let _ = self.wait_container(id).await;
        }
        let deleted = tasks
            .delete(self.request(DeleteTaskRequest { container_id: id.to_owned() }))
            .await
            .map_err(Error::rpc("Tasks.Delete", id));
        ignore_not_found(deleted.map(drop))?;
        let deleted = ContainersClient::new(self.channel.clone())
            .delete(self.request(DeleteContainerRequest { id: id.to_owned() }))
            .await
            .map_err(Error::rpc("Containers.Delete", id));
        ignore_not_found(deleted.map(drop))?;
        let removed = SnapshotsClient::new(self.channel.clone())
            .remove(self.request(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: id.to_owned() }))
            .await
            .map_err(Error::rpc("Snapshots.Remove", id));
        ignore_not_found(removed.map(drop))
    }

    /// Reads a whole blob from the content store and parses it as JSON.
    pub(crate) async fn read_json<T: for<'de> serde::Deserialize<'de>>(&self, digest: &str) -> Result<T, Error> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.request(ReadContentRequest { digest: digest.to_owned(), offset: 0, size: 0 }))
            .await
            .map_err(Error::rpc("Content.Read", digest))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(Error::rpc("Content.Read", digest))? {
            bytes.extend_from_slice(&chunk.data);
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Image {
            image: digest.to_owned(),
            reason: format!("blob is not the expected JSON: {e}"),
        })
    }
}

/// The runc shim's options message (`containerd.runc.v1.Options`); only the
/// fields waggle sets are declared, with their field numbers from the shim's
/// proto.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(string, tag = "7")]
    root: String,
}

const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

impl Runtime {
    fn runc_options(&self) -> Option<Any> {
        let root = self.runc_root.as_ref()?;
        let msg = RuncOptions { root: root.to_string_lossy().into_owned() };
        Some(Any { type_url: RUNC_OPTIONS_TYPE_URL.into(), value: prost::Message::encode_to_vec(&msg) })
    }
}

fn ignore_not_found(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_comes_from_the_context_or_the_image_and_run_as_non_root_is_checked() {
        let none = SecurityRequest::default();
        assert_eq!(none.resolve("", "c").map(|s| (s.uid, s.gid)).ok(), Some((0, 0)));
        assert_eq!(none.resolve("1000:1001", "c").map(|s| (s.uid, s.gid)).ok(), Some((1000, 1001)));
        assert!(none.resolve("nginx", "c").is_err(), "a user name cannot be passed to runc");
        let named = SecurityRequest { run_as_user: Some(5), ..Default::default() };
        assert_eq!(named.resolve("nginx", "c").map(|s| s.uid).ok(), Some(5));

        let non_root = SecurityRequest { run_as_non_root: true, ..Default::default() };
        let msg = non_root.resolve("", "c").map(|_| ()).expect_err("root image").to_string();
        assert!(msg.contains("container has runAsNonRoot and image will run as root"), "{msg}");
        assert_eq!(non_root.resolve("1000", "c").map(|s| s.uid).ok(), Some(1000));
        let zero = SecurityRequest { run_as_non_root: true, run_as_user: Some(0), ..Default::default() };
        assert!(zero.resolve("1000", "c").is_err(), "runAsUser 0 breaks the policy");
        let no_escalation = SecurityRequest { allow_privilege_escalation: Some(false), ..Default::default() };
        assert!(no_escalation.resolve("", "c").map(|s| s.no_new_privileges).unwrap_or(false));
    }
}
