//! First-boot self-signed certificate.
