//! The check lock.
