//! Replay nonces (protocol §5, RFC 8555 §6.5): random 128-bit values kept in
//! memory, each accepted once and only within its lifetime. At most
//! [`MAX_OUTSTANDING`] are kept; issuing one more forgets the oldest, whose
//! holder then gets `badNonce` and retries with a fresh one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most nonces outstanding at once.
pub const MAX_OUTSTANDING: usize = 100_000;

/// The issued, unused nonces.
pub struct NonceStore {
    ttl: Duration,
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Unused nonces and when they were issued.
    live: HashMap<String, Instant>,
    /// Issue order, for expiry and eviction; may still hold used nonces,
    /// which are skipped.
    queue: VecDeque<(String, Instant)>,
}

impl Inner {
    fn drop_front(&mut self) {
        if let Some((nonce, issued)) = self.queue.pop_front() {
            if self.live.get(&nonce) == Some(&issued) {
                self.live.remove(&nonce);
            }
        }
    }

    fn prune(&mut self, now: Instant, ttl: Duration, cap: usize) {
        while let Some((_, issued)) = self.queue.front() {
            let expired = now.saturating_duration_since(*issued) >= ttl;
            // The queue can hold used entries too; bounding it at twice the
            // cap keeps memory bounded whatever the traffic.
            if expired || self.live.len() >= cap || self.queue.len() >= 2 * cap {
                self.drop_front();
            } else {
                break;
            }
        }
    }
}

impl NonceStore {
    /// A store whose nonces live `ttl`, with the default cap.
    pub fn new(ttl: Duration) -> NonceStore {
        NonceStore::with_cap(ttl, MAX_OUTSTANDING)
    }

    /// A store holding at most `cap` nonces.
    pub fn with_cap(ttl: Duration, cap: usize) -> NonceStore {
        NonceStore {
            ttl,
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh nonce.
    pub fn issue(&self) -> String {
        self.issue_at(Instant::now())
    }

    fn issue_at(&self, now: Instant) -> String {
        let nonce = crate::random::token::<16>();
        let mut inner = self.lock();
        inner.prune(now, self.ttl, self.cap);
        inner.live.insert(nonce.clone(), now);
        inner.queue.push_back((nonce.clone(), now));
        nonce
    }

    /// Accepts `nonce` if it was issued, not yet used and not expired; it
    /// can never be accepted again either way.
    pub fn consume(&self, nonce: &str) -> bool {
        self.consume_at(nonce, Instant::now())
    }

    fn consume_at(&self, nonce: &str, now: Instant) -> bool {
        let mut inner = self.lock();
        match inner.live.remove(nonce) {
            Some(issued) => now.saturating_duration_since(issued) < self.ttl,
            None => false,
        }
    }

    /// Number of unused nonces held.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no unused nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_accepted_once() {
        let store = NonceStore::new(Duration::from_secs(600));
        let n = store.issue();
        assert!(n.len() >= 22, "128 bits in base64url");
        assert!(store.consume(&n));
        assert!(!store.consume(&n));
        assert!(!store.consume("never-issued"));
    }

    #[test]
    fn expired_nonce_is_refused() {
        let store = NonceStore::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let n = store.issue_at(t0);
        assert!(!store.consume_at(&n, t0 + Duration::from_secs(10)));
        let m = store.issue_at(t0);
        assert!(store.consume_at(&m, t0 + Duration::from_secs(9)));
    }

    #[test]
    fn oldest_is_evicted_at_the_cap() {
        let store = NonceStore::with_cap(Duration::from_secs(600), 3);
        let t0 = Instant::now();
        let first = store.issue_at(t0);
        let rest: Vec<String> = (0..3).map(|_| store.issue_at(t0)).collect();
        assert_eq!(store.len(), 3);
        assert!(!store.consume_at(&first, t0));
        for n in rest {
            assert!(store.consume_at(&n, t0));
        }
    }

    #[test]
    fn queue_stays_bounded_when_nonces_are_used() {
        let store = NonceStore::with_cap(Duration::from_secs(600), 4);
        let t0 = Instant::now();
        for _ in 0..100 {
            let n = store.issue_at(t0);
            assert!(store.consume_at(&n, t0));
        }
        assert!(store.lock().queue.len() <= 8);
    }
}
