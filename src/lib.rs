//! keyswap: an egress proxy that swaps placeholders for real secrets, only on the hosts each
//! secret is scoped to.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod ca;
pub mod config;
pub mod dbstore;
pub mod destination;
pub mod dns;
pub mod egress;
pub mod error;
pub mod exec;
pub mod files;
pub mod live;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod proxy;
pub mod sandbox;
pub mod scope;
pub mod secret;
pub mod server;
pub mod session;
pub mod signing;
pub mod store;
pub mod substitute;
pub mod tls;
pub mod truststore;
pub mod upstream;
pub mod vault;
pub mod watch;
pub mod workers;
