//! The renewal flow: a fresh key and CSR on the device, the order and its
//! polling, validation of the answer, install, reload, and rollback if the
//! reload fails. Also the first-boot self-signed certificate.
//!
//! Ordering matters for "loses nothing": the chain is validated before any
//! file is touched; the previous set is backed up before it is replaced; a
//! failed reload (or a web server that still serves the old leaf) puts the
//! previous set back and reloads again.

use crate::certificate::CertInfo;
use crate::client::{Client, OrderStatus};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::install::{self, Material, Paths};
use crate::keygen::CertKey;
use crate::schedule::{clamp_retry_after, Random};
use crate::state::{Enrollment, PendingOrder, RenewalPlan, State, StateDir};
use crate::trust::TrustAnchors;
use crate::{clock, csr, identity, reload, self_signed, validate};
use std::time::{Duration, Instant};

/// How a renewal ended without error.
#[derive(Debug)]
pub enum Renewed {
    /// The new certificate is installed and served.
    Installed(CertInfo),
    /// The server is still issuing; the order is kept in the state and
    /// resumed by the next check at (wall clock) the given time.
    Pending(i64),
    /// Interrupted (SIGTERM while waiting between polls); the order is kept.
    Interrupted,
}

/// Where the configuration says the four files go.
pub fn paths(config: &Config) -> Paths {
    Paths {
        key: config.key_file.clone(),
        cert: config.cert_file.clone(),
        chain: config.chain_file.clone(),
        fullchain: config.fullchain_file.clone(),
    }
}

/// The trust anchors issued chains must verify to.
pub fn anchors(config: &Config) -> Result<TrustAnchors> {
    match &config.trust_anchors {
        Some(path) => TrustAnchors::from_pem_file(path),
        None => Ok(TrustAnchors::builtin()),
    }
}

/// First boot: installs a self-signed certificate for `hostname` so the web
/// server can start at once; the real one follows in the same check.
pub fn install_self_signed(config: &Config, hostname: &str) -> Result<()> {
    let key = CertKey::generate()?;
    let material = self_signed::generate(&key, hostname, clock::wall_now())?;
    install::install(&paths(config), &material)?;
    log::info!("installed a self-signed certificate for {hostname} until the real one arrives");
    if let Err(e) = reload_and_verify(config, None) {
        // Nothing to roll back to: there was no certificate, and the web
        // server may simply not be running yet (it starts with these files).
        log::warn!("{e}");
    }
    Ok(())
}

/// Runs the reload command and, if configured, checks that the web server
/// serves `expected_leaf_der`.
fn reload_and_verify(config: &Config, expected: Option<(&str, &[u8])>) -> Result<()> {
    if !config.reload_command.is_empty() {
        reload::run_command(&config.reload_command, config.reload_timeout)?;
    }
    if let (Some(addr), Some((hostname, leaf))) = (&config.verify_address, expected) {
        reload::verify_served(addr, hostname, leaf, config.reload_timeout)?;
    }
    Ok(())
}

/// Orders (or resumes the pending order), validates, installs and reloads.
/// `pause` waits between polls and returns `false` if the wait was
/// interrupted by a request to stop.
#[allow(clippy::too_many_arguments)]
pub fn renew(
    config: &Config,
    dir: &StateDir,
    client: &mut Client,
    enrollment: &Enrollment,
    identity: &CertKey,
    state: &mut State,
    rng: &mut dyn Random,
    pause: &mut dyn FnMut(Duration) -> bool,
) -> Result<Renewed> {
    let kid = enrollment.device.as_str();
    let hostname = enrollment.hostname.as_str();
    let deadline = Instant::now() + config.poll_timeout;
    let pending_key = dir.pending_key();

    // Resume an order still in flight (its key is on disk), else start one.
    let resumable = state.pending_order.clone().filter(|p| p.hostname == hostname);
    let resumed = match resumable {
        Some(p) => identity::load(&pending_key, "the pending order's key")?.map(|key| (key, p)),
        None => None,
    };
    let (key, mut order) = match resumed {
        Some((key, p)) => {
            log::info!("resuming the certificate order {}", p.url);
            match client.poll_order(identity.signing_key(), kid, &p.url) {
                Ok(order) => (key, order),
                Err(e) if e.problem() == Some(lancert_protocol::problem::ProblemType::NotFound) => {
                    log::info!("the pending order is gone ({e}); starting a new one");
                    forget_pending(dir, state)?;
                    start_order(dir, client, kid, hostname, identity, state)?
                }
                Err(e) => return Err(e),
            }
        }
        None => start_order(dir, client, kid, hostname, identity, state)?,
    };

    while order.status == OrderStatus::Processing {
        let wait = clamp_retry_after(order.retry_after.unwrap_or(Duration::from_secs(1)));
        if Instant::now() + wait > deadline {
            let at = clock::wall_now() + i64::try_from(wait.as_secs()).unwrap_or(0);
            log::info!("the server is still issuing; polling again after {}s", wait.as_secs());
            if let Some(p) = state.pending_order.as_mut() {
                p.not_before = at;
            }
            dir.save(state)?;
            return Ok(Renewed::Pending(at));
        }
        if !pause(wait) {
            dir.save(state)?;
            return Ok(Renewed::Interrupted);
        }
        order = client.poll_order(identity.signing_key(), kid, &order.url)?;
    }

    if order.status == OrderStatus::Invalid {
        forget_pending(dir, state)?;
        let (problem, detail) = order.error.unwrap_or((None, "no detail".into()));
        return Err(Error::Server {
            doing: "ordering a certificate".into(),
            url: order.url,
            status: 200,
            problem,
            detail: format!("the order failed: {detail}"),
            retry_after: order.retry_after,
        });
    }

    let cert_url = order.certificate.clone().unwrap_or_default();
    let chain = client.download_chain(identity.signing_key(), kid, &cert_url);
    // Whatever happens next, this order is finished: a bad chain will not
    // get better by downloading it again.
    forget_pending(dir, state)?;
    let chain = chain?;
    let valid = validate::validate(&chain, &key.spki_der(), hostname, clock::wall_now(), &anchors(config)?)?;

    let material = Material {
        key_pem: key.to_pkcs8_pem()?,
        cert_pem: valid.leaf_pem.clone(),
        chain_pem: valid.chain_pem.clone(),
        fullchain_pem: valid.fullchain_pem.clone(),
    };
    let paths = paths(config);
    let backup = install::install(&paths, &material)?;
    let leaf_der = crate::certificate::pem_to_der_chain(valid.leaf_pem.as_bytes())
        .ok()
        .and_then(|mut v| (!v.is_empty()).then(|| v.swap_remove(0)))
        .unwrap_or_default();
    if let Err(e) = reload_and_verify(config, Some((hostname, &leaf_der))) {
        log::error!("{e}; putting the previous certificate back");
        install::rollback(&paths, &backup)?;
        if let Err(again) = reload_and_verify(config, None) {
            log::error!("reloading after the rollback also failed: {again}");
        }
        return Err(Error::Command {
            doing: "reloading the web server with the new certificate".into(),
            detail: format!("{e}; the previous certificate was put back"),
        });
    }

    state.renewal = order.renewal.map(|w| RenewalPlan::draw(&valid.info.serial_hex, w, rng));
    dir.save(state)?;
    log::info!(
        "installed certificate {} for {hostname}, valid until {}",
        valid.info.serial_hex,
        lancert_protocol::time::format_rfc3339(valid.info.not_after)
    );
    Ok(Renewed::Installed(valid.info))
}

fn start_order(
    dir: &StateDir,
    client: &mut Client,
    kid: &str,
    hostname: &str,
    identity: &CertKey,
    state: &mut State,
) -> Result<(CertKey, crate::client::Order)> {
    // A fresh key for every renewal, generated here and never sent anywhere.
    dir.create()?;
    let _ = std::fs::remove_file(dir.pending_key());
    let key = identity::create(&dir.pending_key(), "the new certificate key")?;
    let csr = csr::build(&key, hostname)?;
    let order = client.new_order(identity.signing_key(), kid, &csr)?;
    log::info!("ordered a certificate for {hostname}: {}", order.url);
    state.pending_order = Some(PendingOrder {
        url: order.url.clone(),
        hostname: hostname.to_string(),
        not_before: clock::wall_now(),
    });
    dir.save(state)?;
    Ok((key, order))
}

fn forget_pending(dir: &StateDir, state: &mut State) -> Result<()> {
    state.pending_order = None;
    match std::fs::remove_file(dir.pending_key()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing the finished order's key", dir.pending_key(), e)),
    }
    dir.save(state).map(|_| ())
}
