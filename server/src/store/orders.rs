//! Certificate order rows. An order's id is also its certificate's id.
//!
//! A new order is stored `processing` and *queued* (`started` NULL) until the
//! issuance scheduler (`crate::issuance`) starts it within the budget; the
//! budget's events (`ca_events`) are written in the same transaction as the
//! order change they stem from.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::events::{self, EventKind};
use super::{begin_write, Store, StoreError};

/// The window the per-device order limit counts over.
pub const RATE_WINDOW_SECS: i64 = 3600;
/// The error detail of a queued order replaced by a newer one of its device.
pub const SUPERSEDED_DETAIL: &str = "superseded by a newer order from the same device";

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
    /// When issuance started, Unix seconds; `None` while the order is
    /// queued.
    pub started: Option<i64>,
}

/// A queued order, as the scheduler sees it (without the CSR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedOrder {
    /// The order's id.
    pub id: String,
    /// The hostname being certified.
    pub hostname: String,
    /// Creation time, Unix seconds: the queue's order (then the id).
    pub created: i64,
    /// Whether the hostname has an unexpired certificate from a valid
    /// order, which this one would replace (ARI `replaces`).
    pub renews: bool,
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
            started: None,
        }
    }
}

/// Result of [`Store::create_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The order was stored (queued).
    Created {
        /// Ids of the device's queued orders it replaced (now invalid,
        /// `issuanceFailed` "superseded by a newer order from the same
        /// device"), so that a device that lost its state never holds two
        /// places in the queue.
        superseded: Vec<String>,
    },
    /// The device has used up its orders for the window.
    Limited {
        /// Seconds until the oldest counted order leaves the window.
        retry_after: u64,
    },
}

const COLUMNS: &str = "id, device, hostname, csr, status, created, expires, chain, serial, not_after, \
                       renewal_start, renewal_end, error_type, error_detail, retry_after, started";

/// Adds the queue columns to an `orders` table created before them (the
/// schema's CREATE TABLE IF NOT EXISTS leaves an existing table alone).
/// Orders already processing then were being issued: they count as started.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('orders')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if !columns.iter().any(|c| c == "same_issuer") {
        conn.execute_batch("ALTER TABLE orders ADD COLUMN same_issuer INTEGER NOT NULL DEFAULT 1;")?;
    }
    if columns.iter().any(|c| c == "started") {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN;
         ALTER TABLE orders ADD COLUMN started INTEGER;
         ALTER TABLE orders ADD COLUMN exempt INTEGER NOT NULL DEFAULT 0;
         UPDATE orders SET started = created WHERE status = 'processing';
         COMMIT;",
    )
}

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
        started: row.get(15)?,
    })
}

/// SQL: whether the hostname of the order aliased `o` has an unexpired
/// certificate from a valid order (`?now` is the current time).
const RENEWS: &str = "EXISTS (SELECT 1 FROM orders v WHERE v.hostname = o.hostname AND v.status = 'valid'
                              AND v.same_issuer = 1 AND v.not_after > :now)";

impl Store {
    /// Stores a new, queued order unless the device already created
    /// `max_per_window` orders in the last `RATE_WINDOW_SECS`, and marks the
    /// device's orders still queued invalid (superseded); the check, the
    /// supersession and the insert are one transaction. Started orders are
    /// left to finish.
    pub fn create_order(&self, order: &Order, max_per_window: u32) -> Result<Reservation, StoreError> {
        self.with("creating order", |conn| {
            let tx = begin_write(conn)?;
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
            let superseded: Vec<String> = tx
                .prepare(
                    "UPDATE orders SET status = 'invalid', error_type = 'issuanceFailed', error_detail = ?2
                     WHERE device = ?1 AND status = 'processing' AND started IS NULL
                     RETURNING id",
                )?
                .query_map(params![order.device, SUPERSEDED_DETAIL], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
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
            Ok(Reservation::Created { superseded })
        })
    }

    /// The order with id `id`.
    pub fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        self.with("reading order", |conn| {
            conn.query_row(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?1"), [id], from_row)
                .optional()
        })
    }

    /// Orders still processing, started or queued, oldest first.
    pub fn processing_orders(&self) -> Result<Vec<Order>, StoreError> {
        self.with("listing processing orders", |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM orders WHERE status = 'processing' ORDER BY created, rowid"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            rows.collect()
        })
    }

    /// Orders started and still processing (to resume after a restart),
    /// oldest first.
    pub fn started_orders(&self) -> Result<Vec<Order>, StoreError> {
        self.with("listing started orders", |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM orders WHERE status = 'processing' AND started IS NOT NULL
                 ORDER BY started, created, rowid"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            rows.collect()
        })
    }

    /// The queue: orders processing and not started, oldest first (created,
    /// then id); `renews` as of `now`.
    pub fn queued_orders(&self, now: i64) -> Result<Vec<QueuedOrder>, StoreError> {
        self.with("listing queued orders", |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT o.id, o.hostname, o.created, {RENEWS} FROM orders o
                 WHERE o.status = 'processing' AND o.started IS NULL ORDER BY o.created, o.rowid"
            ))?;
            let rows = stmt.query_map(rusqlite::named_params! {":now": now}, |r| {
                Ok(QueuedOrder {
                    id: r.get(0)?,
                    hostname: r.get(1)?,
                    created: r.get(2)?,
                    renews: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    /// How many queued orders are ahead of `order` in the queue and count
    /// against the budget: all of them, or when `renewals_exempt`, those
    /// that do not renew an unexpired certificate (as of `now`).
    pub fn queue_position(&self, order: &Order, now: i64, renewals_exempt: bool) -> Result<usize, StoreError> {
        self.with("finding an order's place in the queue", |conn| {
            let n: i64 = conn.query_row(
                &format!(
                    "SELECT COUNT(*) FROM orders o
                     WHERE o.status = 'processing' AND o.started IS NULL
                       AND (o.created < :created
                            OR (o.created = :created AND o.rowid < (SELECT rowid FROM orders WHERE id = :id)))
                       AND NOT (:exempt AND {RENEWS})"
                ),
                rusqlite::named_params! {
                    ":created": order.created,
                    ":id": order.id,
                    ":exempt": renewals_exempt,
                    ":now": now,
                },
                |r| r.get(0),
            )?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// Marks a queued order started at `now` (`exempt`: a renewal not
    /// counted against the budget) and, when counted, records the budget's
    /// `order` event in the same transaction. The order's `expires` moves
    /// to at least `now` plus its lifetime, so that a long wait in the queue
    /// does not eat the time the device has to fetch the certificate.
    /// Returns false when the order was not queued (any more).
    pub fn start_order(&self, id: &str, now: i64, exempt: bool) -> Result<bool, StoreError> {
        self.with("starting order", |conn| {
            let tx = begin_write(conn)?;
            let hostname: Option<String> = tx
                .query_row(
                    "UPDATE orders SET started = ?2, exempt = ?3, expires = MAX(expires, ?2 + expires - created)
                     WHERE id = ?1 AND status = 'processing' AND started IS NULL
                     RETURNING hostname",
                    params![id, now, exempt],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(hostname) = hostname else {
                return Ok(false);
            };
            if !exempt {
                events::insert(&tx, EventKind::Order, &hostname, now)?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    /// Counted orders started and not finished: certificates the budget
    /// must expect.
    pub fn counted_in_flight(&self) -> Result<u32, StoreError> {
        self.with("counting orders in flight", |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM orders WHERE status = 'processing' AND started IS NOT NULL AND exempt = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    /// Orders of `hostname` still processing, except `device`'s queued ones
    /// (which a new order of that device supersedes).
    pub fn pending_for_hostname(&self, hostname: &str, device: &str) -> Result<u32, StoreError> {
        self.with("counting a hostname's pending orders", |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM orders
                 WHERE hostname = ?1 AND status = 'processing' AND NOT (device = ?2 AND started IS NULL)",
                params![hostname, device],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    /// Records `name` as the issuer of new certificates. When it differs
    /// from the one recorded (no record: the local CA, the only issuer of
    /// earlier versions), every certificate issued so far is marked as from
    /// another CA: a renewal of one of them is a new order for the budget
    /// and carries no ARI `replaces`, which the new CA would refuse. Returns
    /// the previous issuer when it changed and orders were marked.
    pub fn set_issuer(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.with("recording the issuer", |conn| {
            let tx = begin_write(conn)?;
            let previous: Option<String> = tx
                .query_row("SELECT name FROM issuer WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            let previous = previous.unwrap_or_else(|| "local_ca".to_string());
            let marked = if previous != name {
                tx.execute("UPDATE orders SET same_issuer = 0 WHERE same_issuer = 1", [])?
            } else {
                0
            };
            tx.execute(
                "INSERT INTO issuer (id, name) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET name = ?1",
                [name],
            )?;
            tx.commit()?;
            Ok((marked > 0).then_some(previous))
        })
    }

    /// The chain of the newest valid order of `hostname` whose certificate
    /// is unexpired at `now` and came from the current issuer: the
    /// certificate a new one replaces.
    pub fn current_chain(&self, hostname: &str, now: i64) -> Result<Option<String>, StoreError> {
        self.with("reading the current certificate of a hostname", |conn| {
            conn.query_row(
                "SELECT chain FROM orders
                 WHERE hostname = ?1 AND status = 'valid' AND same_issuer = 1 AND not_after > ?2
                   AND chain IS NOT NULL
                 ORDER BY created DESC, rowid DESC LIMIT 1",
                params![hostname, now],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Marks a processing order valid and records, in the same
    /// transaction, the certificate for the budget (`at`): for the
    /// hostname always, for the zone unless the order was exempt.
    pub fn complete_order(
        &self,
        id: &str,
        chain: &str,
        serial: &str,
        not_after: i64,
        renewal: Option<(i64, i64)>,
        at: i64,
    ) -> Result<(), StoreError> {
        self.with("completing order", |conn| {
            let tx = begin_write(conn)?;
            let done: Option<(String, bool)> = tx
                .query_row(
                    "UPDATE orders SET status = 'valid', chain = ?2, serial = ?3, not_after = ?4,
                            renewal_start = ?5, renewal_end = ?6
                     WHERE id = ?1 AND status = 'processing'
                     RETURNING hostname, exempt",
                    params![id, chain, serial, not_after, renewal.map(|r| r.0), renewal.map(|r| r.1)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((hostname, exempt)) = done {
                events::insert(&tx, EventKind::NameCertificate, &hostname, at)?;
                if !exempt {
                    events::insert(&tx, EventKind::Certificate, &hostname, at)?;
                }
            }
            tx.commit()
        })
    }

    /// Marks a processing order invalid with a problem type name and
    /// detail; when the CA failed to validate the name, records that for the
    /// budget (`at`) in the same transaction.
    pub fn fail_order(
        &self,
        id: &str,
        problem_name: &str,
        detail: &str,
        retry_after: Option<u64>,
        validation_failed: bool,
        at: i64,
    ) -> Result<(), StoreError> {
        self.with("failing order", |conn| {
            let tx = begin_write(conn)?;
            let hostname: Option<String> = tx
                .query_row(
                    "UPDATE orders SET status = 'invalid', error_type = ?2, error_detail = ?3, retry_after = ?4
                     WHERE id = ?1 AND status = 'processing'
                     RETURNING hostname",
                    params![
                        id,
                        problem_name,
                        detail,
                        retry_after.map(|n| n.min(i64::MAX as u64) as i64)
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let (Some(hostname), true) = (hostname, validation_failed) {
                events::insert(&tx, EventKind::ValidationFailure, &hostname, at)?;
            }
            tx.commit()
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

    /// Deletes orders whose `expires` is before `now`, except orders still
    /// processing (a queued order waits as long as the budget makes it) and
    /// valid orders whose certificate is unexpired (the certificate a
    /// renewal replaces, ARI `replaces`; its renewal window).
    pub fn delete_expired_orders(&self, now: i64) -> Result<usize, StoreError> {
        self.with("deleting expired orders", |conn| {
            conn.execute(
                "DELETE FROM orders WHERE expires < ?1 AND status != 'processing'
                   AND NOT (status = 'valid' AND not_after IS NOT NULL AND not_after > ?1)",
                [now],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, device: &str, now: i64) -> Order {
        Order::new(id.into(), device.into(), "h.z.test".into(), vec![1, 2], now, 600)
    }

    fn created(superseded: &[&str]) -> Reservation {
        Reservation::Created {
            superseded: superseded.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn status(store: &Store, id: &str) -> OrderStatus {
        store.order(id).unwrap().unwrap().status
    }

    #[test]
    fn orders_are_limited_per_device_and_window() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.create_order(&order("a", "d1", 1000), 2).unwrap(), created(&[]));
        assert!(store.start_order("a", 1000, false).unwrap());
        assert_eq!(store.create_order(&order("b", "d1", 1100), 2).unwrap(), created(&[]));
        assert_eq!(
            store.create_order(&order("c", "d1", 1200), 2).unwrap(),
            Reservation::Limited { retry_after: 3400 }
        );
        assert_eq!(store.create_order(&order("c", "d2", 1200), 2).unwrap(), created(&[]));
        assert_eq!(
            store
                .create_order(&order("d", "d1", 1000 + RATE_WINDOW_SECS), 2)
                .unwrap(),
            created(&["b"])
        );
    }

    #[test]
    fn a_new_order_supersedes_the_devices_queued_order_but_not_a_started_one() {
        let store = Store::open_in_memory().unwrap();
        store.create_order(&order("a", "d1", 1000), 5).unwrap();
        store.create_order(&order("x", "d2", 1000), 5).unwrap();
        assert_eq!(store.create_order(&order("b", "d1", 1001), 5).unwrap(), created(&["a"]));
        let a = store.order("a").unwrap().unwrap();
        assert_eq!(a.status, OrderStatus::Invalid);
        assert_eq!(a.error, Some(("issuanceFailed".into(), SUPERSEDED_DETAIL.into())));
        assert_eq!(
            status(&store, "x"),
            OrderStatus::Processing,
            "other devices keep theirs"
        );
        assert!(store.start_order("b", 1002, false).unwrap());
        assert_eq!(store.create_order(&order("c", "d1", 1003), 5).unwrap(), created(&[]));
        assert_eq!(status(&store, "b"), OrderStatus::Processing);
        // Superseded and started orders cannot be started (again).
        assert!(!store.start_order("a", 1004, false).unwrap());
        assert!(!store.start_order("b", 1004, false).unwrap());
    }

    #[test]
    fn the_queue_is_oldest_first_and_starting_records_the_order_event() {
        let store = Store::open_in_memory().unwrap();
        store.create_order(&order("b", "d2", 1000), 5).unwrap();
        store.create_order(&order("a", "d1", 1000), 5).unwrap();
        store.create_order(&order("c", "d3", 999), 5).unwrap();
        let ids =
            |store: &Store| -> Vec<String> { store.queued_orders(2000).unwrap().into_iter().map(|q| q.id).collect() };
        assert_eq!(ids(&store), ["c", "b", "a"], "by time, then as they came");
        let b = store.order("b").unwrap().unwrap();
        assert_eq!(store.queue_position(&b, 2000, false).unwrap(), 1);
        assert_eq!(store.counted_in_flight().unwrap(), 0);

        assert!(store.start_order("c", 1500, false).unwrap());
        assert!(store.start_order("a", 1500, true).unwrap());
        assert_eq!(ids(&store), ["b"]);
        assert_eq!(store.queue_position(&b, 2000, false).unwrap(), 0);
        assert_eq!(store.counted_in_flight().unwrap(), 1, "the exempt one is not counted");
        assert_eq!(
            store.event_times(EventKind::Order, 0, 10).unwrap(),
            [1500],
            "one counted start"
        );
        let c = store.order("c").unwrap().unwrap();
        assert_eq!(c.started, Some(1500));
        assert_eq!(c.expires, 1500 + 600, "the lifetime counts from the start");
        assert_eq!(
            store.started_orders().unwrap().len(),
            2,
            "started orders are resumed after a restart"
        );
        assert_eq!(store.processing_orders().unwrap().len(), 3);
    }

    #[test]
    fn renewals_are_recognised_and_may_pass_in_the_queue() {
        let store = Store::open_in_memory().unwrap();
        let mut first = order("v", "d1", 1000);
        first.hostname = "r.z.test".into();
        store.create_order(&first, 5).unwrap();
        store.start_order("v", 1000, false).unwrap();
        store.complete_order("v", "CHAIN", "01", 5000, None, 1010).unwrap();
        assert_eq!(store.current_chain("r.z.test", 4999).unwrap().as_deref(), Some("CHAIN"));
        assert_eq!(store.current_chain("r.z.test", 5000).unwrap(), None, "expired");

        store.create_order(&order("n", "d2", 1100), 5).unwrap();
        let mut renewal = order("r", "d1", 1200);
        renewal.hostname = "r.z.test".into();
        store.create_order(&renewal, 5).unwrap();
        let queue = store.queued_orders(2000).unwrap();
        assert_eq!(
            queue.iter().map(|q| (q.id.as_str(), q.renews)).collect::<Vec<_>>(),
            [("n", false), ("r", true)]
        );
        assert!(!store.queued_orders(6000).unwrap()[1].renews);
        let n = store.order("n").unwrap().unwrap();
        let mut late = order("z", "d3", 1300);
        late.hostname = "z.z.test".into();
        store.create_order(&late, 5).unwrap();
        assert_eq!(
            store.queue_position(&late, 2000, true).unwrap(),
            1,
            "the renewal is not counted"
        );
        assert_eq!(store.queue_position(&late, 2000, false).unwrap(), 2);
        assert_eq!(store.queue_position(&n, 2000, true).unwrap(), 0);
        // Pending orders of a hostname: not the device's own queued ones.
        assert_eq!(store.pending_for_hostname("r.z.test", "d1").unwrap(), 0);
        assert_eq!(store.pending_for_hostname("r.z.test", "d9").unwrap(), 1);
        store.start_order("r", 2000, true).unwrap();
        assert_eq!(store.pending_for_hostname("r.z.test", "d1").unwrap(), 1);
    }

    #[test]
    fn certificates_of_a_previous_issuer_are_not_replaced() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(
            store.set_issuer("local_ca").unwrap(),
            None,
            "earlier versions had the local CA"
        );
        store.create_order(&order("a", "d1", 1000), 5).unwrap();
        store.start_order("a", 1000, false).unwrap();
        store.complete_order("a", "PEM", "01", 9000, None, 1001).unwrap();
        let mut next = order("b", "d1", 2000);
        next.id = "b".into();
        store.create_order(&next, 5).unwrap();
        assert!(store.current_chain("h.z.test", 2000).unwrap().is_some());
        assert!(store.queued_orders(2000).unwrap()[0].renews);

        assert_eq!(
            store.set_issuer("acme https://ca/dir").unwrap().as_deref(),
            Some("local_ca")
        );
        assert_eq!(store.current_chain("h.z.test", 2000).unwrap(), None);
        assert!(
            !store.queued_orders(2000).unwrap()[0].renews,
            "counted against the budget"
        );
        assert_eq!(store.set_issuer("acme https://ca/dir").unwrap(), None, "unchanged");
        let fresh = Store::open_in_memory().unwrap();
        assert_eq!(
            fresh.set_issuer("acme https://ca/dir").unwrap(),
            None,
            "nothing issued yet"
        );
    }

    #[test]
    fn orders_of_the_same_second_queue_in_the_order_they_came() {
        // Ids are random: "z" came before "a" within one second.
        let store = Store::open_in_memory().unwrap();
        let first = order("z", "d1", 1000);
        let mut second = order("a", "d2", 1000);
        second.hostname = "a.z.test".into();
        store.create_order(&first, 5).unwrap();
        store.create_order(&second, 5).unwrap();
        let queue: Vec<String> = store.queued_orders(1000).unwrap().into_iter().map(|q| q.id).collect();
        assert_eq!(queue, ["z", "a"]);
        assert_eq!(store.queue_position(&first, 1000, false).unwrap(), 0);
        assert_eq!(store.queue_position(&second, 1000, false).unwrap(), 1);
    }

    #[test]
    fn order_lifecycle_and_its_events() {
        let store = Store::open_in_memory().unwrap();
        store.create_order(&order("a", "d1", 1000), 5).unwrap();
        store.create_order(&order("b", "d2", 1001), 5).unwrap();
        store.create_order(&order("c", "d3", 1001), 5).unwrap();
        assert_eq!(store.processing_orders().unwrap().len(), 3);
        store.start_order("a", 1000, false).unwrap();
        store.start_order("b", 1001, false).unwrap();
        store.start_order("c", 1001, true).unwrap();
        store
            .complete_order("a", "PEM", "3f0a", 5000, Some((3000, 3500)), 1010)
            .unwrap();
        store
            .fail_order("b", "issuanceFailed", "CA down", Some(60), true, 1020)
            .unwrap();
        store.complete_order("c", "PEM", "3f0b", 5000, None, 1030).unwrap();
        // A finished order does not change again, nor record events.
        store
            .fail_order("a", "issuanceFailed", "late", None, true, 1040)
            .unwrap();
        store.complete_order("b", "PEM", "3f0c", 5000, None, 1050).unwrap();
        let a = store.order("a").unwrap().unwrap();
        assert_eq!(a.status, OrderStatus::Valid);
        assert_eq!(a.chain.as_deref(), Some("PEM"));
        assert_eq!(a.renewal, Some((3000, 3500)));
        let b = store.order("b").unwrap().unwrap();
        assert_eq!(b.status, OrderStatus::Invalid);
        assert_eq!(b.error, Some(("issuanceFailed".into(), "CA down".into())));
        assert_eq!(b.retry_after, Some(60));
        assert!(store.processing_orders().unwrap().is_empty());
        assert_eq!(store.counted_in_flight().unwrap(), 0);
        assert_eq!(store.event_times(EventKind::Certificate, 0, 10).unwrap(), [1010]);
        assert_eq!(
            store
                .name_event_times(EventKind::NameCertificate, "h.z.test", 0, 10)
                .unwrap(),
            [1010, 1030],
            "renewals count per name"
        );
        assert_eq!(
            store
                .name_event_times(EventKind::ValidationFailure, "h.z.test", 0, 10)
                .unwrap(),
            [1020]
        );
        assert_eq!(store.renewal_for_serial("d1", "3f0a").unwrap(), Some((3000, 3500)));
        assert_eq!(store.renewal_for_serial("d2", "3f0a").unwrap(), None);
    }

    #[test]
    fn expired_orders_go_but_queued_ones_and_unexpired_certificates_stay() {
        let store = Store::open_in_memory().unwrap();
        for (id, device) in [("valid", "d1"), ("invalid", "d2"), ("queued", "d3"), ("old", "d4")] {
            store.create_order(&order(id, device, 1000), 5).unwrap();
        }
        store.start_order("valid", 1000, false).unwrap();
        store.complete_order("valid", "PEM", "01", 9000, None, 1000).unwrap();
        store.start_order("old", 1000, false).unwrap();
        store.complete_order("old", "PEM", "02", 1500, None, 1000).unwrap();
        store.start_order("invalid", 1000, false).unwrap();
        store
            .fail_order("invalid", "issuanceFailed", "x", None, false, 1000)
            .unwrap();
        assert_eq!(store.delete_expired_orders(2000).unwrap(), 2);
        assert!(store.order("old").unwrap().is_none());
        assert!(store.order("invalid").unwrap().is_none());
        assert!(store.order("queued").unwrap().is_some());
        assert!(store.order("valid").unwrap().is_some());
        assert_eq!(store.delete_expired_orders(9001).unwrap(), 1);
        assert!(store.order("queued").unwrap().is_some());
    }

    #[test]
    fn an_old_database_gets_the_queue_columns() {
        let dir = std::env::temp_dir().join(format!(
            "lancert-server-migrate-{}-{}",
            std::process::id(),
            crate::random::token::<6>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE orders (
                    id TEXT PRIMARY KEY, device TEXT NOT NULL, hostname TEXT NOT NULL, csr BLOB NOT NULL,
                    status TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL, chain TEXT,
                    serial TEXT, not_after INTEGER, renewal_start INTEGER, renewal_end INTEGER,
                    error_type TEXT, error_detail TEXT, retry_after INTEGER);
                 INSERT INTO orders (id, device, hostname, csr, status, created, expires)
                    VALUES ('p', 'd1', 'h', x'01', 'processing', 1000, 2000);",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let p = store.order("p").unwrap().unwrap();
        assert_eq!(
            p.started,
            Some(1000),
            "an order processing before the upgrade was started"
        );
        assert_eq!(store.started_orders().unwrap().len(), 1);
        drop(store);
        // Opening again leaves the columns alone.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.order("p").unwrap().unwrap().started, Some(1000));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
