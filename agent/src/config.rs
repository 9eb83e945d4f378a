//! Configuration file: parsing and validation.
