//! Device rows and the enrollment transaction.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{begin_write, Store, StoreError};

/// Attempts at drawing a free random hostname before giving up (with 36^5
/// labels, a collision is already rare).
const LABEL_ATTEMPTS: usize = 32;

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device id, the JWS `kid`.
    pub id: String,
    /// Its fully qualified hostname.
    pub hostname: String,
    /// Identity key as an uncompressed SEC1 point.
    pub key_sec1: Vec<u8>,
    /// RFC 7638 thumbprint of the identity key.
    pub thumbprint: String,
    /// Enrollment time, Unix seconds.
    pub enrolled: i64,
    /// Whether the operator revoked it.
    pub revoked: bool,
    /// `agentVersion` sent at enrollment.
    pub agent_version: Option<String>,
}

/// A device about to be enrolled.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Fresh random id.
    pub id: String,
    /// Identity key as an uncompressed SEC1 point.
    pub key_sec1: Vec<u8>,
    /// Its RFC 7638 thumbprint.
    pub thumbprint: String,
    /// `agentVersion` from the request.
    pub agent_version: Option<String>,
}

/// Result of [`Store::enroll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// The device was created and the token consumed.
    Enrolled(Device),
    /// The token is unknown, used or expired; the text says which.
    BadToken(&'static str),
    /// The token's hostname belongs to another, non-revoked device.
    HostnameInUse(String),
    /// No free random hostname was found.
    NoFreeHostname,
}

const COLUMNS: &str = "id, hostname, key_sec1, thumbprint, enrolled, revoked, agent_version";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: row.get(0)?,
        hostname: row.get(1)?,
        key_sec1: row.get(2)?,
        thumbprint: row.get(3)?,
        enrolled: row.get(4)?,
        revoked: row.get::<_, i64>(5)? != 0,
        agent_version: row.get(6)?,
    })
}

fn hostname_known(tx: &Transaction<'_>, hostname: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE hostname = ?1) OR EXISTS (SELECT 1 FROM tokens WHERE hostname = ?1)",
        [hostname],
        |r| r.get(0),
    )
}

impl Store {
    /// Consumes the token with SHA-256 `token_hash` and creates the device,
    /// in one transaction. The hostname is the token's, or one drawn from
    /// `random_hostname` that no device or token has used.
    pub fn enroll(
        &self,
        token_hash: &[u8],
        new: &NewDevice,
        now: i64,
        random_hostname: &mut dyn FnMut() -> String,
    ) -> Result<EnrollOutcome, StoreError> {
        self.with("enrolling device", |conn| {
            let tx = begin_write(conn)?;
            let token: Option<(Option<String>, i64, Option<String>)> = tx
                .query_row(
                    "SELECT hostname, expires, used_by FROM tokens WHERE hash = ?1",
                    [token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let bound = match token {
                None => return Ok(EnrollOutcome::BadToken("unknown enrollment token")),
                Some((_, _, Some(_))) => return Ok(EnrollOutcome::BadToken("enrollment token already used")),
                Some((_, expires, None)) if expires <= now => {
                    return Ok(EnrollOutcome::BadToken("enrollment token expired"))
                }
                Some((hostname, _, None)) => hostname,
            };
            let hostname = match bound {
                Some(h) => {
                    let live: bool = tx.query_row(
                        "SELECT EXISTS (SELECT 1 FROM devices WHERE hostname = ?1 AND revoked = 0)",
                        [&h],
                        |r| r.get(0),
                    )?;
                    if live {
                        return Ok(EnrollOutcome::HostnameInUse(h));
                    }
                    h
                }
                None => {
                    let mut found = None;
                    for _ in 0..LABEL_ATTEMPTS {
                        let candidate = random_hostname();
                        if !hostname_known(&tx, &candidate)? {
                            found = Some(candidate);
                            break;
                        }
                    }
                    match found {
                        Some(h) => h,
                        None => return Ok(EnrollOutcome::NoFreeHostname),
                    }
                }
            };
            tx.execute(
                "INSERT INTO devices (id, hostname, key_sec1, thumbprint, enrolled, revoked, agent_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                params![new.id, hostname, new.key_sec1, new.thumbprint, now, new.agent_version],
            )?;
            tx.execute(
                "UPDATE tokens SET used_by = ?1, used_at = ?2 WHERE hash = ?3",
                params![new.id, now, token_hash],
            )?;
            tx.commit()?;
            Ok(EnrollOutcome::Enrolled(Device {
                id: new.id.clone(),
                hostname,
                key_sec1: new.key_sec1.clone(),
                thumbprint: new.thumbprint.clone(),
                enrolled: now,
                revoked: false,
                agent_version: new.agent_version.clone(),
            }))
        })
    }

    /// The device with id `id`.
    pub fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.with("reading device", |conn| {
            conn.query_row(&format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"), [id], from_row)
                .optional()
        })
    }

    /// The device whose identity key has this thumbprint.
    pub fn device_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Device>, StoreError> {
        self.with("reading device", |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM devices WHERE thumbprint = ?1"),
                [thumbprint],
                from_row,
            )
            .optional()
        })
    }

    /// Marks a device revoked; returns it, or `None` if there is no such
    /// device.
    pub fn revoke_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.with("revoking device", |conn| {
            conn.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [id])?;
            conn.query_row(&format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"), [id], from_row)
                .optional()
        })
    }

    /// Every device, oldest enrollment first.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.with("listing devices", |conn| {
            let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM devices ORDER BY enrolled, id"))?;
            let rows = stmt.query_map([], from_row)?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens;

    fn new_device(id: &str, thumb: &str) -> NewDevice {
        NewDevice {
            id: id.into(),
            key_sec1: vec![4; 65],
            thumbprint: thumb.into(),
            agent_version: Some("0.1.0".into()),
        }
    }

    fn mint(store: &Store, hostname: Option<&str>, now: i64, ttl: u64) -> Vec<u8> {
        let (texts, rows) = tokens::mint(1, hostname, now, ttl);
        store.insert_tokens(&rows).unwrap();
        tokens::hash(&texts[0])
    }

    #[test]
    fn token_is_used_once() {
        let store = Store::open_in_memory().unwrap();
        let hash = mint(&store, None, 0, 100);
        let mut label = || "abcde.z.test".to_string();
        let out = store.enroll(&hash, &new_device("d1", "t1"), 10, &mut label).unwrap();
        let EnrollOutcome::Enrolled(d) = out else {
            panic!("{out:?}")
        };
        assert_eq!(d.hostname, "abcde.z.test");
        assert_eq!(store.device("d1").unwrap().unwrap(), d);
        assert_eq!(store.device_by_thumbprint("t1").unwrap().unwrap().id, "d1");
        let again = store.enroll(&hash, &new_device("d2", "t2"), 11, &mut label).unwrap();
        assert_eq!(again, EnrollOutcome::BadToken("enrollment token already used"));
        assert!(store.device("d2").unwrap().is_none());
    }

    #[test]
    fn unknown_and_expired_tokens_are_refused() {
        let store = Store::open_in_memory().unwrap();
        let mut label = || "abcde.z.test".to_string();
        let out = store.enroll(&[0; 32], &new_device("d1", "t1"), 10, &mut label).unwrap();
        assert_eq!(out, EnrollOutcome::BadToken("unknown enrollment token"));
        let hash = mint(&store, None, 0, 100);
        let out = store.enroll(&hash, &new_device("d1", "t1"), 100, &mut label).unwrap();
        assert_eq!(out, EnrollOutcome::BadToken("enrollment token expired"));
    }

    #[test]
    fn random_names_avoid_taken_ones() {
        let store = Store::open_in_memory().unwrap();
        mint(&store, Some("taken.z.test"), 0, 100);
        let h1 = mint(&store, None, 0, 100);
        let mut names = vec!["fresh.z.test", "taken.z.test"];
        let mut next = || names.pop().unwrap().to_string();
        let EnrollOutcome::Enrolled(d) = store.enroll(&h1, &new_device("d1", "t1"), 1, &mut next).unwrap() else {
            panic!()
        };
        assert_eq!(d.hostname, "fresh.z.test");
        let h2 = mint(&store, None, 0, 100);
        let out = store
            .enroll(&h2, &new_device("d2", "t2"), 1, &mut || "fresh.z.test".to_string())
            .unwrap();
        assert_eq!(out, EnrollOutcome::NoFreeHostname);
    }

    #[test]
    fn bound_hostname_passes_to_a_replacement_after_revocation() {
        let store = Store::open_in_memory().unwrap();
        let mut unused = || unreachable!();
        let h1 = mint(&store, Some("box.z.test"), 0, 100);
        let h2 = mint(&store, Some("box.z.test"), 0, 100);
        assert!(matches!(
            store.enroll(&h1, &new_device("d1", "t1"), 1, &mut unused).unwrap(),
            EnrollOutcome::Enrolled(_)
        ));
        assert_eq!(
            store.enroll(&h2, &new_device("d2", "t2"), 1, &mut unused).unwrap(),
            EnrollOutcome::HostnameInUse("box.z.test".into())
        );
        assert!(store.revoke_device("d1").unwrap().unwrap().revoked);
        let EnrollOutcome::Enrolled(d2) = store.enroll(&h2, &new_device("d2", "t2"), 2, &mut unused).unwrap() else {
            panic!()
        };
        assert_eq!(d2.hostname, "box.z.test");
        assert_eq!(store.devices().unwrap().len(), 2);
        assert!(store.revoke_device("nope").unwrap().is_none());
    }

    /// The failure CI met: an admin command mints a token (in its own
    /// process, on its own connection) while the server is inside an
    /// enrollment that has read but not yet written. The enrollment must
    /// wait for the lock, not fail with "database is locked".
    #[test]
    fn enrollment_and_a_concurrent_token_mint_both_succeed() {
        let dir = crate::issuer::local_ca::tests::temp_dir("store-race");
        let path = dir.join("server.db");
        let server = Store::open(&path).unwrap();
        let hash = mint(&server, None, 0, 100);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut minter = None;
        let mut label = || {
            // Called between the enrollment's first read and its first
            // write: the admin command commits now if it can. Holding the
            // write lock, the enrollment makes it wait; without it, the
            // mint commits within the 300 ms and the enrollment's write
            // then finds its snapshot stale.
            let (path, done_tx) = (path.clone(), done_tx.clone());
            minter = Some(std::thread::spawn(move || {
                let admin = Store::open(&path).unwrap();
                let (_, rows) = tokens::mint(1, None, 0, 100);
                let result = admin.insert_tokens(&rows);
                let _ = done_tx.send(());
                result
            }));
            let _ = done_rx.recv_timeout(std::time::Duration::from_millis(300));
            "racy.z.test".to_string()
        };
        let out = server.enroll(&hash, &new_device("d1", "t1"), 1, &mut label);
        assert!(matches!(out, Ok(EnrollOutcome::Enrolled(_))), "{out:?}");
        let minted = minter.expect("the enrollment drew a name").join().unwrap();
        assert!(minted.is_ok(), "{minted:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
