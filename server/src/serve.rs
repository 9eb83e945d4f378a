//! `lancert-server serve`: sets up the data directory (CA, TLS certificate,
//! database), resumes unfinished orders, and serves HTTPS until SIGTERM or
//! SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

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
/// A client must send its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
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
    });
    let resumed = issuance.resume()?;
    if resumed > 0 {
        log::info!("resumed {resumed} unfinished orders");
    }
    issuance.spawn_scheduler();
    tokio::spawn(housekeeping(store));

    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| Error::io("listening on", config.listen.to_string(), e))?;
    let handle = axum_server::Handle::new();
    let mut server = axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls_config))
        .map_err(|e| Error::io("listening on", config.listen.to_string(), e))?
        .handle(handle.clone());
    server.http_builder().http1().header_read_timeout(HEADER_READ_TIMEOUT);
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
