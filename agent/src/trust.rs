//! Trust anchors.
