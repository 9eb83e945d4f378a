//! Certificate inspection: what the installed certificate says about itself
//! (validity, names, key, issuer), read with x509-cert.
//!
//! The certificate on disk is the truth for renewal decisions, so this
//! module is careful to tell "missing" (renew), "corrupt" (renew) and
//! "unreadable" (an I/O error to report) apart.

use crate::error::{Error, Result};
use rustls::pki_types::pem::{PemObject, SectionKind};
use std::path::Path;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// Most certificates accepted in one chain. Let's Encrypt sends two or
/// three (leaf, intermediate, sometimes a cross-signed root); anything much
/// longer is not a chain we asked for.
pub const MAX_CHAIN_CERTS: usize = 8;

/// Largest PEM chain accepted: 64 KiB, far above
/// [`MAX_CHAIN_CERTS`] certificates of a few KiB each.
pub const MAX_CHAIN_PEM_BYTES: usize = 64 * 1024;

/// Largest key file read: 16 KiB (a P-256 PKCS#8 PEM is about 240 bytes;
/// an RSA-4096 key about 3.3 KiB).
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// What the agent needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds (inclusive, RFC 5280 §4.1.2.5).
    pub not_after: i64,
    /// The subjectAltName dNSNames, as written in the certificate.
    pub dns_names: Vec<String>,
    /// The SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The serial number in upper-case hex, as `openssl x509 -serial`
    /// prints it (no sign byte).
    pub serial_hex: String,
    /// The subject, RFC 4514 string form.
    pub subject: String,
    /// The issuer, RFC 4514 string form.
    pub issuer: String,
    /// Whether issuer and subject are the same name (the first-boot
    /// certificate; a publicly trusted leaf never is).
    pub self_signed: bool,
}

impl CertInfo {
    /// The validity period in seconds. RFC 5280 §4.1.2.5 makes both ends
    /// inclusive, so a "90-day" certificate (notAfter = notBefore + 90 days
    /// - 1 s, as Let's Encrypt issues them) is 90 days long.
    pub fn lifetime_secs(&self) -> i64 {
        self.not_after.saturating_sub(self.not_before).saturating_add(1)
    }

    /// Whether a dNSName of the certificate matches `hostname`: exactly,
    /// ignoring ASCII case (RFC 4343), or through a wildcard `*.zone` that
    /// stands for exactly one whole leftmost label (RFC 6125 §6.4.3).
    pub fn covers_name(&self, hostname: &str) -> bool {
        let host = normalize(hostname);
        if host.is_empty() {
            return false;
        }
        self.dns_names.iter().any(|name| {
            let name = normalize(name);
            if name == host {
                return true;
            }
            match (name.strip_prefix("*."), host.split_once('.')) {
                (Some(zone), Some((label, rest))) => !label.is_empty() && !zone.is_empty() && zone == rest,
                _ => false,
            }
        })
    }
}

/// Lower case, without the root's trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The DER certificates of a PEM chain (RFC 7468), in order.
///
/// Text between blocks is allowed (RFC 7468 §5.2 "explanatory text"), but
/// every block must be a well-formed CERTIFICATE holding a parsable X.509
/// certificate: a private key or any other known block is refused, at most
/// [`MAX_CHAIN_CERTS`] certificates and [`MAX_CHAIN_PEM_BYTES`] bytes are
/// accepted, and no certificate at all is an error.
pub fn pem_to_der_chain(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if pem.len() > MAX_CHAIN_PEM_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_CHAIN_PEM_BYTES} accepted",
            pem.len()
        ));
    }
    let mut chain = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| format!("bad PEM: {e}"))?;
        if kind != SectionKind::Certificate {
            return Err(format!("a {kind:?} block where only CERTIFICATE blocks belong"));
        }
        if chain.len() == MAX_CHAIN_CERTS {
            return Err(format!("more than {MAX_CHAIN_CERTS} certificates"));
        }
        Certificate::from_der(&der).map_err(|e| format!("certificate {} does not parse: {e}", chain.len() + 1))?;
        chain.push(der);
    }
    if chain.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(chain)
}

/// The DER of the first block of a file of well-formed PEM `CERTIFICATE`
/// blocks (else `None`): what a check compares to tell whether two files
/// start with the same certificate. Cheaper than [`pem_to_der_chain`]: the
/// blocks are decoded from base64 but not parsed as certificates.
pub fn first_certificate_block(pem: &[u8]) -> Option<Vec<u8>> {
    let mut first = None;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match item {
            Ok((SectionKind::Certificate, der)) => {
                first.get_or_insert(der);
            }
            _ => return None,
        }
    }
    first
}

/// Reads what the agent needs from a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, String> {
    let cert = Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let tbs = cert.tbs_certificate();
    let validity = tbs.validity();
    let unix = |t: x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    let mut dns_names = Vec::new();
    let san = tbs
        .get_extension::<SubjectAltName>()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    if let Some((_critical, SubjectAltName(names))) = san {
        for name in names {
            if let GeneralName::DnsName(dns) = name {
                dns_names.push(dns.to_string());
            }
        }
    }
    let spki_der = tbs
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format!("bad public key: {e}"))?;
    let serial = tbs.serial_number().as_bytes();
    // DER INTEGER content carries a 0x00 sign byte when the top bit is set.
    let serial = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        s => s,
    };
    Ok(CertInfo {
        not_before: unix(validity.not_before),
        not_after: unix(validity.not_after),
        dns_names,
        spki_der,
        serial_hex: serial.iter().map(|b| format!("{b:02X}")).collect(),
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        self_signed: tbs.subject() == tbs.issuer(),
    })
}

/// Reads the installed certificate file (PEM; a fullchain file is fine, its
/// first certificate is the leaf): what the agent needs of the leaf, and its
/// DER (to compare with the fullchain file's first certificate).
///
/// `Ok(None)`: the file does not exist. `Err(Error::Io)`: it could not be
/// read. `Err(Error::Rejected)`: it exists but does not hold a certificate;
/// the caller treats that as "renew".
pub fn load(path: &Path) -> Result<Option<(CertInfo, Vec<u8>)>> {
    let doing = "reading the installed certificate";
    let corrupt = |why: String| Error::rejected(format!("{doing} {}", path.display()), why);
    let pem = match crate::atomic::read_bounded(path, MAX_CHAIN_PEM_BYTES as u64, doing) {
        Ok(Some(pem)) => pem,
        Ok(None) => return Ok(None),
        // Too large to be a certificate chain: corrupt, not unreadable.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::InvalidData => {
            return Err(corrupt(source.to_string()))
        }
        Err(e) => return Err(e),
    };
    let mut chain = pem_to_der_chain(&pem).map_err(corrupt)?;
    let leaf = chain.swap_remove(0);
    let info = inspect(&leaf).map_err(corrupt)?;
    Ok(Some((info, leaf)))
}

/// The SubjectPublicKeyInfo (DER) of the private key in a PEM key file, to
/// check that the key matches the certificate: the public key the file
/// carries ([`crate::keygen::embedded_spki`]), else derived from the private
/// key. `Ok(None)` if the file does not exist; a file without a P-256
/// PKCS#8 key is `Err(Error::Rejected)`.
/// The decoded key bytes are wiped after use.
pub fn key_file_spki(path: &Path) -> Result<Option<Vec<u8>>> {
    let doing = "reading the installed key";
    let Some(pem) = crate::atomic::read_bounded(path, MAX_KEY_FILE_BYTES, doing)? else {
        return Ok(None);
    };
    let pem = p256::elliptic_curve::zeroize::Zeroizing::new(pem);
    let corrupt = |why: String| Error::rejected(format!("{doing} {}", path.display()), why);
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem) {
        let (kind, der) = item.map_err(|e| corrupt(format!("bad PEM: {e}")))?;
        let der = p256::elliptic_curve::zeroize::Zeroizing::new(der);
        if kind == SectionKind::PrivateKey {
            // The public key the file carries, if it does; deriving it is
            // the fallback for keys written without one.
            if let Some(spki) = crate::keygen::embedded_spki(&der).map_err(corrupt)? {
                return Ok(Some(spki));
            }
            let key = crate::keygen::CertKey::from_pkcs8_der(&der).map_err(corrupt)?;
            return Ok(Some(key.spki_der()));
        }
    }
    Err(corrupt("no PRIVATE KEY (PKCS#8) block".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::tests::TempDir;
    use crate::keygen::CertKey;

    fn info(names: &[&str]) -> CertInfo {
        CertInfo {
            not_before: 0,
            not_after: 90 * 86_400 - 1,
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            spki_der: vec![],
            serial_hex: "01".into(),
            subject: String::new(),
            issuer: String::new(),
            self_signed: false,
        }
    }

    fn self_signed(key: &CertKey, names: &[&str]) -> rcgen::Certificate {
        let kp = key.rcgen_signer();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x80, 0x01]));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        params.self_signed(&kp).unwrap()
    }

    #[test]
    fn names_exact_and_wildcard() {
        let c = info(&["A.Example.com", "*.zone.example.com"]);
        assert!(c.covers_name("a.example.com"));
        assert!(c.covers_name("a.example.com."));
        assert!(c.covers_name("x.zone.example.com"));
        assert!(!c.covers_name("zone.example.com"));
        assert!(!c.covers_name("y.x.zone.example.com"));
        assert!(!c.covers_name("b.example.com"));
        assert!(!c.covers_name(""));
        assert!(!info(&["*."]).covers_name("a."));
        assert_eq!(c.lifetime_secs(), 90 * 86_400);
    }

    #[test]
    fn inspect_reads_fields() {
        let key = CertKey::generate().unwrap();
        let cert = self_signed(&key, &["dev.example.com", "other.example.com"]);
        let i = inspect(cert.der()).unwrap();
        assert_eq!(i.dns_names, ["dev.example.com", "other.example.com"]);
        assert_eq!(i.spki_der, key.spki_der());
        assert_eq!(i.serial_hex, "8001");
        assert_eq!(i.subject, "CN=dev.example.com");
        assert_eq!(i.issuer, i.subject);
        assert!(i.self_signed);
        // rcgen's defaults: 1975-01-01 to 4096-01-01.
        assert_eq!(i.not_before, 157_766_400);
        assert!(i.not_after > 4_000_000_000);
    }

    #[test]
    fn pem_chain_bounds() {
        let key = CertKey::generate().unwrap();
        let pem = self_signed(&key, &["a.example.com"]).pem();
        assert_eq!(pem_to_der_chain(pem.as_bytes()).unwrap().len(), 1);
        let text = format!("leaf:\n{pem}\nthe rest:\n{pem}");
        assert_eq!(pem_to_der_chain(text.as_bytes()).unwrap().len(), 2);
        assert!(pem_to_der_chain(pem.repeat(MAX_CHAIN_CERTS).as_bytes()).is_ok());
        let err = pem_to_der_chain(pem.repeat(MAX_CHAIN_CERTS + 1).as_bytes()).unwrap_err();
        assert!(err.contains("more than 8"), "{err}");
        assert!(pem_to_der_chain(b"hello").unwrap_err().contains("no CERTIFICATE"));
        assert!(pem_to_der_chain(b"").is_err());
        let truncated = &pem[..pem.len() - 30];
        assert!(pem_to_der_chain(truncated.as_bytes()).is_err());
        let not_x509 = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(pem_to_der_chain(not_x509.as_bytes())
            .unwrap_err()
            .contains("does not parse"));
        let with_key = format!("{pem}{}", key.to_pkcs8_pem().unwrap());
        assert!(pem_to_der_chain(with_key.as_bytes())
            .unwrap_err()
            .contains("PrivateKey"));
        assert!(pem_to_der_chain(&vec![b' '; MAX_CHAIN_PEM_BYTES + 1]).is_err());
    }

    #[test]
    fn load_missing_corrupt_and_good() {
        let d = TempDir::new("certificate");
        let p = d.path("device.crt");
        assert_eq!(load(&p).unwrap(), None);
        std::fs::write(&p, "garbage").unwrap();
        match load(&p) {
            Err(Error::Rejected { doing, reason }) => {
                assert!(doing.contains("device.crt"), "{doing}");
                assert!(reason.contains("no CERTIFICATE"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let key = CertKey::generate().unwrap();
        std::fs::write(&p, self_signed(&key, &["a.example.com"]).pem()).unwrap();
        let (info, leaf) = load(&p).unwrap().unwrap();
        assert_eq!(info.dns_names, ["a.example.com"]);
        assert_eq!(first_certificate_block(&std::fs::read(&p).unwrap()), Some(leaf));
        std::fs::write(&p, vec![b'x'; MAX_CHAIN_PEM_BYTES + 1]).unwrap();
        assert!(matches!(load(&p), Err(Error::Rejected { .. })));
        // A directory where the file should be is unreadable, not corrupt.
        let dir = d.path("dir.crt");
        std::fs::create_dir(&dir).unwrap();
        assert!(matches!(load(&dir), Err(Error::Io { .. })));
    }

    #[test]
    fn first_certificate_block_needs_a_well_formed_file() {
        let key = CertKey::generate().unwrap();
        let a = self_signed(&key, &["a.example.com"]);
        let b = self_signed(&key, &["b.example.com"]);
        let both = format!("{}{}", a.pem(), b.pem());
        assert_eq!(first_certificate_block(both.as_bytes()).unwrap(), a.der().to_vec());
        assert_eq!(first_certificate_block(b.pem().as_bytes()).unwrap(), b.der().to_vec());
        let torn = &both[..both.len() - 40];
        assert_eq!(first_certificate_block(torn.as_bytes()), None, "a torn file");
        let with_key = format!("{}{}", a.pem(), key.to_pkcs8_pem().unwrap());
        assert_eq!(first_certificate_block(with_key.as_bytes()), None);
        assert_eq!(first_certificate_block(b""), None);
    }

    #[test]
    fn key_file_spki_matches() {
        let d = TempDir::new("certificate");
        let p = d.path("device.key");
        assert_eq!(key_file_spki(&p).unwrap(), None);
        let key = CertKey::generate().unwrap();
        std::fs::write(&p, key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(key_file_spki(&p).unwrap().unwrap(), key.spki_der());
        std::fs::write(&p, "nothing").unwrap();
        assert!(matches!(key_file_spki(&p), Err(Error::Rejected { .. })));
    }
}
