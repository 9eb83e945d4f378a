//! The server's CSR parsing and order policy (`csr_check::parse`, `check`)
//! on a DER CSR.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lancert_server::fuzzing::csr(data));
