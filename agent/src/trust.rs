//! Trust anchors and the one place the TLS crypto provider is chosen.
//!
//! The built-in anchors are the Mozilla root program's TLS server roots
//! (webpki-roots). A device image can be years old, and root changes do
//! happen, so the configuration may name a PEM bundle instead (for example
//! the system's `/etc/ssl/certs/ca-certificates.crt`, updated with the
//! firmware's packages).

use crate::error::{Error, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Largest trust anchor bundle read from disk: 1 MiB. A full Mozilla bundle
/// is about 220 KiB in PEM.
pub const MAX_BUNDLE_BYTES: u64 = 1 << 20;

/// A set of trust anchors for verifying TLS server certificate chains.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    store: Arc<RootCertStore>,
    builtin: bool,
}

impl TrustAnchors {
    /// The roots compiled into the agent (webpki-roots).
    pub fn builtin() -> TrustAnchors {
        let mut store = RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        TrustAnchors {
            store: Arc::new(store),
            builtin: true,
        }
    }

    /// The roots in a PEM bundle file (at most [`MAX_BUNDLE_BYTES`]).
    /// Certificates that are not usable as anchors are skipped with a
    /// warning; a file without any usable one is an error, since trusting
    /// nothing would make every renewal fail later with a vaguer message.
    pub fn from_pem_file(path: &Path) -> Result<TrustAnchors> {
        const DOING: &str = "reading trust anchors from";
        let data = crate::atomic::read_bounded(path, MAX_BUNDLE_BYTES, DOING)?
            .ok_or_else(|| Error::io(DOING, path, io::Error::from(io::ErrorKind::NotFound)))?;
        TrustAnchors::from_pem(&data)
            .map_err(|why| Error::io(DOING, path, io::Error::new(io::ErrorKind::InvalidData, why)))
    }

    /// The roots in a PEM bundle held in memory.
    pub fn from_pem(pem: &[u8]) -> Result<TrustAnchors, String> {
        let mut certs = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem) {
            certs.push(item.map_err(|e| format!("not PEM: {e}"))?);
        }
        let mut store = RootCertStore::empty();
        let (_, ignored) = store.add_parsable_certificates(certs);
        if ignored > 0 {
            log::warn!("trust anchors: skipped {ignored} certificate(s) that cannot be used as roots");
        }
        if store.is_empty() {
            return Err("no usable CERTIFICATE in it".into());
        }
        Ok(TrustAnchors {
            store: Arc::new(store),
            builtin: false,
        })
    }

    /// The anchors, shareable with rustls.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    /// Whether these are the compiled-in roots.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// How many anchors there are.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are none (never true for a constructed value).
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}

/// The TLS crypto provider: ring, which builds on every target we ship
/// (aws-lc does not build for MIPS). Chosen here and nowhere else.
///
/// The agent is only ever a TLS client without a client certificate, so
/// the provider loads no private keys: that keeps ring's RSA, Ed25519 and
/// ECDSA signing out of the binary (about 40 KB on MIPS). The tests' TLS
/// servers load keys, so they get ring's key loader.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        #[allow(unused_mut)]
        let mut provider = rustls::crypto::ring::default_provider();
        #[cfg(not(test))]
        {
            provider.key_provider = &NoPrivateKeys;
        }
        Arc::new(provider)
    }))
}

/// A key provider that refuses every key: the agent presents no
/// certificate in TLS (its certificate is for the local web server).
#[derive(Debug)]
struct NoPrivateKeys;

impl rustls::crypto::KeyProvider for NoPrivateKeys {
    fn load_private_key(
        &self,
        _key_der: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "the agent does not present a TLS certificate".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::atomic::tests::TempDir;

    #[test]
    fn the_shipped_provider_loads_no_private_keys() {
        use rustls::crypto::KeyProvider;
        let key = crate::keygen::CertKey::generate().unwrap().to_pkcs8_der().unwrap();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.to_vec().into());
        let refused = NoPrivateKeys.load_private_key(der).err().unwrap();
        assert!(refused.to_string().contains("does not present"), "{refused}");
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn builtin_has_roots() {
        let t = TrustAnchors::builtin();
        assert!(t.is_builtin());
        assert!(t.len() > 50);
    }

    #[test]
    fn bundle_file() {
        let d = TempDir::new("trust");
        let p = d.path("roots.pem");
        std::fs::write(&p, format!("# two roots\n{}{}", ca_pem(), ca_pem())).unwrap();
        let t = TrustAnchors::from_pem_file(&p).unwrap();
        assert!(!t.is_builtin());
        assert_eq!(t.root_store().len(), 2);
    }

    #[test]
    fn bundle_errors_name_the_file() {
        let d = TempDir::new("trust");
        let p = d.path("roots.pem");
        let err = TrustAnchors::from_pem_file(&p).unwrap_err().to_string();
        assert!(err.contains("roots.pem"), "{err}");
        std::fs::write(&p, "just text\n").unwrap();
        let err = TrustAnchors::from_pem_file(&p).unwrap_err().to_string();
        assert!(err.contains("no usable CERTIFICATE"), "{err}");
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
        let err = TrustAnchors::from_pem_file(&p).unwrap_err().to_string();
        assert!(err.contains("not PEM"), "{err}");
        std::fs::write(&p, vec![b'a'; MAX_BUNDLE_BYTES as usize + 1]).unwrap();
        let err = TrustAnchors::from_pem_file(&p).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn one_provider() {
        assert!(Arc::ptr_eq(&crypto_provider(), &crypto_provider()));
    }
}
