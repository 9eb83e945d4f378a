//! Publishing the zone's records on an existing primary DNS server (BIND,
//! Knot, PowerDNS, …) with RFC 2136 dynamic updates signed with a TSIG key
//! (RFC 8945).
//!
//! This is the backend for a vendor who already runs DNS: the server keeps no
//! name server of its own, it sends each change to the zone's primary and,
//! once the primary has accepted it, records it in the embedded
//! [`SqliteZone`], which stays the server's record of what is published (the
//! `records` command and [`DnsBackend::records`] read from it).
//!
//! Every change is one UPDATE message (RFC 2136 §2.5): "delete the RRsets of
//! these types at this name" followed by "add these records", so the primary
//! applies it atomically (§3.4.2: all or nothing) and a resolver never sees a
//! hostname with neither old nor new addresses. Updates are sent over TCP
//! (RFC 1035 §4.2.2: two-byte length prefix), so no answer is truncated and a
//! response is at most 65535 bytes, each with a time limit of
//! [`UPDATE_TIMEOUT`]. Only a NOERROR answer whose TSIG verifies counts as
//! success; error answers are reported with what they usually mean and what
//! to check. They are not required to be signed (RFC 8945 §5.3.2: BADSIG and
//! BADKEY answers cannot be), and believing a forged one costs no more than a
//! dropped packet would: the change is not made and the caller retries.
//!
//! [`Rfc2136Zone::check`] sends an update with a prerequisite only, so that a
//! wrong key or server is found when the server starts rather than at the
//! first enrollment.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as WireType, TSigVerifier, TSigner};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::store::SqliteZone;
use super::{DnsBackend, DnsError, Record as ZoneRecord};
use crate::config::TsigKey;
use crate::BoxFuture;

/// How long one update may take, connecting, sending and waiting for the
/// answer together: 10 s. A primary answers in milliseconds; this bounds a
/// request handler waiting on a server that has gone away.
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: 65535 bytes, all that the two-byte length
/// prefix of DNS over TCP can announce.
pub const MAX_RESPONSE_BYTES: usize = u16::MAX as usize;

/// How far apart our clock and the primary's may be (TSIG "fudge", RFC 8945
/// §5.2.3): 300 s, the value the RFC recommends.
pub const TSIG_FUDGE_SECS: u16 = 300;

/// The longest character-string of a TXT record (RFC 1035 §3.3: one length
/// byte). Longer values are split into several strings of one record.
const TXT_STRING_MAX: usize = 255;

/// A zone published by RFC 2136 updates to its primary server, mirrored in
/// the server's database.
pub struct Rfc2136Zone {
    local: SqliteZone,
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
    key_name: String,
    algorithm: String,
    ttl: u32,
    timeout: Duration,
    /// Held from sending an update until the database has the same change,
    /// so two concurrent changes to one name are applied in the same order
    /// at the primary and locally.
    order: Mutex<()>,
}

impl fmt::Debug for Rfc2136Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136Zone")
            .field("server", &self.server)
            .field("zone", &self.zone.to_ascii())
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Zone {
    /// A backend that updates `zone` at the primary `server` with `key`,
    /// publishing records with `ttl`, and records what it published in
    /// `local`.
    ///
    /// Fails if `zone` or the key's name is not a valid DNS name, or the
    /// key's algorithm is not one of `hmac-sha256`, `hmac-sha384`,
    /// `hmac-sha512`. Sends nothing: see [`Rfc2136Zone::check`].
    pub fn new(
        local: SqliteZone,
        server: SocketAddr,
        zone: &str,
        key: &TsigKey,
        ttl: u32,
    ) -> Result<Rfc2136Zone, DnsError> {
        let zone = fqdn(zone).map_err(|e| DnsError(format!("RFC 2136: zone {zone:?}: {e}")))?;
        let key_name = fqdn(&key.name).map_err(|e| DnsError(format!("RFC 2136: TSIG key name {:?}: {e}", key.name)))?;
        let algorithm = match key.algorithm.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(DnsError(format!(
                    "RFC 2136: TSIG key {}: algorithm {other:?} is not supported \
                     (hmac-sha256, hmac-sha384, hmac-sha512)",
                    key.name
                )))
            }
        };
        let signer = TSigner::new(key.secret.clone(), algorithm, key_name, TSIG_FUDGE_SECS)
            .map_err(|e| DnsError(format!("RFC 2136: TSIG key {}: {e}", key.name)))?;
        Ok(Rfc2136Zone {
            local,
            server,
            zone,
            signer,
            key_name: key.name.trim_end_matches('.').to_ascii_lowercase(),
            algorithm: key.algorithm.to_ascii_lowercase(),
            ttl,
            timeout: UPDATE_TIMEOUT,
            order: Mutex::new(()),
        })
    }

    /// Sends a signed UPDATE with only a prerequisite (the zone apex's SOA
    /// exists) and no changes, so that a wrong key, a server that does not
    /// take updates for the zone, or an unreachable server is found at
    /// startup, with a message saying which.
    ///
    /// A key that the server knows but whose `update-policy` grants nothing
    /// passes: with no changes there is nothing for the policy to refuse.
    pub async fn check(&self) -> Result<(), DnsError> {
        let mut message = self.new_update();
        // RFC 2136 §2.4.1, "RRset exists (value independent)": class ANY,
        // TTL 0, no RDATA.
        message.add_pre_requisite(delete_rrset(self.zone.clone(), WireType::SOA));
        let what = format!("RFC 2136 check of zone {}", self.zone_text());
        self.send(&what, message).await
    }

    /// A new UPDATE message for the zone, with a random id.
    fn new_update(&self) -> Message {
        let id = u16::from_be_bytes(crate::random::bytes::<2>());
        let mut message = Message::new(id, MessageType::Query, OpCode::Update);
        let mut zone = Query::query(self.zone.clone(), WireType::SOA);
        zone.set_query_class(DNSClass::IN);
        message.add_zone(zone);
        message
    }

    /// The update replacing the RRsets `types` of `name` by `adds`.
    fn replace_message(&self, name: &Name, types: &[WireType], adds: Vec<RData>) -> Message {
        let mut message = self.new_update();
        // RFC 2136 §2.5.2, "delete an RRset": class ANY, TTL 0, no RDATA.
        for t in types {
            message.add_update(delete_rrset(name.clone(), *t));
        }
        // §2.5.1, "add to an RRset": class of the zone.
        for data in adds {
            message.add_update(Record::from_rdata(name.clone(), self.ttl, data));
        }
        message
    }

    /// Parses `name` and checks that it is in the zone.
    fn name_in_zone(&self, name: &str) -> Result<Name, DnsError> {
        let parsed = fqdn(name).map_err(|e| DnsError(format!("RFC 2136 update of {name}: {e}")))?;
        if !self.zone.zone_of(&parsed) {
            return Err(DnsError(format!(
                "RFC 2136 update of {name}: the name is not in zone {}",
                self.zone_text()
            )));
        }
        Ok(parsed)
    }

    fn zone_text(&self) -> String {
        self.zone.to_ascii().trim_end_matches('.').to_string()
    }

    /// Signs `message`, sends it, and checks the answer: `Ok` only for a
    /// NOERROR answer whose TSIG verifies. Errors start with `what` and the
    /// server's address.
    async fn send(&self, what: &str, mut message: Message) -> Result<(), DnsError> {
        let fail = |detail: String| DnsError(format!("{what} at {}: {detail}", self.server));
        let now = u64::try_from(crate::clock::now()).unwrap_or(0);
        let verifier = message
            .finalize(&self.signer, now)
            .map_err(|e| fail(format!("signing the update: {e}")))?
            .ok_or_else(|| fail("signing the update: no TSIG verifier".into()))?;
        let request = message
            .to_vec()
            .map_err(|e| fail(format!("encoding the update: {e}")))?;
        let response = tokio::time::timeout(self.timeout, exchange(self.server, &request))
            .await
            .map_err(|_| {
                fail(format!(
                    "no answer within {:?} (is the server up, and does a firewall let TCP port {} through?)",
                    self.timeout,
                    self.server.port()
                ))
            })?
            .map_err(fail)?;
        let context = Context {
            zone: self.zone_text(),
            key_name: &self.key_name,
            algorithm: &self.algorithm,
        };
        check_response(&response, message.metadata.id, verifier, &context).map_err(fail)
    }
}

impl DnsBackend for Rfc2136Zone {
    fn set_addresses<'a>(
        &'a self,
        hostname: &'a str,
        ipv4: &'a [Ipv4Addr],
        ipv6: &'a [Ipv6Addr],
    ) -> BoxFuture<'a, Result<(), DnsError>> {
        Box::pin(async move {
            let name = self.name_in_zone(hostname)?;
            let adds = ipv4
                .iter()
                .map(|a| RData::A(A(*a)))
                .chain(ipv6.iter().map(|a| RData::AAAA(AAAA(*a))))
                .collect();
            let message = self.replace_message(&name, &[WireType::A, WireType::AAAA], adds);
            let _order = self.order.lock().await;
            self.send(&format!("RFC 2136 update of {hostname}"), message).await?;
            self.local.set_addresses(hostname, ipv4, ipv6).await.map_err(|e| {
                DnsError(format!(
                    "RFC 2136 update of {hostname}: published at {}, but recording it locally failed: {}",
                    self.server, e.0
                ))
            })
        })
    }

    fn set_txt<'a>(&'a self, name: &'a str, values: &'a [String]) -> BoxFuture<'a, Result<(), DnsError>> {
        Box::pin(async move {
            let owner = self.name_in_zone(name)?;
            let adds = values.iter().map(|v| RData::TXT(txt(v))).collect();
            let message = self.replace_message(&owner, &[WireType::TXT], adds);
            let _order = self.order.lock().await;
            self.send(&format!("RFC 2136 update of {name}"), message).await?;
            self.local.set_txt(name, values).await.map_err(|e| {
                DnsError(format!(
                    "RFC 2136 update of {name}: published at {}, but recording it locally failed: {}",
                    self.server, e.0
                ))
            })
        })
    }

    fn records<'a>(&'a self, name: Option<&'a str>) -> BoxFuture<'a, Result<Vec<ZoneRecord>, DnsError>> {
        self.local.records(name)
    }
}

/// `text` as an absolute DNS name.
fn fqdn(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text).map_err(|e| format!("not a valid DNS name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// The RFC 2136 record meaning "the RRset `rtype` of `name`": class ANY,
/// TTL 0, no RDATA. As a prerequisite it means "exists" (§2.4.1), as an
/// update "delete it" (§2.5.2).
fn delete_rrset(name: Name, rtype: WireType) -> Record {
    let mut record = Record::update0(name, 0, rtype);
    record.dns_class = DNSClass::ANY;
    record
}

/// One TXT record holding `value`, split into 255-byte character-strings
/// if it is longer (a dns-01 value is 43 bytes).
fn txt(value: &str) -> TXT {
    if value.is_empty() {
        return TXT::from_bytes(vec![b""]);
    }
    TXT::from_bytes(value.as_bytes().chunks(TXT_STRING_MAX).collect())
}

/// Sends `request` over a new TCP connection to `server` and reads one
/// answer (RFC 1035 §4.2.2 framing). The caller bounds the time.
async fn exchange(server: SocketAddr, request: &[u8]) -> Result<Vec<u8>, String> {
    let stream = TcpStream::connect(server).await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!(
                "connecting: {e} (nothing listens on TCP port {}: is the server running, and is this its address?)",
                server.port()
            )
        }
        _ => format!("connecting: {e}"),
    })?;
    let len = u16::try_from(request.len()).map_err(|_| format!("the update is too large ({} bytes)", request.len()))?;
    let mut framed = Vec::with_capacity(2 + request.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    write_all(&stream, &framed)
        .await
        .map_err(|e| format!("sending the update: {e}"))?;
    let mut prefix = [0u8; 2];
    read_exact(&stream, &mut prefix).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => "the server closed the connection without answering".to_string(),
        _ => format!("reading the answer: {e}"),
    })?;
    // The prefix cannot announce more than MAX_RESPONSE_BYTES.
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(prefix)).min(MAX_RESPONSE_BYTES)];
    read_exact(&stream, &mut response)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(response)
}

// Plain loops over try_write/try_read: tokio's "net" feature gives these
// without the "io-util" extension traits.
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_exact(stream: &TcpStream, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What error messages need to know about the update.
struct Context<'a> {
    zone: String,
    key_name: &'a str,
    algorithm: &'a str,
}

/// Checks the answer to the update with id `id`: `Ok` for NOERROR with a
/// TSIG that verifies, else what went wrong and, for the usual
/// misconfigurations, what to check.
fn check_response(response: &[u8], id: u16, mut verifier: TSigVerifier, cx: &Context<'_>) -> Result<(), String> {
    let message = Message::from_vec(response).map_err(|e| format!("malformed answer: {e}"))?;
    if message.metadata.id != id {
        return Err(format!(
            "the answer's id {} is not the update's id {id}",
            message.metadata.id
        ));
    }
    if message.metadata.message_type != MessageType::Response {
        return Err("the answer is not a DNS response".into());
    }
    let rcode = message.metadata.response_code;
    // RFC 8945 §5.3.2: key and signature errors come as NOTAUTH with the
    // reason in the TSIG record's error field.
    if let Some(error) = message.signature().and_then(|s| s.data.error) {
        return Err(tsig_error(rcode, error, &message, cx));
    }
    if rcode != ResponseCode::NoError {
        return Err(rcode_error(rcode, cx));
    }
    if message.signature().is_none() {
        return Err(format!(
            "NOERROR, but the answer is not signed with TSIG (is this server the primary of zone {}?)",
            cx.zone
        ));
    }
    verifier.verify(response).map(|_| ()).map_err(|e| {
        format!(
            "NOERROR, but the answer's TSIG does not verify with key {}: {e}",
            cx.key_name
        )
    })
}

fn tsig_error(rcode: ResponseCode, error: TsigError, message: &Message, cx: &Context<'_>) -> String {
    let rcode = super::rcode_name(rcode);
    match error {
        TsigError::BadKey => format!(
            "{rcode} / BADKEY (the server does not know key {} or uses another algorithm than {}: \
             check the key's name and algorithm against the server's `key` statement)",
            cx.key_name, cx.algorithm
        ),
        TsigError::BadSig => format!(
            "{rcode} / BADSIG (the server knows key {} but the signature does not verify: the secret differs \
             from the server's)",
            cx.key_name
        ),
        TsigError::BadTime => {
            let server_time = message
                .signature()
                .map(|s| s.data.other.as_slice())
                .filter(|o| o.len() == 6)
                .map(|o| o.iter().fold(0u64, |t, b| t << 8 | u64::from(*b)));
            let ours = crate::clock::now();
            let skew = match server_time {
                Some(t) => format!(": the server's time is {t}, ours {ours}"),
                None => String::new(),
            };
            format!(
                "{rcode} / BADTIME (the clocks of this host and the server differ by more than {TSIG_FUDGE_SECS} s{skew}; \
                 synchronize them, with NTP for example)"
            )
        }
        TsigError::BadTrunc => format!("{rcode} / BADTRUNC (the server refused the MAC's length)"),
        TsigError::Unknown(code) => format!("{rcode} / TSIG error {code}"),
    }
}

fn rcode_error(rcode: ResponseCode, cx: &Context<'_>) -> String {
    let name = super::rcode_name(rcode);
    let hint = match rcode {
        ResponseCode::Refused => format!(
            "the server does not allow key {} to update zone {}: check allow-update / update-policy",
            cx.key_name, cx.zone
        ),
        ResponseCode::NotAuth => format!(
            "the server is not authoritative for zone {}: check the zone name and that this is its primary",
            cx.zone
        ),
        ResponseCode::NotZone => format!("the name is not in zone {}", cx.zone),
        ResponseCode::NotImp => "the server does not implement dynamic updates".into(),
        ResponseCode::FormErr => "the server could not parse the update".into(),
        ResponseCode::ServFail => "the server failed to apply the update: see its log".into(),
        ResponseCode::NXRRSet => format!("zone {} has no SOA record: is that the zone's apex?", cx.zone),
        ResponseCode::YXDomain | ResponseCode::YXRRSet | ResponseCode::NXDomain => "a prerequisite failed".into(),
        _ => return format!("the server answered {name}"),
    };
    format!("{name} ({hint})")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hickory_proto::rr::TSigResponseContext;
    use tokio::net::TcpListener;

    use super::*;
    use crate::dns::RecordType;
    use crate::store::Store;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key(secret: &[u8]) -> TsigKey {
        TsigKey {
            name: "lancert".into(),
            algorithm: "hmac-sha256".into(),
            secret: secret.to_vec(),
        }
    }

    fn zone_at(server: SocketAddr, secret: &[u8]) -> Rfc2136Zone {
        let local = SqliteZone::new(Arc::new(Store::open_in_memory().unwrap()));
        Rfc2136Zone::new(local, server, "d.example.test", &key(secret), 60).unwrap()
    }

    fn zone() -> Rfc2136Zone {
        zone_at("127.0.0.1:9".parse().unwrap(), SECRET)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn name(s: &str) -> Name {
        fqdn(s).unwrap()
    }

    #[test]
    fn new_rejects_bad_names_and_algorithms() {
        let local = || SqliteZone::new(Arc::new(Store::open_in_memory().unwrap()));
        let addr = "127.0.0.1:53".parse().unwrap();
        let mut k = key(SECRET);
        k.algorithm = "hmac-md5".into();
        let e = Rfc2136Zone::new(local(), addr, "z.test", &k, 60).unwrap_err();
        assert!(e.0.contains("\"hmac-md5\" is not supported"), "{e}");
        let e = Rfc2136Zone::new(local(), addr, "bad..zone", &key(SECRET), 60).unwrap_err();
        assert!(e.0.contains("zone \"bad..zone\""), "{e}");
        let z = zone();
        let e = z.name_in_zone("host.other.test").unwrap_err();
        assert!(e.0.contains("not in zone d.example.test"), "{e}");
        assert!(
            z.name_in_zone("Host.D.example.test").is_ok(),
            "names compare case-insensitively"
        );
        assert!(!format!("{z:?}").contains("0123"), "the secret is never printed");
    }

    #[test]
    fn update_deletes_rrsets_then_adds_and_is_signed_last() {
        let z = zone();
        let host = name("h1.d.example.test");
        let adds = vec![
            RData::A(A("10.0.0.1".parse().unwrap())),
            RData::A(A("10.0.0.2".parse().unwrap())),
            RData::AAAA(AAAA("fd00::1".parse().unwrap())),
        ];
        let mut m = z.replace_message(&host, &[WireType::A, WireType::AAAA], adds);
        m.finalize(&z.signer, 1_700_000_000).unwrap();
        let bytes = m.to_vec().unwrap();

        // What the primary receives.
        let got = Message::from_vec(&bytes).unwrap();
        assert_eq!(got.metadata.op_code, OpCode::Update);
        assert_eq!(got.zones().len(), 1);
        assert_eq!(got.zones()[0].name(), &name("d.example.test"));
        assert_eq!(got.zones()[0].query_type(), WireType::SOA);
        assert_eq!(got.zones()[0].query_class(), DNSClass::IN);
        assert!(got.prerequisites().is_empty());
        let updates: Vec<_> = got
            .updates()
            .iter()
            .map(|r| (r.name.to_ascii(), r.dns_class, r.ttl, r.record_type(), r.data.clone()))
            .collect();
        let h = "h1.d.example.test.".to_string();
        assert_eq!(
            updates,
            [
                (h.clone(), DNSClass::ANY, 0, WireType::A, RData::Update0(WireType::A)),
                (
                    h.clone(),
                    DNSClass::ANY,
                    0,
                    WireType::AAAA,
                    RData::Update0(WireType::AAAA)
                ),
                (
                    h.clone(),
                    DNSClass::IN,
                    60,
                    WireType::A,
                    RData::A(A("10.0.0.1".parse().unwrap()))
                ),
                (
                    h.clone(),
                    DNSClass::IN,
                    60,
                    WireType::A,
                    RData::A(A("10.0.0.2".parse().unwrap()))
                ),
                (
                    h,
                    DNSClass::IN,
                    60,
                    WireType::AAAA,
                    RData::AAAA(AAAA("fd00::1".parse().unwrap()))
                ),
            ]
        );
        assert!(
            got.additionals().is_empty(),
            "the TSIG is the only (and so last) additional record"
        );
        let tsig = got.signature().expect("signed");
        assert_eq!(tsig.name, name("lancert"));
        assert_eq!(tsig.data.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(tsig.data.fudge, TSIG_FUDGE_SECS);
        assert_eq!(tsig.data.oid, got.metadata.id);
        z.signer
            .verify_message_byte(&bytes, None, true)
            .expect("the MAC verifies");

        let other = zone_at("127.0.0.1:9".parse().unwrap(), b"another secret, 32 bytes long...");
        assert!(other.signer.verify_message_byte(&bytes, None, true).is_err());
    }

    #[test]
    fn txt_update_and_check_message() {
        let z = zone();
        let owner = name("_acme-challenge.h1.d.example.test");
        let m = z.replace_message(&owner, &[WireType::TXT], vec![RData::TXT(txt("tok"))]);
        let kinds: Vec<_> = m.updates().iter().map(|r| (r.dns_class, r.record_type())).collect();
        assert_eq!(kinds, [(DNSClass::ANY, WireType::TXT), (DNSClass::IN, WireType::TXT)]);

        let m = z.replace_message(&owner, &[WireType::TXT], vec![]);
        assert_eq!(m.updates().len(), 1, "an empty list only deletes");

        let long = "x".repeat(300);
        let t = txt(&long);
        assert_eq!(t.txt_data.iter().map(|s| s.len()).collect::<Vec<_>>(), [255, 45]);

        let mut check = z.new_update();
        check.add_pre_requisite(delete_rrset(z.zone.clone(), WireType::SOA));
        let pre = &check.prerequisites()[0];
        assert_eq!(
            (pre.name.to_ascii(), pre.dns_class, pre.ttl, pre.record_type()),
            ("d.example.test.".to_string(), DNSClass::ANY, 0, WireType::SOA)
        );
        assert!(check.updates().is_empty());
    }

    /// A signed request and the verifier of its answer.
    fn request(z: &Rfc2136Zone) -> (Message, Vec<u8>, TSigVerifier) {
        let mut m = z.replace_message(&name("h.d.example.test"), &[WireType::A], vec![]);
        let now = crate::clock::now() as u64;
        let verifier = m.finalize(&z.signer, now).unwrap().unwrap();
        let mac = m.signature().unwrap().data.mac.clone();
        (m, mac, verifier)
    }

    /// The answer a primary holding `secret` gives, with `rcode` and
    /// optionally a TSIG error.
    fn answer(req: &Message, mac: &[u8], secret: &[u8], rcode: ResponseCode, error: Option<TsigError>) -> Vec<u8> {
        let mut resp = Message::response(req.metadata.id, OpCode::Update);
        resp.metadata.response_code = rcode;
        resp.add_queries(req.queries.clone());
        let unsigned = resp.to_vec().unwrap();
        let signer = TSigner::new(secret.to_vec(), TsigAlgorithm::HmacSha256, name("lancert"), 300).unwrap();
        let now = crate::clock::now() as u64;
        let tsig = match error {
            Some(TsigError::BadSig) => TSigResponseContext::bad_signature(req.metadata.id, now, signer),
            Some(TsigError::BadKey) => TSigResponseContext::unknown_key(req.metadata.id, now, name("lancert")),
            _ => TSigResponseContext::new(req.metadata.id, now, signer, mac.to_vec(), error),
        }
        .sign(&unsigned)
        .unwrap();
        resp.set_signature(tsig);
        resp.to_vec().unwrap()
    }

    fn cx() -> Context<'static> {
        Context {
            zone: "d.example.test".into(),
            key_name: "lancert",
            algorithm: "hmac-sha256",
        }
    }

    #[test]
    fn answers_are_checked() {
        let z = zone();
        let (req, mac, v) = request(&z);
        let ok = answer(&req, &mac, SECRET, ResponseCode::NoError, None);
        check_response(&ok, req.metadata.id, v, &cx()).expect("a signed NOERROR is success");

        let (req, mac, v) = request(&z);
        let forged = answer(&req, &mac, b"not the secret", ResponseCode::NoError, None);
        let e = check_response(&forged, req.metadata.id, v, &cx()).unwrap_err();
        assert!(e.contains("TSIG does not verify"), "{e}");

        let (req, mac, v) = request(&z);
        let a = answer(&req, &mac, SECRET, ResponseCode::NoError, None);
        let e = check_response(&a, req.metadata.id ^ 1, v, &cx()).unwrap_err();
        assert!(e.contains("is not the update's id"), "{e}");

        let cases = [
            (ResponseCode::NotAuth, Some(TsigError::BadSig), "NOTAUTH / BADSIG"),
            (
                ResponseCode::NotAuth,
                Some(TsigError::BadKey),
                "does not know key lancert",
            ),
            (
                ResponseCode::NotAuth,
                Some(TsigError::BadTime),
                "differ by more than 300 s",
            ),
            (ResponseCode::Refused, None, "check allow-update / update-policy"),
            (ResponseCode::NotAuth, None, "not authoritative for zone d.example.test"),
            (ResponseCode::ServFail, None, "SERVFAIL"),
        ];
        for (rcode, error, expected) in cases {
            let (req, mac, v) = request(&z);
            let a = answer(&req, &mac, SECRET, rcode, error);
            let e = check_response(&a, req.metadata.id, v, &cx()).unwrap_err();
            assert!(e.contains(expected), "{rcode:?} {error:?}: {e}");
        }

        let (req, _, v) = request(&z);
        let mut unsigned = Message::response(req.metadata.id, OpCode::Update);
        unsigned.add_queries(req.queries.clone());
        let e = check_response(&unsigned.to_vec().unwrap(), req.metadata.id, v, &cx()).unwrap_err();
        assert!(e.contains("not signed"), "{e}");
    }

    /// A one-connection primary on loopback that answers with `respond`.
    async fn fake_primary(respond: impl FnOnce(Message, Vec<u8>) -> Option<Vec<u8>> + Send + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut len = [0u8; 2];
            read_exact(&stream, &mut len).await.unwrap();
            let mut req = vec![0u8; usize::from(u16::from_be_bytes(len))];
            read_exact(&stream, &mut req).await.unwrap();
            let m = Message::from_vec(&req).unwrap();
            let mac = m.signature().unwrap().data.mac.clone();
            match respond(m, mac) {
                Some(a) => {
                    let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                    framed.extend(a);
                    write_all(&stream, &framed).await.unwrap();
                    // Keep the connection until the client is done.
                    let _ = read_exact(&stream, &mut [0u8; 1]).await;
                }
                None => tokio::time::sleep(Duration::from_secs(60)).await,
            }
        });
        addr
    }

    #[test]
    fn local_zone_changes_only_after_noerror() {
        rt().block_on(async {
            let addr = fake_primary(|m, mac| Some(answer(&m, &mac, SECRET, ResponseCode::NoError, None))).await;
            let z = zone_at(addr, SECRET);
            let v4 = ["10.0.0.1".parse().unwrap()];
            z.set_addresses("h.d.example.test", &v4, &[]).await.unwrap();
            let recs = z.records(None).await.unwrap();
            assert_eq!(recs.len(), 1);
            assert_eq!((recs[0].rtype, recs[0].value.as_str()), (RecordType::A, "10.0.0.1"));

            let addr = fake_primary(|m, mac| Some(answer(&m, &mac, SECRET, ResponseCode::Refused, None))).await;
            let z = zone_at(addr, SECRET);
            let e = z
                .set_txt("_acme-challenge.h.d.example.test", &["t".into()])
                .await
                .unwrap_err();
            assert!(
                e.0.starts_with(&format!(
                    "RFC 2136 update of _acme-challenge.h.d.example.test at {addr}: REFUSED"
                )),
                "{e}"
            );
            assert!(z.records(None).await.unwrap().is_empty(), "nothing recorded");
        });
    }

    #[test]
    fn silent_server_times_out_naming_it() {
        rt().block_on(async {
            let addr = fake_primary(|_, _| None).await;
            let mut z = zone_at(addr, SECRET);
            z.timeout = Duration::from_millis(300);
            let e = z.check().await.unwrap_err();
            assert!(
                e.0.contains(&format!("check of zone d.example.test at {addr}: no answer within")),
                "{e}"
            );
        });
    }
}
