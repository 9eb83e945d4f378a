//! The lancert device agent as a library: every step of the cycle is a
//! module named for it, and the daemon loop can be driven one iteration at a
//! time by tests. `main.rs` only parses arguments and maps results to exit
//! codes.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod error;
