//! TLS for the API server: the serving certificate, and client certificates
//! verified against the cluster CA (optional at the TLS layer, so that a
//! request without one gets a Kubernetes 401 instead of a handshake failure).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::pki::Pki;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("parsing PEM of {what}")]
    Pem {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} holds no certificate or key")]
    Empty { what: &'static str },
    #[error("building the TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("building the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

pub(crate) fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what });
    }
    Ok(certs)
}

pub(crate) fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|source| TlsError::Pem { what, source })?
        .ok_or(TlsError::Empty { what })
}

/// The rustls configuration: ALPN h2 and http/1.1 (watches and logs work over
/// either; exec and port-forward upgrade over HTTP/1.1).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs(&pki.ca.cert_pem, "the CA certificate")? {
        roots.add(ca)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&pki.serving.cert_pem, "the serving certificate")?,
            key(&pki.serving.key_pem, "the serving key")?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
