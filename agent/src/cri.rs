//! The container runtime seam: what the pod logic needs from containerd,
//! as a trait with the containerd implementation and an in-memory fake.
//!
//! Containers carry labels naming their node, pod and container, so that a
//! restarted agent finds (re-adopts) what runs instead of starting it again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use thiserror::Error;
use waggle_runtime::{BindMount, ContainerConfig, Credentials, Runtime, TaskStatus};

pub const LABEL_NODE: &str = "io.waggle.node";
pub const LABEL_POD_UID: &str = "io.waggle.pod.uid";
pub const LABEL_POD_NAME: &str = "io.waggle.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.waggle.pod.namespace";
pub const LABEL_CONTAINER: &str = "io.waggle.container.name";
pub const LABEL_ATTEMPT: &str = "io.waggle.container.attempt";
pub const LABEL_INIT: &str = "io.waggle.container.init";
pub const LABEL_LOG: &str = "io.waggle.container.log";
pub const LABEL_STDIN: &str = "io.waggle.container.stdin";
pub const LABEL_STDIN_ONCE: &str = "io.waggle.container.stdin-once";
pub const LABEL_TTY: &str = "io.waggle.container.tty";
/// The digest of the image's manifest when the container was created.
pub const LABEL_IMAGE_DIGEST: &str = "io.waggle.image.digest";

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Containerd(#[from] waggle_runtime::Error),
    #[error("{0}")]
    Other(String),
}

/// A container the agent asks for.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub id: String,
    pub node: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub name: String,
    pub attempt: u32,
    pub init: bool,
    pub image: String,
    /// Full argv; empty means the image's entrypoint + cmd.
    pub args: Vec<String>,
    /// When only `args` are given, the image's entrypoint is kept.
    pub args_only: Vec<String>,
    pub env: Vec<String>,
    pub netns: PathBuf,
    pub log_path: PathBuf,
    /// `stdin: true`: the process reads a FIFO that attach writes to.
    pub stdin: bool,
    pub stdin_once: bool,
    /// `tty: true`: the process runs on a terminal.
    pub tty: bool,
    pub hostname: String,
    pub binds: Vec<BindMount>,
    pub memory_limit: Option<i64>,
    pub cpu_limit_millis: Option<i64>,
    pub cpu_request_millis: Option<i64>,
    /// `workingDir`; empty: the image's.
    pub working_dir: String,
    pub security: waggle_runtime::SecurityRequest,
}

/// Where a container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running {
        started_at: SystemTime,
    },
    /// `oom_killed`: the kernel's OOM killer ended it (memory limit reached).
    Exited {
        exit_code: u32,
        started_at: SystemTime,
        finished_at: SystemTime,
        oom_killed: bool,
    },
}

/// One container of a pod, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub name: String,
    pub attempt: u32,
    pub init: bool,
    pub image: String,
    /// `repository@digest` of the image the container was made from (what
    /// upstream reports as `imageID`); empty if unknown.
    pub image_id: String,
    pub log_path: PathBuf,
    /// The stdin FIFO of a container started with `stdin: true`.
    pub stdin: Option<PathBuf>,
    pub stdin_once: bool,
    /// Started with a terminal: its output is logged with partial lines.
    pub tty: bool,
    pub state: ContainerState,
}

/// What the pod logic needs from a container runtime.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug + 'static {
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError>;
    /// Pulls `image` from its registry; returns its size in bytes.
    async fn pull(&self, image: &str, credentials: Option<&Credentials>) -> Result<u64, RuntimeError>;
    /// Creates and starts; on a failed start the container is removed again.
    async fn run(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// This node's containers; of one pod when `pod_uid` is given.
    async fn list(&self, node: &str, pod_uid: Option<&str>) -> Result<Vec<ContainerRecord>, RuntimeError>;
    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;
    /// Returns when the container's main process has exited.
    async fn wait(&self, id: &str) -> Result<(), RuntimeError>;
    /// Kills what still runs and removes the container and its rootfs.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Runs `args` in the container; returns the exit code and output.
    async fn exec(&self, id: &str, args: &[String], timeout: Duration) -> Result<(u32, Vec<u8>), RuntimeError>;
    /// Makes sure the running container's output reaches its log (after an
    /// agent restart, the new agent takes over reading it).
    async fn ensure_logging(&self, _record: &ContainerRecord) {}
    /// Closes the stdin of the container's process (`stdinOnce` after the
    /// first attach); the shim keeps it open until told.
    async fn close_stdin(&self, _id: &str) {}
    /// Resizes the terminal of a container started with `tty: true`.
    async fn resize(&self, _id: &str, _width: u16, _height: u16) {}
}

/// containerd through `waggle-runtime`.
#[derive(Debug, Clone)]
pub struct Containerd {
    runtime: Runtime,
    /// Scratch files for exec output.
    scratch: PathBuf,
    /// Containers whose output is being copied to their logs.
    logging: Arc<Mutex<std::collections::HashSet<String>>>,
    /// One lock per image being pulled: pods that want the same image at
    /// once wait for one pull instead of each fetching it.
    pulls: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Containerd {
    pub fn new(runtime: Runtime, scratch: PathBuf) -> Self {
        Self { runtime, scratch, logging: Arc::default(), pulls: Arc::default() }
    }

    /// Opens the container's output FIFOs (read-write, so that neither side
    /// ever blocks on the other's absence); `None` if they are read already.
    fn open_output(
        &self,
        id: &str,
        log_path: &std::path::Path,
    ) -> Result<Option<(tokio::net::unix::pipe::Receiver, tokio::net::unix::pipe::Receiver)>, RuntimeError> {
        if !self.logging.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned()) {
            return Ok(None);
        }
        let (out, err) = crate::logs::fifos(log_path);
        let open = |p: &PathBuf| {
            tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(p)
                .map_err(|e| RuntimeError::Other(format!("opening the output FIFO {}: {e}", p.display())))
        };
        match open(&out).and_then(|o| Ok((o, open(&err)?))) {
            Ok(pair) => Ok(Some(pair)),
            Err(e) => {
                self.logging.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
                Err(e)
            }
        }
    }

    /// Copies the output into the log until the container's task exits.
    fn copy_output(
        &self,
        id: &str,
        (out, err): (tokio::net::unix::pipe::Receiver, tokio::net::unix::pipe::Receiver),
        log_path: &std::path::Path,
        tty: bool,
    ) {
        let (runtime, logging, id, log_path) =
            (self.runtime.clone(), self.logging.clone(), id.to_owned(), log_path.to_path_buf());
        tokio::spawn(async move {
            let exited = async {
                loop {
                    if runtime.wait_container(&id).await.is_ok() {
                        return;
                    }
                    match runtime.task_status(&id).await {
                        Ok(TaskStatus::Stopped { .. } | TaskStatus::Absent) => return,
                        _ => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            };
            // On a terminal a prompt has no newline: attach must see it anyway.
            let partial_after = tty.then_some(crate::logs::TTY_PARTIAL_AFTER);
            crate::logs::copy(out, err, log_path, exited, partial_after).await;
            logging.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }

    fn labels(spec: &ContainerSpec) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_NODE.to_owned(), spec.node.clone()),
            (LABEL_POD_UID.to_owned(), spec.pod_uid.clone()),
            (LABEL_POD_NAME.to_owned(), spec.pod_name.clone()),
            (LABEL_POD_NAMESPACE.to_owned(), spec.pod_namespace.clone()),
            (LABEL_CONTAINER.to_owned(), spec.name.clone()),
            (LABEL_ATTEMPT.to_owned(), spec.attempt.to_string()),
            (LABEL_INIT.to_owned(), spec.init.to_string()),
            (LABEL_LOG.to_owned(), spec.log_path.to_string_lossy().into_owned()),
            (
                LABEL_STDIN.to_owned(),
                Self::stdin_fifo(spec).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
            ),
            (LABEL_STDIN_ONCE.to_owned(), spec.stdin_once.to_string()),
            (LABEL_TTY.to_owned(), spec.tty.to_string()),
        ])
    }

    /// Beside the log: `<attempt>.stdin`.
    fn stdin_fifo(spec: &ContainerSpec) -> Option<PathBuf> {
        spec.stdin.then(|| spec.log_path.with_extension("stdin"))
    }
}

#[async_trait]
impl ContainerRuntime for Containerd {
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        Ok(self.runtime.has_image(image).await?)
    }

    async fn pull(&self, image: &str, credentials: Option<&Credentials>) -> Result<u64, RuntimeError> {
        let lock = self.pulls.lock().unwrap_or_else(|p| p.into_inner()).entry(image.to_owned()).or_default().clone();
        let result = {
            let _one_at_a_time = lock.clone().lock_owned().await;
            self.runtime.pull_image(image, credentials).await
        };
        // The last one out removes the entry (the map holds one reference).
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            pulls.remove(image);
        }
        Ok(result?.size)
    }

    async fn close_stdin(&self, id: &str) {
        self.runtime.close_exec_stdin(id, "").await;
    }

    async fn resize(&self, id: &str, width: u16, height: u16) {
        if let Err(e) = self.runtime.resize_pty(id, "", u32::from(width), u32::from(height)).await {
            tracing::debug!(container = %id, error = %e, "resizing the container's terminal failed");
        }
    }

    async fn ensure_logging(&self, record: &ContainerRecord) {
        let (out, _) = crate::logs::fifos(&record.log_path);
        if matches!(record.state, ContainerState::Running { .. }) && out.exists() {
            match self.open_output(&record.id, &record.log_path) {
                Ok(Some(output)) => self.copy_output(&record.id, output, &record.log_path, record.tty),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(container = %record.id, error = %e, "taking over the container's output failed")
                }
            }
        }
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let mut args = spec.args.clone();
        if args.is_empty() && !spec.args_only.is_empty() {
            let mut a = self.runtime.image_entrypoint(&spec.image).await?;
            a.extend(spec.args_only.iter().cloned());
            args = a;
        }
        let stdin = Self::stdin_fifo(spec);
        let (out, err) = crate::logs::fifos(&spec.log_path);
        for fifo in stdin.iter().chain([&out, &err]) {
            let _ = std::fs::remove_file(fifo);
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| RuntimeError::Other(format!("creating the FIFO {}: {e}", fifo.display())))?;
        }
        let mut labels = Self::labels(spec);
        let digest = self.runtime.image_target(&spec.image).await?.digest;
        labels.insert(LABEL_IMAGE_DIGEST.to_owned(), digest);
        let cfg = ContainerConfig {
            id: spec.id.clone(),
            image: spec.image.clone(),
            args,
            env: spec.env.clone(),
            netns: Some(spec.netns.clone()),
            log_path: spec.log_path.clone(),
            stdin,
            output_fifos: Some((out, err)),
            labels,
            hostname: spec.hostname.clone(),
            binds: spec.binds.clone(),
            memory_limit: spec.memory_limit,
            cpu_limit_millis: spec.cpu_limit_millis,
            cpu_request_millis: spec.cpu_request_millis,
            working_dir: spec.working_dir.clone(),
            security: spec.security.clone(),
            tty: spec.tty,
        };
        self.runtime.create_container(&cfg).await?;
        // The shim opens the FIFOs as the task is created: a reader first.
        let output = match self.open_output(&cfg.id, &spec.log_path) {
            Ok(o) => o,
            Err(e) => {
                let _ = self.runtime.remove_container(&cfg.id).await;
                return Err(e);
            }
        };
        if let Err(e) = self.runtime.start_container(&cfg).await {
            let _ = self.runtime.remove_container(&cfg.id).await;
            self.logging.lock().unwrap_or_else(|p| p.into_inner()).remove(&cfg.id);
            return Err(e.into());
        }
        if let Some(output) = output {
            self.copy_output(&cfg.id, output, &spec.log_path, spec.tty);
        }
        Ok(())
    }

    async fn list(&self, node: &str, pod_uid: Option<&str>) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let mut filter = vec![(LABEL_NODE, node)];
        if let Some(uid) = pod_uid {
            filter.push((LABEL_POD_UID, uid));
        }
        let infos = self.runtime.list_containers(&filter).await?;
        let mut out = Vec::with_capacity(infos.len());
        for info in infos {
            let label = |k: &str| info.labels.get(k).cloned().unwrap_or_default();
            let started_at = info.created_at.unwrap_or(SystemTime::UNIX_EPOCH);
            let state = match self.runtime.task_status(&info.id).await? {
                TaskStatus::Running | TaskStatus::Unknown => ContainerState::Running { started_at },
                TaskStatus::Created | TaskStatus::Absent => ContainerState::Created,
                TaskStatus::Stopped { exit_code, exited_at } => ContainerState::Exited {
                    exit_code,
                    started_at,
                    finished_at: exited_at.unwrap_or_else(SystemTime::now),
                    oom_killed: exit_code == 137 && oom_killed(&info.id),
                },
            };
            out.push(ContainerRecord {
                id: info.id.clone(),
                pod_uid: label(LABEL_POD_UID),
                pod_name: label(LABEL_POD_NAME),
                pod_namespace: label(LABEL_POD_NAMESPACE),
                name: label(LABEL_CONTAINER),
                attempt: label(LABEL_ATTEMPT).parse().unwrap_or(0),
                init: label(LABEL_INIT) == "true",
                image_id: image_id(&info.image, &label(LABEL_IMAGE_DIGEST)),
                image: info.image,
                log_path: PathBuf::from(label(LABEL_LOG)),
                stdin: Some(label(LABEL_STDIN)).filter(|p| !p.is_empty()).map(PathBuf::from),
                stdin_once: label(LABEL_STDIN_ONCE) == "true",
                tty: label(LABEL_TTY) == "true",
                state,
            });
        }
        Ok(out)
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        Ok(self.runtime.signal_container(id, signal as u32).await?)
    }

    async fn wait(&self, id: &str) -> Result<(), RuntimeError> {
        self.runtime.wait_task(id).await?;
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        Ok(self.runtime.remove_container(id).await?)
    }

    async fn exec(&self, id: &str, args: &[String], timeout: Duration) -> Result<(u32, Vec<u8>), RuntimeError> {
        let exec_id = format!("probe-{}", unique());
        let out = self.scratch.join(format!("{exec_id}.out"));
        let result = self.runtime.exec_in_container(id, &exec_id, args, &out, timeout, 10 * 1024).await;
        let _ = std::fs::remove_file(&out);
        let outcome = result?;
        Ok((outcome.exit_code, outcome.output))
    }
}

/// `repository@digest` for an image name (`host/repo:tag`) and a digest.
fn image_id(image: &str, digest: &str) -> String {
    if digest.is_empty() {
        return String::new();
    }
    let name = image.split('@').next().unwrap_or(image);
    let repo = match name.rsplit_once(':') {
        // A colon after the last slash is a tag's; before it, a port's.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    format!("{repo}@{digest}")
}

/// Whether the OOM killer struck in the container's memory cgroup (cgroup v1,
/// cgroupfs driver, the path waggle-runtime gives runc). The cgroup stays
/// until the task is deleted, which the agent does only when it removes the
/// container.
fn oom_killed(id: &str) -> bool {
    let path = format!("/sys/fs/cgroup/memory/waggle/{id}/memory.oom_control");
    std::fs::read_to_string(path).ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

fn unique() -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{nanos:x}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// An in-memory runtime for unit tests: containers "run" until signalled,
/// or exit at once with `exit_code_for(name)`.
#[derive(Debug, Default, Clone)]
pub struct FakeRuntime {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    images: Vec<String>,
    /// Images a pull finds (and then makes present), with their size.
    registry: HashMap<String, u64>,
    pulls: Vec<String>,
    containers: Vec<(ContainerSpec, ContainerState)>,
    /// Containers with these names exit at once with this code.
    exits: HashMap<String, u32>,
    exec_code: u32,
    pub started: Vec<String>,
}

impl FakeRuntime {
    pub fn with_image(self, image: &str) -> Self {
        self.lock().images.push(image.to_owned());
        self
    }

    /// A pull of `image` succeeds (and makes it present).
    pub fn with_registry_image(self, image: &str) -> Self {
        self.lock().registry.insert(image.to_owned(), 1000);
        self
    }

    /// Every image pulled (or tried), in order.
    pub fn pulls(&self) -> Vec<String> {
        self.lock().pulls.clone()
    }

    /// Containers named `name` exit immediately with `code`.
    pub fn exits(self, name: &str, code: u32) -> Self {
        self.lock().exits.insert(name.to_owned(), code);
        self
    }

    pub fn set_exec_code(&self, code: u32) {
        self.lock().exec_code = code;
    }

    /// Ids of every container started, in order.
    pub fn started(&self) -> Vec<String> {
        self.lock().started.clone()
    }

    /// Ids of containers that exist now.
    pub fn existing(&self) -> Vec<String> {
        self.lock().containers.iter().map(|(s, _)| s.id.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        Ok(self.lock().images.iter().any(|i| i == image))
    }

    async fn pull(&self, image: &str, _credentials: Option<&Credentials>) -> Result<u64, RuntimeError> {
        let mut s = self.lock();
        s.pulls.push(image.to_owned());
        let size =
            *s.registry.get(image).ok_or_else(|| RuntimeError::Other(format!("{image}: not found in the registry")))?;
        if !s.images.iter().any(|i| i == image) {
            s.images.push(image.to_owned());
        }
        Ok(size)
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        if !s.images.contains(&spec.image) {
            return Err(RuntimeError::Other(format!("image {} not found", spec.image)));
        }
        if s.containers.iter().any(|(c, _)| c.id == spec.id) {
            return Err(RuntimeError::Other(format!("container {} already exists", spec.id)));
        }
        let now = SystemTime::now();
        let state = match s.exits.get(&spec.name) {
            Some(code) => {
                ContainerState::Exited { exit_code: *code, started_at: now, finished_at: now, oom_killed: false }
            }
            None => ContainerState::Running { started_at: now },
        };
        s.started.push(spec.id.clone());
        s.containers.push((spec.clone(), state));
        Ok(())
    }

    async fn list(&self, node: &str, pod_uid: Option<&str>) -> Result<Vec<ContainerRecord>, RuntimeError> {
        Ok(self
            .lock()
            .containers
            .iter()
            .filter(|(c, _)| c.node == node && pod_uid.is_none_or(|u| u == c.pod_uid))
            .map(|(c, state)| ContainerRecord {
                id: c.id.clone(),
                pod_uid: c.pod_uid.clone(),
                pod_name: c.pod_name.clone(),
                pod_namespace: c.pod_namespace.clone(),
                name: c.name.clone(),
                attempt: c.attempt,
                init: c.init,
                image: c.image.clone(),
                image_id: String::new(),
                log_path: c.log_path.clone(),
                stdin: c.stdin.then(|| c.log_path.with_extension("stdin")),
                stdin_once: c.stdin_once,
                tty: c.tty,
                state: *state,
            })
            .collect())
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        for (c, state) in s.containers.iter_mut() {
            if c.id == id
                && let ContainerState::Running { started_at } = *state
            {
                let code = 128 + signal as u32;
                *state = ContainerState::Exited {
                    exit_code: code,
                    started_at,
                    finished_at: SystemTime::now(),
                    oom_killed: false,
                };
            }
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<(), RuntimeError> {
        loop {
            let running =
                self.lock().containers.iter().any(|(c, s)| c.id == id && matches!(s, ContainerState::Running { .. }));
            if !running {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.lock().containers.retain(|(c, _)| c.id != id);
        Ok(())
    }

    async fn exec(&self, _id: &str, _args: &[String], _timeout: Duration) -> Result<(u32, Vec<u8>), RuntimeError> {
        Ok((self.lock().exec_code, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_id_is_the_repository_at_the_digest() {
        assert_eq!(image_id("docker.io/library/busybox:1.36", "sha256:ab"), "docker.io/library/busybox@sha256:ab");
        assert_eq!(image_id("127.0.0.1:5000/app:v1", "sha256:ab"), "127.0.0.1:5000/app@sha256:ab");
        assert_eq!(image_id("127.0.0.1:5000/app@sha256:00", "sha256:ab"), "127.0.0.1:5000/app@sha256:ab");
        assert_eq!(image_id("127.0.0.1:5000/app", "sha256:ab"), "127.0.0.1:5000/app@sha256:ab");
        assert_eq!(image_id("busybox", ""), "");
    }
}
