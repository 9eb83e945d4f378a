//! The embedded zone: records kept in the server's SQLite database. The
//! `records` command prints them; an operator (or a later DNS frontend)
//! serves them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rusqlite::params;

use super::{DnsBackend, DnsError, Record, RecordType};
use crate::store::Store;
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
                let tx = conn.transaction()?;
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
                tx.commit()
            })
            .map_err(|e| DnsError(e.to_string()))
    }

    fn list(&self, name: Option<&str>) -> Result<Vec<Record>, DnsError> {
        let rows: Vec<(String, String, String)> = self
            .store
            .with("listing records", |conn| {
                let mut stmt = conn.prepare(
                    "SELECT name, type, value FROM records WHERE ?1 IS NULL OR name = ?1
                     ORDER BY name, CASE type WHEN 'A' THEN 0 WHEN 'AAAA' THEN 1 ELSE 2 END, position",
                )?;
                let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect()
            })
            .map_err(|e| DnsError(e.to_string()))?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, t, value)| RecordType::parse(&t).map(|rtype| Record { name, rtype, value }))
            .collect())
    }
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
}
