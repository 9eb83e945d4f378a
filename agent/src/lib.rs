//! The lancert device agent as a library: every step of the cycle is a
//! module named for it, and the daemon loop can be driven one iteration at a
//! time by tests. `main.rs` only parses arguments and maps results to exit
//! codes.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod error;
pub mod config;
pub mod cli;
pub mod logger;
pub mod clock;
pub mod state;
pub mod atomic;
pub mod identity;
pub mod trust;
pub mod client;
pub mod netlink;
pub mod addresses;
pub mod signals;
pub mod lock;
pub mod wakeup;
pub mod certificate;
pub mod keygen;
pub mod csr;
pub mod validate;
pub mod install;
pub mod reload;
pub mod self_signed;
pub mod renewal_window;
pub mod schedule;
pub mod check;
pub mod renew;
pub mod provision;
pub mod report;
pub mod status;
pub mod daemon;
