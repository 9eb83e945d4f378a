//! The last status report of each device.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// A stored status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The report as received: a JSON object.
    pub payload: String,
    /// When it was received, Unix seconds.
    pub received: i64,
}

impl Store {
    /// Replaces the device's last report.
    pub fn save_report(&self, device: &str, payload: &str, now: i64) -> Result<(), StoreError> {
        self.with("saving status report", |conn| {
            conn.execute(
                "INSERT INTO reports (device, payload, received) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device) DO UPDATE SET payload = excluded.payload, received = excluded.received",
                params![device, payload, now],
            )
            .map(|_| ())
        })
    }

    /// The device's last report.
    pub fn report(&self, device: &str) -> Result<Option<Report>, StoreError> {
        self.with("reading status report", |conn| {
            conn.query_row(
                "SELECT payload, received FROM reports WHERE device = ?1",
                [device],
                |r| {
                    Ok(Report {
                        payload: r.get(0)?,
                        received: r.get(1)?,
                    })
                },
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_report_wins() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.report("d1").unwrap(), None);
        store.save_report("d1", r#"{"a":1}"#, 5).unwrap();
        store.save_report("d1", r#"{"a":2}"#, 6).unwrap();
        let r = store.report("d1").unwrap().unwrap();
        assert_eq!((r.payload.as_str(), r.received), (r#"{"a":2}"#, 6));
    }
}
