//! CSR building.
