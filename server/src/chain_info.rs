//! Facts about an issued chain's leaf that the server keeps: serial and
//! validity. Works on any PEM chain, whichever CA issued it.

use x509_cert::der::Encode;
use x509_cert::Certificate;

/// What the server records about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Serial number, lowercase hex, without leading zero bytes.
    pub serial: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The leaf's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

/// Reads the first certificate of a PEM chain.
pub fn leaf(pem_chain: &str) -> Result<LeafInfo, String> {
    let certs = Certificate::load_pem_chain(pem_chain.as_bytes()).map_err(|e| format!("chain is not PEM: {e}"))?;
    let leaf = certs.first().ok_or("chain holds no certificate")?;
    let tbs = leaf.tbs_certificate();
    let validity = tbs.validity();
    let secs = |t: x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    Ok(LeafInfo {
        serial: serial_hex(tbs.serial_number().as_bytes()),
        not_before: secs(validity.not_before),
        not_after: secs(validity.not_after),
        spki_der: tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| format!("leaf key: {e}"))?,
    })
}

/// Serial bytes as lowercase hex without leading zero bytes; also the form
/// a status report's `certificate.serial` is matched in ([`normalize_serial`]).
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalizes a serial as devices may write it (`3F:0A`, `003f0a`) to the
/// form of [`serial_hex`]; `None` if it is not hex.
pub fn normalize_serial(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || hex.len() > 128 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = if hex.len() % 2 == 1 { format!("0{hex}") } else { hex };
    let bytes: Vec<u8> = (0..padded.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&padded[i..i + 2], 16).ok())
        .collect();
    Some(serial_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize() {
        assert_eq!(serial_hex(&[0, 0x3f, 0x0a]), "3f0a");
        assert_eq!(serial_hex(&[0]), "00");
        assert_eq!(normalize_serial("00:3F:0A").as_deref(), Some("3f0a"));
        assert_eq!(normalize_serial("f0a").as_deref(), Some("0f0a"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
    }
}
