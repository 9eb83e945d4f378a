//! A downloaded PEM chain: parsing and inspection (`agent::certificate`)
//! and validation (`agent::validate::validate`) against the fixed trust
//! anchor of the seed chains, `fixtures/root.pem`.
#![no_main]

use std::sync::OnceLock;

use agent::trust::TrustAnchors;

fn anchors() -> &'static TrustAnchors {
    static ANCHORS: OnceLock<TrustAnchors> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        TrustAnchors::from_pem(include_bytes!("../fixtures/root.pem"))
            .unwrap_or_else(|e| panic!("fixtures/root.pem: {e}"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::fuzzing::chain(data, anchors()));
