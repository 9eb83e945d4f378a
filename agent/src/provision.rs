//! Factory provisioning: `agent provision --server URL --token TOKEN`.
//!
//! The identity key is generated here, on the device, and never leaves it.
//! The steps are ordered so that any interruption can simply be re-run: the
//! key is written first (O_EXCL, 0600), then the enrollment is sent (the
//! server answers an already enrolled key with its existing device, without
//! consuming the token), then `device.json` is written. A device that is
//! already enrolled is left untouched.

use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use crate::identity;
use crate::state::{Enrollment, StateDir};

/// What provisioning did.
#[derive(Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// The device was enrolled now.
    Enrolled(Enrollment),
    /// The device was already enrolled; nothing changed.
    AlreadyEnrolled(Enrollment),
}

/// Enrolls the device with `server` using the one-time `token`.
pub fn provision(config: &Config, server: &str, token: &str) -> Result<Provisioned> {
    let dir = StateDir::new(&config.state_dir);
    if let (Some(e), Some(_)) = (
        dir.enrollment()?,
        identity::load(&dir.identity_key(), "the identity key")?,
    ) {
        return Ok(Provisioned::AlreadyEnrolled(e));
    }
    dir.create()?;
    let key = match identity::load(&dir.identity_key(), "the identity key")? {
        Some(k) => k,
        None => identity::create(&dir.identity_key(), "the identity key")?,
    };
    let mut client = Client::new(server, config.server_ca.as_deref(), config.http_timeout)?;
    let (device, hostname) = client.enroll(&key, token)?;
    let enrollment = Enrollment {
        device,
        hostname,
        server: server.trim_end_matches('/').to_string(),
    };
    dir.save_enrollment(&enrollment)?;
    Ok(Provisioned::Enrolled(enrollment))
}
