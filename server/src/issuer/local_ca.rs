//! The built-in CA: a root (`ca.pem`, the file devices trust), an
//! intermediate that signs every leaf (the chain served is leaf +
//! intermediate, like a public CA's), and the server's own TLS certificate.
//!
//! Files in the data directory, created on first start and reused after:
//! `ca.pem`, `ca.key`, `intermediate.pem`, `intermediate.key`, `tls.pem`
//! (leaf + intermediate), `tls.key`; keys are written with mode 0600.
//!
//! rcgen signs with an [`rcgen::Issuer`] made of the CA's distinguished name,
//! key identifier method and key usages. Without rcgen's x509-parser feature
//! those cannot be read back from `ca.pem`, so they are fixed here and rebuilt
//! identically on every start; [`LocalCa::open_or_create`] then checks that a
//! test signature really chains to the stored intermediate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use x509_cert::der::Encode;

use super::{IssueError, IssueRequest, IssuedChain, Issuer, RenewalWindow};
use crate::chain_info;
use crate::csr_check::{self, Curve};
use crate::error::Error;
use crate::BoxFuture;

/// Root certificate, the trust anchor devices are given.
pub const ROOT_CERT: &str = "ca.pem";
/// Root key.
pub const ROOT_KEY: &str = "ca.key";
/// Intermediate certificate.
pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
/// Intermediate key.
pub const INTERMEDIATE_KEY: &str = "intermediate.key";
/// The server's TLS chain (leaf + intermediate).
pub const TLS_CERT: &str = "tls.pem";
/// The server's TLS key.
pub const TLS_KEY: &str = "tls.key";

const DAY: i64 = 86_400;
/// Root lifetime: 20 years.
const ROOT_VALIDITY_SECS: i64 = 20 * 365 * DAY;
/// Intermediate lifetime: 10 years.
const INTERMEDIATE_VALIDITY_SECS: i64 = 10 * 365 * DAY;
/// Server TLS certificate lifetime: 397 days, the CA/Browser Forum maximum.
const TLS_VALIDITY_SECS: i64 = 397 * DAY;
/// The TLS certificate is reissued at start when it has less than this left.
const TLS_RENEW_BEFORE_SECS: i64 = 30 * DAY;
/// Leafs are backdated a little for clocks running behind.
const BACKDATE_SECS: i64 = 60;

const ROOT_CN: &str = "lancert local root CA";
const INTERMEDIATE_CN: &str = "lancert local intermediate CA";
const ORGANIZATION: &str = "lancert";

/// The local CA.
pub struct LocalCa {
    intermediate: rcgen::Issuer<'static, KeyPair>,
    intermediate_pem: String,
    validity_secs: i64,
    delay: Duration,
    renewal_window: bool,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("validity_secs", &self.validity_secs)
            .finish()
    }
}

fn ca_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Ca(format!("{what}: {e}"))
}

/// Unix seconds as a certificate time, clamped to years 1970..=9999 (every
/// time computed here is far inside that range).
fn timestamp(unix: i64) -> time::OffsetDateTime {
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    time::OffsetDateTime::from_unix_timestamp(unix.clamp(0, MAX)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A random positive 128-bit serial with a non-zero first byte.
fn random_serial() -> SerialNumber {
    let mut b = crate::random::bytes::<16>();
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&b)
}

fn ca_params(cn: &str, path_len: u8, now: i64, lifetime: i64) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = timestamp(now - BACKDATE_SECS);
    params.not_after = timestamp(now + lifetime);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Writes `data` to `path` through a temporary file and a rename, with
/// `mode` (0600 for keys).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))
}

fn load_key(path: &Path) -> Result<KeyPair, Error> {
    KeyPair::from_pem(&read_text(path)?).map_err(|e| ca_err(&format!("key {}", path.display()), e))
}

/// The public key of a certificate request, for rcgen.
struct CsrPublicKey {
    alg: &'static SignatureAlgorithm,
    sec1: Vec<u8>,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.sec1
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl LocalCa {
    /// Loads the CA from `data_dir`, creating the root and intermediate
    /// when missing.
    pub fn open_or_create(
        data_dir: &Path,
        validity_secs: u64,
        delay_secs: u64,
        renewal_window: bool,
    ) -> Result<LocalCa, Error> {
        let now = crate::clock::now();
        let root_cert = data_dir.join(ROOT_CERT);
        let root_key_path = data_dir.join(ROOT_KEY);
        let int_cert = data_dir.join(INTERMEDIATE_CERT);
        let int_key_path = data_dir.join(INTERMEDIATE_KEY);

        let root_exists = root_cert.exists() && root_key_path.exists();
        if !root_exists {
            log::info!("creating local root CA in {}", data_dir.display());
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| ca_err("root key", e))?;
            let params = ca_params(ROOT_CN, 1, now, ROOT_VALIDITY_SECS).map_err(|e| ca_err("root", e))?;
            let cert = params.self_signed(&key).map_err(|e| ca_err("signing root", e))?;
            write_file(&root_key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&root_cert, cert.pem().as_bytes(), 0o644)?;
        }
        if !root_exists || !int_cert.exists() || !int_key_path.exists() {
            log::info!("creating local intermediate CA in {}", data_dir.display());
            let root_key = load_key(&root_key_path)?;
            let root_params = ca_params(ROOT_CN, 1, now, ROOT_VALIDITY_SECS).map_err(|e| ca_err("root", e))?;
            let root = rcgen::Issuer::new(root_params, root_key);
            let key =
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| ca_err("intermediate key", e))?;
            let params = ca_params(INTERMEDIATE_CN, 0, now, INTERMEDIATE_VALIDITY_SECS)
                .map_err(|e| ca_err("intermediate", e))?;
            let cert = params
                .signed_by(&key, &root)
                .map_err(|e| ca_err("signing intermediate", e))?;
            write_file(&int_key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&int_cert, cert.pem().as_bytes(), 0o644)?;
        }

        let intermediate_pem = read_text(&int_cert)?;
        let key = load_key(&int_key_path)?;
        let params =
            ca_params(INTERMEDIATE_CN, 0, now, INTERMEDIATE_VALIDITY_SECS).map_err(|e| ca_err("intermediate", e))?;
        let ca = LocalCa {
            intermediate: rcgen::Issuer::new(params, key),
            intermediate_pem,
            validity_secs: i64::try_from(validity_secs).unwrap_or(i64::MAX / 4),
            delay: Duration::from_secs(delay_secs),
            renewal_window,
        };
        ca.self_check(&int_cert)?;
        Ok(ca)
    }

    /// Checks that the stored intermediate certificate belongs to the loaded
    /// key and that what this CA signs names it as the issuer.
    fn self_check(&self, int_cert: &Path) -> Result<(), Error> {
        let certs = x509_cert::Certificate::load_pem_chain(self.intermediate_pem.as_bytes())
            .map_err(|e| ca_err(&format!("{} is not a PEM certificate", int_cert.display()), e))?;
        let cert = certs
            .first()
            .ok_or_else(|| Error::Ca(format!("{} holds no certificate", int_cert.display())))?;
        let key = self.intermediate.key();
        let cert_key = cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes();
        if cert_key != key.public_key_raw() {
            return Err(Error::Ca(format!(
                "{} does not match {INTERMEDIATE_KEY}; remove both to create a new intermediate",
                int_cert.display()
            )));
        }
        let probe_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| ca_err("probe key", e))?;
        let probe = self
            .leaf_params("probe.invalid", crate::clock::now(), 60)
            .and_then(|p| p.signed_by(&probe_key, &self.intermediate))
            .map_err(|e| ca_err("signing probe certificate", e))?;
        let probe = x509_cert::Certificate::load_pem_chain(probe.pem().as_bytes())
            .map_err(|e| ca_err("reading probe certificate", e))?;
        let issuer = probe.first().map(|c| c.tbs_certificate().issuer().to_der());
        let subject = cert.tbs_certificate().subject().to_der();
        match (issuer, subject) {
            (Some(Ok(i)), Ok(s)) if i == s => Ok(()),
            _ => Err(Error::Ca(format!(
                "{} has an unexpected subject; remove {INTERMEDIATE_CERT} and {INTERMEDIATE_KEY} to create a new one",
                int_cert.display()
            ))),
        }
    }

    fn leaf_params(&self, name: &str, now: i64, lifetime: i64) -> Result<CertificateParams, rcgen::Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.try_into()?),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = timestamp(now - BACKDATE_SECS);
        params.not_after = timestamp(now.saturating_add(lifetime));
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    /// Signs a leaf for `hostname` with the key of `csr_der`, now.
    pub fn sign(&self, csr_der: &[u8], hostname: &str) -> Result<IssuedChain, IssueError> {
        let csr = csr_check::parse(csr_der).map_err(|e| IssueError {
            problem: lancert_protocol::problem::ProblemType::BadCsr,
            detail: e.0,
            retry_after: None,
            validation_failed: false,
        })?;
        let key = CsrPublicKey {
            alg: match csr.key.curve {
                Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            },
            sec1: csr.key.sec1,
        };
        let now = crate::clock::now();
        let leaf = self
            .leaf_params(hostname, now, self.validity_secs)
            .and_then(|p| p.signed_by(&key, &self.intermediate))
            .map_err(|e| {
                log::error!("local CA: signing certificate for {hostname}: {e}");
                IssueError::failed("the local CA could not sign the certificate")
            })?;
        let pem_chain = format!("{}{}", leaf.pem(), self.intermediate_pem);
        let renewal = if self.renewal_window {
            let info = chain_info::leaf(&pem_chain).map_err(IssueError::failed)?;
            Some(RenewalWindow::for_validity(info.not_before, info.not_after))
        } else {
            None
        };
        Ok(IssuedChain { pem_chain, renewal })
    }

    /// Makes sure `data_dir` holds a TLS certificate for `names` with at
    /// least `TLS_RENEW_BEFORE_SECS` left, issuing a new one (with a new
    /// key) otherwise. Returns the chain and key paths.
    ///
    /// The names are those of the first issuance: after changing
    /// `tls_names`, remove `tls.pem` to get a certificate for the new ones.
    pub fn ensure_tls_cert(&self, data_dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), Error> {
        let cert_path = data_dir.join(TLS_CERT);
        let key_path = data_dir.join(TLS_KEY);
        let now = crate::clock::now();
        if cert_path.exists() && key_path.exists() {
            let current = read_text(&cert_path).ok().and_then(|pem| chain_info::leaf(&pem).ok());
            if let Some(info) = current {
                if info.not_after - now > TLS_RENEW_BEFORE_SECS {
                    return Ok((cert_path, key_path));
                }
            }
            log::info!("reissuing server TLS certificate {}", cert_path.display());
        } else {
            log::info!("issuing server TLS certificate for {}", names.join(", "));
        }
        let first = names.first().map(String::as_str).unwrap_or("localhost");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| ca_err("TLS key", e))?;
        let mut params = self
            .leaf_params(first, now, TLS_VALIDITY_SECS)
            .map_err(|e| ca_err("TLS certificate", e))?;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.as_str().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err("TLS certificate names", e))?;
        let cert = params
            .signed_by(&key, &self.intermediate)
            .map_err(|e| ca_err("signing TLS certificate", e))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(
            &cert_path,
            format!("{}{}", cert.pem(), self.intermediate_pem).as_bytes(),
            0o644,
        )?;
        Ok((cert_path, key_path))
    }
}

impl Issuer for LocalCa {
    fn name(&self) -> String {
        "local_ca".into()
    }

    fn issue<'a>(&'a self, request: &'a IssueRequest) -> BoxFuture<'a, Result<IssuedChain, IssueError>> {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.sign(&request.csr_der, &request.hostname)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::csr_check::tests::{csr, HOST};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;

    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lancert-server-{tag}-{}-{}",
            std::process::id(),
            crate::random::token::<6>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn spki_raw(pem_chain: &str, index: usize) -> Vec<u8> {
        let certs = x509_cert::Certificate::load_pem_chain(pem_chain.as_bytes()).unwrap();
        certs[index]
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes()
            .to_vec()
    }

    #[test]
    fn creates_reuses_and_issues() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("ca");
        let ca = LocalCa::open_or_create(&dir, 3600, 0, true).unwrap();
        for key in [ROOT_KEY, INTERMEDIATE_KEY] {
            let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let root_before = std::fs::read(dir.join(ROOT_CERT)).unwrap();
        drop(ca);
        let ca = LocalCa::open_or_create(&dir, 3600, 0, true).unwrap();
        assert_eq!(std::fs::read(dir.join(ROOT_CERT)).unwrap(), root_before, "reused");

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = ca.sign(&csr(&key, &[HOST], Some(HOST)), HOST).unwrap();
        let certs = x509_cert::Certificate::load_pem_chain(issued.pem_chain.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2, "leaf + intermediate");
        assert_eq!(spki_raw(&issued.pem_chain, 0), key.public_key_raw());
        let leaf = certs[0].tbs_certificate();
        assert_eq!(
            leaf.issuer().to_der().unwrap(),
            certs[1].tbs_certificate().subject().to_der().unwrap()
        );
        let san: SubjectAltName = leaf.get_extension::<SubjectAltName>().unwrap().unwrap().1;
        assert!(matches!(&san.0[..], [GeneralName::DnsName(n)] if n.as_str() == HOST));
        let info = chain_info::leaf(&issued.pem_chain).unwrap();
        assert_eq!(info.not_after - info.not_before, 3600 + BACKDATE_SECS);
        let w = issued.renewal.unwrap();
        assert_eq!(w, RenewalWindow::for_validity(info.not_before, info.not_after));

        // The intermediate chains to the root.
        let root = x509_cert::Certificate::load_pem_chain(&root_before).unwrap();
        assert_eq!(
            certs[1].tbs_certificate().issuer().to_der().unwrap(),
            root[0].tbs_certificate().subject().to_der().unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_cert_has_dns_and_ip_names_and_is_reused() {
        let dir = temp_dir("tls");
        let ca = LocalCa::open_or_create(&dir, 3600, 0, false).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, key) = ca.ensure_tls_cert(&dir, &names).unwrap();
        let pem = std::fs::read_to_string(&cert).unwrap();
        let certs = x509_cert::Certificate::load_pem_chain(pem.as_bytes()).unwrap();
        let san = certs[0]
            .tbs_certificate()
            .get_extension::<SubjectAltName>()
            .unwrap()
            .unwrap()
            .1;
        assert!(matches!(&san.0[0], GeneralName::DnsName(n) if n.as_str() == "localhost"));
        assert!(matches!(&san.0[1], GeneralName::IpAddress(ip) if ip.as_bytes() == [127, 0, 0, 1]));
        let key_before = std::fs::read(&key).unwrap();
        ca.ensure_tls_cert(&dir, &names).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), key_before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mismatched_intermediate_is_refused() {
        let dir = temp_dir("mismatch");
        LocalCa::open_or_create(&dir, 3600, 0, false).unwrap();
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        write_file(&dir.join(INTERMEDIATE_KEY), other.serialize_pem().as_bytes(), 0o600).unwrap();
        let e = LocalCa::open_or_create(&dir, 3600, 0, false).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
