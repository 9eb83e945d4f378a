//! The server's TLS configuration: rustls with the ring provider, TLS 1.2
//! and 1.3, HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

fn tls_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("TLS: {what} {}: {e}", path.display()))
}

/// A rustls server configuration for the PEM chain at `cert` (leaf first)
/// and the PEM key at `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err("reading certificate", cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("reading certificate", cert, e))?;
    if chain.is_empty() {
        return Err(tls_err("reading certificate", cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err("reading key", key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("configuring", cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| tls_err("certificate and key do not fit", cert, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
