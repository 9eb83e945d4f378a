//! The renewal order flow.
