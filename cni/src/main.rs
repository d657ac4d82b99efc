//! The `waggle-cni` binary: read the environment and stdin, run one command,
//! print its result (or the spec's error JSON) on stdout. Logs go to stderr,
//! or to the file named by `WAGGLE_CNI_LOG_FILE`; never to stdout.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use waggle_cni::commands;
use waggle_cni::config::{NetConf, peek_version};
use waggle_cni::env::{Command, Env};
use waggle_cni::error::{Error, Result};
use waggle_cni::spec::{LATEST, Version};

fn main() -> ExitCode {
    init_logging();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin).map_err(|err| Error::io("reading stdin", err));
    let outcome = read.and_then(|_| run(&stdin));
    match outcome {
        Ok(output) => {
            if let Some(json) = output {
                print(&json);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, code = err.code(), "failed");
            let version = peek_version(&stdin).map_or_else(|_| LATEST.to_string(), |(_, v)| v.as_str().to_string());
            match serde_json::to_value(err.to_cni(&version)) {
                Ok(json) => print(&json),
                Err(_) => print(&serde_json::json!({"code": err.code(), "msg": err.to_string()})),
            }
            ExitCode::FAILURE
        }
    }
}

/// Dispatches to one command; `Ok(None)` means success with no output.
fn run(stdin: &[u8]) -> Result<Option<serde_json::Value>> {
    let env = Env::from_process()?;
    if env.command == Command::Version {
        return to_json(&commands::cmd_version(stdin)).map(Some);
    }
    let conf = NetConf::parse(stdin)?;
    require_version(env.command, conf.version)?;
    let _span = tracing::info_span!("cni", command = ?env.command, container = %env.container_id, ifname = %env.ifname)
        .entered();
    match env.command {
        Command::Add => to_json(&commands::cmd_add(&env, &conf, stdin)?).map(Some),
        Command::Del => commands::cmd_del(&env, &conf, stdin).map(|()| None),
        Command::Check => commands::cmd_check(&env, &conf, stdin).map(|()| None),
        Command::Status => commands::cmd_status(&env, &conf).map(|()| None),
        Command::Gc => commands::cmd_gc(&env, &conf).map(|()| None),
        Command::Version => to_json(&commands::cmd_version(stdin)).map(Some),
    }
}

/// CHECK exists from 0.4.0, STATUS and GC from 1.1.0.
fn require_version(command: Command, version: Version) -> Result<()> {
    let ok = match command {
        Command::Check => version.has_check(),
        Command::Status | Command::Gc => version.has_status_and_gc(),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(Error::IncompatibleVersion {
        requested: version.as_str().to_string(),
        supported: format!("{command:?} needs a newer cniVersion"),
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|source| Error::Decode { what: "the result", source })
}

fn print(json: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone; the exit code still tells.
    let _ = writeln!(out, "{json}");
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WAGGLE_CNI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let file = std::env::var_os("WAGGLE_CNI_LOG_FILE")
        .and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
    match file {
        Some(file) => builder.with_writer(std::sync::Mutex::new(file)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}
