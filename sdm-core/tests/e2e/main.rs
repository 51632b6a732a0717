//! End-to-end tests of the client library against a real `sdm-server` (in-process, on
//! 127.0.0.1:0) and a real PostgreSQL cluster started from this machine's binaries.

mod blocking;
mod common;
mod dial;
mod errors;
mod observer;
mod resilience;
mod security;
mod tunnel;
