//! The server as the authoritative name server of the device zone: it
//! answers A, AAAA and TXT queries straight from the SQLite `records` table
//! (see [`super::store`]), over UDP and TCP, so no separate DNS server has to
//! be fed. A device's address update or a dns-01 challenge record is visible
//! to the world the moment it is committed.
//!
//! Deliberately small: one zone, no recursion, no wildcards, no zone
//! transfers, no DNSSEC. [`answer`] is the whole protocol logic as a pure
//! function of the database and the query bytes; [`DnsServer`] only moves
//! bytes between sockets and it.
//!
//! | Bound                                   | Value                    |
//! |-----------------------------------------|--------------------------|
//! | UDP reply without EDNS (RFC 1035 §4.2.1) | [`MIN_UDP_PAYLOAD`], 512 |
//! | UDP reply with EDNS (RFC 6891 §6.2.5)    | the query's size, clamped to 512..=[`MAX_UDP_PAYLOAD`] (1232) |
//! | TCP message (RFC 7766 §8)               | [`MAX_TCP_MESSAGE`], 65535 |
//! | Concurrent TCP connections              | [`MAX_TCP_CONNECTIONS`], 64 |
//! | Wait for the next TCP query, or a write | [`TCP_IDLE_TIMEOUT`], 10 s |

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record as Rr, RecordType as Qtype};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::{Record, RecordType};
use crate::store::Store;
use crate::Error;

/// The largest UDP reply we send, whatever the querier offers: 1232 bytes
/// avoids IP fragmentation on any path (DNS Flag Day 2020); it is also the
/// payload size our OPT record advertises.
pub const MAX_UDP_PAYLOAD: usize = 1232;

/// The UDP reply limit for a query without EDNS (RFC 1035 §4.2.1), and the
/// floor of any advertised size (RFC 6891 §6.2.5).
pub const MIN_UDP_PAYLOAD: usize = 512;

/// The largest DNS message over TCP: the 2-byte length prefix's range
/// (RFC 1035 §4.2.2).
pub const MAX_TCP_MESSAGE: usize = 65535;

/// TCP connections served at once; further ones are closed on accept.
pub const MAX_TCP_CONNECTIONS: usize = 64;

/// How long a TCP connection may sit without sending the next query (or
/// without taking our reply) before it is closed (RFC 7766 §6.2.3).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// SOA REFRESH: how often a secondary checks the serial.
const SOA_REFRESH: i32 = 3600;
/// SOA RETRY: how soon a secondary retries a failed refresh.
const SOA_RETRY: i32 = 600;
/// SOA EXPIRE: how long a secondary serves the zone without reaching us.
const SOA_EXPIRE: i32 = 604_800;

/// How many times [`DnsServer::bind`] on port 0 retries when the port the
/// system gave the UDP socket is taken for TCP.
const BIND_ATTEMPTS: u32 = 8;

/// Pause after a failed receive or accept (out of file descriptors, ...),
/// so that a persistent error does not spin the loop.
const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What the server publishes about the zone itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The zone's name, lowercase, no trailing dot.
    pub zone: String,
    /// Its name servers (NS records); the first is the SOA MNAME.
    pub nameservers: Vec<String>,
    /// The SOA RNAME: the responsible mailbox as a DNS name.
    pub hostmaster: String,
    /// TTL of every record, and the SOA MINIMUM (negative caching, RFC 2308).
    pub ttl: u32,
}

/// UDP and TCP sockets bound to the same address, ready to [`run`](Self::run).
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen`. With port 0 the UDP socket gets a free
    /// port and TCP is bound to the same one.
    pub async fn bind(listen: SocketAddr) -> Result<DnsServer, Error> {
        let mut attempt = 1;
        loop {
            let udp = UdpSocket::bind(listen)
                .await
                .map_err(|e| Error::io("binding DNS UDP on", listen.to_string(), e))?;
            let addr = udp
                .local_addr()
                .map_err(|e| Error::io("binding DNS UDP on", listen.to_string(), e))?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(DnsServer { udp, tcp, addr }),
                // The system's free UDP port may be a busy TCP port: draw again.
                Err(e)
                    if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(Error::io("binding DNS TCP on", addr.to_string(), e)),
            }
        }
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the zone from `store` until the future is dropped (the caller
    /// spawns it and aborts the task on shutdown; open TCP connections are
    /// closed with it).
    pub async fn run(self, store: Arc<Store>, settings: ZoneSettings) {
        if let Err(e) = soa(&settings, 0, settings.ttl) {
            log::error!("DNS zone {}: {e}; SOA queries will fail", settings.zone);
        }
        log::info!("serving DNS zone {} on {} (UDP and TCP)", settings.zone, self.addr);
        let settings = Arc::new(settings);
        tokio::join!(
            serve_udp(self.udp, store.clone(), settings.clone()),
            serve_tcp(self.tcp, store, settings),
        );
    }
}

async fn serve_udp(socket: UdpSocket, store: Arc<Store>, settings: Arc<ZoneSettings>) {
    // The largest datagram there is; anything longer arrives cut short and
    // fails to parse.
    let mut buf = vec![0u8; MAX_TCP_MESSAGE];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                log::debug!("DNS UDP: receiving: {e}");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(reply) = answer(&store, &settings, &buf[..len], MAX_UDP_PAYLOAD) else {
            log::debug!("DNS UDP: dropped a packet from {peer}");
            continue;
        };
        if let Err(e) = socket.send_to(&reply, peer).await {
            log::debug!("DNS UDP: replying to {peer}: {e}");
        }
    }
}

async fn serve_tcp(listener: TcpListener, store: Arc<Store>, settings: Arc<ZoneSettings>) {
    // Owned here so that dropping this future (task abort) closes every
    // connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_TCP_CONNECTIONS {
                        log::debug!("DNS TCP: closing {peer}: {MAX_TCP_CONNECTIONS} connections already open");
                        drop(stream);
                    } else {
                        connections.spawn(serve_connection(stream, peer, store.clone(), settings.clone()));
                    }
                }
                Err(e) => {
                    log::debug!("DNS TCP: accepting: {e}");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        log::error!("DNS TCP: a connection task panicked: {e}");
                    }
                }
            }
        }
    }
}

/// Serves one TCP connection: length-prefixed queries, one after another
/// (RFC 7766 §6.2.1), until the peer closes, goes idle or misbehaves.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, store: Arc<Store>, settings: Arc<ZoneSettings>) {
    loop {
        let mut prefix = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    log::debug!("DNS TCP {peer}: reading: {e}");
                }
                return;
            }
            Err(_) => {
                log::debug!("DNS TCP {peer}: idle for {} s, closing", TCP_IDLE_TIMEOUT.as_secs());
                return;
            }
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                log::debug!("DNS TCP {peer}: reading a {}-byte query: {e}", query.len());
                return;
            }
            Err(_) => {
                log::debug!(
                    "DNS TCP {peer}: query incomplete after {} s, closing",
                    TCP_IDLE_TIMEOUT.as_secs()
                );
                return;
            }
        }
        let Some(reply) = answer(&store, &settings, &query, MAX_TCP_MESSAGE) else {
            log::debug!("DNS TCP {peer}: dropped a message");
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            // answer() keeps within MAX_TCP_MESSAGE; never send a bad frame.
            log::debug!("DNS TCP {peer}: {}-byte reply does not fit a frame", reply.len());
            return;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::debug!("DNS TCP {peer}: writing: {e}");
                return;
            }
            Err(_) => {
                log::debug!(
                    "DNS TCP {peer}: reply not taken in {} s, closing",
                    TCP_IDLE_TIMEOUT.as_secs()
                );
                return;
            }
        }
    }
}

/// The reply to the DNS message `query`, or `None` to send nothing (fewer
/// than 12 bytes, or a response rather than a query).
///
/// `max_size` is the transport's own limit: [`MAX_UDP_PAYLOAD`] for a
/// datagram, [`MAX_TCP_MESSAGE`] for TCP. A limit up to
/// [`MAX_UDP_PAYLOAD`] means a datagram, so the size the query advertises
/// applies as well: 512 bytes without EDNS, else its EDNS size clamped to
/// 512..=1232 (RFC 6891 §6.2.5). A reply that does not fit is sent with TC
/// set and no records, and the client retries over TCP (RFC 7766 §5).
pub fn answer(store: &Store, settings: &ZoneSettings, query: &[u8], max_size: usize) -> Option<Vec<u8>> {
    // The header is read by hand so that a message whose body is garbage
    // still gets a FORMERR with its id (RFC 1035 §4.1.1).
    let Some(header) = query.get(..12) else {
        log::debug!("DNS: dropping a {}-byte packet (no header)", query.len());
        return None;
    };
    let id = u16::from_be_bytes([header[0], header[1]]);
    if header[2] & 0x80 != 0 {
        log::debug!("DNS: dropping message {id}: it is a response");
        return None;
    }
    let op_code = OpCode::from_u8((header[2] >> 3) & 0x0f);
    if op_code != OpCode::Query {
        log::debug!("DNS: message {id}: opcode {op_code} not implemented");
        return encode(&Message::error_msg(id, op_code, ResponseCode::NotImp), MIN_UDP_PAYLOAD);
    }
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(e) => {
            log::debug!("DNS: message {id}: unparseable: {e}");
            return encode(&Message::error_msg(id, op_code, ResponseCode::FormErr), MIN_UDP_PAYLOAD);
        }
    };
    let limit = if max_size > MAX_UDP_PAYLOAD {
        max_size
    } else {
        let offered = request.edns.as_ref().map_or(MIN_UDP_PAYLOAD, |e| {
            usize::from(e.max_payload()).clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        });
        offered.min(max_size)
    };
    encode(&respond(store, settings, &request), limit)
}

/// The full response to a parsed query, before any truncation.
fn respond(store: &Store, settings: &ZoneSettings, request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    // RFC 6891 §6.1.1: an OPT in the query gets one in the response.
    if let Some(theirs) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD as u16).set_version(0);
        // RFC 3225 §3: the DO bit is copied (we have no signatures to add).
        ours.set_dnssec_ok(theirs.flags().dnssec_ok);
        response.set_edns(ours);
    }
    let [question] = request.queries.as_slice() else {
        log::debug!(
            "DNS: message {}: {} questions",
            request.metadata.id,
            request.queries.len()
        );
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(question.clone());
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        response.metadata.response_code = ResponseCode::BADVERS;
        return response;
    }
    let Some(owner) = zone_relative(question.name(), &settings.zone) else {
        // Not our zone, and we do not recurse (RA stays 0).
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    };
    let qtype = question.query_type();
    if question.query_class() != DNSClass::IN || matches!(qtype, Qtype::AXFR | Qtype::IXFR) {
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    }
    response.metadata.authoritative = true;
    if let Err(e) = lookup(store, settings, question.name(), owner, qtype, &mut response) {
        log::warn!("DNS: answering {} {qtype}: {e}", question.name());
        response.metadata.authoritative = false;
        response.metadata.response_code = ResponseCode::ServFail;
        response.answers.clear();
        response.authorities.clear();
    }
    response
}

/// Where a query name stands relative to the zone.
enum Owner {
    /// The zone's apex.
    Apex,
    /// A name below it, as stored in the `records` table (lowercase, no
    /// trailing dot), or `None` if it cannot be stored there (a label with a
    /// dot or a non-ASCII byte in it) and so cannot exist.
    Below(Option<String>),
}

/// `name` relative to `zone`, or `None` if it is neither the zone nor below
/// it. Labels are compared whole and ASCII-case-insensitively (RFC 4343).
fn zone_relative(name: &Name, zone: &str) -> Option<Owner> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let zone_labels: Vec<&[u8]> = zone.split('.').filter(|l| !l.is_empty()).map(str::as_bytes).collect();
    let below = labels.len().checked_sub(zone_labels.len())?;
    if !labels[below..]
        .iter()
        .zip(&zone_labels)
        .all(|(a, b)| a.eq_ignore_ascii_case(b))
    {
        return None;
    }
    if below == 0 {
        return Some(Owner::Apex);
    }
    let storable = labels
        .iter()
        .all(|l| l.iter().all(|&b| b.is_ascii_graphic() && b != b'.'));
    Some(Owner::Below(storable.then(|| {
        labels
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(".")
    })))
}

/// Fills the answer (or the negative answer) for `qtype` at `qname`.
fn lookup(
    store: &Store,
    settings: &ZoneSettings,
    qname: &Name,
    owner: Owner,
    qtype: Qtype,
    response: &mut Message,
) -> Result<(), String> {
    let serial = store.zone_serial().map_err(|e| e.to_string())?;
    let any = qtype == Qtype::ANY;
    let (records, exists) = match &owner {
        Owner::Apex => {
            if any || qtype == Qtype::SOA {
                response.add_answer(soa(settings, serial, settings.ttl)?);
            }
            if any || qtype == Qtype::NS {
                for ns in &settings.nameservers {
                    let ns = absolute(ns).map_err(|e| format!("name server {ns:?}: {e}"))?;
                    response.add_answer(Rr::from_rdata(qname.clone(), settings.ttl, RData::NS(NS(ns))));
                }
            }
            let node = store.zone_node(&settings.zone).map_err(|e| e.to_string())?;
            (node.records, true)
        }
        Owner::Below(Some(name)) => {
            let node = store.zone_node(name).map_err(|e| e.to_string())?;
            (node.records, node.exists)
        }
        Owner::Below(None) => (Vec::new(), false),
    };
    // RFC 8482 lets ANY be answered with a subset; the name's own records
    // are small enough to give in full.
    for record in records.iter().filter(|r| any || qtype_of(r.rtype) == qtype) {
        match rdata(record) {
            Some(data) => {
                response.add_answer(Rr::from_rdata(qname.clone(), settings.ttl, data));
            }
            None => log::debug!(
                "DNS: skipping unusable {} record of {}: {:?}",
                record.rtype.as_str(),
                record.name,
                record.value
            ),
        }
    }
    if !response.answers.is_empty() {
        return Ok(());
    }
    // Negative answers carry the SOA so that resolvers can cache them
    // (RFC 2308 §3), for min(SOA TTL, MINIMUM) (§5): both are `ttl` here.
    if !exists {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    response.add_authority(soa(settings, serial, settings.ttl)?);
    Ok(())
}

/// The wire type of a stored record type.
fn qtype_of(t: RecordType) -> Qtype {
    match t {
        RecordType::A => Qtype::A,
        RecordType::Aaaa => Qtype::AAAA,
        RecordType::Txt => Qtype::TXT,
    }
}

/// The zone's SOA record, owned by the apex, with `ttl`.
fn soa(settings: &ZoneSettings, serial: u32, ttl: u32) -> Result<Rr, String> {
    let apex = absolute(&settings.zone).map_err(|e| format!("zone {:?}: {e}", settings.zone))?;
    let first = settings.nameservers.first().ok_or("no name servers configured")?;
    let mname = absolute(first).map_err(|e| format!("name server {first:?}: {e}"))?;
    let rname = absolute(&settings.hostmaster).map_err(|e| format!("hostmaster {:?}: {e}", settings.hostmaster))?;
    let data = SOA::new(mname, rname, serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, settings.ttl);
    Ok(Rr::from_rdata(apex, ttl, RData::SOA(data)))
}

/// `name` (no trailing dot) as an absolute DNS name.
fn absolute(name: &str) -> Result<Name, String> {
    let mut parsed = Name::from_ascii(name).map_err(|e| e.to_string())?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// A stored record's data in wire form, or `None` if its value is unusable.
fn rdata(record: &Record) -> Option<RData> {
    match record.rtype {
        RecordType::A => record.value.parse::<Ipv4Addr>().ok().map(|a| RData::A(A(a))),
        RecordType::Aaaa => record.value.parse::<Ipv6Addr>().ok().map(|a| RData::AAAA(AAAA(a))),
        // A character-string holds at most 255 bytes (RFC 1035 §3.3); a
        // longer value is split, and clients join the strings (RFC 7208 §3.3).
        RecordType::Txt => {
            let bytes = record.value.as_bytes();
            let strings: Vec<&[u8]> = if bytes.is_empty() {
                vec![&[]]
            } else {
                bytes.chunks(255).collect()
            };
            Some(RData::TXT(TXT::from_bytes(strings)))
        }
    }
}

/// `response` in wire form if it fits `limit`, else the same header with TC
/// set, the question and OPT, and no records.
fn encode(response: &Message, limit: usize) -> Option<Vec<u8>> {
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return Some(bytes),
        Ok(_) => {}
        Err(e) => log::debug!("DNS: encoding reply {}: {e}", response.metadata.id),
    }
    let mut truncated = response.truncate();
    truncated.metadata.message_type = MessageType::Response;
    match truncated.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Some(bytes),
        Ok(bytes) => {
            log::debug!(
                "DNS: reply {}: even truncated it is {} bytes",
                response.metadata.id,
                bytes.len()
            );
            None
        }
        Err(e) => {
            log::debug!("DNS: encoding truncated reply {}: {e}", response.metadata.id);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::store::SqliteZone;
    use crate::dns::DnsBackend;
    use hickory_proto::op::Query;

    const Z: &str = "z.test";

    fn settings() -> ZoneSettings {
        ZoneSettings {
            zone: Z.into(),
            nameservers: vec!["ns1.z.test".into(), "ns2.example.net".into()],
            hostmaster: "hostmaster.example.net".into(),
            ttl: 60,
        }
    }

    /// The result of a [`SqliteZone`] call, whose futures are ready at once
    /// (so this works inside a `#[tokio::test]` too).
    fn block<T>(mut f: crate::BoxFuture<'_, T>) -> T {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("SqliteZone futures are ready at once"),
        }
    }

    /// A zone with an address host, a challenge below an otherwise empty
    /// name, and an A record at the apex.
    fn zone() -> Arc<Store> {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let zone = SqliteZone::new(store.clone());
        block(zone.set_addresses(
            "host.z.test",
            &["10.0.0.1".parse().unwrap()],
            &["fd00::1".parse().unwrap()],
        ))
        .unwrap();
        block(zone.set_txt("_acme-challenge.dev.z.test", &["token".to_string()])).unwrap();
        block(zone.set_addresses("z.test", &["10.0.0.9".parse().unwrap()], &[])).unwrap();
        store
    }

    fn query(name: &str, qtype: Qtype, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(store: &Store, q: &[u8], max: usize) -> Message {
        let reply = answer(store, &settings(), q, max).expect("a reply");
        assert!(reply.len() <= max, "{} > {max}", reply.len());
        Message::from_vec(&reply).unwrap()
    }

    fn udp(store: &Store, name: &str, qtype: Qtype) -> Message {
        ask(store, &query(name, qtype, None), MAX_UDP_PAYLOAD)
    }

    fn rcode(m: &Message) -> u16 {
        m.metadata.response_code.into()
    }

    fn negative_soa(m: &Message) -> &SOA {
        assert!(m.answers.is_empty(), "{m}");
        assert_eq!(m.authorities.len(), 1, "{m}");
        let rr = &m.authorities[0];
        assert_eq!(rr.name, Name::from_ascii("z.test.").unwrap());
        assert_eq!(rr.ttl, 60);
        match &rr.data {
            RData::SOA(soa) => soa,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn apex_has_soa_ns_and_its_own_records() {
        let store = zone();
        let serial = store.zone_serial().unwrap();

        let m = udp(&store, "z.test.", Qtype::SOA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative && !m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired, "RD copied");
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.answers.len(), 1, "{m}");
        let RData::SOA(soa) = &m.answers[0].data else {
            panic!("{m}")
        };
        assert_eq!(soa.mname, Name::from_ascii("ns1.z.test.").unwrap());
        assert_eq!(soa.rname, Name::from_ascii("hostmaster.example.net.").unwrap());
        assert_eq!(soa.serial, serial);
        assert_eq!(
            (soa.refresh, soa.retry, soa.expire, soa.minimum),
            (3600, 600, 604800, 60)
        );
        assert_eq!(m.answers[0].ttl, 60);

        let m = udp(&store, "z.test.", Qtype::NS);
        let ns: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::NS(ns) => ns.0.to_ascii(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ns, ["ns1.z.test.", "ns2.example.net."]);

        let m = udp(&store, "z.test.", Qtype::A);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A([10, 0, 0, 9].into())));

        let m = udp(&store, "z.test.", Qtype::ANY);
        let types: Vec<Qtype> = m.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(types, [Qtype::SOA, Qtype::NS, Qtype::NS, Qtype::A]);

        // The apex has no TXT: NODATA, not NXDOMAIN.
        let m = udp(&store, "z.test.", Qtype::TXT);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(negative_soa(&m).serial, serial);
    }

    #[test]
    fn nxdomain_and_nodata_are_told_apart() {
        let store = zone();
        let m = udp(&store, "host.z.test.", Qtype::A);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A([10, 0, 0, 1].into())));
        assert!(m.authorities.is_empty());

        for (name, qtype) in [
            ("host.z.test.", Qtype::TXT),
            ("host.z.test.", Qtype::MX),
            ("host.z.test.", Qtype::CNAME),
            ("host.z.test.", Qtype::SOA),
            // An empty non-terminal exists (RFC 4592 §2.2.2, RFC 8020).
            ("dev.z.test.", Qtype::A),
            ("dev.z.test.", Qtype::TXT),
        ] {
            let m = udp(&store, name, qtype);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name} {qtype}");
            assert!(m.metadata.authoritative);
            negative_soa(&m);
        }

        for (name, qtype) in [
            ("nothing.z.test.", Qtype::A),
            ("ev.z.test.", Qtype::A),
            ("x.host.z.test.", Qtype::TXT),
            ("_acme-challenge.host.z.test.", Qtype::TXT),
        ] {
            let m = udp(&store, name, qtype);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name} {qtype}");
            assert!(m.metadata.authoritative);
            negative_soa(&m);
        }

        let m = udp(&store, "_acme-challenge.dev.z.test.", Qtype::TXT);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::TXT(TXT::new(vec!["token".into()])));

        let m = udp(&store, "host.z.test.", Qtype::ANY);
        let types: Vec<Qtype> = m.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(types, [Qtype::A, Qtype::AAAA]);
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        let store = zone();
        for name in [
            "example.com.",
            "test.",
            "xz.test.",
            "z.test.evil.",
            "host.z.test.evil.",
            ".",
        ] {
            let m = udp(&store, name, Qtype::A);
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
            assert!(!m.metadata.authoritative && !m.metadata.recursion_available, "{name}");
            assert!(m.answers.is_empty() && m.authorities.is_empty(), "{name}");
            assert_eq!(m.queries.len(), 1, "question echoed");
        }
        let m = udp(&store, "z.test.", Qtype::AXFR);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "no zone transfers");
    }

    #[test]
    fn names_match_case_insensitively_and_the_question_keeps_its_case() {
        let store = zone();
        let m = udp(&store, "HoSt.Z.TeSt.", Qtype::A);
        assert_eq!(m.answers.len(), 1, "{m}");
        let asked = Name::from_ascii("HoSt.Z.TeSt.").unwrap();
        assert!(m.queries[0].name().eq_case(&asked), "{}", m.queries[0].name());
        assert!(m.answers[0].name.eq_case(&asked));
        let m = udp(&store, "_ACME-Challenge.DEV.z.test.", Qtype::TXT);
        assert_eq!(m.answers.len(), 1, "{m}");
    }

    #[test]
    fn edns_is_echoed_and_versions_checked() {
        let store = zone();
        let m = udp(&store, "host.z.test.", Qtype::A);
        assert!(m.edns.is_none(), "no OPT without one in the query");

        let m = ask(&store, &query("host.z.test.", Qtype::A, Some(4096)), MAX_UDP_PAYLOAD);
        let edns = m.edns.as_ref().expect("OPT echoed");
        assert_eq!((edns.max_payload(), edns.version()), (1232, 0));
        assert_eq!(m.answers.len(), 1);

        let mut q = Message::from_vec(&query("host.z.test.", Qtype::A, Some(1232))).unwrap();
        let mut e = Edns::new();
        e.set_version(1);
        q.set_edns(e);
        let m = ask(&store, &q.to_vec().unwrap(), MAX_UDP_PAYLOAD);
        assert_eq!(rcode(&m), 16, "BADVERS: {m}");
        assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
        assert!(m.answers.is_empty());
    }

    #[test]
    fn malformed_queries_get_formerr_notimp_or_nothing() {
        let store = zone();
        let s = settings();

        let mut two = Message::from_vec(&query("host.z.test.", Qtype::A, None)).unwrap();
        two.add_query(Query::query(Name::from_ascii("z.test.").unwrap(), Qtype::SOA));
        let m = ask(&store, &two.to_vec().unwrap(), MAX_UDP_PAYLOAD);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.answers.is_empty());

        let mut none = Message::from_vec(&query("host.z.test.", Qtype::A, None)).unwrap();
        none.queries.clear();
        let m = ask(&store, &none.to_vec().unwrap(), MAX_UDP_PAYLOAD);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

        // A header announcing a question that is not there.
        let header = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let m = ask(&store, &header, MAX_UDP_PAYLOAD);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        let mut cut = query("host.z.test.", Qtype::A, None);
        cut.truncate(cut.len() - 3);
        assert_eq!(
            ask(&store, &cut, MAX_UDP_PAYLOAD).metadata.response_code,
            ResponseCode::FormErr
        );

        let mut notify = query("z.test.", Qtype::SOA, None);
        notify[2] = (notify[2] & 0x87) | (4 << 3);
        let m = ask(&store, &notify, MAX_UDP_PAYLOAD);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(m.metadata.op_code, OpCode::Notify);

        assert_eq!(answer(&store, &s, &header[..11], MAX_UDP_PAYLOAD), None, "short");
        assert_eq!(answer(&store, &s, &[], MAX_UDP_PAYLOAD), None);
        let mut response = query("host.z.test.", Qtype::A, None);
        response[2] |= 0x80;
        assert_eq!(answer(&store, &s, &response, MAX_UDP_PAYLOAD), None, "QR set");
    }

    #[test]
    fn oversized_udp_answers_are_truncated_and_tcp_gets_all() {
        let store = zone();
        let values: Vec<String> = (0..40).map(|i| format!("{i:02}{}", "v".repeat(198))).collect();
        let zone = SqliteZone::new(store.clone());
        block(zone.set_txt("big.z.test", &values)).unwrap();

        for edns in [None, Some(512), Some(4096)] {
            let m = ask(&store, &query("big.z.test.", Qtype::TXT, edns), MAX_UDP_PAYLOAD);
            assert!(m.metadata.truncation, "{edns:?}");
            assert!(m.answers.is_empty() && m.authorities.is_empty());
            assert!(m.metadata.authoritative);
            assert_eq!(m.queries.len(), 1);
            assert_eq!(m.edns.is_some(), edns.is_some());
        }

        let m = ask(&store, &query("big.z.test.", Qtype::TXT, None), MAX_TCP_MESSAGE);
        assert!(!m.metadata.truncation);
        let got: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::TXT(t) => String::from_utf8(t.txt_data.concat()).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, values);

        // About 900 bytes: too big for 512, fine for an EDNS querier.
        block(zone.set_txt("mid.z.test", &values[..4])).unwrap();
        let m = ask(&store, &query("mid.z.test.", Qtype::TXT, None), MAX_UDP_PAYLOAD);
        assert!(m.metadata.truncation);
        let m = ask(&store, &query("mid.z.test.", Qtype::TXT, Some(100)), MAX_UDP_PAYLOAD);
        assert!(m.metadata.truncation, "sizes below 512 count as 512");
        let m = ask(&store, &query("mid.z.test.", Qtype::TXT, Some(1232)), MAX_UDP_PAYLOAD);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 4);
    }

    #[test]
    fn long_txt_values_are_split_into_character_strings() {
        let store = zone();
        let value: String = (0..600).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        block(SqliteZone::new(store.clone()).set_txt("long.z.test", &[value.clone(), String::new()])).unwrap();
        let m = ask(&store, &query("long.z.test.", Qtype::TXT, None), MAX_TCP_MESSAGE);
        let strings: Vec<Vec<usize>> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::TXT(t) => t.txt_data.iter().map(|s| s.len()).collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(strings, [vec![255, 255, 90], vec![0]]);
        let RData::TXT(t) = &m.answers[0].data else {
            unreachable!()
        };
        assert_eq!(t.txt_data.concat(), value.as_bytes());
    }

    #[test]
    fn the_soa_serial_follows_the_records() {
        let store = zone();
        let serial = |store: &Store| match &udp(store, "z.test.", Qtype::SOA).answers[0].data {
            RData::SOA(soa) => soa.serial,
            other => panic!("{other:?}"),
        };
        let before = serial(&store);
        block(SqliteZone::new(store.clone()).set_txt("_acme-challenge.host.z.test", &["t".to_string()])).unwrap();
        assert_eq!(serial(&store), before.wrapping_add(1));
    }

    #[tokio::test]
    async fn serves_udp_and_tcp_with_several_queries_per_connection_and_a_connection_cap() {
        let store = zone();
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let task = tokio::spawn(server.run(store.clone(), settings()));

        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        udp.connect(addr).await.unwrap();
        udp.send(&[1, 2, 3]).await.unwrap(); // dropped, and the loop goes on
        udp.send(&query("host.z.test.", Qtype::A, None)).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.answers.len(), 1);

        async fn exchange(stream: &mut TcpStream, q: &[u8]) -> Message {
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(q);
            stream.write_all(&framed).await.unwrap();
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.unwrap();
            let mut reply = vec![0u8; u16::from_be_bytes(len).into()];
            stream.read_exact(&mut reply).await.unwrap();
            Message::from_vec(&reply).unwrap()
        }

        let mut first = TcpStream::connect(addr).await.unwrap();
        let m = exchange(&mut first, &query("host.z.test.", Qtype::AAAA, None)).await;
        assert_eq!(m.answers[0].data, RData::AAAA(AAAA("fd00::1".parse().unwrap())));
        let m = exchange(&mut first, &query("nothing.z.test.", Qtype::A, None)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

        let mut others = Vec::new();
        for _ in 1..MAX_TCP_CONNECTIONS {
            others.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
            .await
            .expect("the extra connection is closed, not left hanging");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        let m = exchange(
            &mut others[MAX_TCP_CONNECTIONS - 2],
            &query("z.test.", Qtype::SOA, None),
        )
        .await;
        assert_eq!(m.answers.len(), 1, "connections within the cap are served");

        task.abort();
        let _ = task.await;
        let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut byte))
            .await
            .expect("aborting the server closes its connections");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }

    #[tokio::test]
    async fn binding_a_taken_address_names_the_protocol_and_address() {
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        let e = DnsServer::bind(addr).await.err().expect("address in use").to_string();
        assert!(e.starts_with(&format!("binding DNS UDP on {addr}: ")), "{e}");

        let tcp_only = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = tcp_only.local_addr().unwrap();
        // (Unless the UDP port happens to be busy too: nothing to check then.)
        if let Ok(udp) = UdpSocket::bind(taken).await {
            drop(udp);
            let e = DnsServer::bind(taken).await.err().expect("TCP in use").to_string();
            assert!(e.starts_with(&format!("binding DNS TCP on {taken}: ")), "{e}");
        }
    }
}
