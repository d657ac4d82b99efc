//! TLS for the agent's API: a serving certificate (given, or self-signed for
//! the node's name and address, as a kubelet makes by default) and client
//! certificates verified against the cluster CA. Only the names allowed (the
//! API server's client identity) get an answer.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::Error;

/// What the agent's API trusts and presents.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM serving certificate and key; `None` makes a self-signed pair.
    pub serving: Option<(String, String)>,
    /// PEM CA bundle that client certificates must chain to.
    pub client_ca_pem: String,
    /// A client is allowed when its certificate's CN or one of its O is listed.
    pub allowed: Vec<String>,
}

/// The default allow-list: the names upstream API servers use for the
/// kubelet client, and cluster admins.
pub fn default_allowed() -> Vec<String> {
    ["kube-apiserver-kubelet-client", "system:kube-apiserver", "system:apiserver", "system:masters"]
        .map(String::from)
        .to_vec()
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    let certs = certs.map_err(Error::io(format!("reading the {what} PEM")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("the {what} PEM holds no certificate")));
    }
    Ok(certs)
}

/// Builds the rustls server configuration.
pub fn server_config(settings: &TlsSettings, node: &str, ip: IpAddr) -> Result<Arc<rustls::ServerConfig>, Error> {
    let (cert_pem, key_pem) = match &settings.serving {
        Some(pair) => pair.clone(),
        None => {
            let names = vec![node.to_owned(), ip.to_string(), "localhost".to_owned()];
            let made = rcgen::generate_simple_self_signed(names)
                .map_err(|e| Error::Config(format!("making a self-signed serving certificate: {e}")))?;
            (made.cert.pem(), made.signing_key.serialize_pem())
        }
    };
    let chain = certs(&cert_pem, "serving certificate")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(Error::io("reading the serving key PEM"))?
        .ok_or_else(|| Error::Config("the serving key PEM holds no key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&settings.client_ca_pem, "client CA")? {
        roots.add(ca).map_err(|e| Error::Config(format!("client CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("client certificate verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client's CN and O values from its (already verified) certificate.
pub fn identity(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or("").to_owned();
    let orgs = subject.iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_owned).collect();
    Some((cn, orgs))
}

/// Whether a verified client may use the API.
pub fn allowed(settings: &TlsSettings, cn: &str, orgs: &[String]) -> bool {
    settings.allowed.iter().any(|a| a == cn || orgs.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_allowed_by_its_common_name_or_one_of_its_groups() {
        let s = TlsSettings { serving: None, client_ca_pem: String::new(), allowed: default_allowed() };
        assert!(allowed(&s, "kube-apiserver-kubelet-client", &[]));
        assert!(allowed(&s, "alice", &["system:masters".to_owned()]));
        assert!(!allowed(&s, "alice", &["developers".to_owned()]));
    }

    #[test]
    fn a_self_signed_serving_certificate_is_made_when_none_is_given() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).expect("ca");
        let s = TlsSettings { serving: None, client_ca_pem: ca.cert.pem(), allowed: default_allowed() };
        assert!(server_config(&s, "node-a", IpAddr::from([127, 0, 0, 1])).is_ok());
    }
}
