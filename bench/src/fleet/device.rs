//! One simulated device: the agent's daemon loop and check, with the
//! agent's own decision functions, on a virtual clock. Only the I/O is
//! modelled: the address detection (a version number that changes), the
//! installed files (an [`Installed`] value), the server ([`ServerModel`])
//! and the exchanges (counted requests).
//!
//! Mirrors `agent::daemon::run` and `agent::check::run` step for step:
//! the timetable ([`Timetable`]), the address refresh and the status report
//! ([`refresh_due`]), the renewal decision ([`decide`]) with the moment
//! drawn in the server's window ([`RenewalPlan::draw`]), order polling
//! ([`order_poll`]), backoff ([`backoff`]) and what a check tells the
//! timetable ([`done_after`]).

use agent::certificate::CertInfo;
use agent::check::Outcome;
use agent::config::defaults;
use agent::daemon::done_after;
use agent::renewal_window::{decide, Decision, Installed, Window};
use agent::schedule::{backoff, order_poll, refresh_due, Done, OrderPoll, SeededRandom, Timetable};
use agent::state::RenewalPlan;
use std::time::Duration;

use super::server::{OrderState, ServerModel};

/// The device's hostname (the decision checks the certificate covers it).
pub const HOSTNAME: &str = "xi8qz.devices.example.com";
/// Wall-clock time (Unix seconds) at the simulation's start: 2027-01-01.
pub const EPOCH: i64 = 1_798_761_600;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
/// The agent's defaults, as the daemon uses them.
pub const ADDRESS_INTERVAL: Duration = secs(defaults::ADDRESS_INTERVAL_SECS);
/// `address_refresh_secs`.
pub const ADDRESS_REFRESH: Duration = secs(defaults::ADDRESS_REFRESH_SECS);
/// `certificate_interval_secs`.
pub const CERTIFICATE_INTERVAL: Duration = secs(defaults::CERTIFICATE_INTERVAL_SECS);
/// `status_refresh_secs`.
pub const STATUS_REFRESH: Duration = secs(defaults::STATUS_REFRESH_SECS);
/// `startup_splay_secs`.
pub const STARTUP_SPLAY: Duration = secs(defaults::STARTUP_SPLAY_SECS);
/// `poll_timeout_secs`.
pub const POLL_TIMEOUT: Duration = secs(defaults::POLL_TIMEOUT_SECS);
/// The daemon's grace for sign-of-life refreshes (`daemon::refresh_grace`:
/// two address intervals, but no slot from before the start).
pub const REFRESH_GRACE: Duration = secs(2 * defaults::ADDRESS_INTERVAL_SECS);

/// Wall-clock seconds at simulated time `ms`.
pub fn wall(ms: u64) -> i64 {
    EPOCH + i64::try_from(ms / 1_000).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The CA's suggested renewal window for a certificate (ARI, RFC 9773):
/// modelled as a window of a 45th of the lifetime (2 days for 90-day
/// certificates) starting when two thirds of it have passed.
pub fn ari_window(cert: &CertInfo) -> Window {
    let life = cert.lifetime_secs();
    let start = cert.not_before + life / 3 * 2;
    Window {
        start,
        end: start + life / 45,
    }
}

/// A certificate as the agent reads it from disk.
pub fn certificate(serial: u64, not_before: i64, lifetime_days: u64) -> CertInfo {
    CertInfo {
        not_before,
        not_after: not_before + i64::try_from(lifetime_days * 86_400).unwrap_or(0) - 1,
        dns_names: vec![HOSTNAME.to_string()],
        spki_der: Vec::new(),
        serial_hex: format!("{serial:X}"),
        subject: String::new(),
        issuer: String::new(),
        self_signed: false,
    }
}

/// An order the device is working on (`state.pending_order`).
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// The server's order number.
    pub order: usize,
    /// Not to be polled before (wall clock).
    pub not_before: i64,
}

/// A check in progress: the daemon is blocked in it (between order polls).
#[derive(Debug, Clone)]
pub struct Check {
    /// The certificate step runs in it (else addresses only).
    pub certificate: bool,
    /// A client exists: the directory and a nonce were fetched.
    pub session: bool,
    /// The first error (in this model, only "the server is unreachable").
    pub failed: bool,
    /// What the check found.
    pub outcome: Outcome,
    /// The polling deadline (ms).
    pub deadline: u64,
}

/// What a step of a check asks of the simulation next.
pub enum Next {
    /// The check is over: schedule the next wake-up.
    Done,
    /// Poll the order at this moment (ms).
    PollAt(u64),
}

/// One device.
pub struct Device {
    /// When its daemon started (ms): the timetable counts from here.
    pub boot: u64,
    /// Bumped at power-off: events of the previous life are ignored.
    pub generation: u32,
    /// Whether it is running.
    pub powered: bool,
    /// The daemon's timetable.
    pub table: Timetable,
    /// Its randomness (seeded per device).
    pub rng: SeededRandom,
    /// The wake-up the simulation has queued (ms).
    pub next_wake: u64,
    /// Consecutive failed checks (`state.failures`).
    pub failures: u32,
    /// The address version the device has; `published`: the last one the
    /// server accepted.
    pub address: u32,
    /// See `address`.
    pub published: u32,
    /// When the address last changed (ms), until published.
    pub changed_at: Option<u64>,
    /// `state.addresses_reported_at`.
    pub addresses_reported_at: Option<i64>,
    /// The report differs from the last accepted one in its certificate or
    /// addresses.
    pub report_dirty: bool,
    /// `state.last_error` is set, and whether the last accepted report had one.
    pub last_error: bool,
    /// See `last_error`.
    pub reported_error: bool,
    /// `state.last_report_at`.
    pub last_report_at: Option<i64>,
    /// The installed certificate.
    pub installed: Installed,
    /// `state.renewal`.
    pub plan: Option<RenewalPlan>,
    /// `state.pending_order`.
    pub pending: Option<Pending>,
    /// The check in progress.
    pub check: Option<Check>,
    /// An address event arrived during the check (read after it).
    pub event_during_check: bool,
    /// It has something to catch up on: a failure, an unpublished address,
    /// or no full check since it booted.
    pub owing: bool,
    /// No certificate check has succeeded since it booted.
    pub needs_full_check: bool,
    /// Certificates issued to it so far (serial numbers).
    pub issued: u64,
    /// Lifetime of the certificates it gets (days).
    pub lifetime_days: u64,
}

/// What a device reports to the simulation's counters.
pub trait Counters {
    /// `n` requests reached the server at `now`.
    fn requests(&mut self, now: u64, n: u32);
    /// A connection attempt found the server down at `now`.
    fn refused(&mut self, now: u64);
    /// A certificate was replaced (or the run ended) with `left` seconds of
    /// validity left.
    fn validity_left(&mut self, left: i64);
    /// A changed address reached the server `delay` ms after the change.
    fn published(&mut self, delay: u64);
    /// The device, which had something to catch up on, has nothing left
    /// at `now` (see [`Device::owing`]).
    fn current(&mut self, now: u64);
}

impl Device {
    fn cert(&self) -> Option<&CertInfo> {
        match &self.installed {
            Installed::Present { cert, .. } => Some(cert),
            _ => None,
        }
    }

    fn mono(&self, now: u64) -> Duration {
        Duration::from_millis(now.saturating_sub(self.boot))
    }

    /// When the daemon wakes next (ms).
    pub fn wake_at(&self) -> u64 {
        self.boot + ms(self.table.next_address.min(self.table.next_certificate))
    }

    fn grace(&self, now: u64) -> Option<Duration> {
        Some(REFRESH_GRACE.min(self.mono(now)))
    }

    fn report_due(&self, now: u64) -> bool {
        self.report_dirty
            || self.last_error != self.reported_error
            || refresh_due(self.last_report_at, wall(now), STATUS_REFRESH, self.grace(now))
    }

    fn address_due(&self, now: u64) -> bool {
        self.address != self.published
            || refresh_due(self.addresses_reported_at, wall(now), ADDRESS_REFRESH, self.grace(now))
    }

    fn renewal_moment(&self) -> Option<i64> {
        let serial = &self.cert()?.serial_hex;
        self.plan.as_ref().filter(|p| &p.serial == serial).map(|p| p.moment)
    }

    /// Until when (ms) address-only checks send nothing for certain: before
    /// the next certificate check and before either refresh's next slot
    /// opens. `None` while the device has something to catch up on.
    pub fn quiet_until(&self) -> Option<u64> {
        let settled = self.failures == 0 && !self.owing && !self.report_dirty && self.last_error == self.reported_error;
        if !settled {
            return None;
        }
        let from = self.boot + ms(self.table.next_address);
        let grace = i64::try_from(REFRESH_GRACE.as_secs()).unwrap_or(0);
        // The first slot `last + k·every` (k ≥ 1) whose window could be open
        // at or after `from`; before it, `refresh_due` is false.
        let slot = |last: Option<i64>, every: Duration| -> Option<u64> {
            let last = last?;
            let every = i64::try_from(every.as_secs()).ok()?.max(1);
            let earliest = wall(from) - grace;
            let k = ((earliest - last + every - 1) / every).max(1);
            let at = last + k * every;
            u64::try_from(at - EPOCH).ok().map(|s| s * 1_000)
        };
        let certificate = self.boot + ms(self.table.next_certificate);
        Some(
            certificate
                .min(slot(self.addresses_reported_at, ADDRESS_REFRESH)?)
                .min(slot(self.last_report_at, STATUS_REFRESH)?),
        )
    }

    /// Steps through the address-only checks before `until`, which send
    /// nothing (see [`Device::quiet_until`]), with the daemon's own
    /// timetable call after a check with nothing to say.
    pub fn skip_quiet_address_checks(&mut self, until: u64) {
        while self.table.next_address < self.table.next_certificate {
            let at = self.boot + ms(self.table.next_address);
            if at >= until {
                return;
            }
            let mono = self.mono(at);
            self.table
                .address_done(mono, Done::Ok { due_in: None }, ADDRESS_INTERVAL, &mut self.rng);
        }
    }

    /// If the check due at `now` would send nothing, runs it (the timetable
    /// moves on) and returns `true`; otherwise leaves everything as it is.
    /// Lets the simulation step through the quiet checks of one device
    /// without the event queue.
    pub fn try_quiet_check(&mut self, now: u64) -> bool {
        let wall = wall(now);
        let due = self.table.due(self.mono(now));
        if self.failures > 0 || self.owing || self.address_due(now) || self.report_due(now) {
            return false;
        }
        let mut outcome = Outcome::default();
        if due.certificate {
            match decide(&self.installed, HOSTNAME, self.renewal_moment(), wall) {
                Decision::Wait { until } => outcome.certificate_due_at = Some(until),
                Decision::Renew(_) => match self.pending {
                    Some(p) if p.not_before > wall => outcome.pending_until = Some(p.not_before),
                    _ => return false,
                },
            }
        }
        self.end_check(now, due.certificate, Done::Ok { due_in: None }, &outcome);
        true
    }

    /// The timetable after a check.
    fn end_check(&mut self, now: u64, certificate: bool, failed: Done, outcome: &Outcome) {
        let done = match failed {
            Done::Failed { .. } => failed,
            _ => done_after(outcome, wall(now)),
        };
        let mono = self.mono(now);
        if certificate {
            self.table
                .certificate_done(mono, done, ADDRESS_INTERVAL, CERTIFICATE_INTERVAL, &mut self.rng);
        } else {
            self.table.address_done(mono, done, ADDRESS_INTERVAL, &mut self.rng);
        }
        if std::mem::take(&mut self.event_during_check) {
            self.table.address_event(mono);
        }
    }

    /// One request of `check` at `now`: the first of a check also fetches
    /// the directory and a nonce (the client is lazy). `false` if the
    /// server is down.
    fn send(check: &mut Check, server: &ServerModel, now: u64, counters: &mut dyn Counters) -> bool {
        let sent = Self::try_send(check, server, now, counters);
        check.failed |= !sent;
        sent
    }

    /// [`Device::send`] for exchanges whose failure is only logged (a sign
    /// of life, a status report).
    fn try_send(check: &mut Check, server: &ServerModel, now: u64, counters: &mut dyn Counters) -> bool {
        if !server.up(now) {
            counters.refused(now);
            return false;
        }
        counters.requests(now, if check.session { 1 } else { 3 });
        check.session = true;
        true
    }

    /// The daemon wakes at `now` with a check due: the address step, then
    /// the certificate step (which may start polling an order).
    pub fn begin_check(&mut self, now: u64, server: &mut ServerModel, counters: &mut dyn Counters) -> Next {
        let wall = wall(now);
        let due = self.table.due(self.mono(now));
        let mut check = Check {
            certificate: due.certificate,
            session: false,
            failed: false,
            outcome: Outcome::default(),
            deadline: now + ms(POLL_TIMEOUT),
        };
        // A refresh of unchanged addresses that finds the server down is
        // skipped until its next slot (`check::address_step`).
        let changed = self.address != self.published;
        let sent = self.address_due(now)
            && if changed {
                Self::send(&mut check, server, now, counters)
            } else {
                Self::try_send(&mut check, server, now, counters)
            };
        if sent {
            if changed {
                self.report_dirty = true;
                if let Some(at) = self.changed_at.take() {
                    counters.published(now - at);
                }
            }
            self.published = self.address;
            self.addresses_reported_at = Some(wall);
        }
        if due.certificate {
            match decide(&self.installed, HOSTNAME, self.renewal_moment(), wall) {
                Decision::Wait { until } => check.outcome.certificate_due_at = Some(until),
                Decision::Renew(_) => match self.pending {
                    Some(p) if p.not_before > wall => check.outcome.pending_until = Some(p.not_before),
                    _ => {
                        // A new order, or a poll of the pending one.
                        if Self::send(&mut check, server, now, counters) {
                            let order = match self.pending {
                                Some(p) => p.order,
                                None => server.submit(now),
                            };
                            self.pending = Some(Pending {
                                order,
                                not_before: wall,
                            });
                            return self.order_answer(check, now, server, counters);
                        }
                    }
                },
            }
        }
        self.finish(check, now, server, counters)
    }

    /// The daemon polls its order at `now`.
    pub fn poll(&mut self, now: u64, server: &mut ServerModel, counters: &mut dyn Counters) -> Next {
        let Some(mut check) = self.check.take() else {
            return Next::Done;
        };
        if !Self::send(&mut check, server, now, counters) {
            return self.finish(check, now, server, counters);
        }
        self.order_answer(check, now, server, counters)
    }

    /// What the device does with the server's answer about its order.
    fn order_answer(
        &mut self,
        mut check: Check,
        now: u64,
        server: &mut ServerModel,
        counters: &mut dyn Counters,
    ) -> Next {
        let Some(pending) = self.pending else {
            return self.finish(check, now, server, counters);
        };
        match server.order(pending.order, now) {
            OrderState::Valid { issued_at } => {
                // Download the chain, validate, install.
                if !Self::send(&mut check, server, now, counters) {
                    return self.finish(check, now, server, counters);
                }
                let wall_now = wall(now);
                if let Some(old) = self.cert() {
                    counters.validity_left(old.not_after - wall_now);
                }
                self.issued += 1;
                let cert = certificate(self.issued, wall(issued_at), self.lifetime_days);
                self.plan = Some(RenewalPlan::draw(&cert.serial_hex, ari_window(&cert), &mut self.rng));
                check.outcome.certificate_due_at = self.plan.as_ref().map(|p| p.moment);
                check.outcome.certificate_installed = true;
                self.installed = Installed::Present {
                    cert,
                    key_matches: true,
                    fullchain_matches: true,
                };
                self.pending = None;
                self.report_dirty = true;
                self.finish(check, now, server, counters)
            }
            OrderState::Processing { retry_after_secs } => {
                let left = Duration::from_millis(check.deadline.saturating_sub(now));
                match order_poll(Some(Duration::from_secs(retry_after_secs)), left) {
                    OrderPoll::Wait(wait) => {
                        self.check = Some(check);
                        Next::PollAt(now + ms(wait))
                    }
                    OrderPoll::Later(wait) => {
                        let at = wall(now) + i64::try_from(wait.as_secs()).unwrap_or(0);
                        self.pending = Some(Pending {
                            not_before: at,
                            ..pending
                        });
                        check.outcome.pending_until = Some(at);
                        self.finish(check, now, server, counters)
                    }
                }
            }
        }
    }

    /// The end of a check: backoff or success, the status report if there
    /// is something to say and the server was not found unreachable, then
    /// the timetable.
    fn finish(&mut self, mut check: Check, now: u64, server: &ServerModel, counters: &mut dyn Counters) -> Next {
        let wall = wall(now);
        let failed = check.failed;
        let done = if failed {
            self.failures = self.failures.saturating_add(1);
            self.last_error = true;
            Done::Failed {
                retry_in: backoff(self.failures, None, &mut self.rng),
            }
        } else {
            self.failures = 0;
            self.last_error = false;
            Done::Ok { due_in: None }
        };
        // As `check::run`: the report goes out unless the server was found
        // unreachable in this check; a failed report is only logged (it
        // neither counts as a failure nor delays the next check).
        if !failed && self.report_due(now) && Self::try_send(&mut check, server, now, counters) {
            self.report_dirty = false;
            self.reported_error = self.last_error;
            self.last_report_at = Some(wall);
        }
        if check.certificate && !failed {
            self.needs_full_check = false;
        }
        let current = !failed && !self.needs_full_check && self.address == self.published;
        if current && self.owing {
            counters.current(now);
        }
        self.owing = !current;
        self.end_check(now, check.certificate, done, &check.outcome);
        Next::Done
    }
}
