//! The daemon loop: sleeps in one `poll(2)` on the signal pipe and the
//! netlink socket until the timetable says a check is due, an address event
//! arrives or a signal asks for something. No busy waiting, no thread.
//!
//! Signals only set flags; they are acted upon between steps, so SIGTERM
//! never interrupts an install (it can interrupt the wait between order
//! polls, which is safe: the order is kept and resumed).
//!
//! Under systemd (`Type=notify`) it reports readiness, reloads, stops and a
//! status line, and feeds the watchdog ([`crate::notify`]): the sleep is cut
//! to the watchdog period, and the wait between order polls feeds it too.
//! Every other step is bounded (`http_timeout_secs` per exchange,
//! `reload_timeout_secs` for the reload and its check), so a silent
//! watchdog means a hung agent.

use crate::check::{self, Outcome, Steps};
use crate::config::Config;
use crate::error::Result;
use crate::lock::CheckLock;
use crate::netlink::AddressMonitor;
use crate::notify::Notifier;
use crate::schedule::{Done, OsRandom, Random, Timetable};
use crate::signals::Signals;
use crate::{atomic, clock, wakeup};
use lancert_protocol::time::format_rfc3339;
use std::path::Path;
use std::time::{Duration, Instant};

/// When the check lock is held (a `--check-now` is running), try again in.
const LOCK_BUSY_RETRY: Duration = Duration::from_secs(5);
/// The daemon's timetable in the runtime directory, read by `agent status`.
pub const SCHEDULE_FILE: &str = "schedule.json";

/// Runs until SIGTERM or SIGINT. `reload` re-reads the configuration on
/// SIGHUP (errors keep the old one).
pub fn run(mut config: Config, reload: &dyn Fn() -> Result<Config>) -> Result<()> {
    let signals = Signals::install()?;
    let mut notifier = Notifier::from_env();
    let mut monitor = match AddressMonitor::open() {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!(
                "{e}; falling back to polling addresses every {}s",
                config.address_interval.as_secs()
            );
            None
        }
    };
    let mut rng = OsRandom;
    let started = Instant::now();
    let mut table = Timetable::start(config.startup_splay, &mut rng);
    let first = format!("first certificate check in {}s", table.next_certificate.as_secs());
    log::info!("agent {} running; {first}", env!("CARGO_PKG_VERSION"));
    notifier.ready(&first);
    loop {
        publish_schedule(&config.runtime_dir, &table, started.elapsed());
        let mut fds = vec![signals.fd()];
        if let Some(m) = &monitor {
            fds.push(m.fd());
        }
        // A SIGHUP/SIGUSR1 that arrived during an order poll left its flag
        // set after the pipe was drained: do not sleep on it.
        let timeout = if signals.is_pending() {
            Duration::ZERO
        } else {
            let sleep = table.sleep_for(started.elapsed());
            notifier.watchdog_due_in().map_or(sleep, |w| sleep.min(w))
        };
        let ready = wakeup::wait_readable(&fds, timeout)?;
        notifier.feed_watchdog();
        let now = started.elapsed();
        let pending = signals.take();
        if pending.terminate {
            log::info!("stopping on request");
            notifier.stopping();
            // `agent status` must not show a timetable nobody follows.
            let _ = std::fs::remove_file(config.runtime_dir.join(SCHEDULE_FILE));
            return Ok(());
        }
        if pending.reload {
            notifier.reloading();
            match reload() {
                Ok(c) => {
                    log::info!("configuration re-read from {}", c.file.display());
                    log::set_max_level(c.log_level);
                    config = c;
                }
                Err(e) => log::error!("{e}; keeping the previous configuration"),
            }
            notifier.ready("configuration re-read");
        }
        if pending.check_now {
            log::info!("check requested by signal");
            table.check_now(now);
        }
        if ready.get(1).copied().unwrap_or(false) {
            if let Some(m) = monitor.as_mut() {
                if m.drain() {
                    log::debug!("address event");
                    table.address_event(now);
                }
            }
        }
        let due = table.due(now);
        if !due.address && !due.certificate {
            continue;
        }
        let steps = Steps {
            addresses: true,
            certificate: due.certificate,
            refresh_grace: Some(refresh_grace(&config, now)),
        };
        let _lock = match CheckLock::acquire(&config.runtime_dir, Duration::ZERO) {
            Ok(lock) => lock,
            Err(e) => {
                log::info!("{e}; trying again in {}s", LOCK_BUSY_RETRY.as_secs());
                table.next_address = table.next_address.max(now + LOCK_BUSY_RETRY);
                table.next_certificate = table.next_certificate.max(now + LOCK_BUSY_RETRY);
                continue;
            }
        };
        notifier.feed_watchdog();
        let mut pause = |d: Duration| pause_unless_stopped(&signals, &mut notifier, d);
        let done = run_check(&config, steps, &mut rng, &mut pause);
        notifier.feed_watchdog();
        notifier.status(&describe(&done));
        let after = started.elapsed();
        if steps.certificate {
            table.certificate_done(
                after,
                done,
                config.address_interval,
                config.certificate_interval,
                &mut rng,
            );
        } else {
            table.address_done(after, done, config.address_interval, &mut rng);
        }
    }
}

/// How long past its slot the daemon still sends a sign-of-life refresh,
/// `running` after it started: two address-check intervals, so that a
/// running daemon (which checks every interval, ±10 %) never misses one;
/// but never a slot from before the start, so that a fleet booting
/// together after a power cut does not send the refreshes of the minutes
/// before it.
pub fn refresh_grace(config: &Config, running: Duration) -> Duration {
    (config.address_interval * 2).min(running)
}

/// Runs a check and turns its result into what the timetable needs.
fn run_check(config: &Config, steps: Steps, rng: &mut dyn Random, pause: &mut dyn FnMut(Duration) -> bool) -> Done {
    match check::run(config, steps, rng, pause) {
        Ok(outcome) => done_after(&outcome, clock::wall_now()),
        Err(failure) => {
            log::error!("{}; next attempt in {}s", failure.error, failure.retry_in.as_secs());
            Done::Failed {
                retry_in: failure.retry_in,
            }
        }
    }
}

/// What a successful check asks of the timetable at wall-clock `now`: to
/// wake for the certificate's renewal moment or the pending order's next
/// poll, whichever comes first.
pub fn done_after(outcome: &Outcome, now: i64) -> Done {
    if outcome.clock_not_sane {
        return Done::ClockNotSane;
    }
    let soonest = [outcome.certificate_due_at, outcome.pending_until]
        .into_iter()
        .flatten()
        .min();
    let due_in = soonest.map(|at| Duration::from_secs(u64::try_from(at - now).unwrap_or(0)));
    Done::Ok { due_in }
}

/// The `STATUS=` line after a check.
fn describe(done: &Done) -> String {
    let at = format_rfc3339(clock::wall_now());
    match done {
        Done::Ok { due_in: Some(d) } => format!("last check {at}: ok; certificate due in {}s", d.as_secs()),
        Done::Ok { due_in: None } => format!("last check {at}: ok"),
        Done::ClockNotSane => format!("last check {at}: waiting for the clock to be set"),
        Done::Failed { retry_in } => format!("last check {at}: failed; retry in {}s", retry_in.as_secs()),
    }
}

/// Waits `d`, returning early with `false` on SIGTERM/SIGINT (a SIGUSR1 or
/// SIGHUP in the meantime is remembered for the loop). Feeds the watchdog.
fn pause_unless_stopped(signals: &Signals, notifier: &mut Notifier, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        notifier.feed_watchdog();
        let mut left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        if let Some(w) = notifier.watchdog_due_in() {
            left = left.min(w);
        }
        if wakeup::wait_readable(&[signals.fd()], left).is_err() {
            std::thread::sleep(left.min(Duration::from_secs(1)));
        }
        if signals.peek_terminate() {
            return false;
        }
    }
}

/// Writes the next check times (wall clock) to the runtime directory, a
/// tmpfs, for `agent status`. Best effort.
fn publish_schedule(runtime_dir: &Path, table: &Timetable, now: Duration) {
    let wall = clock::wall_now();
    let at = |next: Duration| format_rfc3339(wall + i64::try_from(next.saturating_sub(now).as_secs()).unwrap_or(0));
    let body = serde_json::json!({
        "pid": std::process::id(),
        "nextAddressCheck": at(table.next_address),
        "nextCertificateCheck": at(table.next_certificate),
    });
    let _ = std::fs::create_dir_all(runtime_dir);
    if let Err(e) = atomic::write_if_changed(
        &runtime_dir.join(SCHEDULE_FILE),
        format!("{body}\n").as_bytes(),
        0o644,
        "publishing the schedule",
    ) {
        log::debug!("{e}");
    }
}
