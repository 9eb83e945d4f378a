//! The lancert device agent as a library: every step of the cycle is a
//! module named for it, and the daemon loop can be driven one iteration at a
//! time by tests. `main.rs` only parses arguments and maps results to exit
//! codes.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod addresses;
pub mod atomic;
pub mod certificate;
pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod csr;
pub mod daemon;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod identity;
pub mod install;
pub mod keygen;
pub mod lock;
pub mod logger;
pub mod netlink;
pub mod notify;
pub mod provision;
pub mod reload;
pub mod renew;
pub mod renewal_window;
pub mod report;
pub mod schedule;
pub mod self_signed;
pub mod signals;
pub mod state;
pub mod status;
pub mod trust;
pub mod validate;
pub mod wakeup;
