//! The server's SQLite database: enrollment tokens, devices, orders, status
//! reports and (for the embedded DNS backend) zone records.
//!
//! One connection behind a mutex. Every statement is short (point lookups
//! and single-row writes), so handlers run them inline rather than on a
//! blocking pool. WAL mode and a busy timeout let the admin commands
//! (`lancert-server devices`, `token`, ...) use the same file while the server
//! runs. Every transaction that writes begins with the write lock
//! (`begin_write`), so the busy timeout covers it from its first statement.

mod devices;
mod events;
mod orders;
mod reports;
mod tokens;

pub use devices::{Device, EnrollOutcome, NewDevice};
pub use events::EventKind;
pub use orders::{Order, OrderStatus, QueuedOrder, Reservation};
pub use reports::Report;
pub use tokens::NewToken;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// How long a statement waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Begins a transaction that will write, taking the write lock at once
/// (`BEGIN IMMEDIATE`).
///
/// A deferred transaction that reads first and writes later cannot wait for
/// the lock: in WAL mode, when another process (an admin command minting a
/// token) committed after its first read, SQLite answers `SQLITE_BUSY` at once
/// instead of honouring the busy timeout, since waiting could not make the
/// transaction's snapshot current again. Taking the lock up front makes the
/// timeout apply.
pub(crate) fn begin_write(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// A database failure, with what was being done.
#[derive(Debug)]
pub struct StoreError {
    context: String,
    source: rusqlite::Error,
}

impl StoreError {
    fn new(context: impl Into<String>, source: rusqlite::Error) -> StoreError {
        StoreError {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database: {}: {}", self.context, self.source)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The database.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    hash     BLOB PRIMARY KEY,   -- SHA-256 of the token; the token itself is never stored
    hostname TEXT,               -- bound hostname, or NULL for a random one
    created  INTEGER NOT NULL,
    expires  INTEGER NOT NULL,
    used_by  TEXT,               -- device id once consumed
    used_at  INTEGER
);
CREATE TABLE IF NOT EXISTS devices (
    id            TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    key_sec1      BLOB NOT NULL,         -- identity key, uncompressed SEC1 point
    thumbprint    TEXT NOT NULL UNIQUE,  -- RFC 7638 thumbprint of the identity key
    enrolled      INTEGER NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0,
    agent_version TEXT
);
-- A hostname belongs to at most one live device; a revoked device's name can
-- be given to its replacement (token bound to the same hostname).
CREATE UNIQUE INDEX IF NOT EXISTS devices_live_hostname ON devices(hostname) WHERE revoked = 0;
CREATE TABLE IF NOT EXISTS orders (
    id            TEXT PRIMARY KEY,      -- also the certificate id
    device        TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    csr           BLOB NOT NULL,
    status        TEXT NOT NULL,         -- processing | valid | invalid
    created       INTEGER NOT NULL,
    expires       INTEGER NOT NULL,
    chain         TEXT,
    serial        TEXT,                  -- lowercase hex, no leading zero bytes
    not_after     INTEGER,
    renewal_start INTEGER,
    renewal_end   INTEGER,
    error_type    TEXT,                  -- problem type name, e.g. issuanceFailed
    error_detail  TEXT,
    retry_after   INTEGER,
    started       INTEGER,               -- NULL while queued (waiting for the issuance budget)
    exempt        INTEGER NOT NULL DEFAULT 0, -- 1: a renewal not counted against the budget
    same_issuer   INTEGER NOT NULL DEFAULT 1  -- 0: issued by a CA the server no longer uses (no ARI replaces)
);
CREATE INDEX IF NOT EXISTS orders_device_created ON orders(device, created);
CREATE INDEX IF NOT EXISTS orders_status ON orders(status);
CREATE INDEX IF NOT EXISTS orders_hostname_status ON orders(hostname, status);
-- What the server asked of the CA, for the issuance budget's sliding windows.
CREATE TABLE IF NOT EXISTS ca_events (
    kind     TEXT NOT NULL,              -- order | certificate | name_certificate | validation_failure
    hostname TEXT NOT NULL,
    at       INTEGER NOT NULL            -- Unix seconds
);
CREATE INDEX IF NOT EXISTS ca_events_kind_at ON ca_events(kind, at);
CREATE INDEX IF NOT EXISTS ca_events_kind_hostname_at ON ca_events(kind, hostname, at);
CREATE TABLE IF NOT EXISTS reports (
    device   TEXT PRIMARY KEY,
    payload  TEXT NOT NULL,              -- the last report, as received (JSON object)
    received INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    name     TEXT NOT NULL,
    type     TEXT NOT NULL,              -- A | AAAA | TXT
    value    TEXT NOT NULL,
    position INTEGER NOT NULL,           -- order within the set, as published
    PRIMARY KEY (name, type, value)
);
-- The zone's SOA serial (one row), bumped whenever `records` changes.
CREATE TABLE IF NOT EXISTS zone (id INTEGER PRIMARY KEY CHECK (id = 1), serial INTEGER NOT NULL);
";

/// The issuer the orders' certificates come from (`Store::set_issuer`).
const ISSUER_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS issuer (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL);";

impl Store {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::new(format!("opening {}", path.display()), e))?;
        Store::init(conn, path)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| StoreError::new("opening in-memory database", e))?;
        Store::init(conn, Path::new(":memory:"))
    }

    fn init(conn: Connection, path: &Path) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| StoreError::new("setting busy timeout", e))?;
        // journal_mode returns a row, so it is queried rather than executed.
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(|e| StoreError::new("enabling WAL", e))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| StoreError::new("setting pragmas", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| StoreError::new("creating schema", e))?;
        orders::migrate(&conn).map_err(|e| StoreError::new("adding the order queue columns", e))?;
        conn.execute_batch(ISSUER_SCHEMA)
            .map_err(|e| StoreError::new("creating the issuer table", e))?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection; errors get `context`.
    pub fn with<T>(
        &self,
        context: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves SQLite consistent (every
        // multi-statement change is a transaction), so poisoning is ignored.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| StoreError::new(context, e))
    }
}
