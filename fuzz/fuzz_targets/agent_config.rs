//! The agent's configuration parser over arbitrary bytes
//! (`Config::parse_bytes`, what `Config::load` runs on the file).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::fuzzing::config(data));
