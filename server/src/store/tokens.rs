//! Enrollment token rows. Tokens are stored as SHA-256 hashes only, so a
//! copy of the database does not let anyone enroll.

use rusqlite::params;

use super::{begin_write, Store, StoreError};

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// SHA-256 of the token text.
    pub hash: Vec<u8>,
    /// The hostname bound to it, if any.
    pub hostname: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds; the token is refused from then on.
    pub expires: i64,
}

impl Store {
    /// Stores freshly minted tokens, all or none.
    pub fn insert_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError> {
        self.with("storing tokens", |conn| {
            let tx = begin_write(conn)?;
            {
                let mut stmt =
                    tx.prepare("INSERT INTO tokens (hash, hostname, created, expires) VALUES (?1, ?2, ?3, ?4)")?;
                for t in tokens {
                    stmt.execute(params![t.hash, t.hostname, t.created, t.expires])?;
                }
            }
            tx.commit()
        })
    }

    /// Deletes tokens that expired before `before` and were never used.
    pub fn delete_expired_tokens(&self, before: i64) -> Result<usize, StoreError> {
        self.with("deleting expired tokens", |conn| {
            conn.execute("DELETE FROM tokens WHERE used_by IS NULL AND expires < ?1", [before])
        })
    }
}
