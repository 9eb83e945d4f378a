//! The daemon loop.
