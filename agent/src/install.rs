//! Atomic install with backup and rollback.
