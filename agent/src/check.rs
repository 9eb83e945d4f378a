//! One check: the address step, then the certificate step, then the status
//! report if there is something new to say. Used by `--check-now` and by
//! every iteration of the daemon.
//!
//! Frugality: the server client is created lazily, so a check in which
//! nothing changed sends nothing; state is saved only when it changed.
//! A failure in one step does not skip the other; the first error is
//! returned after the failure has been recorded (backoff, `lastError`) and,
//! if the server can be reached, reported.

use crate::addresses::{self, AddressSet, Source};
use crate::certificate;
use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keygen::CertKey;
use crate::renew::{self, Renewed};
use crate::renewal_window::{decide, Decision, Installed, Reason};
use crate::report;
use crate::schedule::{backoff, refresh_due, Random};
use crate::state::{Enrollment, State, StateDir};
use crate::{clock, identity};
use std::time::Duration;

/// Which steps to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// Detect and publish addresses.
    pub addresses: bool,
    /// Check (and renew) the certificate.
    pub certificate: bool,
    /// How long past its slot a sign-of-life refresh (addresses or status
    /// report sent unchanged) may still go out; later ones wait for their
    /// next slot ([`refresh_due`]). `None`: any overdue refresh goes.
    pub refresh_grace: Option<Duration>,
}

impl Steps {
    /// Both steps, sending any overdue refresh: a check run by hand or
    /// from cron.
    pub const ALL: Steps = Steps {
        addresses: true,
        certificate: true,
        refresh_grace: None,
    };
}

/// What a successful check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// New addresses were published.
    pub addresses_updated: bool,
    /// A certificate was installed (including the first-boot self-signed one).
    pub certificate_installed: bool,
    /// When the installed certificate becomes due (wall clock), if known.
    pub certificate_due_at: Option<i64>,
    /// The wall clock is not yet plausible: no time-based decision was made.
    pub clock_not_sane: bool,
    /// An order is still being issued: poll again at this wall-clock time.
    pub pending_until: Option<i64>,
    /// Requests sent.
    pub requests: u32,
}

impl Outcome {
    /// Whether anything changed (`--check-now` exits 0, else 2).
    pub fn updated(&self) -> bool {
        self.addresses_updated || self.certificate_installed
    }
}

/// A failed check: the error, and when the next attempt may be made.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong first.
    pub error: Error,
    /// The backoff chosen (honouring `Retry-After`).
    pub retry_in: Duration,
    /// Requests sent.
    pub requests: u32,
}

struct Session<'a> {
    config: &'a Config,
    dir: StateDir,
    enrollment: Enrollment,
    /// Loaded on first use: deriving a P-256 public key costs millions of
    /// instructions, and a check with nothing to say signs nothing.
    identity: Option<CertKey>,
    client: Option<Client>,
}

/// The server client, created on first use.
fn ensure_client<'c>(client: &'c mut Option<Client>, config: &Config) -> Result<&'c mut Client> {
    match client {
        Some(c) => Ok(c),
        None => {
            let url = config.server_url()?;
            Ok(client.insert(Client::new(url, config.server_ca.as_deref(), config.http_timeout)?))
        }
    }
}

impl Session<'_> {
    fn requests(&self) -> u32 {
        self.client.as_ref().map_or(0, |c| c.stats().requests)
    }
}

/// The identity key, loaded on first use.
fn load_identity<'k>(slot: &'k mut Option<CertKey>, dir: &StateDir) -> Result<&'k CertKey> {
    match slot {
        Some(k) => Ok(k),
        None => {
            let key = identity::load(&dir.identity_key(), "the identity key")?.ok_or_else(|| not_provisioned(dir))?;
            Ok(slot.insert(key))
        }
    }
}

fn not_provisioned(dir: &StateDir) -> Error {
    Error::Other(format!(
        "the device is not provisioned (no identity in {}): run `agent provision --server URL --token TOKEN`",
        dir.path().display()
    ))
}

/// The enrollment, if the identity key file is there too (it is read only
/// when a request must be signed).
pub fn enrollment(dir: &StateDir) -> Result<Enrollment> {
    let enrollment = dir.enrollment()?.ok_or_else(|| not_provisioned(dir))?;
    match std::fs::symlink_metadata(dir.identity_key()) {
        Ok(_) => Ok(enrollment),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_provisioned(dir)),
        Err(e) => Err(Error::io("reading the identity key", dir.identity_key(), e)),
    }
}

/// The enrollment and identity key, or an error telling how to provision.
pub fn enrolled(dir: &StateDir) -> Result<(Enrollment, CertKey)> {
    let enrollment = enrollment(dir)?;
    let key = identity::load(&dir.identity_key(), "the identity key")?.ok_or_else(|| not_provisioned(dir))?;
    Ok((enrollment, key))
}

/// Reads what is installed, as the renewal decision sees it.
pub fn installed(config: &Config) -> Installed {
    match certificate::load(&config.cert_file) {
        Ok(None) => Installed::Missing,
        Err(e) => Installed::Corrupt(e.to_string()),
        Ok(Some((cert, leaf_der))) => {
            let key_matches =
                matches!(certificate::key_file_spki(&config.key_file), Ok(Some(spki)) if spki == cert.spki_der);
            let fullchain_matches = renew::fullchain_starts_with(config, &leaf_der);
            Installed::Present {
                cert,
                key_matches,
                fullchain_matches,
            }
        }
    }
}

/// Reasons to renew found in the files rather than in the certificate's
/// dates: a fullchain out of step with the certificate (a torn set the
/// `.bak` files could not repair), or a key file that group or others can
/// read. An exposed key is replaced, not chmod-ed: whoever could read it
/// may have a copy. Until the new set is installed the current one stays in
/// service untouched (its mode too: a web server may depend on it).
fn local_reason(config: &Config, current: &Installed) -> Option<Reason> {
    use std::os::unix::fs::PermissionsExt;
    let Installed::Present { fullchain_matches, .. } = current else {
        return None;
    };
    if !fullchain_matches {
        return Some(Reason::FullchainMismatch);
    }
    let mode = std::fs::metadata(&config.key_file).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| Reason::KeyExposed {
        path: config.key_file.clone(),
        mode,
    })
}

/// The address source the configuration asks for.
pub fn address_source(config: &Config) -> Source {
    match &config.interface {
        Some(name) => Source::Interface(name.clone()),
        None => Source::DefaultRoute,
    }
}

/// Runs one check. `pause` waits between order polls (returns `false` if
/// asked to stop).
pub fn run(
    config: &Config,
    steps: Steps,
    rng: &mut dyn Random,
    pause: &mut dyn FnMut(Duration) -> bool,
) -> std::result::Result<Outcome, Failure> {
    let dir = StateDir::new(&config.state_dir);
    let enrollment = enrollment(&dir).map_err(|error| Failure {
        error,
        retry_in: Duration::from_secs(86_400),
        requests: 0,
    })?;
    let mut state = dir.load();
    let mut session = Session {
        config,
        dir,
        enrollment,
        identity: None,
        client: None,
    };
    let mut outcome = Outcome::default();
    let mut first_error: Option<Error> = None;

    if steps.addresses {
        match address_step(&mut session, &mut state, steps.refresh_grace) {
            Ok(updated) => outcome.addresses_updated = updated,
            Err(e) => first_error = Some(e),
        }
    }
    let mut cert_for_report = None;
    if steps.certificate {
        match certificate_step(&mut session, &mut state, rng, pause, &mut outcome) {
            Ok(cert) => cert_for_report = cert,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    } else if let Installed::Present { cert, .. } = installed(config) {
        cert_for_report = Some(cert);
    }

    let now = clock::wall_now();
    let retry_in = match &first_error {
        None => {
            state.failures = 0;
            state.last_error = None;
            state.last_error_at = None;
            state.retry_at = None;
            Duration::ZERO
        }
        Some(e) => {
            state.failures = state.failures.saturating_add(1);
            state.last_error = Some(e.to_string());
            state.last_error_at = Some(now);
            let wait = backoff(state.failures, e.retry_after(), rng);
            state.retry_at = Some(now + i64::try_from(wait.as_secs()).unwrap_or(0));
            wait
        }
    };

    // Tell the fleet operator, when there is something new to say and the
    // server can be reached (an unreachable server is not retried here).
    let reachable = !matches!(first_error, Some(Error::Network { .. }));
    let report = report::build(cert_for_report.as_ref(), state.addresses.as_ref(), &state);
    if reachable && report::should_send(&report, &state, now, config.status_refresh, steps.refresh_grace) {
        match send_report(&mut session, &report) {
            Ok(window) => {
                state.last_report = Some(report);
                state.last_report_at = Some(now);
                if let (Some(w), Some(cert)) = (window, &cert_for_report) {
                    if !state.renewal.as_ref().is_some_and(|r| r.covers(&cert.serial_hex, w)) {
                        state.renewal = Some(crate::state::RenewalPlan::draw(&cert.serial_hex, w, rng));
                    }
                }
            }
            Err(e) => log::warn!("{e}"),
        }
    }
    if let Err(e) = session.dir.save(&state) {
        first_error.get_or_insert(e);
    }
    outcome.requests = session.requests();
    log::debug!("check done: {} requests", outcome.requests);
    match first_error {
        None => Ok(outcome),
        Some(error) => Err(Failure {
            error,
            retry_in,
            requests: session.requests(),
        }),
    }
}

fn send_report(session: &mut Session<'_>, report: &serde_json::Value) -> Result<Option<crate::renewal_window::Window>> {
    let kid = session.enrollment.device.clone();
    let key = load_identity(&mut session.identity, &session.dir)?;
    ensure_client(&mut session.client, session.config)?.report_status(key, &kid, report)
}

fn address_step(session: &mut Session<'_>, state: &mut State, grace: Option<Duration>) -> Result<bool> {
    let config = session.config;
    let detected = addresses::detect(&address_source(config), config.ipv4, config.ipv6)?;
    let current = detected.set;
    if current.is_empty() {
        log::info!("no usable address yet (no default route or no global address); nothing to publish");
        return Ok(false);
    }
    let now = clock::wall_now();
    let changed = state.addresses.as_ref() != Some(&current);
    let stale = refresh_due(state.addresses_reported_at, now, config.address_refresh, grace);
    if !changed && !stale {
        log::debug!("addresses unchanged: {}", describe(&current));
        return Ok(false);
    }
    if changed && detected.awaiting && addresses::only_drops_a_family(state.addresses.as_ref(), &current) {
        // The kernel announces the end of duplicate address detection with
        // an address event, which brings the daemon back.
        log::info!(
            "a new address is still tentative (duplicate address detection); publishing {} waits for it",
            describe(&current)
        );
        return Ok(false);
    }
    let kid = session.enrollment.device.clone();
    let key = load_identity(&mut session.identity, &session.dir)?;
    let published = match ensure_client(&mut session.client, session.config)?.update_addresses(key, &kid, &current) {
        Ok(published) => published,
        // A sign of life that cannot be given is not a failure: nothing is
        // wrong with the record, and the next slot comes in a day.
        Err(e @ Error::Network { .. }) if !changed => {
            log::warn!("{e}; the address refresh waits for its next slot");
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if published != current {
        log::warn!(
            "the server publishes {} although we sent {}",
            describe(&published),
            describe(&current)
        );
    }
    log::info!("published {} for {}", describe(&current), session.enrollment.hostname);
    state.addresses = Some(current);
    state.addresses_reported_at = Some(now);
    Ok(changed)
}

fn describe(set: &AddressSet) -> String {
    set.to_json().to_string()
}

fn certificate_step(
    session: &mut Session<'_>,
    state: &mut State,
    rng: &mut dyn Random,
    pause: &mut dyn FnMut(Duration) -> bool,
    outcome: &mut Outcome,
) -> Result<Option<certificate::CertInfo>> {
    let config = session.config;
    let hostname = session.enrollment.hostname.clone();

    // What an interrupted install left (see `install`) is put right first:
    // it needs neither the server nor a set clock, and the web server may
    // be down (a torn set at boot) or serving the old set until then.
    let mut current = installed(config);
    match renew::repair_torn_set(config, &current) {
        Ok(false) => {}
        Ok(true) => {
            outcome.certificate_installed = true;
            current = installed(config);
        }
        // A renewal, if the decision below makes one, installs a whole set.
        Err(e) => log::error!("{e}"),
    }
    if state.reload_pending {
        if let Err(e) = renew::reload_interrupted_install(config, &hostname) {
            log::warn!("{e}");
        }
        state.reload_pending = false;
    }

    let now = clock::wall_now();
    let dir = session.dir.clone();
    let own_files = [dir.state_file(), dir.device_file(), config.cert_file.clone()];
    let own: Vec<&std::path::Path> = own_files.iter().map(|p| p.as_path()).collect();
    if !clock::is_sane(now, clock::floor(&own)) {
        log::warn!(
            "the system clock ({}) is earlier than this agent's build or its newest file; \
             waiting for the clock to be set before judging certificate validity",
            lancert_protocol::time::format_rfc3339(now)
        );
        outcome.clock_not_sane = true;
        return Ok(None);
    }

    if matches!(current, Installed::Missing) {
        renew::install_self_signed(config, &hostname)?;
        outcome.certificate_installed = true;
        current = installed(config);
    }
    let cert = match &current {
        Installed::Present { cert, .. } => Some(cert.clone()),
        _ => None,
    };
    let moment = cert.as_ref().and_then(|c| state.renewal_moment(&c.serial_hex));
    let decision = match decide(&current, &hostname, moment, now) {
        Decision::Wait { until } => match local_reason(config, &current) {
            Some(reason) => Decision::Renew(reason),
            None => Decision::Wait { until },
        },
        renew => renew,
    };
    let reason = match decision {
        Decision::Wait { until } => {
            log::debug!(
                "certificate is good until its renewal time {}",
                lancert_protocol::time::format_rfc3339(until)
            );
            outcome.certificate_due_at = Some(until);
            return Ok(cert);
        }
        Decision::Renew(reason) => reason,
    };
    if let Some(p) = &state.pending_order {
        if p.not_before > now {
            log::debug!("an order is pending; the server asked to wait until {}", p.not_before);
            outcome.pending_until = Some(p.not_before);
            return Ok(cert);
        }
    }
    if matches!(reason, Reason::KeyExposed { .. } | Reason::FullchainMismatch) {
        log::warn!("renewing the certificate for {hostname}: {reason}");
    } else {
        log::info!("renewing the certificate for {hostname}: {reason}");
    }
    let Session {
        enrollment,
        identity,
        client,
        dir: state_dir,
        ..
    } = session;
    let identity = load_identity(identity, state_dir)?;
    let client = ensure_client(client, config)?;
    match renew::renew(config, &dir, client, enrollment, identity, state, rng, pause)? {
        Renewed::Installed(info) => {
            outcome.certificate_installed = true;
            outcome.certificate_due_at = Some(match &state.renewal {
                Some(plan) => plan.moment,
                None => crate::renewal_window::last_third_starts(&info),
            });
            Ok(Some(info))
        }
        Renewed::Pending(at) => {
            outcome.pending_until = Some(at);
            Ok(cert)
        }
        Renewed::Interrupted => Ok(cert),
    }
}
