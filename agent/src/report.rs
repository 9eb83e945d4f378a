//! Status reports.
