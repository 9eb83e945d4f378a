//! Atomic file replacement.
