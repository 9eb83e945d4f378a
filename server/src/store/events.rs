//! What the server asked of the CA and when (`ca_events`): the record the
//! issuance budget ([`crate::budget`]) counts its sliding windows over. Rows
//! are written in the same transaction as the order change they stem from
//! (see `orders.rs`), and pruned once older than every window.

use rusqlite::{params, Connection};

use super::{Store, StoreError};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A CA order counted against the budget started (exempt renewals are
    /// not recorded).
    Order,
    /// A certificate counted against the budget was issued.
    Certificate,
    /// A certificate was issued for the hostname, renewals included (the
    /// `per_name` limit).
    NameCertificate,
    /// The CA failed to validate the hostname (the `failures_per_name`
    /// limit).
    ValidationFailure,
}

impl EventKind {
    /// The name stored in `ca_events.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Order => "order",
            EventKind::Certificate => "certificate",
            EventKind::NameCertificate => "name_certificate",
            EventKind::ValidationFailure => "validation_failure",
        }
    }
}

/// Records an event inside the caller's transaction.
pub(super) fn insert(conn: &Connection, kind: EventKind, hostname: &str, at: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ca_events (kind, hostname, at) VALUES (?1, ?2, ?3)",
        params![kind.as_str(), hostname, at],
    )
    .map(|_| ())
}

fn times(rows: rusqlite::Result<Vec<i64>>) -> rusqlite::Result<Vec<i64>> {
    rows.map(|mut v| {
        v.reverse();
        v
    })
}

impl Store {
    /// Records an event on its own (events that go with an order change are
    /// recorded by that change).
    pub fn record_event(&self, kind: EventKind, hostname: &str, at: i64) -> Result<(), StoreError> {
        self.with("recording CA event", |conn| insert(conn, kind, hostname, at))
    }

    /// Times of the newest `max` events of `kind` after `since`, oldest
    /// first (a limit of `max` never needs more).
    pub fn event_times(&self, kind: EventKind, since: i64, max: u32) -> Result<Vec<i64>, StoreError> {
        self.with("reading CA events", |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT at FROM ca_events WHERE kind = ?1 AND at > ?2 ORDER BY at DESC LIMIT ?3")?;
            let rows = stmt.query_map(params![kind.as_str(), since, max], |r| r.get(0))?;
            times(rows.collect())
        })
    }

    /// Like [`Store::event_times`], for one hostname.
    pub fn name_event_times(
        &self,
        kind: EventKind,
        hostname: &str,
        since: i64,
        max: u32,
    ) -> Result<Vec<i64>, StoreError> {
        self.with("reading CA events of a hostname", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at FROM ca_events WHERE kind = ?1 AND hostname = ?2 AND at > ?3
                 ORDER BY at DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![kind.as_str(), hostname, since, max], |r| r.get(0))?;
            times(rows.collect())
        })
    }

    /// Deletes events from before `before`; returns how many.
    pub fn prune_events(&self, before: i64) -> Result<usize, StoreError> {
        self.with("pruning CA events", |conn| {
            conn.execute("DELETE FROM ca_events WHERE at < ?1", [before])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_by_kind_name_and_time_and_pruned() {
        let store = Store::open_in_memory().unwrap();
        for (kind, host, at) in [
            (EventKind::Order, "a", 100),
            (EventKind::Order, "b", 105),
            (EventKind::Order, "a", 110),
            (EventKind::Certificate, "a", 120),
            (EventKind::NameCertificate, "a", 120),
            (EventKind::ValidationFailure, "b", 130),
        ] {
            store.record_event(kind, host, at).unwrap();
        }
        assert_eq!(store.event_times(EventKind::Order, 0, 10).unwrap(), [100, 105, 110]);
        assert_eq!(store.event_times(EventKind::Order, 100, 10).unwrap(), [105, 110]);
        assert_eq!(store.event_times(EventKind::Order, 0, 2).unwrap(), [105, 110], "newest");
        assert_eq!(
            store.name_event_times(EventKind::Order, "a", 0, 10).unwrap(),
            [100, 110]
        );
        assert_eq!(
            store
                .name_event_times(EventKind::ValidationFailure, "b", 0, 10)
                .unwrap(),
            [130]
        );
        assert!(store
            .name_event_times(EventKind::NameCertificate, "b", 0, 10)
            .unwrap()
            .is_empty());
        assert_eq!(store.prune_events(110).unwrap(), 2);
        assert_eq!(store.event_times(EventKind::Order, 0, 10).unwrap(), [110]);
    }
}
