//! End-to-end tests of the `sdm` binary against a real sdm-server (in-process), a real
//! PostgreSQL and a real OpenSSH server. Each test has its own server and `SDM_HOME`.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod agent;
mod auto_connect;
mod container_image;
mod diagnostics;
mod errors;
mod golden;
mod install;
mod mysql;
mod readme;
mod run;
mod shared_host;
mod ssh;
mod terminal;
mod workflow;
