//! Admitting one request: an absolute-form request on the listener, or one inside a tunnel whose
//! `Host`/`:authority` must name the tunnel's destination; its session, the session's network
//! policy, HTTP/2 body pacing, and the access line. The exchange itself is `exchange`.

use http::header::{self};
use http::uri::Scheme;
use http::{Request, Response, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::{Instrument as _, info};

use super::exchange::{To, attempt};
use super::hygiene::remove_hop_by_hop;
use super::pace::PacedBody;
use super::slots::Slots;
use super::sticky::Sticky;
use super::{Shared, oauth, upgrade};
use crate::destination::Destination;
use crate::error::{EgressRule, ProxyError};
use crate::session::SessionPolicy;
use crate::store::Store;
use crate::upstream::{BoxError, ProxyBody};

/// A request on the proxy listener that is not CONNECT: it must be absolute-form
/// (`GET http://host/path`); its URI is the destination.
pub(super) async fn plain(
    req: Request<Incoming>,
    shared: &Shared,
    slots: &Slots,
) -> Result<Response<ProxyBody>, ProxyError> {
    let uri = req.uri();
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        Some(_) => {
            return Err(ProxyError::BadRequest(
                "only http:// and https:// URIs can be proxied",
            ));
        }
        None => {
            return Err(ProxyError::BadRequest(
                "send absolute-form requests (GET http://host/path) or CONNECT",
            ));
        }
    };
    let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
    let Some(dest) = uri
        .authority()
        .and_then(|a| Destination::from_authority(a, default_port))
    else {
        return Err(ProxyError::BadRequest("the request URI has no valid host"));
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ProxyError::BadRequest(
            "user information in the request URI is not allowed",
        ));
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let store = shared.store.load();
    let Some(session) = store.authenticate(req.headers().get(header::PROXY_AUTHORIZATION)) else {
        info!(host = %dest.host, "407: no valid Proxy-Authorization for any session");
        return Err(ProxyError::ProxyAuthRequired);
    };
    slots.admit(&session.id, &shared.session_slots)?;
    // The URI decides; a differing Host header is overwritten with the URI's authority in `send`.
    send(req, &dest, scheme, &store, session, None, shared).await
}

/// A request inside a tunnel: its `Host` / `:authority` (and URI, if absolute) must name the
/// tunnel's destination, or nothing is forwarded.
pub(super) async fn in_tunnel(
    req: Request<Incoming>,
    dest: &Destination,
    scheme: Scheme,
    session_id: &str,
    sticky: &Sticky,
    shared: &Shared,
) -> Result<Response<ProxyBody>, ProxyError> {
    let hosts = req.headers().get_all(header::HOST);
    if hosts.iter().count() > 1 {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    // Checked as they are, without a copy: a name that is not UTF-8 names no destination.
    let named = req
        .uri()
        .authority()
        .map(|a| a.as_str().as_bytes())
        .into_iter()
        .chain(hosts.iter().map(|h| h.as_bytes()));
    let mut any = false;
    for name in named {
        any = true;
        if !std::str::from_utf8(name).is_ok_and(|name| dest.matches_authority(name)) {
            info!(host = %dest.host, "request names another host than its tunnel");
            return Err(ProxyError::HostMismatch {
                expected: dest.to_string(),
                got: printable(&String::from_utf8_lossy(name)),
            });
        }
    }
    if !any && req.version() != Version::HTTP_10 {
        return Err(ProxyError::BadRequest("the request has no Host header"));
    }
    let store = shared.store.load();
    // The session authenticated at CONNECT; a reload that removed it ends its access.
    let Some(session) = store.session(session_id) else {
        info!(host = %dest.host, "407: no valid Proxy-Authorization for any session");
        return Err(ProxyError::ProxyAuthRequired);
    };
    send(req, dest, scheme, &store, session, Some(sticky), shared).await
}

/// Substitutes, sanitises and forwards `req` to `dest`, and relays the (scrubbed) answer.
async fn send(
    req: Request<Incoming>,
    dest: &Destination,
    scheme: Scheme,
    store: &Store,
    session: &SessionPolicy,
    sticky: Option<&Sticky>,
    shared: &Shared,
) -> Result<Response<ProxyBody>, ProxyError> {
    // One id joins every log line of this request (the span is on each line, text and JSON).
    let span = tracing::info_span!("request", id = next_request_id(), method = %req.method());
    // The access line (SPEC §9: nothing fails silently at info): path without its query, which
    // may carry a placeholder or a secret.
    // A cheap clone (shared bytes): the access line prints its path, never its query.
    let uri = req.uri().clone();
    // Boxed, once per request: the exchange's state is several KiB, and every layer above (the
    // span's wrapper, the handler, hyper's slot for the request in flight, which every idle
    // connection holds too) would otherwise hold it inline and copy it as each one starts.
    match Box::pin(forward(req, dest, scheme, store, session, sticky, shared))
        .instrument(span.clone())
        .await
    {
        Ok(response) => {
            shared.metrics.forwarded();
            info!(parent: &span, session = %session.id, host = %dest.host, path = %printable(uri.path()), status = response.status().as_u16(), "forwarded");
            Ok(response)
        }
        Err(e) => {
            info!(parent: &span, session = %session.id, host = %dest.host, path = %printable(uri.path()), error = e.code(), "refused");
            Err(e)
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    dest: &Destination,
    scheme: Scheme,
    store: &Store,
    session: &SessionPolicy,
    sticky: Option<&Sticky>,
    shared: &Shared,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !session.reaches(&dest.host) {
        info!(session = %session.id, host = %dest.host, "request outside the session's network policy");
        return Err(ProxyError::EgressDenied {
            host: dest.host.clone(),
            rule: EgressRule::SessionNetwork {
                session: session.id.clone(),
            },
        });
    }
    let (mut parts, body) = req.into_parts();
    // HTTP/2 bodies are paced here; HTTP/1 bodies already by `Strict`, on the connection.
    let (body, cut) = if parts.version == Version::HTTP_2 {
        let (body, cut) = PacedBody::new(body, shared.limits.header_read_timeout);
        (body.boxed(), Some(cut))
    } else {
        (body.map_err(BoxError::from).boxed(), None)
    };
    let too_slow = |e: ProxyError| match cut {
        Some(cut) if cut.load(std::sync::atomic::Ordering::Relaxed) => ProxyError::BodyTooSlow,
        _ => e,
    };
    let upgrade = upgrade::upgrade_protocol(&parts.headers, parts.version);
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());
    remove_hop_by_hop(&mut parts.headers);
    let upgrade = upgrade.zip(client_upgrade);
    let to = To {
        dest,
        scheme: &scheme,
        session,
        sticky,
    };
    if upgrade.is_none()
        && let Some(entry) = oauth::refreshable_credential(store, to, &parts)
    {
        // Boxed: the refresh detour's future (token endpoint, database lock) is many times the
        // size of a plain exchange, and every request would otherwise move that much state.
        return Box::pin(oauth::forward(parts, body, entry, to, store, shared))
            .await
            .map_err(too_slow);
    }
    attempt(parts, body, upgrade, to, store, shared)
        .await
        .map_err(too_slow)
}

/// A process-unique request id.
fn next_request_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A header value fit for an error body: printable ASCII, bounded.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect()
}
