//! The proxy listener: plain absolute-form HTTP, and CONNECT tunnels that keyswap terminates with
//! its own certificates so it can substitute placeholders in the requests inside.
//!
//! A request's path, calls going inward: `listener` (accept) → `connect` (CONNECT: destination,
//! egress, intercept or relay) → `serve` (HTTP/1 or HTTP/2 on the stream) → `forward` (the request
//! admitted: authority, session, access line) → `exchange` (substitution, `hygiene`, the upstream,
//! the answer scrubbed by `bodies`). `oauth` and `upgrade` are the two detours of `exchange`;
//! `strict`/`framing` check HTTP/1 bytes before hyper, `rewind` replays bytes read while sniffing.

mod bodies;
mod budget;
mod connect;
mod exchange;
mod forward;
mod framing;
mod hygiene;
mod idle;
mod listener;
mod oauth;
mod pace;
mod rewind;
mod serve;
mod sign;
mod slots;
mod sticky;
mod strict;
mod transparent;
mod upgrade;

use std::sync::Arc;

use tokio::sync::watch;

use crate::ca::CertificateAuthority;
use crate::config::Limits;
use crate::store::StoreHandle;
use crate::upstream::{Dialer, UpstreamPool};

pub use budget::Budget;
pub use listener::{Kind, serve};
pub use slots::SessionSlots;

/// Where a request goes, for whom, and on what: the view the request stages pass inward.
#[derive(Clone, Copy)]
pub(super) struct To<'a> {
    pub dest: &'a crate::destination::Destination,
    pub scheme: &'a http::uri::Scheme,
    pub session: &'a crate::session::SessionPolicy,
    /// The tunnel's own upstream connection (`None` outside a tunnel).
    pub sticky: Option<&'a sticky::Sticky>,
}

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
    /// Counted at the edges (`serve::rescue`, `strict`) and where a stage learns something.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `keyswap exec`: the names its DNS responder gave addresses, which bind transparent
    /// connections instead of resolving the name.
    pub allocations: Option<Arc<crate::dns::Allocations>>,
    /// Turns true when keyswap begins to shut down.
    pub shutdown: watch::Receiver<bool>,
    /// Where accepted connections are served.
    pub workers: Arc<crate::workers::Workers>,
}
