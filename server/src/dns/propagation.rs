//! Checks that a dns-01 challenge record is visible on the zone's name
//! servers before the CA is asked to validate it (RFC 8555 §8.4): a CA that
//! looks too early sees nothing, fails the challenge and counts it against
//! the account's failed-validation limit.
//!
//! The servers are asked directly and without recursion (RD=0), so no
//! resolver cache stands between us and the zone's truth. Each query has a
//! random id and its reply must carry the same id and question (RFC 5452
//! §9.1); a truncated UDP reply is repeated over TCP (RFC 7766 §5).
//!
//! | Bound                           | Value                         |
//! |---------------------------------|-------------------------------|
//! | One query (UDP, then TCP)       | [`QUERY_TIMEOUT`], 2 s, in [`wait_for_txt`] |
//! | Between two rounds of queries   | [`POLL_INTERVAL`], 1 s        |
//! | The whole wait                  | the caller's `timeout` (`propagation_timeout_secs`) |

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::DnsError;

/// How long [`wait_for_txt`] waits between two rounds of queries.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long [`wait_for_txt`] gives each server to answer one query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The UDP payload size our queries advertise (EDNS, RFC 6891), the
/// fragmentation-safe 1232 bytes; larger answers come over TCP.
const EDNS_PAYLOAD: u16 = 1232;

/// The TXT values at `name` on `server`, each record's character strings
/// joined (RFC 7208 §3.3 style; a dns-01 value is one 43-character string).
/// A name that does not exist (NXDOMAIN) or has no TXT (NODATA) gives an
/// empty list; any other response code is an error naming the server, the
/// name and the code. `timeout` covers the whole exchange, including a
/// retry over TCP.
pub async fn query_txt(server: SocketAddr, name: &str, timeout: Duration) -> Result<Vec<String>, DnsError> {
    lookup(server, name, timeout)
        .await
        .map_err(|reason| DnsError(format!("querying {server} for {name} TXT: {reason}")))
}

/// Waits until every one of `servers` has a TXT record at `name` equal to
/// `value`, asking all that do not yet every [`POLL_INTERVAL`] (each query
/// bound by [`QUERY_TIMEOUT`], and by what is left of `timeout`). A server
/// that has shown the value is not asked again. With no servers there is
/// nothing to wait for.
///
/// On timeout the error lists the servers still missing the value, each
/// with its last answer or failure, e.g. `_acme-challenge.x.zone TXT not
/// visible after 300 s on 192.0.2.1:53 (answered: ["old"]), 192.0.2.2:53
/// (timed out)`.
pub async fn wait_for_txt(servers: &[SocketAddr], name: &str, value: &str, timeout: Duration) -> Result<(), DnsError> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<(SocketAddr, Result<Vec<String>, String>)> =
        servers.iter().map(|s| (*s, Err("not asked".to_string()))).collect();
    loop {
        let per_query = QUERY_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        let mut round = JoinSet::new();
        for (i, (server, _)) in pending.iter().enumerate() {
            let (server, name) = (*server, name.to_string());
            round.spawn(async move { (i, lookup(server, &name, per_query).await) });
        }
        while let Some(done) = round.join_next().await {
            match done {
                Ok((i, result)) => pending[i].1 = result,
                // lookup() does not panic; should it, the server stays
                // pending with its previous answer.
                Err(e) => log::error!("checking {name} TXT: a query task failed: {e}"),
            }
        }
        pending.retain(|(_, last)| !matches!(last, Ok(values) if values.iter().any(|v| v == value)));
        if pending.is_empty() {
            return Ok(());
        }
        // Another round only if it can still be given time to answer.
        if deadline.saturating_duration_since(Instant::now()) < POLL_INTERVAL {
            let mut message = format!("{name} TXT not visible after {} s on ", seconds(timeout));
            for (n, (server, last)) in pending.iter().enumerate() {
                let sep = if n == 0 { "" } else { ", " };
                let _ = match last {
                    Ok(values) if values.is_empty() => write!(message, "{sep}{server} (no TXT record)"),
                    Ok(values) => write!(message, "{sep}{server} (answered: {values:?})"),
                    Err(reason) => write!(message, "{sep}{server} ({reason})"),
                };
            }
            return Err(DnsError(message));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `d` in seconds, with a decimal only when it is not whole.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

/// [`query_txt`] with a bare reason as its error ("timed out").
async fn lookup(server: SocketAddr, name: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let mut qname = Name::from_ascii(name).map_err(|e| format!("not a DNS name: {e}"))?;
    qname.set_fqdn(true);
    let id = u16::from_be_bytes(crate::random::bytes::<2>());
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = false;
    query.add_query(Query::query(qname.clone(), RecordType::TXT));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    query.set_edns(edns);
    let query = query.to_vec().map_err(|e| format!("encoding the query: {e}"))?;

    let reply = tokio::time::timeout(timeout, async {
        let reply = exchange_udp(server, &query, id, &qname).await?;
        if reply.metadata.truncation {
            exchange_tcp(server, &query, id, &qname).await
        } else {
            Ok(reply)
        }
    })
    .await
    .map_err(|_| "timed out".to_string())??;

    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        rcode => return Err(format!("answered {}", super::rcode_name(rcode))),
    }
    Ok(reply
        .answers
        .iter()
        .filter(|r| r.name == qname)
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(String::from_utf8_lossy(&txt.txt_data.concat()).into_owned()),
            _ => None,
        })
        .collect())
}

/// Sends `query` over UDP and waits for the reply that matches it; stray
/// datagrams (wrong id or question) are skipped.
async fn exchange_udp(server: SocketAddr, query: &[u8], id: u16, qname: &Name) -> Result<Message, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("opening a UDP socket: {e}"))?;
    // Connected: the kernel drops datagrams from other addresses.
    socket.connect(server).await.map_err(|e| format!("UDP: {e}"))?;
    socket.send(query).await.map_err(|e| format!("sending over UDP: {e}"))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("receiving over UDP: {e}"))?;
        if let Some(reply) = matching_reply(&buf[..len], id, qname) {
            return Ok(reply);
        }
    }
}

/// Sends `query` over TCP (RFC 7766: 2-byte length prefix) and reads the
/// reply, which must match it.
async fn exchange_tcp(server: SocketAddr, query: &[u8], id: u16, qname: &Name) -> Result<Message, String> {
    let len = u16::try_from(query.len()).map_err(|_| "query too long for TCP".to_string())?;
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| format!("connecting over TCP: {e}"))?;
    let mut framed = Vec::with_capacity(2 + query.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| format!("sending over TCP: {e}"))?;
    let mut prefix = [0u8; 2];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(|e| format!("receiving over TCP: {e}"))?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|e| format!("receiving over TCP: {e}"))?;
    matching_reply(&reply, id, qname).ok_or_else(|| "the TCP reply does not match the query".to_string())
}

/// `bytes` parsed, if it is a response to our query: same id, and the same
/// question (name compared case-insensitively). An error response without a
/// question (a FORMERR, say) is accepted so that its code can be reported.
fn matching_reply(bytes: &[u8], id: u16, qname: &Name) -> Option<Message> {
    let reply = match Message::from_vec(bytes) {
        Ok(reply) => reply,
        Err(e) => {
            log::debug!("DNS reply for {qname}: unparseable: {e}");
            return None;
        }
    };
    let question_matches = match reply.queries.as_slice() {
        [q] => q.name() == qname && q.query_type() == RecordType::TXT && q.query_class() == DNSClass::IN,
        [] => reply.metadata.response_code != ResponseCode::NoError,
        _ => false,
    };
    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response || !question_matches {
        log::debug!("DNS reply for {qname}: id or question does not match the query; ignored");
        return None;
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dns::authoritative::{answer, DnsServer, ZoneSettings, MAX_UDP_PAYLOAD};
    use crate::dns::store::SqliteZone;
    use crate::dns::DnsBackend;
    use crate::store::Store;

    fn settings() -> ZoneSettings {
        ZoneSettings {
            zone: "z.test".into(),
            nameservers: vec!["ns1.z.test".into()],
            hostmaster: "hostmaster.z.test".into(),
            ttl: 60,
        }
    }

    /// A real server on loopback over its own zone database.
    async fn server() -> (SocketAddr, Arc<Store>, tokio::task::JoinHandle<()>) {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        let task = tokio::spawn(server.run(store.clone(), settings()));
        (addr, store, task)
    }

    async fn set_txt(store: &Arc<Store>, name: &str, values: &[&str]) {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        SqliteZone::new(store.clone()).set_txt(name, &values).await.unwrap();
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn query_txt_reads_values_and_treats_missing_names_as_empty() {
        let (addr, store, task) = server().await;
        set_txt(&store, "_acme-challenge.a.z.test", &["one", "two"]).await;
        let long = "x".repeat(300);
        set_txt(&store, "long.z.test", &[&long]).await;
        SqliteZone::new(store.clone())
            .set_addresses("a.z.test", &["10.0.0.1".parse().unwrap()], &[])
            .await
            .unwrap();

        let got = query_txt(addr, "_acme-challenge.a.z.test", T).await.unwrap();
        assert_eq!(got, ["one", "two"]);
        let got = query_txt(addr, "_ACME-challenge.A.z.test.", T).await.unwrap();
        assert_eq!(got.len(), 2, "trailing dot and case do not matter");
        assert_eq!(
            query_txt(addr, "long.z.test", T).await.unwrap(),
            [long],
            "strings joined"
        );
        assert!(query_txt(addr, "a.z.test", T).await.unwrap().is_empty(), "NODATA");
        assert!(
            query_txt(addr, "nothing.z.test", T).await.unwrap().is_empty(),
            "NXDOMAIN"
        );

        let e = query_txt(addr, "example.com", T).await.unwrap_err().to_string();
        assert!(
            e.contains(&addr.to_string()) && e.contains("example.com") && e.contains("REFUSED"),
            "{e}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn truncated_udp_answers_are_fetched_over_tcp() {
        let (addr, store, task) = server().await;
        let values: Vec<String> = (0..40).map(|i| format!("{i:02}{}", "v".repeat(198))).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        set_txt(&store, "big.z.test", &refs).await;
        assert_eq!(query_txt(addr, "big.z.test", T).await.unwrap(), values);
        task.abort();
    }

    #[tokio::test]
    async fn replies_with_another_id_are_ignored() {
        // A fake server that first sends a forged reply (id + 1, a value
        // we must not believe), then the real one.
        let real_store = Arc::new(Store::open_in_memory().unwrap());
        set_txt(&real_store, "t.z.test", &["real"]).await;
        let forged_store = Arc::new(Store::open_in_memory().unwrap());
        set_txt(&forged_store, "t.z.test", &["forged"]).await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
            let mut forged = answer(&forged_store, &settings(), &buf[..n], MAX_UDP_PAYLOAD).unwrap();
            let id = u16::from_be_bytes([forged[0], forged[1]]).wrapping_add(1);
            forged[..2].copy_from_slice(&id.to_be_bytes());
            socket.send_to(&forged, peer).await.unwrap();
            let real = answer(&real_store, &settings(), &buf[..n], MAX_UDP_PAYLOAD).unwrap();
            socket.send_to(&real, peer).await.unwrap();
        });
        assert_eq!(query_txt(addr, "t.z.test", T).await.unwrap(), ["real"]);
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let e = query_txt(addr, "t.z.test", Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("DNS backend: querying {addr} for t.z.test TXT: timed out"));
    }

    #[tokio::test]
    async fn wait_for_txt_returns_once_every_server_has_the_value() {
        let (a, store_a, task_a) = server().await;
        let (b, store_b, task_b) = server().await;
        set_txt(&store_a, "_acme-challenge.d.z.test", &["want"]).await;
        set_txt(&store_b, "_acme-challenge.d.z.test", &["old"]).await;
        let publish_late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            set_txt(&store_b, "_acme-challenge.d.z.test", &["old", "want"]).await;
        });
        let started = Instant::now();
        wait_for_txt(&[a, b], "_acme-challenge.d.z.test", "want", Duration::from_secs(20))
            .await
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1500),
            "returned before b had it: {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        wait_for_txt(&[], "x.z.test", "v", Duration::ZERO).await.unwrap();
        publish_late.await.unwrap();
        task_a.abort();
        task_b.abort();
    }

    #[tokio::test]
    async fn wait_for_txt_times_out_listing_the_servers_without_the_value() {
        let (good, store_good, task_good) = server().await;
        let (stale, store_stale, task_stale) = server().await;
        let (empty, _store_empty, task_empty) = server().await;
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        set_txt(&store_good, "_acme-challenge.x.z.test", &["want"]).await;
        set_txt(&store_stale, "_acme-challenge.x.z.test", &["old"]).await;

        let started = Instant::now();
        let e = wait_for_txt(
            &[good, stale, empty, silent_addr],
            "_acme-challenge.x.z.test",
            "want",
            Duration::from_millis(1500),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        assert_eq!(
            e,
            format!(
                "DNS backend: _acme-challenge.x.z.test TXT not visible after 1.5 s on \
                 {stale} (answered: [\"old\"]), {empty} (no TXT record), {silent_addr} (timed out)"
            )
        );
        task_good.abort();
        task_stale.abort();
        task_empty.abort();
    }
}
