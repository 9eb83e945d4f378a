//! When to act next: random splay after start, jittered intervals, and
//! exponential backoff after failures, always honouring the server's
//! `Retry-After`.
//!
//! Everything here is pure over a [`Random`] source, so the daemon uses the
//! OS generator and tests (and fleet simulations) use a seeded one and get
//! the very same decisions the devices make.

use std::time::Duration;

/// Backoff steps after the 1st, 2nd and 3rd consecutive failure; from the
/// 4th on, [`BACKOFF_CAP`]. This is Let's Encrypt's integration guide's
/// advice ("1 minute, 10 minutes, 100 minutes, then once a day").
pub const BACKOFF_STEPS: [Duration; 3] = [
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(6_000),
];
/// Longest wait between attempts after repeated failures: one day.
pub const BACKOFF_CAP: Duration = Duration::from_secs(86_400);
/// Shortest `Retry-After` honoured (RFC 9773 §4.3.3 clamps to 1 minute for
/// renewal info; for order polling 1 second is the floor).
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured: one day (an absurd value must not park
/// a device for a year).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);
/// Intervals are spread by up to this fraction, up or down (percent).
pub const JITTER_PERCENT: u64 = 10;

/// A source of uniform random numbers.
pub trait Random {
    /// A uniform value in `0..n` (`0` when `n` is `0`).
    fn below(&mut self, n: u64) -> u64;
}

/// The operating system's generator (getrandom(2)).
pub struct OsRandom;

impl Random for OsRandom {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // A failing getrandom (only before the kernel's pool is ready on
        // very old kernels) degrades to a time-derived value: jitter is for
        // spreading load, not for secrecy.
        let r = getrandom::u64().unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            u64::from(t.subsec_nanos()) ^ t.as_secs().rotate_left(17) ^ u64::from(std::process::id())
        });
        r % n
    }
}

/// A seeded generator (SplitMix64) for tests and simulations.
pub struct SeededRandom(pub u64);

impl Random for SeededRandom {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A uniform delay in `0..=max`: the splay before the first check after
/// start, so that a fleet powered on at once does not call at once.
pub fn splay(max: Duration, rng: &mut dyn Random) -> Duration {
    Duration::from_millis(rng.below(millis(max).saturating_add(1)))
}

/// `base` spread uniformly by ±[`JITTER_PERCENT`].
pub fn jittered(base: Duration, rng: &mut dyn Random) -> Duration {
    let b = millis(base);
    let spread = b / 100 * JITTER_PERCENT;
    let low = b - spread;
    Duration::from_millis(low + rng.below(spread.saturating_mul(2).saturating_add(1)))
}

/// Clamps a server's `Retry-After` to [`RETRY_AFTER_MIN`, `RETRY_AFTER_MAX`].
pub fn clamp_retry_after(d: Duration) -> Duration {
    d.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
}

/// The wait before the next attempt after `failures` consecutive failures
/// (1 for the first), never shorter than the server's `Retry-After`. The
/// step is stretched by up to +[`JITTER_PERCENT`] so that devices that
/// failed together do not retry together.
pub fn backoff(failures: u32, retry_after: Option<Duration>, rng: &mut dyn Random) -> Duration {
    let step = match failures {
        0 => Duration::ZERO,
        n => BACKOFF_STEPS.get(n as usize - 1).copied().unwrap_or(BACKOFF_CAP),
    };
    let b = millis(step);
    let stretched = Duration::from_millis(b + rng.below(b / 100 * JITTER_PERCENT + 1));
    match retry_after {
        Some(ra) => stretched.max(clamp_retry_after(ra)),
        None => stretched,
    }
}

/// Whether a sign of life last given at wall-clock `last` (Unix seconds) is
/// due at `now`. Used for the address refresh and the status report, which
/// are sent even when nothing changed.
///
/// It is due when never given or when the clock went back past it; else
/// at its slots `last + k·every` (k ≥ 1), each open for `grace`. A refresh
/// that missed its slot (the device was off, the server unreachable) waits
/// for the next one instead of going out as soon as it can: a fleet that
/// powers on together after a power cut, or finds its server back after an
/// outage, keeps the phases its refreshes had and sends no burst. The
/// daemon's grace is two address-check intervals, so a running daemon never
/// misses a slot; `None` (a check run by hand or from cron) sends any
/// overdue refresh.
pub fn refresh_due(last: Option<i64>, now: i64, every: Duration, grace: Option<Duration>) -> bool {
    let Some(at) = last else { return true };
    let every = i64::try_from(every.as_secs()).unwrap_or(i64::MAX).max(1);
    let since = now.saturating_sub(at);
    if now < at {
        return true;
    }
    if since < every {
        return false;
    }
    grace.is_none_or(|g| since % every < i64::try_from(g.as_secs()).unwrap_or(i64::MAX))
}

/// The next step while an order is processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderPoll {
    /// Wait this long in this check, then poll again.
    Wait(Duration),
    /// The wait would pass the check's polling deadline: end the check and
    /// poll again this long from now, in a later one.
    Later(Duration),
}

/// What to do with an order still processing, given the server's
/// `Retry-After` (1 second if absent, clamped) and the time `left` before
/// the check's polling deadline (`poll_timeout_secs`).
pub fn order_poll(retry_after: Option<Duration>, left: Duration) -> OrderPoll {
    let wait = clamp_retry_after(retry_after.unwrap_or(Duration::from_secs(1)));
    if wait > left {
        OrderPoll::Later(wait)
    } else {
        OrderPoll::Wait(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_integration_guide() {
        let mut r = SeededRandom(1);
        let steps: Vec<u64> = (1..=6).map(|n| backoff(n, None, &mut r).as_secs()).collect();
        assert!((60..=66).contains(&steps[0]), "{steps:?}");
        assert!((600..=660).contains(&steps[1]), "{steps:?}");
        assert!((6_000..=6_600).contains(&steps[2]), "{steps:?}");
        for s in &steps[3..] {
            assert!((86_400..=95_040).contains(s), "{steps:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let mut r = SeededRandom(2);
        assert!(backoff(1, Some(Duration::from_secs(3_600)), &mut r) >= Duration::from_secs(3_600));
        assert_eq!(
            backoff(1, Some(Duration::from_secs(10 * 365 * 86_400)), &mut r),
            RETRY_AFTER_MAX
        );
        assert_eq!(clamp_retry_after(Duration::ZERO), RETRY_AFTER_MIN);
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads() {
        let mut r = SeededRandom(3);
        let base = Duration::from_secs(300);
        let vals: Vec<Duration> = (0..1000).map(|_| jittered(base, &mut r)).collect();
        assert!(vals
            .iter()
            .all(|v| *v >= Duration::from_secs(270) && *v <= Duration::from_secs(330)));
        let distinct: std::collections::BTreeSet<_> = vals.iter().collect();
        assert!(distinct.len() > 500, "jitter must spread: {}", distinct.len());
    }

    #[test]
    fn splay_is_uniform_over_the_range() {
        let mut r = SeededRandom(4);
        let max = Duration::from_secs(300);
        let vals: Vec<u64> = (0..10_000).map(|_| splay(max, &mut r).as_secs()).collect();
        assert!(vals.iter().all(|v| *v <= 300));
        let first_half = vals.iter().filter(|v| **v < 150).count();
        assert!((4_500..5_500).contains(&first_half), "{first_half}");
        assert_eq!(splay(Duration::ZERO, &mut r), Duration::ZERO);
    }

    #[test]
    fn refresh_is_due_after_the_period_or_when_the_clock_went_back() {
        let day = Duration::from_secs(86_400);
        for grace in [None, Some(Duration::from_secs(600))] {
            assert!(refresh_due(None, 1_000, day, grace));
            assert!(!refresh_due(Some(1_000), 1_000 + 86_399, day, grace));
            assert!(refresh_due(Some(1_000), 1_000 + 86_400, day, grace));
            assert!(refresh_due(Some(1_000), 1_000 + 86_400 + 599, day, grace));
            assert!(refresh_due(Some(1_000), 999, day, grace), "clock went backwards");
        }
    }

    #[test]
    fn an_overdue_refresh_waits_for_its_next_slot_in_the_daemon() {
        let day = Duration::from_secs(86_400);
        let grace = Some(Duration::from_secs(600));
        // Missed its slot (off, or the server was down): not before the next.
        assert!(!refresh_due(Some(1_000), 1_000 + 86_400 + 600, day, grace));
        assert!(!refresh_due(Some(1_000), 1_000 + 2 * 86_400 - 1, day, grace));
        assert!(refresh_due(Some(1_000), 1_000 + 2 * 86_400, day, grace));
        assert!(refresh_due(Some(1_000), 1_000 + 9 * 86_400 + 10, day, grace));
        // By hand: any overdue refresh goes.
        assert!(refresh_due(Some(1_000), 1_000 + 86_400 + 600, day, None));
    }

    #[test]
    fn order_polls_wait_within_the_deadline_and_defer_past_it() {
        let s = Duration::from_secs;
        assert_eq!(order_poll(None, s(600)), OrderPoll::Wait(s(1)));
        assert_eq!(order_poll(Some(s(30)), s(600)), OrderPoll::Wait(s(30)));
        assert_eq!(order_poll(Some(s(30)), s(29)), OrderPoll::Later(s(30)));
        assert_eq!(order_poll(Some(Duration::ZERO), s(0)), OrderPoll::Later(s(1)));
        assert_eq!(
            order_poll(Some(s(10 * 86_400)), s(600)),
            OrderPoll::Later(RETRY_AFTER_MAX)
        );
    }

    #[test]
    fn os_random_is_in_range() {
        let mut r = OsRandom;
        assert!((0..100).all(|_| r.below(7) < 7));
        assert_eq!(r.below(0), 0);
    }
}

/// After a netlink address event, wait this long for the burst to settle
/// (router advertisements and DAD come in bursts) before looking; well
/// within the 2-second reaction goal.
pub const ADDRESS_SETTLE: Duration = Duration::from_millis(500);
/// Longest wait for the address check after start.
pub const ADDRESS_STARTUP_SPLAY_MAX: Duration = Duration::from_secs(10);
/// How soon to look again while the wall clock is not plausible.
pub const CLOCK_RECHECK: Duration = Duration::from_secs(60);

/// The daemon's timetable on the monotonic clock: offsets since the daemon
/// started. Pure, so tests and simulations drive it with a virtual clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// When the next address check is due.
    pub next_address: Duration,
    /// When the next full (certificate) check is due.
    pub next_certificate: Duration,
    /// Address checks are backing off after a failure: events do not
    /// override the backoff.
    pub backing_off: bool,
}

/// What a check asks of the timetable afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Success; `due_in`: the certificate becomes due (or a pending order
    /// may be polled) in this long, if known.
    Ok {
        /// Time until the certificate needs attention.
        due_in: Option<Duration>,
    },
    /// The clock is not plausible yet.
    ClockNotSane,
    /// Failure; retry after this backoff.
    Failed {
        /// The backoff.
        retry_in: Duration,
    },
}

/// Which checks are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueNow {
    /// Run the address step.
    pub address: bool,
    /// Run the full check.
    pub certificate: bool,
}

impl Timetable {
    /// The timetable at start: the address check after a short splay, the
    /// certificate check after a random splay up to `startup_splay`, so that
    /// a fleet powered on together spreads its calls.
    pub fn start(startup_splay: Duration, rng: &mut dyn Random) -> Timetable {
        Timetable {
            next_address: splay(startup_splay.min(ADDRESS_STARTUP_SPLAY_MAX), rng),
            next_certificate: splay(startup_splay, rng),
            backing_off: false,
        }
    }

    /// What is due at `now`.
    pub fn due(&self, now: Duration) -> DueNow {
        DueNow {
            address: now >= self.next_address,
            certificate: now >= self.next_certificate,
        }
    }

    /// How long to sleep from `now`.
    pub fn sleep_for(&self, now: Duration) -> Duration {
        self.next_address.min(self.next_certificate).saturating_sub(now)
    }

    /// A netlink event: look at the addresses soon, unless backing off.
    pub fn address_event(&mut self, now: Duration) {
        if !self.backing_off {
            self.next_address = self.next_address.min(now + ADDRESS_SETTLE);
        }
    }

    /// SIGUSR1 / an explicit request: check everything now.
    pub fn check_now(&mut self, now: Duration) {
        self.next_address = now;
        self.next_certificate = now;
        self.backing_off = false;
    }

    /// After an address-only check.
    pub fn address_done(&mut self, now: Duration, done: Done, interval: Duration, rng: &mut dyn Random) {
        let next = jittered(interval, rng);
        match done {
            Done::Failed { retry_in } => {
                self.backing_off = true;
                self.next_address = now + retry_in;
            }
            _ => {
                self.backing_off = false;
                self.next_address = now + next;
            }
        }
    }

    /// After a full check (which includes the address step).
    pub fn certificate_done(
        &mut self,
        now: Duration,
        done: Done,
        address_interval: Duration,
        certificate_interval: Duration,
        rng: &mut dyn Random,
    ) {
        self.address_done(now, done, address_interval, rng);
        self.next_certificate = now
            + match done {
                Done::Ok { due_in } => {
                    let regular = jittered(certificate_interval, rng);
                    // Wake for the renewal moment itself if it comes before
                    // the next regular check (spread by the moment's own
                    // randomness, so no extra jitter is needed).
                    due_in.map_or(regular, |d| regular.min(d.max(Duration::from_secs(1))))
                }
                Done::ClockNotSane => CLOCK_RECHECK,
                Done::Failed { retry_in } => retry_in,
            };
    }
}

#[cfg(test)]
mod timetable_tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn start_is_splayed_and_bounded() {
        let mut r = SeededRandom(5);
        let starts: Vec<Timetable> = (0..1000).map(|_| Timetable::start(5 * MIN, &mut r)).collect();
        assert!(starts
            .iter()
            .all(|t| t.next_certificate <= 5 * MIN && t.next_address <= ADDRESS_STARTUP_SPLAY_MAX));
        let distinct: std::collections::BTreeSet<_> = starts.iter().map(|t| t.next_certificate).collect();
        assert!(distinct.len() > 900);
    }

    #[test]
    fn events_pull_the_address_check_forward_unless_backing_off() {
        let mut r = SeededRandom(6);
        let mut t = Timetable::start(Duration::ZERO, &mut r);
        t.address_done(Duration::ZERO, Done::Ok { due_in: None }, 5 * MIN, &mut r);
        let now = 10 * MIN / 10;
        t.address_event(now);
        assert_eq!(t.next_address, now + ADDRESS_SETTLE);
        assert!(t.due(now + ADDRESS_SETTLE).address);
        t.address_done(now, Done::Failed { retry_in: 10 * MIN }, 5 * MIN, &mut r);
        t.address_event(now + MIN);
        assert_eq!(t.next_address, now + 10 * MIN, "backoff wins over events");
        t.check_now(now + MIN);
        assert!(t.due(now + MIN).address && t.due(now + MIN).certificate);
    }

    #[test]
    fn certificate_check_wakes_for_the_renewal_moment() {
        let mut r = SeededRandom(7);
        let mut t = Timetable::start(Duration::ZERO, &mut r);
        let six_h = 360 * MIN;
        t.certificate_done(
            Duration::ZERO,
            Done::Ok { due_in: Some(30 * MIN) },
            5 * MIN,
            six_h,
            &mut r,
        );
        assert_eq!(t.next_certificate, 30 * MIN);
        t.certificate_done(
            Duration::ZERO,
            Done::Ok {
                due_in: Some(100 * six_h),
            },
            5 * MIN,
            six_h,
            &mut r,
        );
        assert!(t.next_certificate >= six_h * 9 / 10 && t.next_certificate <= six_h * 11 / 10);
        t.certificate_done(
            Duration::ZERO,
            Done::Failed { retry_in: 100 * MIN },
            5 * MIN,
            six_h,
            &mut r,
        );
        assert_eq!(t.next_certificate, 100 * MIN);
        assert_eq!(t.sleep_for(Duration::ZERO), 100 * MIN);
        t.certificate_done(Duration::ZERO, Done::ClockNotSane, 5 * MIN, six_h, &mut r);
        assert_eq!(t.next_certificate, CLOCK_RECHECK);
    }
}
