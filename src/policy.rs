//! What a reload changes on the request path, as a type (SPEC §4 "live changes"): the
//! substitution policy and the egress rules, compiled into every store generation with its
//! credentials and sessions. The request path reads settings only from here; everything else in
//! the config (listeners, `[tls]`, `[limits]`) is read once by `server::run` and takes effect on
//! restart.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Config, MitmMode, OutOfScope};

/// The live policy of one store generation.
#[derive(Debug, Clone)]
pub struct LivePolicy {
    /// When a CONNECT is intercepted (`[proxy] mitm`).
    pub mitm: MitmMode,
    /// What a placeholder outside its scope does to its request (`[proxy] out_of_scope_placeholder`).
    pub out_of_scope_placeholder: OutOfScope,
    /// Whether secrets may go to a plain-HTTP upstream (`[proxy] substitute_over_plain_http`).
    pub substitute_over_plain_http: bool,
    pub egress: Egress,
}

/// How upstream addresses are found and which may be dialled. When it changes, pooled upstream
/// connections (checked under the old rules) are retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub block_private_addresses: bool,
    pub allow_private_cidrs: Vec<IpNet>,
    /// `[upstream.resolve]`: static addresses, keyed by normalised host.
    pub resolve: HashMap<String, IpAddr>,
}

impl LivePolicy {
    pub fn of(config: &Config) -> Self {
        Self {
            mitm: config.proxy.mitm,
            out_of_scope_placeholder: config.proxy.out_of_scope_placeholder,
            substitute_over_plain_http: config.proxy.substitute_over_plain_http,
            egress: Egress {
                block_private_addresses: config.proxy.block_private_addresses,
                allow_private_cidrs: config.proxy.allow_private_cidrs.clone(),
                resolve: config.upstream.resolve.clone(),
            },
        }
    }
}
