//! The management-server client.
