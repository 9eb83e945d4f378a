//! The zone's records behind a trait, so that the embedded SQLite zone
//! ([`store::SqliteZone`]) can be replaced by an authoritative DNS server or
//! RFC 2136 dynamic updates without touching the handlers.
//!
//! [`authoritative`] serves the SQLite zone itself over UDP and TCP, so the
//! server can be the zone's name server; [`propagation`] asks the zone's
//! servers directly whether a dns-01 TXT record is visible yet, before the
//! CA is told to look (RFC 8555 §8.4).

pub mod authoritative;
pub mod propagation;
pub mod rfc2136;
pub mod store;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

use crate::BoxFuture;

/// A record type the server publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Text, for ACME dns-01 challenges (RFC 8555 §8.4).
    Txt,
}

impl RecordType {
    /// The type's mnemonic.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Txt => "TXT",
        }
    }

    /// Parses a mnemonic.
    pub fn parse(s: &str) -> Option<RecordType> {
        match s {
            "A" => Some(RecordType::A),
            "AAAA" => Some(RecordType::Aaaa),
            "TXT" => Some(RecordType::Txt),
            _ => None,
        }
    }
}

/// One published record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lowercase, no trailing dot.
    pub name: String,
    /// Its type.
    pub rtype: RecordType,
    /// Its value in presentation form (an address, or the TXT text).
    pub value: String,
}

impl Record {
    /// `{"name","type","value"}`, the `records` command's output.
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "type": self.rtype.as_str(), "value": self.value})
    }
}

/// A DNS backend failure (the `issuanceFailed` of protocol §9 when it
/// happens during a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsError(pub String);

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DNS backend: {}", self.0)
    }
}

impl std::error::Error for DnsError {}

/// Where the zone's records live.
pub trait DnsBackend: Send + Sync {
    /// Replaces the A and AAAA records of `hostname`; an empty list removes
    /// that type.
    fn set_addresses<'a>(
        &'a self,
        hostname: &'a str,
        ipv4: &'a [Ipv4Addr],
        ipv6: &'a [Ipv6Addr],
    ) -> BoxFuture<'a, Result<(), DnsError>>;

    /// Replaces the TXT records of `name` (ACME dns-01 uses
    /// `_acme-challenge.<hostname>`); an empty list removes them.
    fn set_txt<'a>(&'a self, name: &'a str, values: &'a [String]) -> BoxFuture<'a, Result<(), DnsError>>;

    /// The records of `name`, or of the whole zone; sorted by name, then
    /// type, then publication order.
    fn records<'a>(&'a self, name: Option<&'a str>) -> BoxFuture<'a, Result<Vec<Record>, DnsError>>;
}

/// The A and AAAA values among `records`, as the addresses response lists
/// them.
pub fn addresses_of(records: &[Record]) -> (Vec<String>, Vec<String>) {
    let pick = |t: RecordType| {
        records
            .iter()
            .filter(|r| r.rtype == t)
            .map(|r| r.value.clone())
            .collect::<Vec<_>>()
    };
    (pick(RecordType::A), pick(RecordType::Aaaa))
}

/// A response code's mnemonic as RFC 1035 and RFC 2136 spell it, as `dig`
/// and server logs print it (`REFUSED`, `NOTAUTH`), for error messages.
pub fn rcode_name(rcode: hickory_proto::op::ResponseCode) -> String {
    use hickory_proto::op::ResponseCode;
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}
