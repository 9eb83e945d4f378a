//! Address detection.
