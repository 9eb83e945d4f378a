//! `lancert-server serve`: sets up the data directory (CA, TLS certificate,
//! database), resumes unfinished orders, and serves HTTPS until SIGTERM or
//! SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use crate::api::{self, App};
use crate::config::{Config, IssuerConfig};
use crate::dns::store::SqliteZone;
use crate::error::Error;
use crate::issuance::Issuance;
use crate::issuer::local_ca::LocalCa;
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
    let IssuerConfig::LocalCa {
        validity_secs,
        delay_secs,
    } = config.issuer
    else {
        return Err(Error::Other("acme issuer: wiring in progress".into()));
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

    let issuance = Issuance::new(store.clone(), ca);
    let app = Arc::new(App {
        store: store.clone(),
        nonces: NonceStore::new(Duration::from_secs(config.nonce_ttl_secs)),
        dns: Arc::new(SqliteZone::new(store.clone())),
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
