//! The management server as the fleet sees it: up or down, and its
//! issuance queue. Orders start in arrival order as soon as one of the
//! reference server's [`MAX_CONCURRENT`] issuance slots is free and take
//! the CA's time to complete; while an order is processing the server
//! answers `Retry-After` as `lancert-server` does: for a started order the
//! typical issuance time less what it has run
//! (`Issuance::expected_remaining`; the model's CA always takes the same
//! time, so the typical time is that), at least `retry_after_secs` (1 s);
//! for an order waiting for a slot 1 s (with no budget holding orders back
//! its queue estimate is 0). Renewals with `replaces` are exempt from Let's
//! Encrypt's limits, so in these scenarios no budget holds an order back.

/// The reference server's concurrent issuances (`server/src/issuance.rs`).
pub const MAX_CONCURRENT: usize = 4;
/// The reference server's default `retry_after_secs`.
pub const RETRY_AFTER_SECS: u64 = 1;

/// What the server answers about an order at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Still processing: poll again after this many seconds.
    Processing { retry_after_secs: u64 },
    /// Issued at this moment (ms of simulated time).
    Valid { issued_at: u64 },
}

/// The server model.
pub struct ServerModel {
    /// Periods (ms, start inclusive, end exclusive) the server is down.
    outages: Vec<(u64, u64)>,
    /// When each issuance slot is free again (ms).
    slots: [u64; MAX_CONCURRENT],
    /// When each order starts and is issued (ms), by order number.
    orders: Vec<(u64, u64)>,
    /// How long the CA takes for one order (ms): dns-01 record published
    /// and seen, validation, finalization.
    ca_ms: u64,
}

impl ServerModel {
    /// A server down during `outages`, whose CA takes `ca_ms` per order.
    pub fn new(outages: Vec<(u64, u64)>, ca_ms: u64) -> ServerModel {
        ServerModel {
            outages,
            slots: [0; MAX_CONCURRENT],
            orders: Vec::new(),
            ca_ms,
        }
    }

    /// Whether requests reach the server at `now`.
    pub fn up(&self, now: u64) -> bool {
        !self.outages.iter().any(|&(from, to)| (from..to).contains(&now))
    }

    /// A new order at `now`: it starts when a slot is free (orders arrive in
    /// time order, so this is FIFO). Returns the order number.
    pub fn submit(&mut self, now: u64) -> usize {
        let (slot, free_at) = self
            .slots
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(_, t)| t)
            .unwrap_or((0, now));
        let start = now.max(free_at);
        let ready = start + self.ca_ms;
        self.slots[slot] = ready;
        self.orders.push((start, ready));
        self.orders.len() - 1
    }

    /// The order's state at `now`.
    pub fn order(&self, order: usize, now: u64) -> OrderState {
        match self.orders.get(order) {
            Some(&(_, ready)) if ready <= now => OrderState::Valid { issued_at: ready },
            Some(&(start, _)) if start <= now => {
                // Whole seconds, as the server stores `started`.
                let ran = now / 1_000 - start / 1_000;
                let typical = self.ca_ms.div_ceil(1_000);
                OrderState::Processing {
                    retry_after_secs: typical.saturating_sub(ran).max(RETRY_AFTER_SECS),
                }
            }
            _ => OrderState::Processing {
                retry_after_secs: RETRY_AFTER_SECS,
            },
        }
    }

    /// Orders submitted so far.
    pub fn orders(&self) -> usize {
        self.orders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_queue_for_the_four_slots_in_arrival_order() {
        let mut s = ServerModel::new(vec![(100, 200)], 10_000);
        assert!(s.up(99) && !s.up(100) && !s.up(199) && s.up(200));
        let ids: Vec<usize> = (0..5).map(|_| s.submit(0)).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        assert_eq!(s.order(0, 0), OrderState::Processing { retry_after_secs: 10 });
        assert_eq!(s.order(0, 9_999), OrderState::Processing { retry_after_secs: 1 });
        assert_eq!(s.order(3, 10_000), OrderState::Valid { issued_at: 10_000 });
        assert_eq!(
            s.order(4, 5_000),
            OrderState::Processing { retry_after_secs: 1 },
            "waits for a slot"
        );
        assert_eq!(s.order(4, 12_000), OrderState::Processing { retry_after_secs: 8 });
        assert_eq!(s.order(4, 20_000), OrderState::Valid { issued_at: 20_000 });
    }
}
