//! The embedded zone: records kept in the server's SQLite database, with the
//! zone's SOA serial beside them. The `records` command prints them; the
//! [`super::authoritative`] server (or an operator's own) serves them.
//!
//! The serial changes in the same transaction as the records, and only when
//! they really change, so secondaries and caches see a new serial exactly
//! when there is something new to fetch (RFC 1034 §4.3.5).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::{DnsBackend, DnsError, Record, RecordType};
use crate::store::{begin_write, Store, StoreError};
use crate::BoxFuture;

/// Records in the `records` table.
pub struct SqliteZone {
    store: Arc<Store>,
}

impl SqliteZone {
    /// A zone in `store`.
    pub fn new(store: Arc<Store>) -> SqliteZone {
        SqliteZone { store }
    }

    fn replace(&self, name: &str, types: &[RecordType], values: &[(RecordType, String)]) -> Result<(), DnsError> {
        self.store
            .with("replacing records", |conn| {
                let tx = begin_write(conn)?;
                let before = record_set(&tx, name)?;
                for t in types {
                    tx.execute(
                        "DELETE FROM records WHERE name = ?1 AND type = ?2",
                        params![name, t.as_str()],
                    )?;
                }
                for (pos, (t, v)) in values.iter().enumerate() {
                    tx.execute(
                        "INSERT OR IGNORE INTO records (name, type, value, position) VALUES (?1, ?2, ?3, ?4)",
                        params![name, t.as_str(), v, pos as i64],
                    )?;
                }
                // A no-op update (the agent republishing the same addresses)
                // must not make secondaries transfer the zone again.
                if record_set(&tx, name)? != before {
                    bump_serial(&tx)?;
                }
                tx.commit()
            })
            .map_err(|e| DnsError(e.to_string()))
    }

    fn list(&self, name: Option<&str>) -> Result<Vec<Record>, DnsError> {
        self.store
            .with("listing records", |conn| select_records(conn, name))
            .map_err(|e| DnsError(e.to_string()))
    }
}

/// What the zone holds at one name, for the DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The name's own records, in [`SqliteZone`]'s listing order.
    pub(crate) records: Vec<Record>,
    /// Whether the name exists: it has records, or a name below it has
    /// (an empty non-terminal such as `host.zone` when only
    /// `_acme-challenge.host.zone` has a TXT record: RFC 4592 §2.2.2).
    pub(crate) exists: bool,
}

impl Store {
    /// The zone's SOA serial. The first call on a new database stores the
    /// current Unix time (modulo 2^32), so a zone recreated from scratch
    /// starts ahead of the serial its secondaries last saw (unless the old
    /// zone changed more than once a second on average); from then on it
    /// grows by one per change of the records (RFC 1982 serial arithmetic,
    /// wrapping).
    pub fn zone_serial(&self) -> Result<u32, StoreError> {
        self.with("reading the zone serial", |conn| current_serial(conn))
    }

    /// The records at `name` (lowercase, no trailing dot) and whether the
    /// name exists.
    pub(crate) fn zone_node(&self, name: &str) -> Result<Node, StoreError> {
        self.with("looking up a zone name", |conn| {
            let records = select_records(conn, Some(name))?;
            let exists = !records.is_empty()
                || conn.query_row(
                    "SELECT EXISTS(SELECT 1 FROM records WHERE substr(name, -?2) = ?1)",
                    params![format!(".{name}"), name.len() as i64 + 1],
                    |r| r.get::<_, bool>(0),
                )?;
            Ok(Node { records, exists })
        })
    }
}

/// The records of `name`, or of the whole zone; sorted by name, then type,
/// then publication order. Rows of an unknown type are skipped.
fn select_records(conn: &Connection, name: Option<&str>) -> rusqlite::Result<Vec<Record>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, type, value FROM records WHERE ?1 IS NULL OR name = ?1
         ORDER BY name, CASE type WHEN 'A' THEN 0 WHEN 'AAAA' THEN 1 ELSE 2 END, position",
    )?;
    let rows = stmt.query_map([name], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (name, t, value) = row?;
        if let Some(rtype) = RecordType::parse(&t) {
            records.push(Record { name, rtype, value });
        }
    }
    Ok(records)
}

/// The (type, value) pairs at `name`, sorted: what a change is judged by
/// (order within a set does not matter to DNS).
fn record_set(conn: &Connection, name: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT type, value FROM records WHERE name = ?1 ORDER BY type, value")?;
    let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The stored serial, created from the clock if there is none yet.
fn current_serial(conn: &Connection) -> rusqlite::Result<u32> {
    // Read first: the common case must not take SQLite's write lock.
    let stored = conn
        .query_row("SELECT serial FROM zone WHERE id = 1", [], |r| r.get::<_, u32>(0))
        .optional()?;
    if let Some(serial) = stored {
        return Ok(serial);
    }
    // Truncating to 32 bits is the wrap-around of RFC 1982 serial numbers.
    let initial = crate::clock::now() as u32;
    conn.execute("INSERT OR IGNORE INTO zone (id, serial) VALUES (1, ?1)", [initial])?;
    conn.query_row("SELECT serial FROM zone WHERE id = 1", [], |r| r.get(0))
}

/// Adds one to the serial (RFC 1982 §3.1: wrapping at 2^32).
fn bump_serial(conn: &Connection) -> rusqlite::Result<()> {
    let next = current_serial(conn)?.wrapping_add(1);
    conn.execute("UPDATE zone SET serial = ?1 WHERE id = 1", [next])?;
    Ok(())
}

impl DnsBackend for SqliteZone {
    fn set_addresses<'a>(
        &'a self,
        hostname: &'a str,
        ipv4: &'a [Ipv4Addr],
        ipv6: &'a [Ipv6Addr],
    ) -> BoxFuture<'a, Result<(), DnsError>> {
        let values: Vec<(RecordType, String)> = ipv4
            .iter()
            .map(|a| (RecordType::A, a.to_string()))
            .chain(ipv6.iter().map(|a| (RecordType::Aaaa, a.to_string())))
            .collect();
        let result = self.replace(hostname, &[RecordType::A, RecordType::Aaaa], &values);
        Box::pin(std::future::ready(result))
    }

    fn set_txt<'a>(&'a self, name: &'a str, values: &'a [String]) -> BoxFuture<'a, Result<(), DnsError>> {
        let values: Vec<(RecordType, String)> = values.iter().map(|v| (RecordType::Txt, v.clone())).collect();
        let result = self.replace(name, &[RecordType::Txt], &values);
        Box::pin(std::future::ready(result))
    }

    fn records<'a>(&'a self, name: Option<&'a str>) -> BoxFuture<'a, Result<Vec<Record>, DnsError>> {
        Box::pin(std::future::ready(self.list(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: BoxFuture<'_, T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn addresses_replace_and_list_in_order() {
        let zone = SqliteZone::new(Arc::new(Store::open_in_memory().unwrap()));
        let v4 = ["10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        let v6 = ["fd00::1".parse().unwrap()];
        block(zone.set_addresses("a.z.test", &v4, &v6)).unwrap();
        block(zone.set_addresses("b.z.test", &v4[..1], &[])).unwrap();
        block(zone.set_txt("_acme-challenge.a.z.test", &["tok".to_string()])).unwrap();
        let a = block(zone.records(Some("a.z.test"))).unwrap();
        let values: Vec<_> = a.iter().map(|r| (r.rtype.as_str(), r.value.as_str())).collect();
        assert_eq!(values, [("A", "10.0.0.2"), ("A", "10.0.0.1"), ("AAAA", "fd00::1")]);
        assert_eq!(block(zone.records(None)).unwrap().len(), 5);

        block(zone.set_addresses("a.z.test", &[], &v6)).unwrap();
        let a = block(zone.records(Some("a.z.test"))).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].to_json()["type"], "AAAA");
        assert_eq!(
            block(zone.records(Some("b.z.test"))).unwrap().len(),
            1,
            "others untouched"
        );
    }

    #[test]
    fn serial_starts_at_the_clock_and_moves_only_when_records_change() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let zone = SqliteZone::new(store.clone());
        let earliest = crate::clock::now() as u32;
        let s0 = store.zone_serial().unwrap();
        assert!(s0 >= earliest && s0 <= crate::clock::now() as u32, "{s0} vs {earliest}");
        assert_eq!(store.zone_serial().unwrap(), s0, "reading does not bump");

        let v4: [Ipv4Addr; 2] = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        block(zone.set_addresses("a.z.test", &v4, &[])).unwrap();
        assert_eq!(store.zone_serial().unwrap(), s0.wrapping_add(1));
        block(zone.set_addresses("a.z.test", &v4, &[])).unwrap();
        assert_eq!(store.zone_serial().unwrap(), s0.wrapping_add(1), "same records again");
        block(zone.set_addresses("a.z.test", &[v4[1], v4[0]], &[])).unwrap();
        assert_eq!(
            store.zone_serial().unwrap(),
            s0.wrapping_add(1),
            "same set, other order"
        );
        block(zone.set_txt("a.z.test", &[])).unwrap();
        assert_eq!(store.zone_serial().unwrap(), s0.wrapping_add(1), "removing nothing");

        block(zone.set_txt("_acme-challenge.a.z.test", &["v".to_string()])).unwrap();
        assert_eq!(store.zone_serial().unwrap(), s0.wrapping_add(2));
        block(zone.set_addresses("a.z.test", &v4[..1], &[])).unwrap();
        assert_eq!(store.zone_serial().unwrap(), s0.wrapping_add(3));
        block(zone.set_txt("_acme-challenge.a.z.test", &[])).unwrap();
        assert_eq!(store.zone_serial().unwrap(), s0.wrapping_add(4));
    }

    #[test]
    fn serial_wraps_and_is_created_by_the_first_change() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let zone = SqliteZone::new(store.clone());
        let earliest = crate::clock::now() as u32;
        block(zone.set_txt("t.z.test", &["x".to_string()])).unwrap();
        let s = store.zone_serial().unwrap();
        assert!(s > earliest && s <= (crate::clock::now() as u32).wrapping_add(1), "{s}");

        store
            .with("test", |c| c.execute("UPDATE zone SET serial = ?1", [u32::MAX]))
            .unwrap();
        block(zone.set_txt("t.z.test", &["y".to_string()])).unwrap();
        assert_eq!(store.zone_serial().unwrap(), 0);
    }

    #[test]
    fn node_exists_with_records_or_descendants_only() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let zone = SqliteZone::new(store.clone());
        block(zone.set_txt("_acme-challenge.host.z.test", &["tok".to_string()])).unwrap();
        block(zone.set_addresses("b.z.test", &["10.0.0.1".parse().unwrap()], &[])).unwrap();

        let leaf = store.zone_node("_acme-challenge.host.z.test").unwrap();
        assert!(leaf.exists);
        assert_eq!(leaf.records.len(), 1);
        let b = store.zone_node("b.z.test").unwrap();
        assert!(b.exists);
        assert_eq!(b.records[0].value, "10.0.0.1");

        let empty_non_terminal = store.zone_node("host.z.test").unwrap();
        assert!(empty_non_terminal.exists && empty_non_terminal.records.is_empty());
        assert!(store.zone_node("z.test").unwrap().exists);
        // A suffix that does not end at a label boundary is no descendant.
        assert!(!store.zone_node("ost.z.test").unwrap().exists);
        assert!(!store.zone_node("other.z.test").unwrap().exists);
        assert!(!store.zone_node("x.b.z.test").unwrap().exists);
    }
}
