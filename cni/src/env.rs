//! The CNI_* environment variables, read once and validated per command.

use std::path::PathBuf;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            other => {
                return Err(Error::InvalidEnv { name: "CNI_COMMAND", why: format!("unknown command {other:?}") });
            }
        })
    }
}

/// What the runtime told the plugin through its environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Absent for DEL after the namespace is gone, and for STATUS/GC/VERSION.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs (`K1=V1;K2=V2`).
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn from_process() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads and checks the variables through `lookup`, so tests need no process env.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let command_text =
            get("CNI_COMMAND").ok_or(Error::InvalidEnv { name: "CNI_COMMAND", why: "missing".into() })?;
        let command = Command::parse(&command_text)?;
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &'static str, needed: bool| -> Result<String> {
            match get(name) {
                Some(value) => Ok(value),
                None if needed => Err(Error::InvalidEnv { name, why: "missing".into() }),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", per_attachment)?;
        let ifname = required("CNI_IFNAME", per_attachment)?;
        let netns = required("CNI_NETNS", matches!(command, Command::Add | Command::Check))?;
        let path = required("CNI_PATH", command != Command::Version)?;
        let args = get("CNI_ARGS").map(|a| parse_args(&a)).transpose()?.unwrap_or_default();
        if per_attachment {
            validate_ifname(&ifname)?;
        }
        Ok(Self {
            command,
            container_id,
            netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
            ifname,
            args,
            path: std::env::split_paths(&path).collect(),
        })
    }

    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn parse_args(text: &str) -> Result<Vec<(String, String)>> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::InvalidEnv { name: "CNI_ARGS", why: format!("{pair:?} is not KEY=VALUE") })
        })
        .collect()
}

/// The kernel's rules for interface names (IFNAMSIZ, no '/', no whitespace).
fn validate_ifname(name: &str) -> Result<()> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(Error::InvalidEnv { name: "CNI_IFNAME", why: format!("{name:?} is not a valid interface name") });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn a_complete_add_environment_parses() {
        let env = env(&ADD).expect("valid");
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.path.len(), 2);
    }

    #[test]
    fn each_missing_variable_of_add_is_code_4() {
        for (missing, _) in ADD {
            let vars: Vec<_> = ADD.iter().filter(|(k, _)| *k != missing).copied().collect();
            let err = env(&vars).expect_err("incomplete");
            assert_eq!(err.code(), 4, "without {missing}");
        }
    }

    #[test]
    fn del_needs_no_netns() {
        let vars: Vec<_> = ADD
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| (*k, if *k == "CNI_COMMAND" { "DEL" } else { *v }))
            .collect();
        let env = env(&vars).expect("valid");
        assert!(env.netns.is_none());
    }

    #[test]
    fn cni_args_are_split_into_pairs_and_bad_ones_rejected() {
        let mut vars = ADD.to_vec();
        vars.push(("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.9"));
        assert_eq!(env(&vars).expect("valid").arg("IP"), Some("10.0.0.9"));
        vars.pop();
        vars.push(("CNI_ARGS", "garbage"));
        assert_eq!(env(&vars).expect_err("invalid").code(), 4);
    }

    #[test]
    fn interface_names_longer_than_15_bytes_are_rejected() {
        let vars: Vec<_> =
            ADD.iter().map(|(k, v)| (*k, if *k == "CNI_IFNAME" { "a-very-long-ifname" } else { *v })).collect();
        assert_eq!(env(&vars).expect_err("too long").code(), 4);
    }
}
