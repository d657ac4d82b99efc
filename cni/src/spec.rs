//! The CNI spec's wire types: versions, results and their per-version shapes.
//!
//! Results are kept in one internal shape (the 1.x one) and converted on the
//! way in and out: 0.3.x/0.4.0 results carry `"version": "4"|"6"` on each IP
//! and have no interface `mtu`; 1.0.0 drops `version`; 1.1.0 adds `mtu`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Versions this plugin speaks, oldest first, as VERSION reports them.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version used when nothing better is known (VERSION without input, errors
/// raised before the configuration could be read).
pub const LATEST: &str = "1.1.0";

/// The shape family a result takes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Accepts exactly the supported versions; anything else is code 1.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "0.3.0" => Self::V0_3_0,
            "0.3.1" => Self::V0_3_1,
            "0.4.0" => Self::V0_4_0,
            "1.0.0" => Self::V1_0_0,
            "1.1.0" => Self::V1_1_0,
            other => {
                return Err(Error::IncompatibleVersion {
                    requested: other.to_string(),
                    supported: SUPPORTED_VERSIONS.join(", "),
                });
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK appeared in 0.4.0.
    pub fn has_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// STATUS and GC appeared in 1.1.0.
    pub fn has_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }

    fn tags_ip_family(self) -> bool {
        self < Self::V1_0_0
    }
}

/// VERSION's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<&'static str>,
}

impl VersionResult {
    pub fn new(cni_version: &str) -> Self {
        Self { cni_version: cni_version.to_string(), supported_versions: SUPPORTED_VERSIONS.to_vec() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"` in results before 1.0.0, absent afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A success result (ADD's output, and `prevResult` on input).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version into the internal shape.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let mut result: Self =
            serde_json::from_value(value).map_err(|source| Error::Decode { what: "prevResult", source })?;
        for ip in &mut result.ips {
            ip.version = None;
        }
        Ok(result)
    }

    /// The same result in the shape of `version`.
    pub fn convert_to(&self, version: Version) -> Self {
        let mut out = self.clone();
        out.cni_version = version.as_str().to_string();
        for ip in &mut out.ips {
            ip.version =
                version.tags_ip_family().then(|| if ip.address.addr().is_ipv4() { "4" } else { "6" }.to_string());
        }
        if version < Version::V1_1_0 {
            for iface in &mut out.interfaces {
                iface.mtu = None;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        serde_json::from_value(serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "br0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1500},
                           {"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [{"interface": 1, "address": "10.1.0.2/24", "gateway": "10.1.0.1"},
                    {"interface": 1, "address": "fd00::2/64"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        }))
        .expect("valid result")
    }

    #[test]
    fn every_supported_version_parses_and_round_trips() {
        for text in SUPPORTED_VERSIONS {
            assert_eq!(Version::parse(text).expect("supported").as_str(), text);
        }
    }

    #[test]
    fn unknown_versions_are_incompatible_with_code_1() {
        for text in ["0.2.0", "1.2.0", "", "banana"] {
            let err = Version::parse(text).expect_err("unsupported");
            assert_eq!(err.code(), 1, "{text}");
        }
    }

    #[test]
    fn old_results_tag_each_ip_with_its_family_and_drop_the_mtu() {
        let out = serde_json::to_value(sample().convert_to(Version::V0_4_0)).expect("serializes");
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["ips"][0]["version"], "4");
        assert_eq!(out["ips"][1]["version"], "6");
        assert!(out["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn one_point_x_results_have_no_ip_version_and_only_1_1_has_mtu() {
        let v10 = serde_json::to_value(sample().convert_to(Version::V1_0_0)).expect("serializes");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["interfaces"][0].get("mtu").is_none());
        let v11 = serde_json::to_value(sample().convert_to(Version::V1_1_0)).expect("serializes");
        assert_eq!(v11["interfaces"][0]["mtu"], 1500);
    }

    #[test]
    fn an_old_prev_result_reads_into_the_internal_shape() {
        let old = serde_json::to_value(sample().convert_to(Version::V0_3_1)).expect("serializes");
        let back = CniResult::from_value(old).expect("parses");
        assert_eq!(back.ips, sample().ips);
    }

    #[test]
    fn the_empty_dns_object_is_always_present_like_the_reference_plugins() {
        let out = serde_json::to_value(CniResult::default().convert_to(Version::V1_0_0)).expect("serializes");
        assert_eq!(out["dns"], serde_json::json!({}));
    }
}
