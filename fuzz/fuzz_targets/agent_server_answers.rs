//! The agent's parsing of the server's answers: directory, enrollment,
//! order objects, renewal windows, problem documents, `Retry-After` and
//! `Replay-Nonce` (`agent::client`), and the renewal decision on a window.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::fuzzing::server_answers(data));
