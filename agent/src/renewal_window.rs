//! When a certificate is due.
