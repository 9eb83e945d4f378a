//! Certificate key generation.
