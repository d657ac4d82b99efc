//! The network configuration on stdin, parsed and validated once.
//!
//! Field names follow the reference `bridge` and `host-local` plugins so an
//! existing conflist works by changing `type` only.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::ipam::range::{RangeConf, RangeSet};
use crate::spec::{CniResult, Route, Version};

pub const DEFAULT_BRIDGE: &str = "cni0";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// `ipam.type` values handled inside this binary; any other type is a plugin
/// found on CNI_PATH and exec'd.
pub const BUILTIN_IPAM: [&str; 2] = ["waggle", "waggle-cni"];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    name: String,
    #[serde(rename = "type", default)]
    plugin_type: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    ipam: Option<serde_json::Value>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    args: Option<ArgsConf>,
    #[serde(default)]
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ArgsConf {
    #[serde(default)]
    cni: Option<CniArgs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct CniArgs {
    #[serde(default)]
    ips: Vec<String>,
}

/// One live attachment that GC must keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpamConf {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    #[serde(flatten)]
    legacy: LegacyRange,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    resolv_conf: Option<PathBuf>,
}

/// host-local's older single-range spelling (`subnet` at the top of `ipam`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyRange {
    #[serde(default)]
    subnet: Option<ipnet::IpNet>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

/// Where addresses come from.
#[derive(Debug, Clone)]
pub enum Ipam {
    /// In this process, host-local compatible on disk.
    Builtin(IpamConf),
    /// Another plugin on CNI_PATH, given our stdin.
    Delegate { plugin: String },
}

#[derive(Debug, Clone)]
pub struct IpamConf {
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    /// `<dataDir>/<network name>`: one file per address, like host-local.
    pub network_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

/// The validated configuration, passed down as a value.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub plugin_type: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub promisc_mode: bool,
    /// Container interface MAC: runtimeConfig.mac wins over the static `mac`.
    pub mac: Option<[u8; 6]>,
    pub ipam: Ipam,
    /// Addresses asked for through args.cni.ips and runtimeConfig.ips (CNI_ARGS
    /// `IP=` is added by the command, which owns the environment).
    pub requested_ips: Vec<IpAddr>,
    pub prev_result: Option<CniResult>,
    pub valid_attachments: Vec<Attachment>,
}

/// Reads only `cniVersion`, so a version error wins over any other problem.
pub fn peek_version(bytes: &[u8]) -> Result<(serde_json::Value, Version)> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| Error::Decode { what: "network configuration", source })?;
    let text = value.get("cniVersion").and_then(|v| v.as_str()).unwrap_or("0.1.0");
    Ok((value.clone(), Version::parse(text)?))
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let (value, version) = peek_version(bytes)?;
        let raw: RawNetConf = serde_json::from_value(value).map_err(|err| Error::InvalidConfig(err.to_string()))?;
        if raw.name.is_empty() {
            return Err(Error::InvalidConfig("\"name\" must not be empty".into()));
        }
        if raw.name.contains('/') || raw.name.starts_with('.') {
            return Err(Error::InvalidConfig(format!("network name {:?} cannot name a directory", raw.name)));
        }
        let bridge = raw.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains('/') {
            return Err(Error::InvalidConfig(format!("bridge name {bridge:?} is not a valid interface name")));
        }
        if raw.mtu.is_some_and(|mtu| !(68..=65535).contains(&mtu)) {
            return Err(Error::InvalidConfig(format!("mtu {:?} is out of range", raw.mtu)));
        }
        let mac = raw.runtime_config.mac.as_ref().or(raw.mac.as_ref()).map(|m| parse_mac(m)).transpose()?;
        let ipam = parse_ipam(raw.ipam.as_ref(), &raw.name)?;
        let mut requested_ips = Vec::new();
        let cni_ips = raw.args.as_ref().and_then(|a| a.cni.as_ref()).map(|c| c.ips.clone()).unwrap_or_default();
        for text in cni_ips.iter().chain(&raw.runtime_config.ips) {
            requested_ips.push(parse_ip_maybe_cidr(text)?);
        }
        let prev_result = raw.prev_result.map(CniResult::from_value).transpose()?;
        Ok(Self {
            version,
            name: raw.name,
            plugin_type: raw.plugin_type,
            bridge,
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq,
            mtu: raw.mtu,
            hairpin_mode: raw.hairpin_mode,
            promisc_mode: raw.promisc_mode,
            mac,
            ipam,
            requested_ips,
            prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }
}

fn parse_ipam(value: Option<&serde_json::Value>, network: &str) -> Result<Ipam> {
    let value = value.ok_or_else(|| Error::InvalidConfig("\"ipam\" is required".into()))?;
    let raw: RawIpamConf =
        serde_json::from_value(value.clone()).map_err(|err| Error::InvalidConfig(format!("ipam: {err}")))?;
    if !raw.kind.is_empty() && !BUILTIN_IPAM.contains(&raw.kind.as_str()) {
        if raw.kind.contains('/') {
            return Err(Error::InvalidConfig(format!("ipam type {:?} is not a plugin name", raw.kind)));
        }
        return Ok(Ipam::Delegate { plugin: raw.kind });
    }
    let mut sets = raw.ranges;
    if let Some(subnet) = raw.legacy.subnet {
        sets.insert(
            0,
            vec![RangeConf {
                subnet,
                range_start: raw.legacy.range_start,
                range_end: raw.legacy.range_end,
                gateway: raw.legacy.gateway,
            }],
        );
    }
    if sets.is_empty() {
        return Err(Error::InvalidConfig("ipam: no \"ranges\" and no \"subnet\"".into()));
    }
    let range_sets = sets.iter().map(|set| RangeSet::new(set)).collect::<Result<Vec<_>, _>>().map_err(Error::Ipam)?;
    crate::ipam::range::check_disjoint(&range_sets).map_err(Error::Ipam)?;
    let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    Ok(Ipam::Builtin(IpamConf {
        range_sets,
        routes: raw.routes,
        network_dir: data_dir.join(network),
        resolv_conf: raw.resolv_conf,
    }))
}

/// Accepts `10.0.0.5` and `10.0.0.5/24` (runtimeConfig `ips` carries CIDRs).
pub fn parse_ip_maybe_cidr(text: &str) -> Result<IpAddr> {
    let addr = text.split_once('/').map_or(text, |(addr, _)| addr);
    addr.parse().map_err(|_| Error::InvalidConfig(format!("{text:?} is not an IP address")))
}

pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bad = || Error::InvalidConfig(format!("{text:?} is not a MAC address"));
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() || mac[0] & 1 == 1 {
        return Err(bad());
    }
    Ok(mac)
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: serde_json::Value) -> Result<NetConf> {
        NetConf::parse(json.to_string().as_bytes())
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.1.0", "name": "net1", "type": "waggle-cni", "bridge": "wbr0",
            "isDefaultGateway": true,
            "ipam": {"type": "waggle", "dataDir": "/tmp/x",
                     "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00:9::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
            "runtimeConfig": {"ips": ["10.9.0.7/24"]},
            "args": {"cni": {"ips": ["fd00:9::7"]}}
        })
    }

    #[test]
    fn a_dual_stack_bridge_config_parses_with_defaults_filled_in() {
        let conf = conf(base()).expect("valid");
        assert!(conf.is_gateway, "isDefaultGateway implies isGateway");
        let Ipam::Builtin(ipam) = &conf.ipam else { panic!("builtin ipam expected") };
        assert_eq!(ipam.range_sets.len(), 2);
        assert_eq!(ipam.network_dir, PathBuf::from("/tmp/x/net1"));
        assert_eq!(conf.requested_ips.len(), 2);
    }

    #[test]
    fn malformed_json_is_a_decode_failure_code_6() {
        assert_eq!(NetConf::parse(b"{not json").expect_err("malformed").code(), 6);
    }

    #[test]
    fn an_unknown_cni_version_is_code_1_even_when_the_rest_is_wrong() {
        let err = conf(serde_json::json!({"cniVersion": "9.9.9"})).expect_err("bad version");
        assert_eq!(err.code(), 1);
    }

    #[test]
    fn a_missing_name_or_ipam_is_invalid_config_code_7() {
        let mut no_name = base();
        no_name.as_object_mut().expect("object").remove("name");
        assert_eq!(conf(no_name).expect_err("no name").code(), 7);
        let mut no_ipam = base();
        no_ipam.as_object_mut().expect("object").remove("ipam");
        assert_eq!(conf(no_ipam).expect_err("no ipam").code(), 7);
    }

    #[test]
    fn a_foreign_ipam_type_is_delegated() {
        let mut json = base();
        json["ipam"] = serde_json::json!({"type": "host-local", "subnet": "10.9.0.0/24"});
        assert!(matches!(conf(json).expect("valid").ipam, Ipam::Delegate { plugin } if plugin == "host-local"));
    }

    #[test]
    fn the_legacy_subnet_form_becomes_the_first_range_set() {
        let mut json = base();
        json["ipam"] = serde_json::json!({"subnet": "10.8.0.0/16", "rangeStart": "10.8.1.0"});
        let Ipam::Builtin(ipam) = conf(json).expect("valid").ipam else { panic!("builtin ipam expected") };
        assert_eq!(ipam.range_sets.len(), 1);
    }

    #[test]
    fn macs_parse_and_multicast_ones_are_refused() {
        assert_eq!(parse_mac("02:00:00:00:00:2a").expect("valid"), [2, 0, 0, 0, 0, 0x2a]);
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("02:00:00").is_err());
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 0x2a]), "02:00:00:00:00:2a");
    }
}
