//! Benchmarks that need code of their own (run them with `scripts/bench`):
//!
//! | binary | what it measures |
//! |---|---|
//! | `fleet-sim` | requests per minute at the server from a fleet of devices over months, with the agent's own scheduling code on a virtual clock |
//! | `loadgen` | the reference server's throughput and latency under many concurrent devices, with the agent's own client |

pub mod fleet;
