//! keyswap: an egress proxy that swaps placeholders for real secrets, only on the hosts each
//! secret is scoped to.
#![forbid(unsafe_code)]

pub mod config;
pub mod scope;
pub mod secret;
pub mod store;
pub mod substitute;
pub mod vault;
