//! One full check.
