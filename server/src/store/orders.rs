//! Certificate order rows. An order's id is also its certificate's id.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

/// The window the per-device order limit counts over.
pub const RATE_WINDOW_SECS: i64 = 3600;

/// Where an order is in its life (protocol §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// The issuer is working on it.
    Processing,
    /// The certificate is ready.
    Valid,
    /// Issuance failed; `error` says why.
    Invalid,
}

impl OrderStatus {
    /// The protocol's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Processing => "processing",
            OrderStatus::Valid => "valid",
            OrderStatus::Invalid => "invalid",
        }
    }

    fn parse(s: &str) -> OrderStatus {
        match s {
            "valid" => OrderStatus::Valid,
            "invalid" => OrderStatus::Invalid,
            _ => OrderStatus::Processing,
        }
    }
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Random id, in the order and certificate URLs.
    pub id: String,
    /// The owning device's id.
    pub device: String,
    /// The hostname being certified.
    pub hostname: String,
    /// The CSR, DER.
    pub csr: Vec<u8>,
    /// Current status.
    pub status: OrderStatus,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// After this the order may be forgotten.
    pub expires: i64,
    /// PEM chain (leaf first) once valid.
    pub chain: Option<String>,
    /// Leaf serial, lowercase hex, once valid.
    pub serial: Option<String>,
    /// Leaf notAfter, once valid.
    pub not_after: Option<i64>,
    /// Renewal window (start, end), when the issuer gave one.
    pub renewal: Option<(i64, i64)>,
    /// Problem type name and detail, once invalid.
    pub error: Option<(String, String)>,
    /// Retry-After the issuer asked for on failure.
    pub retry_after: Option<u64>,
}

impl Order {
    /// A new processing order.
    pub fn new(id: String, device: String, hostname: String, csr: Vec<u8>, now: i64, lifetime_secs: i64) -> Order {
        Order {
            id,
            device,
            hostname,
            csr,
            status: OrderStatus::Processing,
            created: now,
            expires: now + lifetime_secs,
            chain: None,
            serial: None,
            not_after: None,
            renewal: None,
            error: None,
            retry_after: None,
        }
    }
}

/// Result of [`Store::create_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The order was stored.
    Created,
    /// The device has used up its orders for the window.
    Limited {
        /// Seconds until the oldest counted order leaves the window.
        retry_after: u64,
    },
}

const COLUMNS: &str = "id, device, hostname, csr, status, created, expires, chain, serial, not_after, \
                       renewal_start, renewal_end, error_type, error_detail, retry_after";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    let renewal = match (row.get::<_, Option<i64>>(10)?, row.get::<_, Option<i64>>(11)?) {
        (Some(s), Some(e)) => Some((s, e)),
        _ => None,
    };
    let error = match (row.get::<_, Option<String>>(12)?, row.get::<_, Option<String>>(13)?) {
        (Some(t), d) => Some((t, d.unwrap_or_default())),
        _ => None,
    };
    Ok(Order {
        id: row.get(0)?,
        device: row.get(1)?,
        hostname: row.get(2)?,
        csr: row.get(3)?,
        status: OrderStatus::parse(&row.get::<_, String>(4)?),
        created: row.get(5)?,
        expires: row.get(6)?,
        chain: row.get(7)?,
        serial: row.get(8)?,
        not_after: row.get(9)?,
        renewal,
        error,
        retry_after: row.get::<_, Option<i64>>(14)?.map(|n| n.max(0) as u64),
    })
}

impl Store {
    /// Stores a new order unless the device already created
    /// `max_per_window` orders in the last `RATE_WINDOW_SECS`; the check and
    /// the insert are one transaction.
    pub fn create_order(&self, order: &Order, max_per_window: u32) -> Result<Reservation, StoreError> {
        self.with("creating order", |conn| {
            let tx = conn.transaction()?;
            let since = order.created - RATE_WINDOW_SECS;
            let (count, oldest): (i64, Option<i64>) = tx.query_row(
                "SELECT COUNT(*), MIN(created) FROM orders WHERE device = ?1 AND created > ?2",
                params![order.device, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if count >= i64::from(max_per_window) {
                let oldest = oldest.unwrap_or(order.created);
                let wait = (oldest + RATE_WINDOW_SECS - order.created).max(1);
                return Ok(Reservation::Limited {
                    retry_after: wait as u64,
                });
            }
            tx.execute(
                "INSERT INTO orders (id, device, hostname, csr, status, created, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    order.id,
                    order.device,
                    order.hostname,
                    order.csr,
                    order.status.as_str(),
                    order.created,
                    order.expires
                ],
            )?;
            tx.commit()?;
            Ok(Reservation::Created)
        })
    }

    /// The order with id `id`.
    pub fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        self.with("reading order", |conn| {
            conn.query_row(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?1"), [id], from_row)
                .optional()
        })
    }

    /// Orders still processing (to resume after a restart), oldest first.
    pub fn processing_orders(&self) -> Result<Vec<Order>, StoreError> {
        self.with("listing processing orders", |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM orders WHERE status = 'processing' ORDER BY created, id"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            rows.collect()
        })
    }

    /// Marks a processing order valid.
    pub fn complete_order(
        &self,
        id: &str,
        chain: &str,
        serial: &str,
        not_after: i64,
        renewal: Option<(i64, i64)>,
    ) -> Result<(), StoreError> {
        self.with("completing order", |conn| {
            conn.execute(
                "UPDATE orders SET status = 'valid', chain = ?2, serial = ?3, not_after = ?4,
                        renewal_start = ?5, renewal_end = ?6
                 WHERE id = ?1 AND status = 'processing'",
                params![id, chain, serial, not_after, renewal.map(|r| r.0), renewal.map(|r| r.1)],
            )
            .map(|_| ())
        })
    }

    /// Marks a processing order invalid with a problem type name and detail.
    pub fn fail_order(
        &self,
        id: &str,
        problem_name: &str,
        detail: &str,
        retry_after: Option<u64>,
    ) -> Result<(), StoreError> {
        self.with("failing order", |conn| {
            conn.execute(
                "UPDATE orders SET status = 'invalid', error_type = ?2, error_detail = ?3, retry_after = ?4
                 WHERE id = ?1 AND status = 'processing'",
                params![
                    id,
                    problem_name,
                    detail,
                    retry_after.map(|n| n.min(i64::MAX as u64) as i64)
                ],
            )
            .map(|_| ())
        })
    }

    /// The renewal window of the device's certificate with this serial
    /// (lowercase hex), if one is known.
    pub fn renewal_for_serial(&self, device: &str, serial: &str) -> Result<Option<(i64, i64)>, StoreError> {
        self.with("reading renewal window", |conn| {
            conn.query_row(
                "SELECT renewal_start, renewal_end FROM orders
                 WHERE device = ?1 AND serial = ?2 AND renewal_start IS NOT NULL AND renewal_end IS NOT NULL
                 ORDER BY created DESC LIMIT 1",
                params![device, serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    /// Deletes orders whose `expires` is before `now`.
    pub fn delete_expired_orders(&self, now: i64) -> Result<usize, StoreError> {
        self.with("deleting expired orders", |conn| {
            conn.execute("DELETE FROM orders WHERE expires < ?1", [now])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, device: &str, now: i64) -> Order {
        Order::new(id.into(), device.into(), "h.z.test".into(), vec![1, 2], now, 600)
    }

    #[test]
    fn orders_are_limited_per_device_and_window() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(
            store.create_order(&order("a", "d1", 1000), 2).unwrap(),
            Reservation::Created
        );
        assert_eq!(
            store.create_order(&order("b", "d1", 1100), 2).unwrap(),
            Reservation::Created
        );
        assert_eq!(
            store.create_order(&order("c", "d1", 1200), 2).unwrap(),
            Reservation::Limited { retry_after: 3400 }
        );
        assert_eq!(
            store.create_order(&order("c", "d2", 1200), 2).unwrap(),
            Reservation::Created
        );
        assert_eq!(
            store
                .create_order(&order("d", "d1", 1000 + RATE_WINDOW_SECS), 2)
                .unwrap(),
            Reservation::Created
        );
    }

    #[test]
    fn order_lifecycle() {
        let store = Store::open_in_memory().unwrap();
        store.create_order(&order("a", "d1", 1000), 5).unwrap();
        store.create_order(&order("b", "d1", 1001), 5).unwrap();
        assert_eq!(store.processing_orders().unwrap().len(), 2);
        store
            .complete_order("a", "PEM", "3f0a", 5000, Some((3000, 3500)))
            .unwrap();
        store.fail_order("b", "issuanceFailed", "CA down", Some(60)).unwrap();
        // A finished order does not change again.
        store.fail_order("a", "issuanceFailed", "late", None).unwrap();
        let a = store.order("a").unwrap().unwrap();
        assert_eq!(a.status, OrderStatus::Valid);
        assert_eq!(a.chain.as_deref(), Some("PEM"));
        assert_eq!(a.renewal, Some((3000, 3500)));
        let b = store.order("b").unwrap().unwrap();
        assert_eq!(b.status, OrderStatus::Invalid);
        assert_eq!(b.error, Some(("issuanceFailed".into(), "CA down".into())));
        assert_eq!(b.retry_after, Some(60));
        assert!(store.processing_orders().unwrap().is_empty());
        assert_eq!(store.renewal_for_serial("d1", "3f0a").unwrap(), Some((3000, 3500)));
        assert_eq!(store.renewal_for_serial("d2", "3f0a").unwrap(), None);
        assert_eq!(store.delete_expired_orders(1602).unwrap(), 2);
        assert!(store.order("a").unwrap().is_none());
    }
}
