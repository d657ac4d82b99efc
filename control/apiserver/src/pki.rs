//! The cluster PKI: a CA made at first start, a serving certificate and an
//! admin client certificate signed by it, all kept as PEM files under
//! `<data-dir>/pki` and reused on later starts.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// What went wrong making or loading a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{action}")]
    Cert {
        action: String,
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's CA, the API server's serving pair and the admin client pair.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    pub ca: CertPair,
    pub serving: CertPair,
    pub admin: CertPair,
}

/// Names the serving certificate is valid for, besides the ones given.
const SERVING_DNS_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

impl Pki {
    /// Loads `<dir>/{ca,apiserver,admin}.{crt,key}`, making whatever is missing.
    /// `ips` are the addresses the API server answers on (bind address, the
    /// first service IP, …).
    pub fn load_or_create(dir: &Path, ips: &[IpAddr]) -> Result<Self, PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io { action: "creating", path: dir.into(), source })?;
        let ca = match read_pair(dir, "ca")? {
            Some(pair) => pair,
            None => {
                let pair = make_ca()?;
                write_pair(dir, "ca", &pair)?;
                tracing::info!(dir = %dir.display(), "created the cluster CA");
                pair
            }
        };
        let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(cert_err("reading the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(cert_err("reading the CA certificate"))?;

        let serving = match read_pair(dir, "apiserver")? {
            Some(pair) => pair,
            None => {
                let mut sans: Vec<SanType> = Vec::new();
                for name in SERVING_DNS_NAMES {
                    sans.push(SanType::DnsName((*name).try_into().map_err(cert_err("a DNS name"))?));
                }
                for ip in ips {
                    sans.push(SanType::IpAddress(*ip));
                }
                let pair = issue(&issuer, "kube-apiserver", &[], sans, ExtendedKeyUsagePurpose::ServerAuth)?;
                write_pair(dir, "apiserver", &pair)?;
                pair
            }
        };
        let admin = match read_pair(dir, "admin")? {
            Some(pair) => pair,
            None => {
                let pair = issue(
                    &issuer,
                    "kubernetes-admin",
                    &["system:masters"],
                    Vec::new(),
                    ExtendedKeyUsagePurpose::ClientAuth,
                )?;
                write_pair(dir, "admin", &pair)?;
                pair
            }
        };
        Ok(Self { dir: dir.into(), ca, serving, admin })
    }

    /// Issues a client certificate for `user` in `groups`, signed by the CA
    /// (node agents, controllers, tests).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca.key_pem).map_err(cert_err("reading the CA key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key).map_err(cert_err("reading the CA certificate"))?;
        issue(&issuer, user, groups, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn make_ca() -> Result<CertPair, PkiError> {
    let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "waggle-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).map_err(cert_err("signing the CA certificate"))?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn issue(
    issuer: &Issuer<'_, &KeyPair>,
    common_name: &str,
    organizations: &[&str],
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair, PkiError> {
    let key = KeyPair::generate().map_err(cert_err("generating a key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).map_err(cert_err(format!("signing the certificate of {common_name}")))?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn cert_err(action: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let action = action.into();
    move |source| PkiError::Cert { action, source }
}

fn read_pair(dir: &Path, name: &str) -> Result<Option<CertPair>, PkiError> {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    if !crt.exists() || !key.exists() {
        return Ok(None);
    }
    let read =
        |p: &Path| fs::read_to_string(p).map_err(|source| PkiError::Io { action: "reading", path: p.into(), source });
    Ok(Some(CertPair { cert_pem: read(&crt)?, key_pem: read(&key)? }))
}

fn write_pair(dir: &Path, name: &str, pair: &CertPair) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let write = |p: PathBuf, data: &str, mode: u32| -> Result<(), PkiError> {
        let io = |source| PkiError::Io { action: "writing", path: p.clone(), source };
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&p).map_err(io)?;
        std::io::Write::write_all(&mut f, data.as_bytes()).map_err(io)
    };
    write(dir.join(format!("{name}.key")), &pair.key_pem, 0o600)?;
    write(dir.join(format!("{name}.crt")), &pair.cert_pem, 0o644)
}

/// An admin kubeconfig (YAML) for `server`, with the CA and the client
/// certificate embedded.
pub fn kubeconfig(server: &str, ca_pem: &str, client: &CertPair, user: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: waggle
contexts:
- context:
    cluster: waggle
    user: {user}
  name: {user}@waggle
current-context: {user}@waggle
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reuses_on_the_next_start() {
        let dir = std::env::temp_dir().join(format!("waggle-pki-{}", uuid::Uuid::new_v4()));
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("ip")];
        let first = Pki::load_or_create(&dir, &ips).expect("creates");
        let second = Pki::load_or_create(&dir, &ips).expect("loads");
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_eq!(first.admin.cert_pem, second.admin.cert_pem);
        let kc = kubeconfig("https://127.0.0.1:6443", &first.ca.cert_pem, &first.admin, "admin");
        assert!(kc.contains("server: https://127.0.0.1:6443"));
        let _ = fs::remove_dir_all(&dir);
    }
}
