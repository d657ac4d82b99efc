//! Delegated IPAM: exec another plugin found on CNI_PATH, as libcni's
//! `ipam.ExecAdd`/`ExecDel` do, passing our stdin and environment through.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::spec::CniResult;

#[derive(Debug, Deserialize)]
struct PluginError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

pub fn find_plugin(plugin: &str, cni_path: &[PathBuf]) -> Result<PathBuf> {
    cni_path.iter().map(|dir| dir.join(plugin)).find(|candidate| candidate.is_file()).ok_or_else(|| {
        Error::DelegateFailed { plugin: plugin.to_string(), why: format!("not found in CNI_PATH {cni_path:?}") }
    })
}

/// Runs `plugin` with `command` and `stdin`; returns its stdout on success and
/// turns its error JSON into [`Error::Delegated`] keeping its code.
pub fn exec(plugin: &str, cni_path: &[PathBuf], command: &str, stdin: &[u8]) -> Result<Vec<u8>> {
    let program = find_plugin(plugin, cni_path)?;
    run(plugin, &program, command, stdin)
}

fn run(plugin: &str, program: &Path, command: &str, stdin: &[u8]) -> Result<Vec<u8>> {
    let failed = |why: String| Error::DelegateFailed { plugin: plugin.to_string(), why };
    let mut child = Command::new(program)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|err| failed(format!("spawning {}: {err}", program.display())))?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).map_err(|err| failed(format!("writing its stdin: {err}")))?;
    }
    let output = child.wait_with_output().map_err(|err| failed(format!("waiting for it: {err}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    match serde_json::from_slice::<PluginError>(&output.stdout) {
        Ok(err) if err.code != 0 => {
            Err(Error::Delegated { plugin: plugin.to_string(), code: err.code, msg: err.msg, details: err.details })
        }
        _ => Err(failed(format!("{} and printed {:?}", output.status, String::from_utf8_lossy(&output.stdout)))),
    }
}

/// ADD through the delegate, its result read into our internal shape.
pub fn add(plugin: &str, cni_path: &[PathBuf], stdin: &[u8]) -> Result<CniResult> {
    let stdout = exec(plugin, cni_path, "ADD", stdin)?;
    let value: serde_json::Value =
        serde_json::from_slice(&stdout).map_err(|source| Error::Decode { what: "delegated IPAM result", source })?;
    CniResult::from_value(value)
}
