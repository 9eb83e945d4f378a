//! Validating an issued chain before install.
