//! The state directory: identity, last reported addresses, schedule.
