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
use crate::renewal_window::Installed;
use crate::schedule::{order_poll, OrderPoll, Random};
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

/// Puts the previous set back when the installed one does not hold
/// together: a key that is not the certificate's, a certificate that does
/// not parse, or a fullchain that does not start with the certificate. An
/// install interrupted between its renames (the agent killed, the power
/// cut) leaves such a set, and a web server refuses to load it when it
/// next starts; the `.bak` set was whole and durable before the first
/// rename (see `install`). This runs before the renewal decision and needs
/// no server, so the web server gets a working set back even while the
/// server cannot be reached; a renewal, if due, follows as usual. Nothing
/// is done unless the `.bak` set is whole. Returns whether it restored it.
pub fn repair_torn_set(config: &Config, current: &Installed) -> Result<bool> {
    let torn = match current {
        Installed::Missing => false,
        Installed::Corrupt(_) | Installed::Present { key_matches: false, .. } => true,
        Installed::Present { fullchain_matches, .. } => !fullchain_matches,
    };
    if !torn {
        return Ok(false);
    }
    let paths = paths(config);
    let Some(backup) = install::whole_backup(&paths) else {
        return Ok(false);
    };
    log::warn!(
        "the installed key, certificate and fullchain ({}, {}, {}) do not belong together, \
         as an interrupted install leaves them; putting back the previous set from the .bak files",
        paths.key.display(),
        paths.cert.display(),
        paths.fullchain.display()
    );
    install::rollback(&paths, &backup)?;
    if let Err(e) = reload_and_verify(config, None) {
        log::warn!("reloading the web server after putting the previous set back: {e}");
    }
    Ok(true)
}

/// Whether the fullchain file starts with `leaf_der`, the certificate
/// file's leaf (no key or signature math: cheap enough for every check).
/// A missing or unreadable fullchain counts as not.
pub fn fullchain_starts_with(config: &Config, leaf_der: &[u8]) -> bool {
    crate::atomic::read_bounded(&config.fullchain_file, install::MAX_FILE_BYTES, "reading")
        .ok()
        .flatten()
        .and_then(|pem| crate::certificate::first_certificate_block(&pem))
        .is_some_and(|first| first == leaf_der)
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
            match client.poll_order(identity, kid, &p.url) {
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
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = match order_poll(order.retry_after, left) {
            OrderPoll::Wait(wait) => wait,
            OrderPoll::Later(wait) => {
                let at = clock::wall_now() + i64::try_from(wait.as_secs()).unwrap_or(0);
                log::info!("the server is still issuing; polling again after {}s", wait.as_secs());
                if let Some(p) = state.pending_order.as_mut() {
                    p.not_before = at;
                }
                dir.save(state)?;
                return Ok(Renewed::Pending(at));
            }
        };
        if !pause(wait) {
            dir.save(state)?;
            return Ok(Renewed::Interrupted);
        }
        order = client.poll_order(identity, kid, &order.url)?;
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
    let chain = client.download_chain(identity, kid, &cert_url);
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
    state.reload_pending = true;
    dir.save(state)?;
    let backup = match install::install(&paths, &material) {
        Ok(backup) => backup,
        Err(e) => {
            // Nothing changed; the caller saves the state.
            state.reload_pending = false;
            return Err(e);
        }
    };
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
        state.reload_pending = false;
        return Err(Error::Command {
            doing: "reloading the web server with the new certificate".into(),
            detail: format!("{e}; the previous certificate was put back"),
        });
    }

    state.reload_pending = false;
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
    // Whenever the state names a pending order, pending.key holds that
    // order's key: a stale order (its key gone, e.g. after a crash) is
    // forgotten on disk before a new key takes the file, else a later check
    // would resume the old order with the new key.
    if state.pending_order.take().is_some() {
        dir.save(state)?;
    }
    let _ = std::fs::remove_file(dir.pending_key());
    let key = identity::create(&dir.pending_key(), "the new certificate key")?;
    let csr = csr::build(&key, hostname)?;
    let order = client.new_order(identity, kid, &csr)?;
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
    // The state first, the key second: a crash in between leaves a key no
    // order names (the next order removes it), never an order without its
    // key.
    dir.save(state)?;
    match std::fs::remove_file(dir.pending_key()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing the finished order's key", dir.pending_key(), e)),
    }
}

/// Reloads the web server with the installed set when the last install was
/// interrupted before its reload (`State::reload_pending`), and checks that
/// the installed leaf is served. Needs no server.
pub fn reload_interrupted_install(config: &Config, hostname: &str) -> Result<()> {
    log::warn!(
        "the last install of {} was interrupted before the web server was reloaded; reloading it now",
        config.cert_file.display()
    );
    let leaf = crate::atomic::read_bounded(
        &config.cert_file,
        install::MAX_FILE_BYTES,
        "reading the installed certificate",
    )?
    .and_then(|pem| crate::certificate::pem_to_der_chain(&pem).ok())
    .and_then(|chain| chain.into_iter().next());
    reload_and_verify(config, leaf.as_deref().map(|leaf| (hostname, leaf)))
}
