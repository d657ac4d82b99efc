//! What the agent needs beyond create/start/wait/remove: listing containers by
//! label (re-adoption after a restart), the state of a task, signals, and
//! processes executed inside a running container (exec probes).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::{
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest, KillRequest,
    ListContainersRequest, StartRequest, WaitRequest, containers_client::ContainersClient, tasks_client::TasksClient,
};
use prost_types::Any;

use crate::{Error, Runtime};

/// The `type_url` of a process spec given to Tasks.Exec.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// A container record as containerd keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub created_at: Option<SystemTime>,
}

/// Where a container's task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// No task: created but never started, or its task was deleted.
    Absent,
    Created,
    Running,
    /// Exited with this code at this time.
    Stopped {
        exit_code: u32,
        exited_at: Option<SystemTime>,
    },
    Unknown,
}

/// Where an exec'd process's stdio goes (FIFO paths or `file://` URIs;
/// `stdin` empty for none).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecIo<'a> {
    pub stdin: &'a str,
    pub stdout: &'a str,
    pub stderr: &'a str,
    /// On the shim's pty (then stdout carries stderr too).
    pub terminal: bool,
    /// The terminal's first (width, height): runc sizes the pty before the
    /// process starts, so it never sees 0×0.
    pub console_size: Option<(u32, u32)>,
}

/// What an exec'd process did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: u32,
    /// stdout and stderr together, as far as they fit the limit.
    pub output: Vec<u8>,
}

impl Runtime {
    /// Every container of this namespace whose labels include all of `labels`.
    pub async fn list_containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, Error> {
        // containerd's filter syntax: labels."key"==value, conjunctions with ','.
        let filter = labels.iter().map(|(k, v)| format!("labels.\"{k}\"=={v}")).collect::<Vec<_>>().join(",");
        let filters = if filter.is_empty() { Vec::new() } else { vec![filter] };
        let resp = ContainersClient::new(self.channel.clone())
            .list(self.request(ListContainersRequest { filters }))
            .await
            .map_err(Error::rpc("Containers.List", "containers"))?
            .into_inner();
        Ok(resp
            .containers
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id,
                image: c.image,
                labels: c.labels,
                created_at: c.created_at.and_then(to_system_time),
            })
            .collect())
    }

    /// The state of the container's task.
    pub async fn task_status(&self, id: &str) -> Result<TaskStatus, Error> {
        let got = TasksClient::new(self.channel.clone())
            .get(self.request(GetRequest { container_id: id.to_owned(), exec_id: String::new() }))
            .await
            .map_err(Error::rpc("Tasks.Get", id));
        let process = match got {
            Ok(resp) => resp.into_inner().process,
            Err(e) if e.is_not_found() => return Ok(TaskStatus::Absent),
            Err(e) => return Err(e),
        };
        let Some(p) = process else { return Ok(TaskStatus::Absent) };
        use containerd_client::types::v1::Status;
        Ok(match Status::try_from(p.status).unwrap_or(Status::Unknown) {
            Status::Created => TaskStatus::Created,
            Status::Running | Status::Paused | Status::Pausing => TaskStatus::Running,
            Status::Stopped => {
                TaskStatus::Stopped { exit_code: p.exit_status, exited_at: p.exited_at.and_then(to_system_time) }
            }
            Status::Unknown => TaskStatus::Unknown,
        })
    }

    /// Sends `signal` to the container's main process; a task that is already
    /// gone counts as signalled.
    pub async fn signal_container(&self, id: &str, signal: u32) -> Result<(), Error> {
        let killed = TasksClient::new(self.channel.clone())
            .kill(self.request(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: signal == 9,
            }))
            .await
            .map_err(Error::rpc("Tasks.Kill", id));
        match killed {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits for the task to exit and returns its code and time.
    pub async fn wait_task(&self, id: &str) -> Result<(u32, Option<SystemTime>), Error> {
        let resp = TasksClient::new(self.channel.clone())
            .wait(self.request(WaitRequest { container_id: id.to_owned(), exec_id: String::new() }))
            .await
            .map_err(Error::rpc("Tasks.Wait", id))?
            .into_inner();
        Ok((resp.exit_status, resp.exited_at.and_then(to_system_time)))
    }

    /// Deletes a stopped task (keeping the container record and snapshot).
    pub async fn delete_task(&self, id: &str) -> Result<(), Error> {
        let deleted = TasksClient::new(self.channel.clone())
            .delete(self.request(DeleteTaskRequest { container_id: id.to_owned() }))
            .await
            .map_err(Error::rpc("Tasks.Delete", id));
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `args` inside the running container, with the container's own
    /// process settings (env, cwd, capabilities); its output goes to
    /// `output_file` (appended), which is read back up to `limit` bytes. The
    /// process is killed if it outlives `timeout`.
    pub async fn exec_in_container(
        &self,
        id: &str,
        exec_id: &str,
        args: &[String],
        output_file: &Path,
        timeout: Duration,
        limit: usize,
    ) -> Result<ExecOutcome, Error> {
        let uri = format!("file://{}", output_file.display());
        let mut tasks = TasksClient::new(self.channel.clone());
        let io = ExecIo { stdin: "", stdout: &uri, stderr: &uri, terminal: false, console_size: None };
        self.create_exec(id, exec_id, args, io).await?;
        let outcome = self.run_exec(id, exec_id, timeout).await;
        let _ = tasks
            .delete_process(
                self.request(DeleteProcessRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }),
            )
            .await;
        let exit_code = outcome?;
        let mut output = std::fs::read(output_file).unwrap_or_default();
        output.truncate(limit);
        Ok(ExecOutcome { exit_code, output })
    }

    async fn run_exec(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<u32, Error> {
        let mut tasks = TasksClient::new(self.channel.clone());
        // Wait is registered before Start so that a fast process is not missed.
        let mut waiter = TasksClient::new(self.channel.clone());
        let wait_req = self.request(WaitRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() });
        let wait = tokio::spawn(async move { waiter.wait(wait_req).await });
        tasks
            .start(self.request(StartRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }))
            .await
            .map_err(Error::rpc("Tasks.Start", exec_id))?;
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(Ok(resp))) => Ok(resp.into_inner().exit_status),
            Ok(Ok(Err(status))) => Err(Error::rpc("Tasks.Wait", exec_id)(status)),
            Ok(Err(_join)) => Err(Error::Image { image: id.to_owned(), reason: "exec waiter panicked".into() }),
            Err(_elapsed) => {
                let _ = tasks
                    .kill(self.request(KillRequest {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                        signal: 9,
                        all: false,
                    }))
                    .await;
                Err(Error::Timeout { what: format!("exec {exec_id} in {id}"), after: timeout })
            }
        }
    }

    /// Starts `args` inside the running container with its stdio on the given
    /// FIFOs (created by the caller; `stdin` empty for none), on a terminal
    /// if `terminal`. Returns once the
    /// process runs; [`Runtime::wait_exec`] reports its exit.
    pub async fn start_exec(&self, id: &str, exec_id: &str, args: &[String], io: ExecIo<'_>) -> Result<(), Error> {
        let mut tasks = TasksClient::new(self.channel.clone());
        // With a terminal the shim copies the pty to stdout only.
        let io = ExecIo { stderr: if io.terminal { "" } else { io.stderr }, ..io };
        self.create_exec(id, exec_id, args, io).await?;
        let started = tasks
            .start(self.request(StartRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }))
            .await
            .map_err(Error::rpc("Tasks.Start", exec_id));
        if let Err(e) = started {
            self.delete_exec(id, exec_id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Registers (Tasks.Exec) a process running `args` with the container's
    /// own process settings (env, cwd, user, capabilities).
    async fn create_exec(&self, id: &str, exec_id: &str, args: &[String], io: ExecIo<'_>) -> Result<(), Error> {
        let container = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_owned() }))
            .await
            .map_err(Error::rpc("Containers.Get", id))?
            .into_inner()
            .container
            .ok_or_else(|| Error::Image { image: id.to_owned(), reason: "container has no record".into() })?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .map(|s| serde_json::from_slice(&s.value))
            .transpose()
            .map_err(|source| Error::Spec { container: id.to_owned(), source })?
            .unwrap_or_default();
        let mut process = spec.get("process").cloned().unwrap_or_else(|| serde_json::json!({}));
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(io.terminal);
        if let Some((width, height)) = io.console_size {
            process["consoleSize"] = serde_json::json!({"width": width, "height": height});
        }
        let process =
            serde_json::to_vec(&process).map_err(|source| Error::Spec { container: id.to_owned(), source })?;
        TasksClient::new(self.channel.clone())
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_owned(),
                stdin: io.stdin.to_owned(),
                stdout: io.stdout.to_owned(),
                stderr: io.stderr.to_owned(),
                terminal: io.terminal,
                spec: Some(Any { type_url: PROCESS_TYPE_URL.into(), value: process }),
                exec_id: exec_id.to_owned(),
            }))
            .await
            .map_err(Error::rpc("Tasks.Exec", id))?;
        Ok(())
    }

    /// Waits for an exec'd process and returns its exit code.
    pub async fn wait_exec(&self, id: &str, exec_id: &str) -> Result<u32, Error> {
        let resp = TasksClient::new(self.channel.clone())
            .wait(self.request(WaitRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }))
            .await
            .map_err(Error::rpc("Tasks.Wait", exec_id))?
            .into_inner();
        Ok(resp.exit_status)
    }

    /// Closes an exec'd process's stdin (the shim holds the FIFO open, so
    /// only this gives the process its EOF); `exec_id` empty: the
    /// container's own process.
    pub async fn close_exec_stdin(&self, id: &str, exec_id: &str) {
        let _ = TasksClient::new(self.channel.clone())
            .close_io(self.request(containerd_client::services::v1::CloseIoRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: true,
            }))
            .await;
    }

    /// Resizes the terminal of an exec'd process (`exec_id` empty: of the
    /// container's own process).
    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .resize_pty(self.request(containerd_client::services::v1::ResizePtyRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                width,
                height,
            }))
            .await
            .map_err(Error::rpc("Tasks.ResizePty", id))?;
        Ok(())
    }

    /// Kills an exec'd process (the client went away).
    pub async fn kill_exec(&self, id: &str, exec_id: &str) {
        let _ = TasksClient::new(self.channel.clone())
            .kill(self.request(KillRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                signal: 9,
                all: false,
            }))
            .await;
    }

    /// Forgets an exec'd process (after it exited); errors are ignored.
    pub async fn delete_exec(&self, id: &str, exec_id: &str) {
        let _ = TasksClient::new(self.channel.clone())
            .delete_process(
                self.request(DeleteProcessRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }),
            )
            .await;
    }

    /// The image's entrypoint (what `args` without `command` run under).
    pub async fn image_entrypoint(&self, image: &str) -> Result<Vec<String>, Error> {
        let target = self.image_target(image).await?;
        let manifest: crate::archive::Manifest = self.read_json(&target.digest).await?;
        let config: crate::archive::ImageConfig = self.read_json(&manifest.config.digest).await?;
        Ok(config.config.entrypoint.unwrap_or_default())
    }

    /// True when an image of this name is present.
    pub async fn has_image(&self, name: &str) -> Result<bool, Error> {
        match self.image_target(name).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn to_system_time(ts: prost_types::Timestamp) -> Option<SystemTime> {
    if ts.seconds <= 0 {
        return None;
    }
    Some(SystemTime::UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos.max(0) as u32))
}
