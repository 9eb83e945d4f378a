//! The server's verification of a device's signed request
//! (`request_auth::Verifier::verify` and the protocol crate's JWS code),
//! then the endpoint's payload checks; see `lancert_server::fuzzing::request`
//! for the input's form.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lancert_server::fuzzing::request(data));
