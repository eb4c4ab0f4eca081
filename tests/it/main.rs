//! The end-to-end tests, one binary: each module below was its own `tests/*.rs` binary, and each
//! compiled and linked `tests/common` again. Run one module with `cargo test --test it servers::`,
//! one test with `cargo test --test it servers::git`.
//!
//! `tests/no_alloc.rs` stays a binary of its own: it installs a counting `#[global_allocator]`.
//! The data the tests read (`tests/clients`, `tests/reflector`, `tests/vtc`) is found through
//! `CARGO_MANIFEST_DIR`; `benches/load.rs` includes `tests/common` too, which is why it stays there.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod aws;
mod bodies;
mod cli;
mod clients;
mod exec;
mod external;
mod hostile;
mod leaks;
mod limits;
mod mcp;
mod metrics;
mod nginx;
mod oauth;
mod proxy;
mod reload;
mod replicas;
mod servers;
mod sessions;
mod signing;
mod transparent;
mod tunnel;
mod websocket;
