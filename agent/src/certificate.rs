//! Inspecting installed certificates.
