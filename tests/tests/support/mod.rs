//! What the fault tests (`power_loss.rs`, `storage_faults.rs`) check on
//! disk: whether a certificate set is whole, that is whether a web server
//! can load it.

use lancert_tests::tls::CertInfo;
use lancert_tests::Agent;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};

/// The four files of a set: the installed ones, or their `.bak` copies.
#[derive(Debug, Clone)]
pub struct SetFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub chain: PathBuf,
    pub fullchain: PathBuf,
}

impl SetFiles {
    /// The files the agent installs.
    pub fn installed(agent: &Agent) -> SetFiles {
        let [key, cert, chain, fullchain] = agent.installed_files();
        SetFiles {
            key,
            cert,
            chain,
            fullchain,
        }
    }

    /// Their `.bak` copies.
    pub fn backup(agent: &Agent) -> SetFiles {
        let i = SetFiles::installed(agent);
        SetFiles {
            key: Agent::backup_of(&i.key),
            cert: Agent::backup_of(&i.cert),
            chain: Agent::backup_of(&i.chain),
            fullchain: Agent::backup_of(&i.fullchain),
        }
    }

    /// The leaf (DER) if the set is whole: the key is the certificate's,
    /// the fullchain is that certificate followed by the chain. Otherwise
    /// what is wrong.
    pub fn check_whole(&self) -> Result<Vec<u8>, String> {
        let key_spki = key_spki(&self.key)?;
        let leaf = certs_of(&self.cert)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{} holds no certificate", self.cert.display()))?;
        let chain = certs_of(&self.chain)?;
        let fullchain = certs_of(&self.fullchain)?;
        if CertInfo::parse(&leaf).spki != key_spki {
            return Err(format!(
                "the key {} does not belong to the certificate {}",
                self.key.display(),
                self.cert.display()
            ));
        }
        if fullchain.first() != Some(&leaf) {
            return Err(format!(
                "{} does not start with the certificate of {}",
                self.fullchain.display(),
                self.cert.display()
            ));
        }
        if fullchain[1..] != chain[..] {
            return Err(format!(
                "{} is not the certificate followed by {}",
                self.fullchain.display(),
                self.chain.display()
            ));
        }
        Ok(leaf)
    }
}

/// The DER SubjectPublicKeyInfo of a PKCS#8 P-256 key file.
pub fn key_spki(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| format!("{} is not a PKCS#8 P-256 key: {e}", path.display()))?;
    let spki = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| format!("encoding the public key of {}: {e}", path.display()))?;
    Ok(spki.as_bytes().to_vec())
}

/// The certificates (DER) of a PEM file, in order.
pub fn certs_of(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e:?}", path.display()))
}

/// The names in `dir` that look like the agent's temporary files
/// (`.{name}.tmp-{pid}`).
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}
