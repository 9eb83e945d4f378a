//! The issuance budget: sliding-window limits on what the server asks of the
//! CA, so that a fleet's rollout never runs into the CA's rate limits
//! (Let's Encrypt: 50 certificates per registered domain per week, 300 orders
//! per account per 3 hours, 5 certificates per name set per week, 5 failed
//! validations per name per hour). Orders beyond the budget wait in a queue
//! ([`crate::issuance`]) instead of being refused by the CA and lost.
//!
//! Pure logic over recorded event times (Unix seconds), so that every edge is
//! unit-tested with fixed inputs; the times come from the store's
//! `ca_events`.
//!
//! Window semantics, for every limit: an event at `t` counts at time `s`
//! while `s < t + window_secs`; a new event is allowed at `s` when fewer than
//! `limit` events count. A sequence of events respects the limit exactly
//! when each event is at least `window_secs` after the one `limit` places
//! before it, which gives [`Budget::estimated_wait`] in closed form.

use crate::config::{BudgetConfig, Limit};

/// Counted events are kept at least this long (a week), longer when a
/// window is longer.
pub const MIN_EVENT_RETENTION_SECS: u64 = 7 * 86_400;

/// What the server recently asked of the CA: the input of a [`Budget`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Start times of counted CA orders (exempt renewals are not counted).
    pub orders: Vec<i64>,
    /// Issue times of counted certificates.
    pub certificates: Vec<i64>,
    /// Counted orders started and not finished yet: each will likely become
    /// a certificate, so they count against `certificates` already (else
    /// [`crate::issuance::MAX_CONCURRENT`] issuances could overshoot it).
    pub in_flight: u32,
}

/// The budget's state at one moment: which counted order may start, and
/// when the ones waiting will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    limits: BudgetConfig,
    usage: Usage,
}

impl Budget {
    /// The budget of `limits` given recent `usage` (in any order).
    pub fn new(limits: BudgetConfig, mut usage: Usage) -> Budget {
        usage.orders.sort_unstable();
        usage.certificates.sort_unstable();
        Budget { limits, usage }
    }

    /// Whether any limit applies to whole-zone issuance (`certificates` or
    /// `orders`); without one, orders never wait for the budget.
    pub fn is_limited(&self) -> bool {
        self.limits.certificates.is_some() || self.limits.orders.is_some()
    }

    /// Whether a counted order may start at `now`: for each limit, the
    /// events in its window (plus, for `certificates`, the counted orders in
    /// flight) are fewer than the limit.
    pub fn admits(&self, now: i64) -> bool {
        let fits = |limit: Option<Limit>, events: &[i64], pending: u32| match limit {
            None => true,
            Some(l) => in_window(l, events, now) + u64::from(pending) < u64::from(l.limit),
        };
        fits(self.limits.orders, &self.usage.orders, 0)
            && fits(self.limits.certificates, &self.usage.certificates, self.usage.in_flight)
    }

    /// Notes that a counted order started at `now`, so that the next
    /// decision in the same pass sees it.
    pub fn record_start(&mut self, now: i64) {
        let at = self.usage.orders.partition_point(|&t| t <= now);
        self.usage.orders.insert(at, now);
        self.usage.in_flight = self.usage.in_flight.saturating_add(1);
    }

    /// Seconds from `now` until the counted order at 0-based `position`
    /// among the waiting counted orders may start, if every order before it
    /// starts as soon as it may: the latest over the limits. Beyond the
    /// known events the pattern repeats every window (a slot freed by an
    /// order started in the future frees again a window later). In-flight
    /// orders are assumed to issue now. 0 when it may start at once.
    pub fn estimated_wait(&self, now: i64, position: usize) -> u64 {
        let orders = self
            .limits
            .orders
            .map_or(now, |l| admission_time(l, &self.usage.orders, 0, now, position));
        let certificates = self.limits.certificates.map_or(now, |l| {
            admission_time(l, &self.usage.certificates, self.usage.in_flight, now, position)
        });
        u64::try_from(orders.max(certificates).saturating_sub(now)).unwrap_or(0)
    }

    /// The limits and their use at `now`, for logs:
    /// `certificates 45/604800s, 45 used; orders 90/3600s, 3 used`.
    pub fn describe(&self, now: i64) -> String {
        let mut parts = Vec::new();
        if let Some(l) = self.limits.certificates {
            let used = in_window(l, &self.usage.certificates, now) + u64::from(self.usage.in_flight);
            parts.push(format!("certificates {}/{}s, {used} used", l.limit, l.window_secs));
        }
        if let Some(l) = self.limits.orders {
            let used = in_window(l, &self.usage.orders, now);
            parts.push(format!("orders {}/{}s, {used} used", l.limit, l.window_secs));
        }
        if parts.is_empty() {
            "unlimited".to_string()
        } else {
            parts.join("; ")
        }
    }
}

/// A per-hostname limit at order creation (`per_name`, `failures_per_name`):
/// `None` when a new order fits, else the seconds (at least 1) until it
/// would: the events of the hostname in the window plus `pending` (its
/// orders still processing, counted as events now) must stay below the
/// limit. With no pending orders that is when the oldest counted event
/// leaves the window.
pub fn throttle(limit: Option<Limit>, events: &[i64], pending: u32, now: i64) -> Option<u64> {
    let limit = limit?;
    let mut sorted = events.to_vec();
    sorted.sort_unstable();
    if in_window(limit, &sorted, now) + u64::from(pending) < u64::from(limit.limit) {
        return None;
    }
    let at = admission_time(limit, &sorted, pending, now, 0);
    Some(u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1))
}

/// How long counted events must be kept: the longest window of `limits`,
/// at least [`MIN_EVENT_RETENTION_SECS`].
pub fn retention_secs(limits: &BudgetConfig) -> u64 {
    [
        limits.certificates,
        limits.orders,
        limits.per_name,
        limits.failures_per_name,
    ]
    .iter()
    .flatten()
    .map(|l| l.window_secs)
    .fold(MIN_EVENT_RETENTION_SECS, u64::max)
}

/// The start of `limit`'s window at `now`: events after it count.
pub fn window_start(limit: Limit, now: i64) -> i64 {
    now.saturating_sub(i64::try_from(limit.window_secs).unwrap_or(i64::MAX))
}

/// Events of `sorted` that count at `now`.
fn in_window(limit: Limit, sorted: &[i64], now: i64) -> u64 {
    let start = window_start(limit, now);
    (sorted.len() - sorted.partition_point(|&t| t <= start)) as u64
}

/// When the new event at 0-based `position` may happen, given the `sorted`
/// past events and `pending` events assumed to happen at `now`.
///
/// With the counted events as a sequence `X` (past events in the window,
/// then the pending ones, then the new ones, `n` known), the limit holds
/// exactly when `X[m] >= X[m - limit] + window` for every `m`; each new
/// event takes the earliest such moment not before `now`:
/// `X[n + k] = max(now, X[n + k - limit] + window)`. A new event's
/// predecessor `limit` places back is either known or itself new (and then
/// at least `now`, so the `max` is moot), which unrolls to
/// `X[n + k] = base(n + k mod limit - limit) + (k / limit) * window`, where
/// `base(i)` is `now` for `i < 0`, else `max(now, X[i] + window)`. Only the
/// last `limit` known events matter.
fn admission_time(limit: Limit, sorted: &[i64], pending: u32, now: i64, position: usize) -> i64 {
    let window = i64::try_from(limit.window_secs).unwrap_or(i64::MAX);
    let l = limit.limit.max(1) as usize;
    let start = window_start(limit, now);
    let past = &sorted[sorted.partition_point(|&t| t <= start)..];
    let pending = pending as usize;
    let known = past.len() + pending;
    let index = (known + position % l) as i64 - l as i64;
    let base = if index < 0 {
        now
    } else {
        let index = index as usize;
        let at = if index < past.len() { past[index] } else { now };
        now.max(at.saturating_add(window))
    };
    let rounds = i64::try_from(position / l).unwrap_or(i64::MAX);
    base.saturating_add(rounds.saturating_mul(window))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn limit(limit: u32, window_secs: u64) -> Option<Limit> {
        Some(Limit { limit, window_secs })
    }

    fn budget(certificates: Option<Limit>, orders: Option<Limit>, usage: Usage) -> Budget {
        Budget::new(
            BudgetConfig {
                certificates,
                orders,
                ..BudgetConfig::UNLIMITED
            },
            usage,
        )
    }

    fn usage(orders: &[i64], certificates: &[i64], in_flight: u32) -> Usage {
        Usage {
            orders: orders.to_vec(),
            certificates: certificates.to_vec(),
            in_flight,
        }
    }

    #[test]
    fn unlimited_admits_everything_at_once() {
        let b = Budget::new(BudgetConfig::UNLIMITED, usage(&[NOW; 50], &[NOW; 50], 50));
        assert!(!b.is_limited());
        assert!(b.admits(NOW));
        assert_eq!(b.estimated_wait(NOW, 1000), 0);
        assert_eq!(b.describe(NOW), "unlimited");
    }

    #[test]
    fn orders_limit_admits_below_and_denies_at_the_edge() {
        // Two of three used: admitted; three: denied until the oldest leaves.
        let b = budget(None, limit(3, 100), usage(&[NOW - 50, NOW - 10], &[], 0));
        assert!(b.is_limited());
        assert!(b.admits(NOW));
        assert_eq!(b.estimated_wait(NOW, 0), 0);
        let b = budget(None, limit(3, 100), usage(&[NOW - 50, NOW - 10, NOW - 99], &[], 0));
        assert!(!b.admits(NOW));
        assert_eq!(b.estimated_wait(NOW, 0), 1, "NOW-99 leaves the window at NOW+1");
        assert!(b.admits(NOW + 1));
        assert_eq!(b.estimated_wait(NOW + 1, 0), 0);
        // An event exactly one window old no longer counts.
        let b = budget(None, limit(1, 100), usage(&[NOW - 100], &[], 0));
        assert!(b.admits(NOW));
        let b = budget(None, limit(1, 100), usage(&[NOW - 99], &[], 0));
        assert!(!b.admits(NOW));
    }

    #[test]
    fn certificates_limit_counts_in_flight_orders() {
        // One certificate issued, two in flight: the third slot is taken.
        let b = budget(limit(3, 1000), None, usage(&[], &[NOW - 500], 2));
        assert!(!b.admits(NOW));
        assert_eq!(b.describe(NOW), "certificates 3/1000s, 3 used");
        // The issued one frees at NOW+500; the in-flight ones are assumed to
        // issue now and free a window later.
        assert_eq!(b.estimated_wait(NOW, 0), 500);
        assert_eq!(b.estimated_wait(NOW, 1), 1000);
        assert_eq!(b.estimated_wait(NOW, 2), 1000);
        assert_eq!(b.estimated_wait(NOW, 3), 1500);
        let b = budget(limit(3, 1000), None, usage(&[], &[NOW - 500], 1));
        assert!(b.admits(NOW));
    }

    #[test]
    fn record_start_takes_a_slot_of_both_limits() {
        let mut b = budget(limit(2, 100), limit(5, 100), Usage::default());
        assert!(b.admits(NOW));
        b.record_start(NOW);
        assert!(b.admits(NOW));
        b.record_start(NOW);
        assert!(!b.admits(NOW), "two certificates in flight");
        assert_eq!(b.describe(NOW), "certificates 2/100s, 2 used; orders 5/100s, 2 used");
        let mut b = budget(None, limit(2, 100), Usage::default());
        b.record_start(NOW);
        b.record_start(NOW - 5);
        assert_eq!(b.usage.orders, vec![NOW - 5, NOW]);
        assert!(!b.admits(NOW));
        assert_eq!(b.estimated_wait(NOW, 0), 95);
    }

    #[test]
    fn estimated_wait_for_each_position_from_event_times() {
        // 45 certificates a week, 45 issued at known times: the k-th waiting
        // order starts when the k-th oldest leaves the window, then a week
        // after the start of the order 45 places before it.
        let week = 604_800;
        let times: Vec<i64> = (0..45).map(|i| NOW - week + 100 + i * 1000).collect();
        let b = budget(limit(45, week as u64), None, usage(&[], &times, 0));
        assert!(!b.admits(NOW));
        assert_eq!(b.estimated_wait(NOW, 0), 100);
        assert_eq!(b.estimated_wait(NOW, 1), 1100);
        assert_eq!(b.estimated_wait(NOW, 44), 44_100);
        assert_eq!(b.estimated_wait(NOW, 45), week as u64 + 100);
        assert_eq!(b.estimated_wait(NOW, 46), week as u64 + 1100);
        assert_eq!(b.estimated_wait(NOW, 90), 2 * week as u64 + 100);
        assert_eq!(b.describe(NOW), "certificates 45/604800s, 45 used");
    }

    #[test]
    fn estimated_wait_with_free_slots_and_no_events() {
        // 2 per 10 s, nothing used: positions 0 and 1 now, 2 and 3 after a
        // window, 4 after two.
        let b = budget(None, limit(2, 10), Usage::default());
        let waits: Vec<u64> = (0..5).map(|p| b.estimated_wait(NOW, p)).collect();
        assert_eq!(waits, [0, 0, 10, 10, 20]);
        // One used 4 s ago: position 0 now, 1 when it leaves, 2 a window
        // after position 0.
        let b = budget(None, limit(2, 10), usage(&[NOW - 4], &[], 0));
        let waits: Vec<u64> = (0..5).map(|p| b.estimated_wait(NOW, p)).collect();
        assert_eq!(waits, [0, 6, 10, 16, 20]);
    }

    #[test]
    fn estimated_wait_is_the_latest_over_the_limits() {
        // Orders allow position 0 at +30; certificates at +60.
        let b = budget(limit(1, 100), limit(1, 50), usage(&[NOW - 20], &[NOW - 40], 0));
        assert_eq!(b.estimated_wait(NOW, 0), 60);
        assert_eq!(b.estimated_wait(NOW, 1), 160);
    }

    #[test]
    fn more_events_than_the_limit_wait_for_the_excess_to_leave() {
        // The limit was lowered to 2 with 3 events in the window: the next
        // order waits until only one of them is left.
        let b = budget(None, limit(2, 10), usage(&[NOW - 8, NOW - 6, NOW - 1], &[], 0));
        assert!(!b.admits(NOW));
        assert_eq!(b.estimated_wait(NOW, 0), 4);
        assert_eq!(b.estimated_wait(NOW, 1), 9);
        assert_eq!(b.estimated_wait(NOW, 2), 14);
    }

    #[test]
    fn the_window_slides() {
        // 2 per 10 s with events at NOW-9 and NOW-3: blocked for 1 s, then
        // one slot, then blocked again until NOW+7.
        let b = budget(None, limit(2, 10), usage(&[NOW - 9, NOW - 3], &[], 0));
        assert!(!b.admits(NOW));
        assert!(b.admits(NOW + 1));
        let mut later = b.clone();
        later.record_start(NOW + 1);
        assert!(!later.admits(NOW + 6));
        assert!(later.admits(NOW + 7));
        // Events older than the window never count, however many.
        let old: Vec<i64> = (0..100).map(|i| NOW - 10 - i).collect();
        let b = budget(None, limit(2, 10), usage(&old, &[], 0));
        assert!(b.admits(NOW));
        assert_eq!(b.estimated_wait(NOW, 1), 0);
        assert_eq!(b.estimated_wait(NOW, 2), 10);
    }

    #[test]
    fn estimated_waits_respect_the_limit() {
        // Simulate: starting each position at its estimated time never puts
        // more than `limit` starts (with the past events) into one window.
        let l = Limit {
            limit: 3,
            window_secs: 7,
        };
        let past = [NOW - 6, NOW - 2];
        let b = budget(None, Some(l), usage(&past, &[], 0));
        let mut all: Vec<i64> = past.to_vec();
        all.extend((0..20).map(|p| NOW + b.estimated_wait(NOW, p) as i64));
        for w in all.windows(4) {
            assert!(w[3] - w[0] >= 7, "{all:?}");
        }
        // And never later than needed: each start is right at the edge.
        assert_eq!(all[2], NOW);
        assert_eq!(all[3], NOW + 1);
    }

    #[test]
    fn per_name_throttle() {
        let l = limit(3, 3600);
        assert_eq!(throttle(None, &[NOW; 10], 10, NOW), None);
        assert_eq!(throttle(l, &[NOW - 100, NOW - 50], 0, NOW), None);
        // At the limit: until the oldest counted event leaves.
        assert_eq!(throttle(l, &[NOW - 50, NOW - 100, NOW - 10], 0, NOW), Some(3500));
        assert_eq!(throttle(l, &[NOW - 100, NOW - 50, NOW - 4000], 0, NOW), None);
        // An order still processing counts as a certificate to come.
        assert_eq!(throttle(l, &[NOW - 100, NOW - 50], 1, NOW), Some(3500));
        assert_eq!(throttle(l, &[], 3, NOW), Some(3600));
        // At least 1 s.
        assert_eq!(throttle(limit(1, 10), &[NOW - 10 + 1], 0, NOW), Some(1));
        assert_eq!(throttle(limit(1, 10), &[NOW], 0, NOW), Some(10));
    }

    #[test]
    fn retention_is_the_longest_window_and_at_least_a_week() {
        assert_eq!(retention_secs(&BudgetConfig::UNLIMITED), MIN_EVENT_RETENTION_SECS);
        assert_eq!(retention_secs(&BudgetConfig::LETS_ENCRYPT), 7 * 86_400);
        let long = BudgetConfig {
            per_name: limit(1, 30 * 86_400),
            ..BudgetConfig::UNLIMITED
        };
        assert_eq!(retention_secs(&long), 30 * 86_400);
    }
}
