//! Jitter, splay and backoff.
