//! Runs orders through the [`Issuer`] in background tasks, within the
//! issuance budget ([`crate::budget`]), and records the outcome, so that
//! requests never wait for the CA (protocol §8.2: the device polls) and a
//! fleet's rollout never runs into the CA's rate limits.
//!
//! A new order is stored `processing` and *queued* ([`Issuance::submit`]).
//! One scheduler task ([`Issuance::spawn_scheduler`]) starts queued orders
//! oldest first while the budget admits them, at most [`MAX_CONCURRENT`] at
//! once. The queue is FIFO for counted orders: one the budget does not admit
//! holds back the counted ones behind it, while renewals the CA exempts from
//! its limits (ARI `replaces`, RFC 9773) pass it. The scheduler sleeps until
//! the earliest moment a counted event leaves its window, or until an order
//! is submitted or finishes; it never polls.
//!
//! Limits per hostname (`per_name`, `failures_per_name`) are checked when the
//! order is created and refused with `rateLimited`: a device's order waiting
//! days for its own name's window would only hold a place in the queue.
//!
//! After a restart, started orders are resumed at once ([`Issuance::resume`])
//! and queued ones stay queued in their order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::budget::{self, Budget, Usage};
use crate::chain_info;
use crate::config::BudgetConfig;
use crate::issuer::{IssueError, IssueRequest, Issuer};
use crate::store::{EventKind, Order, OrderStatus, Reservation, Store, StoreError};

/// Most issuances running at once; the rest wait their turn.
pub const MAX_CONCURRENT: usize = 4;
/// Longest `Retry-After` from the typical issuance time (a CA having a slow
/// day must not park devices for long).
pub const MAX_EXPECTED_WAIT_SECS: u64 = 60;
/// An issuance taking longer than this fails with `issuanceFailed`.
pub const TIMEOUT: Duration = Duration::from_secs(3600);
/// Retry-After for orders failed by [`TIMEOUT`] or a bad chain.
const RETRY_AFTER_FAILURE_SECS: u64 = 300;
/// The scheduler tries again this long after a database error.
const SCHEDULER_RETRY_SECS: i64 = 10;
/// How often the scheduler deletes events older than every window.
const PRUNE_INTERVAL_SECS: i64 = 3600;
/// Added to a timed sleep, so that the scheduler wakes after the second it
/// waits for has begun rather than just before.
const SLEEP_SLACK: Duration = Duration::from_millis(20);

/// Why a new order was refused: the device gets `rateLimited` with this
/// Retry-After.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Seconds until an order may be accepted (at least 1).
    pub retry_after: u64,
    /// For humans: which limit.
    pub detail: String,
}

/// Result of [`Issuance::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// The order is stored and queued.
    Queued {
        /// The device's queued orders it replaced (now invalid).
        superseded: Vec<String>,
    },
    /// The order was not stored.
    Refused(Refusal),
}

/// The background issuance of orders.
#[derive(Clone)]
pub struct Issuance {
    store: Arc<Store>,
    issuer: Arc<dyn Issuer>,
    limits: BudgetConfig,
    permits: Arc<Semaphore>,
    wake: Arc<Notify>,
    /// Makes the per-hostname check and the insert one step.
    submitting: Arc<Mutex<()>>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// How long an issuance typically takes (ms; 0 until one succeeded): a
    /// moving average, for the `Retry-After` of started orders.
    typical_ms: Arc<AtomicU64>,
}

/// What one scheduling pass did.
struct Pass {
    /// The issuances it started.
    started: Vec<JoinHandle<()>>,
    /// When the budget lets the first held-back order start, if one is.
    wake_at: Option<i64>,
}

/// Where a queued order stands.
struct Estimate {
    /// Counted orders ahead of it in the queue.
    position: usize,
    /// Seconds until it may start.
    wait: u64,
    /// The budget it was computed from.
    budget: Budget,
}

/// What the scheduler remembers between passes (for its log lines).
#[derive(Default)]
struct SchedulerState {
    /// Counted orders are waiting for the budget.
    waiting: bool,
}

impl Issuance {
    /// Issuance into `store` through `issuer`, within `limits`.
    pub fn new(store: Arc<Store>, issuer: Arc<dyn Issuer>, limits: BudgetConfig) -> Issuance {
        Issuance {
            store,
            issuer,
            limits,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            wake: Arc::new(Notify::new()),
            submitting: Arc::new(Mutex::new(())),
            clock: Arc::new(crate::clock::now),
            typical_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Seconds until a started order is typically done: the moving average
    /// of recent issuance times minus what it has run, at most
    /// [`MAX_EXPECTED_WAIT_SECS`]; 0 for orders not started or when no
    /// issuance has succeeded yet. Devices poll no earlier than this, so a
    /// renewal against a CA that takes 10 s costs one poll, not ten.
    pub fn expected_remaining(&self, order: &Order, now: i64) -> u64 {
        let Some(started) = order.started else { return 0 };
        let typical = self.typical_ms.load(Ordering::Relaxed).div_ceil(1_000);
        let ran = u64::try_from(now.saturating_sub(started)).unwrap_or(0);
        typical.saturating_sub(ran).min(MAX_EXPECTED_WAIT_SECS)
    }

    /// Folds a successful issuance's time into the moving average (weight
    /// 1/8).
    fn record_duration(&self, ms: u64) {
        let old = self.typical_ms.load(Ordering::Relaxed);
        let new = if old == 0 { ms } else { (old * 7 + ms) / 8 };
        self.typical_ms.store(new.max(1), Ordering::Relaxed);
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Stores a new order and queues it, unless a limit refuses it: the
    /// per-device limit (`orders_per_hour`), the certificates of its
    /// hostname (`per_name`) or the failed validations of its hostname
    /// (`failures_per_name`). The device's orders still queued are
    /// superseded. Wakes the scheduler.
    pub fn submit(&self, order: &Order, orders_per_hour: u32) -> Result<Submission, StoreError> {
        let now = order.created;
        let superseded = {
            // Two orders for one hostname must not both pass its limit.
            let _one_at_a_time = self.submitting.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(refusal) = self.admit_new_order(&order.hostname, &order.device, now)? {
                return Ok(Submission::Refused(refusal));
            }
            match self.store.create_order(order, orders_per_hour)? {
                Reservation::Limited { retry_after } => {
                    return Ok(Submission::Refused(Refusal {
                        retry_after,
                        detail: format!("at most {orders_per_hour} orders per hour per device"),
                    }))
                }
                Reservation::Created { superseded } => superseded,
            }
        };
        for id in &superseded {
            log::info!(
                "order {id} for {}: superseded by order {} before it started",
                order.hostname,
                order.id
            );
        }
        if let Err(e) = self.log_queued(order, now) {
            log::error!("order {}: {e}", order.id);
        }
        self.wake.notify_one();
        Ok(Submission::Queued { superseded })
    }

    /// The per-hostname limits for a new order of `device` for `hostname`
    /// at `now`: `None` if it may be created, else why not.
    fn admit_new_order(&self, hostname: &str, device: &str, now: i64) -> Result<Option<Refusal>, StoreError> {
        if let Some(l) = self.limits.per_name {
            let events = self.store.name_event_times(
                EventKind::NameCertificate,
                hostname,
                budget::window_start(l, now),
                l.limit,
            )?;
            let pending = self.store.pending_for_hostname(hostname, device)?;
            if let Some(retry_after) = budget::throttle(Some(l), &events, pending, now) {
                log::info!("new order for {hostname} refused: per-name certificate limit; retry in {retry_after} s");
                return Ok(Some(Refusal {
                    retry_after,
                    detail: format!(
                        "at most {} certificates per {} s for {hostname}, renewals included (the CA limits certificates per name)",
                        l.limit, l.window_secs
                    ),
                }));
            }
        }
        if let Some(l) = self.limits.failures_per_name {
            let events = self.store.name_event_times(
                EventKind::ValidationFailure,
                hostname,
                budget::window_start(l, now),
                l.limit,
            )?;
            if let Some(retry_after) = budget::throttle(Some(l), &events, 0, now) {
                log::info!("new order for {hostname} refused: failed validations; retry in {retry_after} s");
                return Ok(Some(Refusal {
                    retry_after,
                    detail: format!(
                        "the CA failed to validate {hostname} too often (at most {} failures per {} s); \
                         check that its records are published",
                        l.limit, l.window_secs
                    ),
                }));
            }
        }
        Ok(None)
    }

    /// The budget at `now`, from the recorded events.
    fn budget(&self, now: i64) -> Result<Budget, StoreError> {
        let times = |kind, limit: Option<crate::config::Limit>| match limit {
            Some(l) => self.store.event_times(kind, budget::window_start(l, now), l.limit),
            None => Ok(Vec::new()),
        };
        let usage = Usage {
            orders: times(EventKind::Order, self.limits.orders)?,
            certificates: times(EventKind::Certificate, self.limits.certificates)?,
            in_flight: match self.limits.certificates {
                Some(_) => self.store.counted_in_flight()?,
                None => 0,
            },
        };
        Ok(Budget::new(self.limits, usage))
    }

    /// Seconds from `now` until `order` is expected to start: 0 unless it
    /// is queued behind the budget. What a device polling a queued order is
    /// told to wait (protocol §8.2).
    pub fn queue_wait(&self, order: &Order, now: i64) -> Result<u64, StoreError> {
        Ok(self.queue_estimate(order, now)?.map_or(0, |e| e.wait))
    }

    /// Where a queued, counted order stands at `now`; `None` for orders the
    /// budget does not hold back (started, finished, exempt, or no limit).
    fn queue_estimate(&self, order: &Order, now: i64) -> Result<Option<Estimate>, StoreError> {
        if order.status != OrderStatus::Processing || order.started.is_some() {
            return Ok(None);
        }
        let budget = self.budget(now)?;
        if !budget.is_limited() {
            return Ok(None);
        }
        let renewals_exempt = self.issuer.renewals_exempt();
        if renewals_exempt && self.store.current_chain(&order.hostname, now)?.is_some() {
            return Ok(None);
        }
        let position = self.store.queue_position(order, now, renewals_exempt)?;
        let wait = budget.estimated_wait(now, position);
        Ok(Some(Estimate { position, wait, budget }))
    }

    fn log_queued(&self, order: &Order, now: i64) -> Result<(), StoreError> {
        match self.queue_estimate(order, now)? {
            Some(e) if e.wait > 0 => log::info!(
                "order {} for {} queued: position {}, estimated start in {} s (budget: {})",
                order.id,
                order.hostname,
                e.position + 1,
                e.wait,
                e.budget.describe(now)
            ),
            _ => log::info!("order {} for {} queued", order.id, order.hostname),
        }
        Ok(())
    }

    /// The leaf (PEM) of the certificate an order for `hostname` replaces:
    /// that of the newest valid order whose certificate is unexpired. The
    /// CA refuses to replace an expired one.
    fn replaced_leaf(&self, hostname: &str, now: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .current_chain(hostname, now)?
            .as_deref()
            .and_then(first_pem_certificate))
    }

    /// Starts every order started before a restart and still processing;
    /// returns how many. Queued orders are the scheduler's.
    pub fn resume(&self) -> Result<usize, StoreError> {
        Ok(self.resume_started()?.len())
    }

    fn resume_started(&self) -> Result<Vec<JoinHandle<()>>, StoreError> {
        let now = self.now();
        let mut handles = Vec::new();
        for order in self.store.started_orders()? {
            let replaces = self.replaced_leaf(&order.hostname, now)?;
            log::info!("resuming order {} for {}", order.id, order.hostname);
            let this = self.clone();
            handles.push(tokio::spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                if let Ok(permit) = this.permits.clone().acquire_owned().await {
                    this.run(order, replaces, permit).await;
                }
            }));
        }
        Ok(handles)
    }

    /// Starts the scheduler: the one task that starts queued orders. Call
    /// once, after [`Issuance::resume`].
    pub fn spawn_scheduler(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.schedule().await })
    }

    async fn schedule(self) {
        let mut state = SchedulerState::default();
        let mut next_prune = i64::MIN;
        loop {
            let now = self.now();
            if now >= next_prune {
                self.prune_events(now);
                next_prune = now.saturating_add(PRUNE_INTERVAL_SECS);
            }
            let wake_at = match self.pass(now, &mut state) {
                // The started issuances run on; their end wakes the scheduler.
                Ok(pass) => pass.wake_at,
                Err(e) => {
                    log::error!("issuance scheduler: {e}; retrying in {SCHEDULER_RETRY_SECS} s");
                    Some(now + SCHEDULER_RETRY_SECS)
                }
            };
            let deadline = wake_at.map_or(next_prune, |t| t.min(next_prune));
            // A notification sent during the pass is kept by the Notify, so
            // none is lost.
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(until_unix(deadline)) => {}
            }
        }
    }

    fn prune_events(&self, now: i64) {
        let keep = i64::try_from(budget::retention_secs(&self.limits)).unwrap_or(i64::MAX);
        match self.store.prune_events(now.saturating_sub(keep)) {
            Ok(0) => {}
            Ok(n) => log::debug!("pruned {n} CA events"),
            Err(e) => log::error!("{e}"),
        }
    }

    /// Starts the queued orders that may start at `now`.
    fn pass(&self, now: i64, state: &mut SchedulerState) -> Result<Pass, StoreError> {
        let mut pass = Pass {
            started: Vec::new(),
            wake_at: None,
        };
        let queue = self.store.queued_orders(now)?;
        if queue.is_empty() {
            state.waiting = false;
            return Ok(pass);
        }
        let renewals_exempt = self.issuer.renewals_exempt();
        let mut budget = self.budget(now)?;
        let mut held_back = 0usize;
        for entry in &queue {
            let may_be_exempt = renewals_exempt && entry.renews;
            if !may_be_exempt {
                // FIFO: once one counted order waits, the counted ones
                // behind it wait too.
                if held_back > 0 || !budget.admits(now) {
                    held_back += 1;
                    continue;
                }
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                // A finishing issuance wakes the scheduler.
                break;
            };
            let Some(order) = self.store.order(&entry.id)? else {
                continue;
            };
            let replaces = self.replaced_leaf(&order.hostname, now)?;
            // Exempt only if the certificate to replace is still there.
            let exempt = may_be_exempt && replaces.is_some();
            if !self.store.start_order(&order.id, now, exempt)? {
                continue;
            }
            if !exempt {
                budget.record_start(now);
                if state.waiting {
                    log::info!("issuance budget freed (budget: {})", budget.describe(now));
                    state.waiting = false;
                }
            }
            log::info!(
                "order {} for {} started after {} s in the queue{}",
                order.id,
                order.hostname,
                now.saturating_sub(order.created).max(0),
                if exempt {
                    " (renewal, exempt from the budget)"
                } else {
                    ""
                }
            );
            let this = self.clone();
            pass.started
                .push(tokio::spawn(async move { this.run(order, replaces, permit).await }));
        }
        if held_back > 0 {
            let wait = budget.estimated_wait(now, 0).max(1);
            if !state.waiting {
                log::info!(
                    "issuance budget used up: {held_back} orders wait, the next may start in {wait} s (budget: {})",
                    budget.describe(now)
                );
                state.waiting = true;
            }
            pass.wake_at = Some(now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)));
        }
        Ok(pass)
    }

    /// Issues one started order and records the outcome; then frees its
    /// place among the [`MAX_CONCURRENT`] and wakes the scheduler.
    async fn run(self, order: Order, replaces: Option<String>, permit: OwnedSemaphorePermit) {
        let (id, hostname) = (&order.id, &order.hostname);
        let request = IssueRequest {
            csr_der: order.csr.clone(),
            hostname: hostname.clone(),
            replaces,
        };
        let began = std::time::Instant::now();
        let outcome = match tokio::time::timeout(TIMEOUT, self.issuer.issue(&request)).await {
            Ok(result) => result,
            Err(_) => Err(IssueError {
                retry_after: Some(RETRY_AFTER_FAILURE_SECS),
                ..IssueError::failed("the CA did not answer in time")
            }),
        };
        let at = self.now();
        let recorded = match outcome {
            Ok(chain) => match chain_info::leaf(&chain.pem_chain) {
                Ok(info) => {
                    let took = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.record_duration(took);
                    log::info!(
                        "order {id}: issued {hostname}, serial {}, CSR to chain in {took} ms",
                        info.serial
                    );
                    let renewal = chain.renewal.map(|w| (w.start, w.end));
                    self.store
                        .complete_order(id, &chain.pem_chain, &info.serial, info.not_after, renewal, at)
                }
                Err(e) => {
                    log::error!("order {id}: issuer returned an unreadable chain: {e}");
                    self.store.fail_order(
                        id,
                        "issuanceFailed",
                        "the CA returned an unreadable certificate",
                        Some(RETRY_AFTER_FAILURE_SECS),
                        false,
                        at,
                    )
                }
            },
            Err(e) => {
                log::warn!("order {id}: issuance for {hostname} failed: {e}");
                self.store
                    .fail_order(id, e.problem.name(), &e.detail, e.retry_after, e.validation_failed, at)
            }
        };
        if let Err(e) = recorded {
            // The order stays processing and is resumed at the next start.
            log::error!("order {id}: {e}");
        }
        drop(permit);
        self.wake.notify_one();
    }
}

/// The first certificate of a PEM chain, as PEM.
fn first_pem_certificate(chain: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = chain.find(BEGIN)?;
    let end = start + chain[start..].find(END)? + END.len();
    Some(format!("{}\n", &chain[start..end]))
}

/// The time to sleep until Unix second `at` has begun.
fn until_unix(at: i64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let at = Duration::from_secs(u64::try_from(at).unwrap_or(0));
    at.saturating_sub(now) + SLEEP_SLACK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limit;
    use crate::csr_check::tests::{csr, HOST};
    use crate::issuer::local_ca::LocalCa;
    use crate::issuer::IssuedChain;
    use crate::BoxFuture;
    use lancert_protocol::problem::ProblemType;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// What the fake CA does.
    enum Behaviour {
        /// Signs with a local CA.
        Sign(Box<LocalCa>),
        /// Fails with this error.
        Fail(IssueError),
        /// Never answers (an issuance in flight when the server stops).
        Hang,
    }

    /// A test issuer that records what it was asked.
    struct FakeIssuer {
        behaviour: Behaviour,
        exempt: bool,
        calls: Mutex<Vec<(String, Option<String>)>>,
    }

    impl FakeIssuer {
        fn new(behaviour: Behaviour, exempt: bool) -> Arc<FakeIssuer> {
            Arc::new(FakeIssuer {
                behaviour,
                exempt,
                calls: Mutex::new(Vec::new()),
            })
        }

        fn calls(&self) -> Vec<(String, Option<String>)> {
            self.calls.lock().unwrap().clone()
        }

        fn hosts(&self) -> Vec<String> {
            self.calls().into_iter().map(|c| c.0).collect()
        }
    }

    impl Issuer for FakeIssuer {
        fn name(&self) -> String {
            "fake".into()
        }

        fn issue<'a>(&'a self, request: &'a IssueRequest) -> BoxFuture<'a, Result<IssuedChain, IssueError>> {
            Box::pin(async move {
                self.calls
                    .lock()
                    .unwrap()
                    .push((request.hostname.clone(), request.replaces.clone()));
                match &self.behaviour {
                    Behaviour::Sign(ca) => ca.sign(&request.csr_der, &request.hostname),
                    Behaviour::Fail(e) => Err(e.clone()),
                    Behaviour::Hang => std::future::pending().await,
                }
            })
        }

        fn renewals_exempt(&self) -> bool {
            self.exempt
        }
    }

    fn local_ca() -> LocalCa {
        let dir = std::env::temp_dir().join(format!(
            "lancert-server-issuance-{}-{}",
            std::process::id(),
            crate::random::token::<6>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = LocalCa::open_or_create(&dir, 3600, 0, false).unwrap();
        // The CA is in memory now.
        let _ = std::fs::remove_dir_all(&dir);
        ca
    }

    fn signing(exempt: bool) -> Arc<FakeIssuer> {
        FakeIssuer::new(Behaviour::Sign(Box::new(local_ca())), exempt)
    }

    /// An Issuance whose clock the test sets.
    fn issuance(store: &Arc<Store>, issuer: Arc<FakeIssuer>, limits: BudgetConfig) -> (Issuance, Arc<AtomicI64>) {
        let clock = Arc::new(AtomicI64::new(crate::clock::now()));
        let mut issuance = Issuance::new(store.clone(), issuer, limits);
        let c = clock.clone();
        issuance.clock = Arc::new(move || c.load(Ordering::SeqCst));
        (issuance, clock)
    }

    fn order(id: &str, device: &str, host: &str, created: i64) -> Order {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Order::new(
            id.into(),
            device.into(),
            host.into(),
            csr(&key, &[HOST], None),
            created,
            600,
        )
    }

    fn queued(submission: Submission) {
        assert!(matches!(submission, Submission::Queued { .. }), "{submission:?}");
    }

    fn limits(orders: Option<Limit>) -> BudgetConfig {
        BudgetConfig {
            orders,
            ..BudgetConfig::UNLIMITED
        }
    }

    fn limit(limit: u32, window_secs: u64) -> Option<Limit> {
        Some(Limit { limit, window_secs })
    }

    /// One scheduling pass at `now` (the clock reads `now` while the
    /// started issuances run); waits for them.
    async fn pass(issuance: &Issuance, clock: &AtomicI64, now: i64) -> Option<i64> {
        clock.store(now, Ordering::SeqCst);
        let pass = issuance.pass(now, &mut SchedulerState::default()).unwrap();
        for handle in pass.started {
            handle.await.unwrap();
        }
        pass.wake_at
    }

    fn status(store: &Store, id: &str) -> (OrderStatus, Option<i64>) {
        let o = store.order(id).unwrap().unwrap();
        (o.status, o.started)
    }

    #[test]
    fn started_orders_are_polled_when_an_issuance_is_typically_done() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let issuance = Issuance::new(store, signing(false), BudgetConfig::UNLIMITED);
        let mut o = order("o1", "d1", "h1", 1_000);
        assert_eq!(issuance.expected_remaining(&o, 1_000), 0, "not started");
        o.started = Some(1_000);
        assert_eq!(issuance.expected_remaining(&o, 1_000), 0, "no issuance measured yet");
        issuance.record_duration(9_200);
        assert_eq!(issuance.expected_remaining(&o, 1_000), 10);
        assert_eq!(issuance.expected_remaining(&o, 1_004), 6);
        assert_eq!(issuance.expected_remaining(&o, 1_030), 0, "overdue: poll as usual");
        // A moving average: one slow issuance moves it by an eighth.
        issuance.record_duration(89_200);
        assert_eq!(issuance.expected_remaining(&o, 1_000), 20);
        for _ in 0..40 {
            issuance.record_duration(600_000);
        }
        assert_eq!(issuance.expected_remaining(&o, 1_000), MAX_EXPECTED_WAIT_SECS);
    }

    #[tokio::test]
    async fn the_budget_paces_the_queue_in_creation_order() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let ca = signing(false);
        let (issuance, clock) = issuance(&store, ca.clone(), limits(limit(2, 2)));
        let t = clock.load(Ordering::SeqCst);
        for i in 1..=5 {
            let o = order(&format!("o{i}"), &format!("d{i}"), &format!("h{i}"), t - 10 + i);
            queued(issuance.submit(&o, 5).unwrap());
        }
        assert_eq!(issuance.queue_wait(&store.order("o5").unwrap().unwrap(), t).unwrap(), 4);
        assert_eq!(pass(&issuance, &clock, t).await, Some(t + 2));
        assert_eq!(ca.hosts(), ["h1", "h2"]);
        assert_eq!(pass(&issuance, &clock, t + 1).await, Some(t + 2), "nothing may start");
        assert_eq!(ca.hosts().len(), 2);
        let o5 = store.order("o5").unwrap().unwrap();
        assert_eq!(issuance.queue_wait(&o5, t + 1).unwrap(), 3, "position 2 of 3 waiting");
        assert_eq!(pass(&issuance, &clock, t + 2).await, Some(t + 4));
        assert_eq!(pass(&issuance, &clock, t + 4).await, None);
        assert_eq!(ca.hosts(), ["h1", "h2", "h3", "h4", "h5"]);
        assert_eq!(
            store.event_times(EventKind::Order, 0, 100).unwrap(),
            [t, t, t + 2, t + 2, t + 4]
        );
        for i in 1..=5 {
            assert_eq!(status(&store, &format!("o{i}")).0, OrderStatus::Valid);
        }
    }

    #[tokio::test]
    async fn the_scheduler_wakes_on_submit_and_when_the_budget_frees() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let ca = signing(false);
        let issuance = Issuance::new(store.clone(), ca.clone(), limits(limit(2, 2)));
        let scheduler = issuance.spawn_scheduler();
        let t = crate::clock::now();
        for i in 1..=5 {
            let o = order(&format!("o{i}"), &format!("d{i}"), &format!("h{i}"), t - 10 + i);
            queued(issuance.submit(&o, 5).unwrap());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !store.processing_orders().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "orders still processing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        scheduler.abort();
        assert_eq!(ca.hosts(), ["h1", "h2", "h3", "h4", "h5"], "creation order");
        for i in 1..=5 {
            assert_eq!(status(&store, &format!("o{i}")).0, OrderStatus::Valid, "none lost");
        }
        let starts = store.event_times(EventKind::Order, 0, 100).unwrap();
        assert_eq!(starts.len(), 5);
        for w in starts.windows(3) {
            assert!(w[2] - w[0] >= 2, "more than 2 starts in 2 s: {starts:?}");
        }
    }

    #[tokio::test]
    async fn an_exempt_renewal_passes_a_held_back_queue() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let ca = signing(true);
        let (issuance, clock) = issuance(&store, ca.clone(), limits(limit(1, 3600)));
        let t = clock.load(Ordering::SeqCst);
        queued(issuance.submit(&order("first", "da", "a", t - 100), 5).unwrap());
        pass(&issuance, &clock, t - 100).await;
        let first_chain = store.order("first").unwrap().unwrap().chain.unwrap();

        queued(issuance.submit(&order("new", "db", "b", t - 50), 5).unwrap());
        queued(issuance.submit(&order("renewal", "da", "a", t - 40), 5).unwrap());
        let new = store.order("new").unwrap().unwrap();
        let renewal = store.order("renewal").unwrap().unwrap();
        assert_eq!(issuance.queue_wait(&new, t).unwrap(), 3500);
        assert_eq!(issuance.queue_wait(&renewal, t).unwrap(), 0, "exempt");

        assert_eq!(pass(&issuance, &clock, t).await, Some(t - 100 + 3600));
        assert_eq!(status(&store, "new"), (OrderStatus::Processing, None), "held back");
        assert_eq!(status(&store, "renewal").0, OrderStatus::Valid);
        let calls = ca.calls();
        assert_eq!(calls[0], ("a".to_string(), None));
        let leaf = first_pem_certificate(&first_chain).unwrap();
        assert!(first_chain.starts_with(&leaf) && first_chain.len() > leaf.len());
        assert_eq!(calls[1], ("a".to_string(), Some(leaf)), "replaces the unexpired leaf");
        assert_eq!(store.event_times(EventKind::Order, 0, 10).unwrap(), [t - 100]);
        assert_eq!(store.event_times(EventKind::Certificate, 0, 10).unwrap(), [t - 100]);
        assert_eq!(
            store.name_event_times(EventKind::NameCertificate, "a", 0, 10).unwrap(),
            [t - 100, t]
        );

        // Once the window has passed, the held-back order starts.
        assert_eq!(pass(&issuance, &clock, t - 100 + 3600).await, None);
        assert_eq!(status(&store, "new").0, OrderStatus::Valid);
    }

    #[tokio::test]
    async fn renewals_are_counted_when_the_ca_does_not_exempt_them() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let ca = signing(false);
        let (issuance, clock) = issuance(&store, ca.clone(), limits(limit(1, 3600)));
        let t = clock.load(Ordering::SeqCst);
        queued(issuance.submit(&order("first", "da", "a", t - 100), 5).unwrap());
        pass(&issuance, &clock, t - 100).await;
        queued(issuance.submit(&order("new", "db", "b", t - 50), 5).unwrap());
        queued(issuance.submit(&order("renewal", "da", "a", t - 40), 5).unwrap());
        let renewal = store.order("renewal").unwrap().unwrap();
        assert_eq!(issuance.queue_wait(&renewal, t).unwrap(), 3500 + 3600, "second in line");
        pass(&issuance, &clock, t).await;
        assert_eq!(status(&store, "renewal"), (OrderStatus::Processing, None));
        pass(&issuance, &clock, t - 100 + 3600).await;
        assert_eq!(status(&store, "new").0, OrderStatus::Valid);
        assert_eq!(status(&store, "renewal"), (OrderStatus::Processing, None));
    }

    #[tokio::test]
    async fn a_failed_validation_refuses_the_next_order_for_the_name() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let error = IssueError {
            problem: ProblemType::IssuanceFailed,
            detail: "dns-01: no TXT record".into(),
            retry_after: Some(600),
            validation_failed: true,
        };
        let ca = FakeIssuer::new(Behaviour::Fail(error), false);
        let config = BudgetConfig {
            failures_per_name: limit(1, 3600),
            ..BudgetConfig::UNLIMITED
        };
        let (issuance, clock) = issuance(&store, ca, config);
        let t = clock.load(Ordering::SeqCst);
        queued(issuance.submit(&order("o1", "d1", "h", t), 5).unwrap());
        pass(&issuance, &clock, t).await;
        let o1 = store.order("o1").unwrap().unwrap();
        assert_eq!(o1.status, OrderStatus::Invalid);
        assert_eq!(o1.retry_after, Some(600));
        assert_eq!(
            store
                .name_event_times(EventKind::ValidationFailure, "h", 0, 10)
                .unwrap(),
            [t]
        );
        match issuance.submit(&order("o2", "d1", "h", t + 10), 5).unwrap() {
            Submission::Refused(r) => {
                assert_eq!(r.retry_after, 3590);
                assert!(r.detail.contains("failed to validate h"), "{}", r.detail);
            }
            other => panic!("{other:?}"),
        }
        assert!(store.order("o2").unwrap().is_none(), "not stored");
        queued(issuance.submit(&order("o3", "d2", "other", t + 10), 5).unwrap());
        queued(issuance.submit(&order("o4", "d1", "h", t + 3600), 5).unwrap());
    }

    #[tokio::test]
    async fn the_per_name_limit_counts_certificates_and_pending_orders() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let config = BudgetConfig {
            per_name: limit(2, 3600),
            ..BudgetConfig::UNLIMITED
        };
        let (issuance, clock) = issuance(&store, signing(false), config);
        let t = clock.load(Ordering::SeqCst);
        store.record_event(EventKind::NameCertificate, "h", t - 100).unwrap();
        // An order of another device for the name (a replaced device) is
        // still being issued.
        store.create_order(&order("x", "old", "h", t - 10), 5).unwrap();
        store.start_order("x", t - 10, false).unwrap();
        match issuance.submit(&order("o1", "d1", "h", t), 5).unwrap() {
            Submission::Refused(r) => assert_eq!(r.retry_after, 3500),
            other => panic!("{other:?}"),
        }
        store.fail_order("x", "issuanceFailed", "x", None, false, t).unwrap();
        queued(issuance.submit(&order("o1", "d1", "h", t), 5).unwrap());
        // The device's own queued order does not count: the new one
        // supersedes it.
        match issuance.submit(&order("o2", "d1", "h", t + 1), 5).unwrap() {
            Submission::Queued { superseded } => assert_eq!(superseded, ["o1"]),
            other => panic!("{other:?}"),
        }
        // The per-device limit still applies.
        match issuance.submit(&order("o3", "d2", "z", t), 1).unwrap() {
            Submission::Queued { .. } => {}
            other => panic!("{other:?}"),
        }
        match issuance.submit(&order("o4", "d2", "z", t + 5), 1).unwrap() {
            Submission::Refused(r) => {
                assert_eq!(r.retry_after, 3595);
                assert!(r.detail.contains("per device"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_newer_order_supersedes_a_queued_one_not_a_started_one() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let (issuance, clock) = issuance(&store, signing(false), limits(limit(1, 3600)));
        let t = clock.load(Ordering::SeqCst);
        queued(issuance.submit(&order("o1", "d1", "h", t), 5).unwrap());
        match issuance.submit(&order("o2", "d1", "h", t + 1), 5).unwrap() {
            Submission::Queued { superseded } => assert_eq!(superseded, ["o1"]),
            other => panic!("{other:?}"),
        }
        let o1 = store.order("o1").unwrap().unwrap();
        assert_eq!(o1.status, OrderStatus::Invalid);
        assert_eq!(
            o1.error,
            Some((
                "issuanceFailed".into(),
                "superseded by a newer order from the same device".into()
            ))
        );
        pass(&issuance, &clock, t + 1).await;
        assert_eq!(status(&store, "o2").0, OrderStatus::Valid);
        // A device with one order started (here finished) and one queued
        // behind the budget: the next replaces only the queued one.
        queued(issuance.submit(&order("o3", "d1", "h", t + 2), 5).unwrap());
        match issuance.submit(&order("o4", "d1", "h", t + 3), 5).unwrap() {
            Submission::Queued { superseded } => assert_eq!(superseded, ["o3"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(status(&store, "o2").0, OrderStatus::Valid);
        assert_eq!(store.queued_orders(t + 3).unwrap().len(), 1, "one place per device");
    }

    #[tokio::test]
    async fn a_restart_resumes_started_orders_and_keeps_the_queue() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let budget = limits(limit(1, 3600));
        let (before, clock) = issuance(&store, FakeIssuer::new(Behaviour::Hang, false), budget);
        let t = clock.load(Ordering::SeqCst);
        queued(before.submit(&order("o1", "d1", "h1", t), 5).unwrap());
        queued(before.submit(&order("o2", "d2", "h2", t + 1), 5).unwrap());
        queued(before.submit(&order("o3", "d3", "h3", t + 2), 5).unwrap());
        let started = before.pass(t + 2, &mut SchedulerState::default()).unwrap();
        assert_eq!(started.started.len(), 1);
        // The server stops with o1 at the CA.
        for handle in started.started {
            handle.abort();
        }
        drop(before);

        let ca = signing(false);
        let (after, clock) = issuance(&store, ca.clone(), budget);
        clock.store(t + 3, Ordering::SeqCst);
        let resumed = after.resume_started().unwrap();
        assert_eq!(resumed.len(), 1);
        for handle in resumed {
            handle.await.unwrap();
        }
        assert_eq!(status(&store, "o1").0, OrderStatus::Valid);
        assert_eq!(ca.hosts(), ["h1"]);
        let o2 = store.order("o2").unwrap().unwrap();
        assert_eq!(o2.started, None, "still queued");
        assert_eq!(after.queue_wait(&o2, t + 3).unwrap(), 3599);
        assert_eq!(pass(&after, &clock, t + 3).await, Some(t + 2 + 3600));
        assert_eq!(pass(&after, &clock, t + 2 + 3600).await, Some(t + 2 + 7200));
        assert_eq!(ca.hosts(), ["h1", "h2"], "in order");
        assert_eq!(status(&store, "o3"), (OrderStatus::Processing, None));
    }

    #[test]
    fn the_first_certificate_of_a_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                     -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            first_pem_certificate(chain).as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n")
        );
        assert_eq!(first_pem_certificate("junk"), None);
    }
}
