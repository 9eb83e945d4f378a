//! Logging to stderr with syslog priority prefixes.
