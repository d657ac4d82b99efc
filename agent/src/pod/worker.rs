//! One worker per pod (keyed by uid): a loop that reads the pod from the
//! cache, looks at the runtime, decides, acts and writes the status. Events
//! only wake it; it never runs twice at once for a pod.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use tokio::sync::Notify;
use tracing::{Instrument as _, debug, info, info_span, warn};
use waggle_runtime::BindMount;

use super::decide::{Action, Context, decide};
use super::env::ConfigSource;
use super::images::{PullBackoff, PullPolicy};
use super::status::{StatusInput, build};
use super::{ProbeView, Waiting, attempts, lifecycle, pod_key, probe, volumes};
use crate::cri::{ContainerRecord, ContainerRuntime, ContainerSpec, ContainerState};
use crate::network::{PodNetwork, SandboxId, SandboxNet};

/// Writes the worker makes to the API (a seam, so the worker runs on fakes).
#[async_trait]
pub trait PodApi: Send + Sync {
    async fn write_status(&self, namespace: &str, name: &str, status: &PodStatus) -> Result<(), String>;
    /// Deletes the pod with grace 0 once its containers are gone (uid precondition).
    async fn finish_deletion(&self, namespace: &str, name: &str, uid: &str) -> Result<(), String>;
    /// Records a core/v1 Event about the pod (what `kubectl describe` shows).
    async fn event(&self, _pod: &PodKey, _node: &str, _kind: &str, _reason: &str, _message: &str) {}
}

#[async_trait]
impl PodApi for kube::Client {
    async fn write_status(&self, namespace: &str, name: &str, status: &PodStatus) -> Result<(), String> {
        let api = kube::Api::<Pod>::namespaced(self.clone(), namespace);
        let patch = serde_json::json!({"status": status});
        api.patch_status(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn finish_deletion(&self, namespace: &str, name: &str, uid: &str) -> Result<(), String> {
        let api = kube::Api::<Pod>::namespaced(self.clone(), namespace);
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_owned()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn event(&self, pod: &PodKey, node: &str, kind: &str, reason: &str, message: &str) {
        let now = super::status::time(SystemTime::now());
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let ev = k8s_openapi::api::core::v1::Event {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{}.{nanos:x}", pod.name)),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(kind.to_owned()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kubelet".into()),
                host: Some(node.to_owned()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.to_owned()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let api = kube::Api::<k8s_openapi::api::core::v1::Event>::namespaced(self.clone(), &pod.namespace);
        if let Err(e) = api.create(&kube::api::PostParams::default(), &ev).await {
            debug!(error = %e, "recording an event failed");
        }
    }
}

/// The pod as the cache holds it now.
pub type Lookup = Arc<dyn Fn(&str, &str) -> Option<Arc<Pod>> + Send + Sync>;

/// What every worker shares.
pub struct Shared {
    pub node: String,
    pub host_ip: String,
    pub pods_dir: PathBuf,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<dyn PodNetwork>,
    pub api: Arc<dyn PodApi>,
    pub configs: Arc<dyn ConfigSource>,
    pub lookup: Lookup,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub resync: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("node", &self.node).finish_non_exhaustive()
    }
}

/// Identifies the pod a worker serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

pub struct Worker {
    key: PodKey,
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    probes: Arc<Mutex<ProbeView>>,
    probe_tasks: HashMap<String, Vec<tokio::task::JoinHandle<()>>>,
    waiters: HashSet<String>,
    killing: HashSet<String>,
    errors: HashMap<String, Waiting>,
    last_written: Option<serde_json::Value>,
    /// Events already recorded (one per occurrence, not per sync).
    reported: HashSet<String>,
    /// Failed image pulls and their back-off.
    pull_backoff: PullBackoff,
    /// Termination messages of exited containers, by container id.
    messages: HashMap<String, String>,
}

impl Worker {
    /// Records an event in the background, once per `once` key.
    fn event(&mut self, once: Option<String>, kind: &'static str, reason: &'static str, message: String) {
        if let Some(k) = once
            && !self.reported.insert(k)
        {
            return;
        }
        let (api, key, node) = (self.shared.api.clone(), self.key.clone(), self.shared.node.clone());
        tokio::spawn(async move { api.event(&key, &node, kind, reason, &message).await });
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("key", &self.key).finish_non_exhaustive()
    }
}

enum Next {
    Done,
    After(Duration),
}

impl Worker {
    pub fn new(key: PodKey, shared: Arc<Shared>, wake: Arc<Notify>) -> Self {
        Self {
            key,
            shared,
            wake,
            probes: Arc::default(),
            probe_tasks: HashMap::new(),
            messages: HashMap::new(),
            waiters: HashSet::new(),
            killing: HashSet::new(),
            errors: HashMap::new(),
            last_written: None,
            reported: HashSet::new(),
            pull_backoff: PullBackoff::default(),
        }
    }

    /// Runs until the pod is gone and everything it had is released.
    pub async fn run(mut self) {
        let span = info_span!("pod", pod = %format!("{}/{}", self.key.namespace, self.key.name), uid = %self.key.uid);
        async {
            loop {
                let pod = (self.shared.lookup)(&self.key.namespace, &self.key.name)
                    .filter(|p| p.metadata.uid.as_deref() == Some(self.key.uid.as_str()));
                let next = match pod.as_deref() {
                    Some(p) if p.metadata.deletion_timestamp.is_none() => self.sync(p).await,
                    other => self.terminate(other).await,
                };
                let wait = match next {
                    Ok(Next::Done) => break,
                    Ok(Next::After(d)) => d,
                    Err(e) => {
                        warn!(error = %e, "pod sync failed; retrying");
                        Duration::from_secs(1)
                    }
                };
                if !wait.is_zero() {
                    let _ = tokio::time::timeout(wait, self.wake.notified()).await;
                }
            }
            for (_, tasks) in self.probe_tasks.drain() {
                tasks.iter().for_each(tokio::task::JoinHandle::abort);
            }
            info!("pod worker done");
        }
        .instrument(span)
        .await
    }

    /// The pod's network as it is now: the node's for hostNetwork pods.
    async fn sandbox(&self, pod: &Pod) -> Result<Option<SandboxNet>, crate::Error> {
        match host_network(pod, &self.shared.host_ip) {
            Some(host) => Ok(Some(host)),
            None => Ok(self.shared.network.get(&self.key.uid).await?),
        }
    }

    fn pod_dir(&self) -> PathBuf {
        self.shared.pods_dir.join(&self.key.uid)
    }

    async fn sync(&mut self, pod: &Pod) -> Result<Next, crate::Error> {
        let s = self.shared.clone();
        let mut records = s.runtime.list(&s.node, Some(&self.key.uid)).await?;
        // This worker creates and starts in one step, so a container that was
        // created but never started was left by an agent that died in between.
        for r in records.iter().filter(|r| r.state == ContainerState::Created) {
            info!(container = %r.name, "removing a container that was created but never started");
            s.runtime.remove(&r.id).await?;
        }
        records.retain(|r| r.state != ContainerState::Created);
        let mut sandbox = self.sandbox(pod).await?;
        let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let decision = decide(
            pod,
            Context {
                records: &records,
                sandbox_ready: sandbox.is_some(),
                probes: &probes,
                now: SystemTime::now(),
                backoff_base: s.backoff_base,
                backoff_max: s.backoff_max,
            },
        );
        for (name, w) in &decision.waiting {
            let attempt = attempts(&records, name, false).current.map_or(0, |r| r.attempt);
            self.event(
                Some(format!("backoff-{name}-{attempt}")),
                "Warning",
                "BackOff",
                format!("Back-off restarting failed container {name} in pod {}: {}", self.key.name, w.message),
            );
        }
        let mut progressed = false;
        for action in &decision.actions {
            debug!(?action, "acting");
            match action {
                Action::SetupSandbox => {
                    let id = SandboxId {
                        uid: self.key.uid.clone(),
                        namespace: self.key.namespace.clone(),
                        name: self.key.name.clone(),
                    };
                    match s.network.setup(&id).await {
                        Ok(net) => {
                            sandbox = Some(net);
                            progressed = true;
                            self.errors.remove("");
                        }
                        Err(e) => {
                            warn!(error = %e, "setting up the pod's network failed");
                            self.event(
                                Some(format!("sandbox-{e}")),
                                "Warning",
                                "FailedCreatePodSandBox",
                                format!("Failed to create pod sandbox: {e}"),
                            );
                            self.errors.insert(
                                String::new(),
                                Waiting { reason: "FailedCreatePodSandBox".into(), message: e.to_string() },
                            );
                        }
                    }
                }
                Action::Start { name, init, attempt } => {
                    if let Some(net) = &sandbox
                        && self.start(pod, name, *init, *attempt, net).await
                    {
                        progressed = true;
                    }
                }
                Action::Kill { id, name } => {
                    if self.killing.insert(id.clone()) {
                        info!(container = %name, "killing the container: its liveness probe failed");
                        self.event(
                            None,
                            "Normal",
                            "Killing",
                            format!("Container {name} failed liveness probe, will be restarted"),
                        );
                        self.spawn_stop(id.clone(), pod, container_of(pod, name));
                    }
                }
                Action::Finish => {
                    progressed |= self.finish(&records, pod).await?;
                    sandbox = self.sandbox(pod).await?;
                }
            }
        }
        if progressed {
            records = s.runtime.list(&s.node, Some(&self.key.uid)).await?;
        }
        self.tend(pod, &records, sandbox.as_ref());
        self.read_termination_messages(pod, &records);
        self.collect_old_attempts(&records).await;

        let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut waiting = self.errors.clone();
        waiting.extend(decision.waiting.clone());
        let ips = sandbox.as_ref().map(|n| n.ips.clone()).unwrap_or_default();
        let status = build(&StatusInput {
            pod,
            records: &records,
            pod_ips: &ips,
            sandbox_ready: sandbox.is_some(),
            host_ip: &s.host_ip,
            probes: &probes,
            waiting: &waiting,
            messages: &self.messages,
            now: SystemTime::now(),
        });
        self.write_status(pod, &status).await;
        if progressed {
            return Ok(Next::After(Duration::ZERO));
        }
        let wake_after = match (decision.wake_after, self.pull_backoff.next_retry(Instant::now())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = wake_after.map_or(s.resync, |w| w.min(s.resync) + Duration::from_millis(20));
        Ok(Next::After(wait))
    }

    async fn write_status(&mut self, pod: &Pod, status: &PodStatus) {
        let new = serde_json::to_value(status).ok();
        let current = pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        if new == current || new == self.last_written {
            return;
        }
        match self.shared.api.write_status(&self.key.namespace, &self.key.name, status).await {
            Ok(()) => {
                debug!(phase = ?status.phase, "wrote pod status");
                self.last_written = new;
            }
            Err(e) => warn!(error = %e, "writing the pod status failed"),
        }
    }

    /// Starts one container; a failure is remembered as the reason it waits.
    async fn start(&mut self, pod: &Pod, name: &str, init: bool, attempt: u32, net: &SandboxNet) -> bool {
        let spec = pod.spec.as_ref();
        let list = if init { spec.and_then(|s| s.init_containers.clone()) } else { spec.map(|s| s.containers.clone()) };
        let Some(c) = list.into_iter().flatten().find(|c| c.name == name) else { return false };
        let spec = match self.ensure_image(pod, &c).await {
            Ok(image) => self.container_spec(pod, &c, image, init, attempt, net).await,
            Err(w) => Err(w),
        };
        match spec {
            Ok(cs) => match self.shared.runtime.run(&cs).await {
                Ok(()) => {
                    info!(container = %name, attempt, "started container");
                    self.event(None, "Normal", "Created", format!("Created container: {name}"));
                    self.event(None, "Normal", "Started", format!("Started container {name}"));
                    self.errors.remove(name);
                    if !init {
                        self.post_start(pod, &c, &cs.id, net).await;
                    }
                    true
                }
                Err(e) => {
                    warn!(container = %name, error = %e, "starting the container failed");
                    let reason = match &e {
                        crate::cri::RuntimeError::Containerd(waggle_runtime::Error::Config(_)) => {
                            "CreateContainerConfigError"
                        }
                        _ => "RunContainerError",
                    };
                    let once = format!("failed-{name}-{reason}");
                    self.event(Some(once), "Warning", "Failed", format!("Error: {e}"));
                    self.errors.insert(name.to_owned(), Waiting { reason: reason.into(), message: e.to_string() });
                    false
                }
            },
            Err(w) => {
                if self.errors.get(name) != Some(&w) {
                    warn!(container = %name, reason = %w.reason, message = %w.message, "cannot start the container");
                    let once = format!("failed-{name}-{}", w.reason);
                    self.event(Some(once), "Warning", "Failed", format!("Error: {}", w.reason));
                    // Pulls record their own events (ensure_image).
                    if !matches!(w.reason.as_str(), "ErrImagePull" | "ImagePullBackOff") {
                        self.event(None, "Warning", "Failed", w.message.clone());
                    }
                }
                self.errors.insert(name.to_owned(), w);
                false
            }
        }
    }

    /// Runs the container's postStart hook, as upstream before it reports the
    /// container started; a failed hook kills the container (its restart
    /// policy decides what follows).
    async fn post_start(&mut self, pod: &Pod, c: &Container, id: &str, net: &SandboxNet) {
        let target = probe::Target {
            container_id: id.to_owned(),
            container: c.clone(),
            netns: net.netns.clone(),
            pod_ip: net.ips.first().copied(),
        };
        let Some(hook) = lifecycle::post_start(&target) else { return };
        if let Err(msg) = lifecycle::run(hook, &target, self.shared.runtime.as_ref(), HOOK_TIMEOUT).await {
            warn!(container = %c.name, error = %msg, "the postStart hook failed; killing the container");
            self.event(None, "Warning", "FailedPostStartHook", msg);
            self.killing.insert(id.to_owned());
            self.spawn_stop(id.to_owned(), pod, Some(c.clone()));
        }
    }

    /// Makes the container's image present as its pull policy says;
    /// returns its normalised name.
    async fn ensure_image(&mut self, pod: &Pod, c: &Container) -> Result<String, Waiting> {
        let given = c.image.clone().unwrap_or_default();
        let image = waggle_runtime::normalize_image(&given).map_err(|e| Waiting {
            reason: "InvalidImageName".into(),
            message: format!("Failed to apply default image tag \"{given}\": {e}"),
        })?;
        let policy = super::images::policy(c);
        let present = self
            .shared
            .runtime
            .has_image(&image)
            .await
            .map_err(|e| Waiting { reason: "ErrImageInspect".into(), message: e.to_string() })?;
        match policy {
            PullPolicy::Never if !present => {
                return Err(Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: format!("Container image \"{given}\" is not present with pull policy of Never"),
                });
            }
            PullPolicy::Never | PullPolicy::IfNotPresent if present => {
                self.event(None, "Normal", "Pulled", format!("Container image \"{given}\" already present on machine"));
                return Ok(image);
            }
            _ => {}
        }
        if self.pull_backoff.waiting(&image, Instant::now()) {
            let message = format!("Back-off pulling image \"{given}\"");
            self.event(
                Some(format!("pull-backoff-{image}-{}", self.pull_backoff.failures(&image))),
                "Normal",
                "BackOff",
                message.clone(),
            );
            return Err(Waiting { reason: "ImagePullBackOff".into(), message });
        }
        self.event(None, "Normal", "Pulling", format!("Pulling image \"{given}\""));
        let started = Instant::now();
        let credentials = super::pull_secrets::credentials_for(pod, &image, self.shared.configs.as_ref()).await;
        match self.shared.runtime.pull(&image, credentials.as_ref()).await {
            Ok(size) => {
                self.pull_backoff.succeeded(&image);
                let took = started.elapsed().as_secs_f64();
                self.event(
                    None,
                    "Normal",
                    "Pulled",
                    format!("Successfully pulled image \"{given}\" in {took:.3}s. Image size: {size} bytes."),
                );
                Ok(image)
            }
            Err(e) => {
                warn!(image = %image, error = %e, "pulling the image failed");
                let s = &self.shared;
                self.pull_backoff.failed(&image, Instant::now(), s.backoff_base, s.backoff_max);
                self.event(None, "Warning", "Failed", format!("Failed to pull image \"{given}\": {e}"));
                Err(Waiting { reason: "ErrImagePull".into(), message: e.to_string() })
            }
        }
    }

    async fn container_spec(
        &self,
        pod: &Pod,
        c: &Container,
        image: String,
        init: bool,
        attempt: u32,
        net: &SandboxNet,
    ) -> Result<ContainerSpec, Waiting> {
        let s = &self.shared;
        let pod_ip = net.ips.first().map(|i| i.to_string()).unwrap_or_default();
        let (env, vars) = super::env::resolve(pod, c, &pod_ip, &s.host_ip, s.configs.as_ref())
            .await
            .map_err(|e| Waiting { reason: "CreateContainerConfigError".into(), message: e.0 })?;
        let vols = volumes::prepare(pod, &self.pod_dir(), &pod_ip, &s.host_ip, s.configs.as_ref())
            .await
            .map_err(|e| Waiting { reason: "CreateContainerConfigError".into(), message: e.0 })?;
        let mut binds = volumes::binds(c, &vols)
            .map_err(|e| Waiting { reason: "CreateContainerConfigError".into(), message: e.0 })?;
        let etc = super::etc::prepare(pod, &self.pod_dir(), &net.ips)
            .map_err(|e| Waiting { reason: "CreateContainerConfigError".into(), message: e })?;
        super::etc::bind_unless_mounted(&mut binds, etc);
        if let Some(b) = self.termination_file(c, init, attempt)? {
            binds.push(b);
        }
        let expand = |v: &Option<Vec<String>>| -> Vec<String> {
            v.iter().flatten().map(|a| super::env::expand(a, &vars)).collect()
        };
        let command = expand(&c.command);
        let args = expand(&c.args);
        let (full, args_only) = if command.is_empty() {
            (Vec::new(), args)
        } else {
            (command.into_iter().chain(args).collect(), Vec::new())
        };
        let log_dir = self.pod_dir().join("logs").join(&c.name);
        std::fs::create_dir_all(&log_dir).map_err(|e| Waiting {
            reason: "CreateContainerError".into(),
            message: format!("{}: {e}", log_dir.display()),
        })?;
        let limits = c.resources.as_ref().and_then(|r| r.limits.clone()).unwrap_or_default();
        let requests = c.resources.as_ref().and_then(|r| r.requests.clone()).unwrap_or_default();
        Ok(ContainerSpec {
            id: format!("{}-{}{}-{attempt}", self.key.uid, if init { "init-" } else { "" }, c.name),
            node: s.node.clone(),
            pod_uid: self.key.uid.clone(),
            pod_name: self.key.name.clone(),
            pod_namespace: self.key.namespace.clone(),
            name: c.name.clone(),
            attempt,
            init,
            image,
            args: full,
            args_only,
            env,
            netns: net.netns.clone(),
            log_path: log_dir.join(format!("{attempt}.log")),
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            hostname: super::etc::hostname(pod),
            binds,
            memory_limit: limits.get("memory").and_then(|q| waggle_api::quantity::parse(&q.0)).map(|v| v as i64),
            cpu_limit_millis: millicores(&limits),
            cpu_request_millis: millicores(&requests),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            security: super::security::request(pod, c),
        })
    }

    /// The file a container may write its termination message to, bound at
    /// its `terminationMessagePath` (default /dev/termination-log).
    fn termination_file(&self, c: &Container, init: bool, attempt: u32) -> Result<Option<BindMount>, Waiting> {
        let dest = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        if dest.is_empty() {
            return Ok(None);
        }
        let path = self.termination_path(&c.name, init, attempt);
        let created = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, b""));
        created.map_err(|e| Waiting {
            reason: "CreateContainerConfigError".into(),
            message: format!("{}: {e}", path.display()),
        })?;
        Ok(Some(BindMount { source: path.to_string_lossy().into_owned(), destination: dest, read_only: false }))
    }

    fn termination_path(&self, name: &str, init: bool, attempt: u32) -> PathBuf {
        self.pod_dir().join("termination").join(format!("{}{name}-{attempt}", if init { "init-" } else { "" }))
    }

    /// Reads, once per exited container, what it left as its termination
    /// message (at most 4096 bytes); with FallbackToLogsOnError, a failed
    /// container that left none gets its log's last 80 lines (2048 bytes).
    fn read_termination_messages(&mut self, pod: &Pod, records: &[ContainerRecord]) {
        let spec = pod.spec.as_ref();
        for r in records {
            let ContainerState::Exited { exit_code, .. } = r.state else { continue };
            if self.messages.contains_key(&r.id) {
                continue;
            }
            let list = if r.init { spec.and_then(|s| s.init_containers.as_ref()) } else { spec.map(|s| &s.containers) };
            let c = list.and_then(|l| l.iter().find(|c| c.name == r.name));
            let mut message = std::fs::read(self.termination_path(&r.name, r.init, r.attempt)).unwrap_or_default();
            message.truncate(4096);
            let fallback = c.and_then(|c| c.termination_message_policy.as_deref()) == Some("FallbackToLogsOnError");
            if message.is_empty() && fallback && exit_code != 0 {
                let raw = std::fs::read(&r.log_path).unwrap_or_default();
                let opts = crate::logs::LogOptions { tail_lines: Some(80), ..Default::default() };
                message = crate::logs::select(&raw, &opts);
                let cut = message.len().saturating_sub(2048);
                message.drain(..cut);
            }
            self.messages.insert(r.id.clone(), String::from_utf8_lossy(&message).into_owned());
        }
        self.messages.retain(|id, _| records.iter().any(|r| &r.id == id));
    }

    /// Keeps a waiter per running container (it wakes the worker on exit) and
    /// probe tasks per running container; drops those of exited ones.
    fn tend(&mut self, pod: &Pod, records: &[ContainerRecord], sandbox: Option<&SandboxNet>) {
        let running: HashSet<&str> = records
            .iter()
            .filter(|r| matches!(r.state, ContainerState::Running { .. }))
            .map(|r| r.id.as_str())
            .collect();
        for r in records.iter().filter(|r| running.contains(r.id.as_str())) {
            if self.waiters.insert(r.id.clone()) {
                let (runtime, wake, id) = (self.shared.runtime.clone(), self.wake.clone(), r.id.clone());
                let record = r.clone();
                tokio::spawn(async move {
                    runtime.ensure_logging(&record).await;
                    if let Err(e) = runtime.wait(&id).await {
                        debug!(container = %id, error = %e, "waiting for the container failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    wake.notify_one();
                });
            }
            if r.init || self.probe_tasks.contains_key(&r.id) {
                continue;
            }
            let spec = pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == r.name)).cloned();
            if let (Some(c), Some(net)) = (spec, sandbox) {
                let target = probe::Target {
                    container_id: r.id.clone(),
                    container: c,
                    netns: net.netns.clone(),
                    pod_ip: net.ips.first().copied(),
                };
                let tasks = probe::spawn(target, self.shared.runtime.clone(), self.probes.clone(), self.wake.clone());
                self.probe_tasks.insert(r.id.clone(), tasks);
            }
        }
        let gone: Vec<String> = self.probe_tasks.keys().filter(|id| !running.contains(id.as_str())).cloned().collect();
        for id in gone {
            if let Some(tasks) = self.probe_tasks.remove(&id) {
                tasks.iter().for_each(tokio::task::JoinHandle::abort);
            }
            let mut v = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            v.ready.remove(&id);
            v.liveness_failed.remove(&id);
            v.started.remove(&id);
        }
        self.waiters.retain(|id| running.contains(id.as_str()));
        self.killing.retain(|id| running.contains(id.as_str()));
    }

    /// Keeps the newest two attempts of each container (status and
    /// `logs --previous` need the one before); removes older ones.
    async fn collect_old_attempts(&self, records: &[ContainerRecord]) {
        for r in records {
            let a = attempts(records, &r.name, r.init);
            let keep = [a.current.map(|c| c.id.as_str()), a.previous.map(|c| c.id.as_str())];
            if !keep.contains(&Some(r.id.as_str())) && matches!(r.state, ContainerState::Exited { .. }) {
                if let Err(e) = self.shared.runtime.remove(&r.id).await {
                    debug!(container = %r.id, error = %e, "removing an old attempt failed");
                }
                let _ = std::fs::remove_file(&r.log_path);
                let (out, err) = crate::logs::fifos(&r.log_path);
                for f in [out, err, r.log_path.with_extension("stdin")] {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, in the background.
    fn spawn_stop(&self, id: String, pod: &Pod, container: Option<Container>) {
        let (shared, key, grace) = (self.shared.clone(), self.key.clone(), grace_of(pod));
        let host = host_network(pod, &shared.host_ip);
        tokio::spawn(async move { stop_gracefully(&shared, &key, &id, container.as_ref(), host, grace).await });
    }

    /// The pod has finished: stop what runs, release the address. True when
    /// something changed.
    async fn finish(&mut self, records: &[ContainerRecord], pod: &Pod) -> Result<bool, crate::Error> {
        let running: Vec<&ContainerRecord> =
            records.iter().filter(|r| matches!(r.state, ContainerState::Running { .. })).collect();
        for r in &running {
            if self.killing.insert(r.id.clone()) {
                self.spawn_stop(r.id.clone(), pod, container_of(pod, &r.name));
            }
        }
        if running.is_empty() && self.shared.network.get(&self.key.uid).await?.is_some() {
            info!("pod finished; releasing its network");
            self.shared.network.teardown(&self.key.uid).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Graceful termination: preStop, SIGTERM, the grace period, SIGKILL; then
    /// containers, network and files are removed and the deletion finished.
    async fn terminate(&mut self, pod: Option<&Pod>) -> Result<Next, crate::Error> {
        let s = self.shared.clone();
        let records = s.runtime.list(&s.node, Some(&self.key.uid)).await?;
        let grace = pod.map_or(Duration::from_secs(2), |p| {
            p.metadata
                .deletion_grace_period_seconds
                .map(|g| Duration::from_secs(g.max(0) as u64))
                .unwrap_or_else(|| grace_of(p))
        });
        let running: Vec<&ContainerRecord> =
            records.iter().filter(|r| matches!(r.state, ContainerState::Running { .. })).collect();
        if !running.is_empty() {
            info!(containers = running.len(), grace_seconds = grace.as_secs(), "stopping the pod's containers");
            for r in &running {
                self.event(None, "Normal", "Killing", format!("Stopping container {}", r.name));
            }
        }
        let stops = running.iter().map(|r| {
            let container = pod.and_then(|p| container_of(p, &r.name));
            let (s, key) = (s.clone(), self.key.clone());
            let host = pod.and_then(|p| host_network(p, &s.host_ip));
            async move { stop_gracefully(&s, &key, &r.id, container.as_ref(), host, grace).await }
        });
        futures::future::join_all(stops).await;
        for (_, tasks) in self.probe_tasks.drain() {
            tasks.iter().for_each(tokio::task::JoinHandle::abort);
        }
        for r in &records {
            s.runtime.remove(&r.id).await?;
        }
        s.network.teardown(&self.key.uid).await?;
        let dir = self.pod_dir();
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            warn!(dir = %dir.display(), error = %e, "removing the pod's directory failed");
        }
        if let Some(p) = pod {
            s.api
                .finish_deletion(&self.key.namespace, &self.key.name, &self.key.uid)
                .await
                .map_err(|e| crate::Error::Config(format!("finishing the deletion of {}: {e}", pod_key(p))))?;
            info!("pod deleted");
        } else {
            info!("released what remained of a pod that is gone");
        }
        Ok(Next::Done)
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// How long a postStart hook may run (upstream sets no limit; a hook that
/// never ends must not hold the pod's worker for good).
const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// A `hostNetwork` pod's "sandbox": the agent's own network namespace and
/// the node's address; no CNI is involved.
fn host_network(pod: &Pod, host_ip: &str) -> Option<SandboxNet> {
    if pod.spec.as_ref().and_then(|s| s.host_network) != Some(true) {
        return None;
    }
    Some(SandboxNet { netns: PathBuf::from("/proc/self/ns/net"), ips: host_ip.parse().into_iter().collect() })
}

/// The `cpu` of a resource list in millicores.
fn millicores(
    list: &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<i64> {
    list.get("cpu").and_then(|q| waggle_api::quantity::parse(&q.0)).map(|v| (v * 1000.0).round() as i64)
}

/// A regular container of the pod by name.
fn container_of(pod: &Pod, name: &str) -> Option<Container> {
    pod.spec.as_ref()?.containers.iter().find(|c| c.name == name).cloned()
}

/// The container's preStop hook, then SIGTERM and SIGKILL, all within
/// `grace`; a failed hook is reported as upstream's FailedPreStopHook event.
async fn stop_gracefully(
    shared: &Shared,
    key: &PodKey,
    id: &str,
    container: Option<&Container>,
    host: Option<SandboxNet>,
    grace: Duration,
) {
    let deadline = Instant::now() + grace;
    if let Some(c) = container.filter(|c| c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some())) {
        let net = match host {
            Some(h) => Some(h),
            None => shared.network.get(&key.uid).await.ok().flatten(),
        };
        let target = probe::Target {
            container_id: id.to_owned(),
            container: c.clone(),
            netns: net.as_ref().map(|n| n.netns.clone()).unwrap_or_default(),
            pod_ip: net.as_ref().and_then(|n| n.ips.first().copied()),
        };
        if let Some(hook) = lifecycle::pre_stop(&target)
            && let Err(msg) = lifecycle::run(hook, &target, shared.runtime.as_ref(), grace).await
        {
            warn!(container = %c.name, error = %msg, "the preStop hook failed");
            shared.api.event(key, &shared.node, "Warning", "FailedPreStopHook", &msg).await;
        }
    }
    stop_container(shared.runtime.as_ref(), id, deadline.saturating_duration_since(Instant::now())).await;
}

/// SIGTERM, wait up to `grace`, SIGKILL, wait.
pub async fn stop_container(runtime: &dyn ContainerRuntime, id: &str, grace: Duration) {
    if !grace.is_zero() {
        if let Err(e) = runtime.signal(id, libc::SIGTERM).await {
            debug!(container = %id, error = %e, "SIGTERM failed");
        }
        if tokio::time::timeout(grace, runtime.wait(id)).await.is_ok() {
            return;
        }
        info!(container = %id, "the container outlived its grace period; killing it");
    }
    if let Err(e) = runtime.signal(id, libc::SIGKILL).await {
        debug!(container = %id, error = %e, "SIGKILL failed");
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), runtime.wait(id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::FakeRuntime;
    use crate::network::FakeNetwork;
    use crate::pod::env::ConfigSource;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    #[derive(Default)]
    struct FakeApi {
        statuses: Mutex<Vec<PodStatus>>,
        deleted: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl PodApi for FakeApi {
        async fn write_status(&self, _ns: &str, _name: &str, status: &PodStatus) -> Result<(), String> {
            self.statuses.lock().map_err(|e| e.to_string())?.push(status.clone());
            Ok(())
        }
        async fn finish_deletion(&self, _ns: &str, _name: &str, uid: &str) -> Result<(), String> {
            self.deleted.lock().map_err(|e| e.to_string())?.push(uid.to_owned());
            Ok(())
        }
    }

    struct NoConfig;

    #[async_trait]
    impl ConfigSource for NoConfig {
        async fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, String> {
            Ok(None)
        }
        async fn secret(&self, _: &str, _: &str) -> Result<Option<Secret>, String> {
            Ok(None)
        }
    }

    fn shared(
        runtime: FakeRuntime,
        network: FakeNetwork,
        api: Arc<FakeApi>,
        pod: Arc<Mutex<Option<Arc<Pod>>>>,
        dir: &std::path::Path,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            node: "n1".into(),
            host_ip: "192.168.0.2".into(),
            pods_dir: dir.to_path_buf(),
            runtime: Arc::new(runtime),
            network: Arc::new(network),
            api,
            configs: Arc::new(NoConfig),
            lookup: Arc::new(move |_, _| pod.lock().ok().and_then(|p| p.clone())),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            resync: Duration::from_millis(50),
        })
    }

    #[tokio::test]
    async fn a_pod_gets_a_sandbox_and_its_container_then_deletion_releases_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = FakeRuntime::default().with_registry_image(BUSYBOX);
        let network = FakeNetwork::default();
        let api = Arc::new(FakeApi::default());
        let pod = Arc::new(crate::pod::status::tests::pod_with(&["web"], &[], "Always"));
        let current = Arc::new(Mutex::new(Some(pod.clone())));
        let s = shared(runtime.clone(), network.clone(), api.clone(), current.clone(), dir.path());
        let key = PodKey { namespace: "default".into(), name: "p".into(), uid: "u1".into() };
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(Worker::new(key, s, wake.clone()).run());

        let start = Instant::now();
        loop {
            let running = api
                .statuses
                .lock()
                .expect("lock")
                .iter()
                .any(|st| st.phase.as_deref() == Some("Running") && st.pod_ip.as_deref() == Some("10.244.0.2"));
            if running {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "the pod never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runtime.started(), vec!["u1-web-0".to_owned()]);
        assert_eq!(runtime.pulls(), vec![BUSYBOX.to_owned()], "busybox (no tag) is pulled: Always by default");

        let mut deleting = (*pod).clone();
        deleting.metadata.deletion_timestamp = Some(crate::pod::status::time(SystemTime::now()));
        deleting.metadata.deletion_grace_period_seconds = Some(1);
        *current.lock().expect("lock") = Some(Arc::new(deleting));
        wake.notify_one();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("worker ends").expect("worker ok");
        assert!(runtime.existing().is_empty(), "containers removed");
        assert!(network.list().await.expect("list").is_empty(), "sandbox released");
        assert_eq!(*api.deleted.lock().expect("lock"), vec!["u1".to_owned()]);
    }

    const BUSYBOX: &str = "docker.io/library/busybox:latest";

    fn waiting_reason(st: &PodStatus) -> Option<String> {
        st.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone()
    }

    /// Runs a worker for `pod` until `done` holds for a status it wrote.
    async fn run_until(runtime: &FakeRuntime, pod: Pod, done: impl Fn(&[PodStatus]) -> bool) -> Vec<PodStatus> {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = Arc::new(FakeApi::default());
        let current = Arc::new(Mutex::new(Some(Arc::new(pod))));
        let s = shared(runtime.clone(), FakeNetwork::default(), api.clone(), current, dir.path());
        let key = PodKey { namespace: "default".into(), name: "p".into(), uid: "u1".into() };
        let task = tokio::spawn(Worker::new(key, s, Arc::new(Notify::new())).run());
        let start = Instant::now();
        loop {
            let statuses = api.statuses.lock().expect("lock").clone();
            if done(&statuses) {
                task.abort();
                return statuses;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "never reached; statuses: {statuses:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pod_with_image(image: &str, policy: Option<&str>) -> Pod {
        let mut pod = crate::pod::status::tests::pod_with(&["web"], &[], "Always");
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers[0].image = Some(image.into());
            spec.containers[0].image_pull_policy = policy.map(Into::into);
        }
        pod
    }

    fn running(statuses: &[PodStatus]) -> bool {
        statuses.iter().any(|st| st.phase.as_deref() == Some("Running"))
    }

    #[tokio::test]
    async fn if_not_present_pulls_only_a_missing_image_and_always_pulls_every_time() {
        let image = "127.0.0.1:5000/app:v1";
        let runtime = FakeRuntime::default().with_image(image).with_registry_image(image);
        run_until(&runtime, pod_with_image(image, Some("IfNotPresent")), running).await;
        assert!(runtime.pulls().is_empty(), "a present image is not pulled with IfNotPresent");

        let runtime = FakeRuntime::default().with_image(image).with_registry_image(image);
        run_until(&runtime, pod_with_image(image, Some("Always")), running).await;
        assert_eq!(runtime.pulls(), vec![image.to_owned()], "Always pulls a present image");

        let runtime = FakeRuntime::default().with_registry_image(image);
        run_until(&runtime, pod_with_image(image, None), running).await;
        assert_eq!(runtime.pulls(), vec![image.to_owned()], "a tagged image defaults to IfNotPresent: pulled once");
    }

    #[tokio::test]
    async fn a_failed_pull_is_err_image_pull_then_image_pull_back_off_until_a_pull_succeeds() {
        let image = "127.0.0.1:5000/app:v1";
        let runtime = FakeRuntime::default();
        let reasons = |sts: &[PodStatus]| sts.iter().filter_map(waiting_reason).collect::<Vec<_>>();
        let statuses = run_until(&runtime, pod_with_image(image, None), |sts| {
            let r = reasons(sts);
            r.iter().any(|r| r == "ErrImagePull") && r.iter().any(|r| r == "ImagePullBackOff")
        })
        .await;
        let r = reasons(&statuses);
        let first = r.iter().find(|r| r.contains("Image"));
        assert_eq!(first.map(String::as_str), Some("ErrImagePull"), "the first failure: {r:?}");
        assert!(runtime.pulls().len() >= 2, "pulled again after the back-off: {:?}", runtime.pulls());
        assert!(runtime.started().is_empty());

        let runtime = runtime.with_registry_image(image);
        run_until(&runtime, pod_with_image(image, None), running).await;
    }

    #[tokio::test]
    async fn a_missing_image_with_pull_policy_never_is_reported_and_nothing_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = FakeRuntime::default();
        let api = Arc::new(FakeApi::default());
        let mut pod = crate::pod::status::tests::pod_with(&["web"], &[], "Always");
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers[0].image_pull_policy = Some("Never".into());
        }
        let current = Arc::new(Mutex::new(Some(Arc::new(pod))));
        let s = shared(runtime.clone(), FakeNetwork::default(), api.clone(), current, dir.path());
        let key = PodKey { namespace: "default".into(), name: "p".into(), uid: "u1".into() };
        let task = tokio::spawn(Worker::new(key, s, Arc::new(Notify::new())).run());
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        let statuses = api.statuses.lock().expect("lock").clone();
        let reason = statuses
            .last()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].state.as_ref()?.waiting.as_ref()?.reason.clone());
        assert_eq!(reason.as_deref(), Some("ErrImageNeverPull"));
        assert!(runtime.started().is_empty());
    }
}
