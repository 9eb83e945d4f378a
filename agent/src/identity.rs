//! The device identity key and enrollment record.
