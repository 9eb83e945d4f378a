//! agent status.
