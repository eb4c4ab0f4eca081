//! The proxy listener: plain absolute-form HTTP, and CONNECT tunnels that keyswap terminates with
//! its own certificates so it can substitute placeholders in the requests inside.
//!
//! `listener` accepts and serves client connections, `connect` opens tunnels, `forward` sends one
//! request upstream, `rewind` replays bytes read while sniffing a tunnel.

mod bodies;
mod budget;
mod connect;
mod forward;
mod framing;
mod idle;
mod listener;
mod oauth;
mod pace;
mod rewind;
mod slots;
mod strict;
mod upgrade;

use std::sync::Arc;

use tokio::sync::watch;

use crate::ca::CertificateAuthority;
use crate::config::Limits;
use crate::store::StoreHandle;
use crate::upstream::{Dialer, UpstreamPool};

pub use budget::Budget;
pub use listener::serve;
pub use slots::SessionSlots;

/// Everything a proxy connection needs, shared by all of them.
pub struct Shared {
    pub limits: Limits,
    pub store: Arc<StoreHandle>,
    pub ca: Arc<CertificateAuthority>,
    pub dialer: Dialer,
    pub client: Arc<UpstreamPool>,
    /// Refreshes `mcp_oauth` tokens (before expiry, after an upstream 401).
    pub refresher: Arc<crate::oauth::Refresher>,
    /// `max_buffered_body_bytes`: bodies held whole, all requests together.
    pub buffered: Arc<Budget>,
    /// `max_connections_per_session`, by session.
    pub session_slots: SessionSlots,
    /// Turns true when keyswap begins to shut down.
    pub shutdown: watch::Receiver<bool>,
}
