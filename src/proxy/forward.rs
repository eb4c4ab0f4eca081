//! Sending one request upstream: authority checks, hop-by-hop removal, placeholder substitution,
//! `Host` pinned to the destination, then the pooled client.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::{Instrument as _, info};

use super::budget::{Budget, Reservation};
use super::pace::PacedBody;
use super::slots::Slots;
use super::{Shared, bodies, oauth, upgrade};
use crate::config::OutOfScope;
use crate::destination::Destination;
use crate::error::{EgressRule, ProxyError};
use crate::metrics::METRICS;
use crate::session::SessionPolicy;
use crate::store::Store;
use crate::substitute::{self, Outcome, Report, Scrub, Target};
use crate::upstream::{BoxError, ProxyBody};

/// A request on the proxy listener that is not CONNECT: it must be absolute-form
/// (`GET http://host/path`); its URI is the destination.
pub(super) async fn plain(
    req: Request<Incoming>,
    shared: &Shared,
    slots: &Slots,
) -> Response<ProxyBody> {
    let uri = req.uri();
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        Some(_) => {
            return ProxyError::BadRequest("only http:// and https:// URIs can be proxied")
                .to_response();
        }
        None => {
            return ProxyError::BadRequest(
                "send absolute-form requests (GET http://host/path) or CONNECT",
            )
            .to_response();
        }
    };
    let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
    let Some(dest) = uri
        .authority()
        .and_then(|a| Destination::from_authority(a, default_port))
    else {
        return ProxyError::BadRequest("the request URI has no valid host").to_response();
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return ProxyError::BadRequest("user information in the request URI is not allowed")
            .to_response();
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return ProxyError::BadRequest("more than one Host header").to_response();
    }
    let store = shared.store.load();
    let Some(session) = store.authenticate(req.headers().get(header::PROXY_AUTHORIZATION)) else {
        info!(host = %dest.host, "407: no valid Proxy-Authorization for any session");
        return ProxyError::ProxyAuthRequired.to_response();
    };
    if let Err(e) = slots.admit(&session.id, &shared.session_slots) {
        // Not admitted: the connection closes and gives its process-wide slot back at once (an
        // upstream's own 429 passes through, the connection kept).
        let mut response = e.to_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    // The URI decides; a differing Host header is overwritten with the URI's authority in `send`.
    send(req, &dest, scheme, &store, session, shared).await
}

/// A request inside a tunnel: its `Host` / `:authority` (and URI, if absolute) must name the
/// tunnel's destination, or nothing is forwarded.
pub(super) async fn in_tunnel(
    req: Request<Incoming>,
    dest: &Destination,
    scheme: Scheme,
    session_id: &str,
    shared: &Shared,
) -> Response<ProxyBody> {
    let hosts = req.headers().get_all(header::HOST);
    if hosts.iter().count() > 1 {
        return ProxyError::BadRequest("more than one Host header").to_response();
    }
    let named = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .into_iter()
        .chain(
            hosts
                .iter()
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        );
    let mut any = false;
    for name in named {
        any = true;
        if !dest.matches_authority(&name) {
            info!(host = %dest.host, "request names another host than its tunnel");
            return ProxyError::HostMismatch {
                expected: dest.to_string(),
                got: printable(&name),
            }
            .to_response();
        }
    }
    if !any && req.version() != Version::HTTP_10 {
        return ProxyError::BadRequest("the request has no Host header").to_response();
    }
    let store = shared.store.load();
    // The session authenticated at CONNECT; a reload that removed it ends its access.
    let Some(session) = store.session(session_id) else {
        info!(host = %dest.host, "407: no valid Proxy-Authorization for any session");
        return ProxyError::ProxyAuthRequired.to_response();
    };
    send(req, dest, scheme, &store, session, shared).await
}

/// Substitutes, sanitises and forwards `req` to `dest`, and relays the (scrubbed) answer.
async fn send(
    req: Request<Incoming>,
    dest: &Destination,
    scheme: Scheme,
    store: &Store,
    session: &SessionPolicy,
    shared: &Shared,
) -> Response<ProxyBody> {
    // One id joins every log line of this request (the span is on each line, text and JSON).
    let span = tracing::info_span!("request", id = next_request_id(), method = %req.method());
    // The access line (SPEC §9: nothing fails silently at info): path without its query, which
    // may carry a placeholder or a secret.
    // A cheap clone (shared bytes): the access line prints its path, never its query.
    let uri = req.uri().clone();
    match forward(req, dest, scheme, store, session, shared)
        .instrument(span.clone())
        .await
    {
        Ok(response) => {
            METRICS.request("forwarded");
            info!(parent: &span, session = %session.id, host = %dest.host, path = %printable(uri.path()), status = response.status().as_u16(), "forwarded");
            response
        }
        Err(e) => {
            info!(parent: &span, session = %session.id, host = %dest.host, path = %printable(uri.path()), error = e.code(), "refused");
            e.to_response()
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    dest: &Destination,
    scheme: Scheme,
    store: &Store,
    session: &SessionPolicy,
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
    };
    if upgrade.is_none()
        && let Some(entry) = oauth::refreshable_credential(store, to, &parts)
    {
        return oauth::forward(parts, body, entry, to, store, shared)
            .await
            .map_err(too_slow);
    }
    attempt(parts, body, upgrade, to, store, shared)
        .await
        .map_err(too_slow)
}

/// Where a request goes, and for whom.
#[derive(Clone, Copy)]
pub(super) struct To<'a> {
    pub dest: &'a Destination,
    pub scheme: &'a Scheme,
    pub session: &'a SessionPolicy,
}

impl<'a> To<'a> {
    /// The facts a substitution decision uses, for a request to `path`.
    pub(super) fn target<'b>(&self, store: &Store, path: &'b str) -> Target<'b>
    where
        'a: 'b,
    {
        Target {
            host: &self.dest.host,
            port: self.dest.port,
            path,
            secrets_allowed: *self.scheme == Scheme::HTTPS
                || store.config().proxy.substitute_over_plain_http,
            session: self.session,
        }
    }
}

/// One exchange with the upstream: substitution in the head and body, then the pooled client (or a
/// dedicated connection for an upgrade), then the answer scrubbed.
pub(super) async fn attempt(
    mut parts: Parts,
    body: ProxyBody,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    to: To<'_>,
    store: &Store,
    shared: &Shared,
) -> Result<Response<ProxyBody>, ProxyError> {
    let To {
        dest,
        scheme,
        session,
    } = to;
    // A cheap clone (shared bytes): the target borrows the path while the headers change.
    let uri = parts.uri.clone();
    let target = to.target(store, uri.path());
    let mut report = Report::default();
    substitute::headers(store, target, &mut parts.headers, &mut report);
    substitute::bearer(store, target, &mut parts.headers, &mut report);
    let substituted_uri = substitute::query(store, target, &parts.uri, &mut report);
    let mut scrub = Scrub::default();
    let body = bodies::request(
        store,
        target,
        &mut parts.headers,
        body,
        &mut report,
        &mut scrub,
        &shared.buffered,
    )
    .await?;
    check_report(&report, store, session, dest)?;
    scrub.add_report(&report);
    let scrubber = scrub.replacer(store, session, &dest.host);
    if scrubber.is_some() {
        // SECURITY: a client could otherwise read a reflected or stored secret back in pieces,
        // none of which the scrubber would recognise. A 200 with the whole body is a valid answer
        // to a range request (RFC 9110 §14.2), so downloads still work, only without resuming.
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
        bodies::limit_encoding(&mut parts.headers);
        // Compressed WebSocket frames could not be scrubbed.
        parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    let path = substituted_uri
        .as_ref()
        .unwrap_or(&parts.uri)
        .path_and_query()
        .cloned();
    // The pooled client picks HTTP/2 by ALPN; the request itself is version-neutral.
    parts.version = Version::HTTP_11;
    let method = parts.method.clone();
    let response = match upgrade {
        Some((protocol, client)) => {
            parts.uri = path.map_or_else(|| Uri::from_static("/"), Uri::from);
            // An upgrade's own HTTP/1.1 connection: exactly one Host, the destination's.
            pin_host(&mut parts, dest, scheme);
            upgrade::set_upgrade(&mut parts.headers, protocol.clone());
            let request = Request::from_parts(parts, body);
            let response = upgrade::exchange_upgrade(request, dest, scheme, shared).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Ok(upgrade::switch_protocols(
                    response, client, protocol, scrubber, dest,
                ));
            }
            response
        }
        None => {
            // SECURITY: the client's Host never reaches the upstream. The pooled client writes
            // `Host` from this URI (the destination) on HTTP/1.1; HTTP/2 carries the authority as
            // `:authority` only — a `host` field beside it is refused by nginx and others
            // (RFC 9113 §8.3.1: "client sent duplicate host header").
            parts.headers.remove(header::HOST);
            parts.uri = upstream_uri(dest, scheme, path)
                .ok_or(ProxyError::BadRequest("cannot build the upstream URI"))?;
            exchange(Request::from_parts(parts, body), dest, store, shared).await?
        }
    };
    let response =
        bodies::scrub_response(response, scrubber, &method, &dest.host, &shared.buffered).await?;
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

/// A process-unique request id.
fn next_request_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Logs the one line per placeholder-carrying request (ids and outcomes, never a value) and
/// applies `out_of_scope_placeholder = "block"`.
fn check_report(
    report: &Report,
    store: &Store,
    session: &SessionPolicy,
    dest: &Destination,
) -> Result<(), ProxyError> {
    if report.is_empty() {
        return Ok(());
    }
    for &(entry, location) in report.substitutions() {
        let e = store.entry(entry);
        e.counters.substituted(&e.credential_id, location).inc();
    }
    for &(entry, outcome) in report.outcomes() {
        if outcome == Outcome::OutOfScope {
            let e = store.entry(entry);
            e.counters.out_of_scope(&e.credential_id).inc();
        }
    }
    info!(session = %session.id, host = %dest.host, credentials = %report.display(store), "placeholders");
    if report.any(Outcome::OutOfScope)
        && store.config().proxy.out_of_scope_placeholder == OutOfScope::Block
    {
        let credentials = out_of_scope_ids(report, store);
        return Err(ProxyError::PlaceholderOutOfScope {
            host: dest.host.clone(),
            credentials,
        });
    }
    Ok(())
}

/// Sends the request on the pooled client, within the response timeout.
async fn exchange(
    request: Request<ProxyBody>,
    dest: &Destination,
    store: &Store,
    shared: &Shared,
) -> Result<Response<Incoming>, ProxyError> {
    let timeout = shared.limits.upstream_response_timeout;
    let started = std::time::Instant::now();
    let client = shared.client.client(store);
    // A request whose body is empty or short can be sent again as it was: its head and body are
    // kept for a refusal of the kind below (the reservation holds the body's budget until then).
    let (request, body, _held) = hold_short_body(request, &shared.buffered).await?;
    let again = body.map(|body| (head_of(&request), body));
    let mut result = tokio::time::timeout(timeout, client.request(request)).await;
    // An HTTP/2 server that closes a pooled connection (nginx after keepalive_requests) refuses
    // the streams it had not started: RFC 9113 §8.7, safe to send again — a few times, as the
    // next pooled connection may be closing too.
    for _ in 0..MAX_RESENDS {
        let (Ok(Err(e)), Some(again)) = (&result, again.as_ref()) else {
            break;
        };
        if !not_processed(e) {
            break;
        }
        tracing::debug!(host = %dest.host, "the upstream closed the connection before the request: sent again");
        let left = timeout.saturating_sub(started.elapsed());
        let (head, body) = again;
        let mut request = head_of(head);
        *request.body_mut() = bodies::full(body.clone());
        result = tokio::time::timeout(left, client.request(request)).await;
    }
    match result {
        Ok(Ok(response)) => {
            METRICS
                .upstream_latency
                .observe(started.elapsed().as_secs_f64());
            Ok(response)
        }
        Ok(Err(e)) => {
            let err = ProxyError::from_upstream(&dest.host, &e);
            info!(host = %dest.host, error = err.code(), detail = %error_chain(&e), "upstream request failed");
            Err(err)
        }
        Err(_) => Err(ProxyError::UpstreamTimeout {
            host: dest.host.clone(),
        }),
    }
}

/// How often a request the upstream refused unprocessed is sent again.
const MAX_RESENDS: usize = 4;

/// Bodies announced at most this long are read before the request is sent, so a request the
/// upstream refused unprocessed (a GOAWAY racing it) can be sent again with its body.
const REPLAYABLE_BODY: usize = 64 << 10;

/// `request` with its body read whole when it is empty or announced short (and the budget has
/// room), that body for a resend, and the budget it holds; else `request` as it was.
async fn hold_short_body(
    request: Request<ProxyBody>,
    budget: &Arc<Budget>,
) -> Result<(Request<ProxyBody>, Option<Bytes>, Option<Reservation>), ProxyError> {
    if http_body::Body::is_end_stream(request.body()) {
        return Ok((request, Some(Bytes::new()), None));
    }
    let Some((limit, reservation)) = bodies::hold(request.headers(), REPLAYABLE_BODY, budget)
    else {
        return Ok((request, None, None));
    };
    let (parts, body) = request.into_parts();
    let bytes = bodies::read_request_body(body, limit).await?;
    let request = Request::from_parts(parts, bodies::full(bytes.clone()));
    Ok((request, Some(bytes), Some(reservation)))
}

/// The head of `request` again, with an empty body.
fn head_of(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut again = Request::new(bodies::full(bytes::Bytes::new()));
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.version_mut() = request.version();
    *again.headers_mut() = request.headers().clone();
    again
}

/// Whether the upstream refused the request without processing it: an HTTP/2 stream above the
/// last one a graceful GOAWAY accepted, or refused with REFUSED_STREAM.
fn not_processed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = err.source();
    }
    false
}

fn out_of_scope_ids(report: &Report, store: &crate::store::Store) -> String {
    let mut ids: Vec<&str> = report
        .outcomes()
        .iter()
        .filter(|(_, o)| *o == Outcome::OutOfScope)
        .map(|&(i, _)| store.entry(i).credential_id.as_str())
        .collect();
    ids.dedup();
    ids.join(", ")
}

/// `scheme://destination/path?query`: the URI is rebuilt from the destination, never from a header.
fn upstream_uri(dest: &Destination, scheme: &Scheme, path: Option<PathAndQuery>) -> Option<Uri> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(dest.wire(scheme)?.authority);
    parts.path_and_query = Some(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).ok()
}

/// SECURITY: the upstream sees the destination in `Host`, whatever the client wrote.
fn pin_host(parts: &mut Parts, dest: &Destination, scheme: &Scheme) {
    if let Some(wire) = dest.wire(scheme) {
        parts.headers.insert(header::HOST, wire.host);
    }
}

/// Headers that describe one connection, not the message: never forwarded (RFC 9110 §7.6.1),
/// plus the proxy's own credentials.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names, no hashing, nothing removed.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
    ] {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
    // `TE: trailers` is the one TE value HTTP/2 allows, and gRPC needs it.
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TRAILER
        || name == header::TE
        || name.as_str() == "proxy-connection"
        || name.as_str() == "keep-alive"
}

/// A header value fit for an error body: printable ASCII, bounded.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("authorization", "Bearer x"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["authorization"]);
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("trailers"));
        remove_hop_by_hop(&mut h);
        assert!(h.contains_key("te"));
    }

    #[test]
    fn upstream_uri_comes_from_the_destination() {
        let dest = Destination::new("api.example.com", 8443);
        let uri = upstream_uri(
            &dest,
            &Scheme::HTTPS,
            Some(PathAndQuery::from_static("/a?b=c")),
        )
        .unwrap();
        assert_eq!(uri, "https://api.example.com:8443/a?b=c");
        let v6 = Destination::new("::1", 80);
        assert_eq!(
            upstream_uri(&v6, &Scheme::HTTP, None).unwrap(),
            "http://[::1]/"
        );
    }
}
