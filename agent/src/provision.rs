//! Factory provisioning.
