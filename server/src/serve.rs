//! `lancert-server serve`: sets up the data directory (CA, TLS certificate,
//! database), resumes unfinished orders, and serves HTTPS until SIGTERM or
//! SIGINT.
//!
//! Every phase of a connection has a bound, so that clients that never
//! finish (a TLS handshake left open, headers sent a byte at a time, a body
//! that never ends, an idle keep-alive connection) cannot pile up:
//!
//! | phase | bound |
//! |---|---|
//! | connections at once | `max_connections` (512); more are closed as soon as they are accepted |
//! | TLS handshake | `tls_handshake_timeout_secs` (10 s) |
//! | request line and headers | `header_read_timeout_secs` (10 s), at most [`MAX_HEAD_BYTES`] (else 431) |
//! | the request, body included | `request_timeout_secs` (30 s, then 408; see `api`), body at most 64 KiB (else 413) |
//!
//! Only HTTP/1.1 is served (the TLS configuration offers only `http/1.1`
//! by ALPN too): hyper's HTTP/2 detection would otherwise wait, without a
//! time limit, for the first bytes of every connection.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{self, App};
use crate::config::{Config, DnsConfig, IssuerConfig};
use crate::dns::authoritative::{DnsServer, ZoneSettings};
use crate::dns::rfc2136::Rfc2136Zone;
use crate::dns::store::SqliteZone;
use crate::dns::DnsBackend;
use crate::error::Error;
use crate::issuance::Issuance;
use crate::issuer::acme::{AcmeIssuer, Challenges};
use crate::issuer::local_ca::LocalCa;
use crate::issuer::Issuer;
use crate::nonce::NonceStore;
use crate::store::Store;
use crate::tls;

/// The database file in the data directory.
pub const DB_FILE: &str = "lancert.sqlite3";
/// Largest request line and headers, and so the read buffer each
/// connection may fill (hyper's default is 408 KiB); larger heads get 431.
/// The agent's are a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// At most one warning about refused connections per this interval.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// On SIGTERM/SIGINT, open requests get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often expired orders and tokens are deleted.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(3600);

/// Creates the data directory (mode 0700) if missing and opens the database.
pub fn open_store(config: &Config) -> Result<Store, Error> {
    create_data_dir(&config.data_dir)?;
    Ok(Store::open(&config.data_dir.join(DB_FILE))?)
}

fn create_data_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating data directory", dir, e))
}

/// Runs the server until a signal stops it.
pub fn run(config: &Config) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("starting the async runtime: {e}")))?;
    runtime.block_on(serve(config))
}

async fn serve(config: &Config) -> Result<(), Error> {
    let store = Arc::new(open_store(config)?);
    // The local CA also makes the server's own TLS certificate when none is
    // configured, whichever CA issues the devices' certificates.
    let (validity_secs, delay_secs) = match config.issuer {
        IssuerConfig::LocalCa {
            validity_secs,
            delay_secs,
        } => (validity_secs, delay_secs),
        IssuerConfig::Acme(_) => (crate::config::DEFAULT_VALIDITY_SECS, 0),
    };
    let ca = Arc::new(LocalCa::open_or_create(
        &config.data_dir,
        validity_secs,
        delay_secs,
        config.renewal_window,
    )?);
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => ca.ensure_tls_cert(&config.data_dir, &config.tls_names)?,
    };
    let tls_config = tls::server_config(&cert, &key)?;

    let zone = publish_zone(config, &store).await?;
    let issuer: Arc<dyn Issuer> = match &config.issuer {
        IssuerConfig::LocalCa { .. } => ca,
        IssuerConfig::Acme(acme) => {
            let (check_servers, timeout) = zone.challenge_checks.clone().ok_or_else(|| Error::Config {
                path: config.path.clone(),
                message: "field `dns`: the acme issuer needs a DNS backend that publishes records".into(),
            })?;
            let challenges = Challenges {
                dns: zone.backend.clone(),
                check_servers,
                propagation_timeout: timeout,
            };
            let issuer = Arc::new(AcmeIssuer::new(acme.clone(), &config.data_dir, challenges));
            // A CA that is down now is tried again at the first order; the
            // message tells the operator at once.
            if let Err(e) = issuer.account().await {
                log::error!(
                    "ACME account at {}: {}; retrying at the first order",
                    acme.directory_url,
                    e.detail
                );
            }
            issuer
        }
    };

    if let Some(previous) = store.set_issuer(&issuer.name())? {
        log::warn!(
            "the issuer changed from {previous} to {}: certificates issued so far are renewed by new, counted \
             orders without ARI `replaces`",
            issuer.name()
        );
    }
    let issuance = Issuance::new(store.clone(), issuer, config.budget);
    let app = Arc::new(App {
        store: store.clone(),
        nonces: NonceStore::new(Duration::from_secs(config.nonce_ttl_secs)),
        dns: zone.backend.clone(),
        issuance: issuance.clone(),
        public_url: config.public_url.clone(),
        zone: config.zone.clone(),
        retry_after_secs: config.retry_after_secs,
        orders_per_hour: config.orders_per_hour,
        request_timeout: Duration::from_secs(config.request_timeout_secs),
    });
    let resumed = issuance.resume()?;
    if resumed > 0 {
        log::info!("resumed {resumed} unfinished orders");
    }
    issuance.spawn_scheduler();
    tokio::spawn(housekeeping(store));

    let listener = listener(config.listen, listen_backlog(config.max_connections))
        .map_err(|e| Error::io("listening on", config.listen.to_string(), e))?;
    let handle = axum_server::Handle::new();
    let header_read_timeout = Duration::from_secs(config.header_read_timeout_secs);
    // TCP_NODELAY: devices open a connection per check, and without it the
    // first answer on a connection often waited 40 ms for the device's
    // delayed ACK (Nagle), most of an address update's time after the
    // agent's settle delay (bench/event-latency).
    let tls = RustlsAcceptor::new(RustlsConfig::from_config(tls_config))
        .handshake_timeout(Duration::from_secs(config.tls_handshake_timeout_secs))
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    let mut server = axum_server::from_tcp(listener)
        .map_err(|e| Error::io("listening on", config.listen.to_string(), e))?
        .acceptor(ConnectionLimit::new(tls, config.max_connections as usize))
        .http1_only()
        .handle(handle.clone());
    server
        .http_builder()
        .http1()
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let router = api::router(app);
    let serving = tokio::spawn(server.serve(router.into_make_service()));

    if let Some(addr) = handle.listening().await {
        log::info!("public URL {} (zone {})", config.public_url, config.zone);
        // The exact line tests and scripts wait for.
        eprintln!("listening on https://{addr}");
    }
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(name) => log::info!("{name}: shutting down"),
            Err(e) => log::error!("cannot wait for signals ({e}); shutting down"),
        }
        signal_handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    match serving.await {
        Ok(Ok(())) => {
            log::info!("stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(Error::io("serving on", config.listen.to_string(), e)),
        Err(e) => Err(Error::Other(format!("server task failed: {e}"))),
    }
}

/// The listen backlog for `max_connections`: a burst of as many fresh
/// connections as the server serves at once is queued, not dropped (devices
/// open a connection per check; with the standard library's 128, 256 fresh
/// connections at once lost SYNs, whose 1 s retransmission showed in the
/// p99). At least 128, at most 65535; Linux caps it further at
/// `net.core.somaxconn` (4096 by default since 5.4).
fn listen_backlog(max_connections: u32) -> u32 {
    max_connections.clamp(128, 65_535)
}

/// Binds `addr` and listens with `backlog`, as
/// `std::net::TcpListener::bind` does (`SO_REUSEADDR` too, as std sets it
/// on Unix) but with a backlog of one's choosing rather than std's 128.
/// Must run inside the tokio runtime: `TcpSocket::listen` registers the
/// socket with its reactor.
fn listener(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)?.into_std()
}

/// An acceptor that gives each connection one of `max` slots for its whole
/// life, TLS handshake included, and closes a connection at once when none
/// is free: a flood of connections that never finish costs the server at
/// most `max` sockets, each for at most the timeouts above.
#[derive(Clone)]
struct ConnectionLimit<A> {
    inner: A,
    slots: Arc<Semaphore>,
    max: usize,
    refusals: Arc<Refusals>,
}

impl<A> ConnectionLimit<A> {
    fn new(inner: A, max: usize) -> ConnectionLimit<A> {
        ConnectionLimit {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            max,
            refusals: Arc::new(Refusals::default()),
        }
    }
}

impl<I, S, A> Accept<I, S> for ConnectionLimit<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Slotted<A::Stream>;
    type Service = A::Service;
    type Future = crate::BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            // Dropping the stream closes the connection.
            drop(stream);
            self.refusals.note(self.max);
            return Box::pin(std::future::ready(Err(io::Error::other("connection limit reached"))));
        };
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            let (inner, service) = accepting.await?;
            Ok((Slotted { inner, _slot: slot }, service))
        })
    }
}

/// Counts refused connections and warns about them at most once per
/// [`REFUSAL_WARNING_INTERVAL`], so that a flood does not flood the log.
#[derive(Default)]
struct Refusals {
    total: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Refusals {
    fn note(&self, max: usize) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= REFUSAL_WARNING_INTERVAL) {
            *last = Some(Instant::now());
            log::warn!("{max} connections are open (max_connections): closing new ones at once ({total} so far)");
        }
    }
}

/// A connection's stream, holding its slot until the connection ends.
struct Slotted<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Slotted<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Slotted<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The zone's backend as configured, and what the acme issuer must check
/// before asking the CA to validate a challenge.
struct Zone {
    backend: Arc<dyn DnsBackend>,
    /// Authoritative servers to check and how long to wait; `None` when
    /// records are only kept in the database.
    challenge_checks: Option<(Vec<SocketAddr>, Duration)>,
    /// The embedded DNS server, while it runs.
    _server: Option<AbortOnDrop>,
}

/// Aborts a spawned task when dropped (the DNS server stops with `serve`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn publish_zone(config: &Config, store: &Arc<Store>) -> Result<Zone, Error> {
    let local = SqliteZone::new(store.clone());
    match &config.dns {
        DnsConfig::Database => Ok(Zone {
            backend: Arc::new(local),
            challenge_checks: None,
            _server: None,
        }),
        DnsConfig::Authoritative {
            listen,
            nameservers,
            hostmaster,
            ttl,
            check_servers,
            propagation_timeout_secs,
        } => {
            let server = DnsServer::bind(*listen).await?;
            let addr = server.local_addr();
            let settings = ZoneSettings {
                zone: config.zone.clone(),
                nameservers: nameservers.clone(),
                hostmaster: hostmaster.clone(),
                ttl: *ttl,
            };
            let task = tokio::spawn(server.run(store.clone(), settings));
            log::info!("serving zone {} on {addr} (UDP and TCP)", config.zone);
            // The exact line tests and scripts wait for.
            eprintln!("DNS serving on {addr}");
            Ok(Zone {
                backend: Arc::new(local),
                challenge_checks: Some((check_servers.clone(), Duration::from_secs(*propagation_timeout_secs))),
                _server: Some(AbortOnDrop(task)),
            })
        }
        DnsConfig::Rfc2136 {
            server,
            key,
            ttl,
            check_servers,
            propagation_timeout_secs,
        } => {
            let zone = Rfc2136Zone::new(local, *server, &config.zone, key, *ttl).map_err(|e| Error::Config {
                path: config.path.clone(),
                message: format!("field `dns`: {e}"),
            })?;
            zone.check().await.map_err(|e| {
                Error::Other(format!(
                    "{e} (check `dns.server`, `dns.key_name`, `dns.key_algorithm` and the secret in {})",
                    config.path.display()
                ))
            })?;
            log::info!(
                "publishing zone {} by RFC 2136 updates to {server} (key {})",
                config.zone,
                key.name
            );
            Ok(Zone {
                backend: Arc::new(zone),
                challenge_checks: Some((check_servers.clone(), Duration::from_secs(*propagation_timeout_secs))),
                _server: None,
            })
        }
    }
}

async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}

async fn housekeeping(store: Arc<Store>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tick.tick().await;
        let now = crate::clock::now();
        match store.delete_expired_orders(now) {
            Ok(0) => {}
            Ok(n) => log::info!("deleted {n} expired orders"),
            Err(e) => log::error!("{e}"),
        }
        // Expired tokens are kept a week so that their use is reported as "expired".
        if let Err(e) = store.delete_expired_tokens(now - 7 * 86_400) {
            log::error!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_follows_max_connections_within_bounds() {
        assert_eq!(listen_backlog(1), 128);
        assert_eq!(listen_backlog(512), 512);
        assert_eq!(listen_backlog(1_000_000), 65_535);
    }

    /// 200 connections that are never accepted all connect: with std's
    /// backlog of 128, Linux drops the SYNs beyond the 129th and their
    /// connects time out.
    #[tokio::test]
    async fn listener_queues_more_than_128_unaccepted_connections() {
        // The kernel caps the backlog at somaxconn (128 before Linux 5.4).
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if somaxconn.is_some_and(|max| max < 300) {
            eprintln!("net.core.somaxconn is {somaxconn:?}, under 300: skipping the backlog test");
            return;
        }
        let listener = listener("127.0.0.1:0".parse().unwrap(), 300).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.is_ipv4());
        let streams = tokio::task::spawn_blocking(move || {
            (0..200)
                .map(|i| {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                        .unwrap_or_else(|e| panic!("connection {} of 200: {e}", i + 1))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(streams.len(), 200);
        drop(listener);
    }

    #[tokio::test]
    async fn listener_binds_ipv6() {
        // Without ::1 (or without IPv6 at all) there is nothing to test.
        if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
            eprintln!("no IPv6 on loopback ({e}): skipping the [::1] listener");
            return;
        }
        let listener = listener("[::1]:0".parse().unwrap(), 300).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.is_ipv6());
        let stream = tokio::task::spawn_blocking(move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
    }
}
