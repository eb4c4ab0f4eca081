//! The exchange with the upstream, once the request is admitted: placeholders substituted in the
//! head and body, header hygiene, the pooled client (resending what the upstream proved it did
//! not process) or an upgrade's own connection, then the answer scrubbed.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::info;

use super::budget::{Budget, Reservation};
use super::hygiene::remove_hop_by_hop;
use super::{Shared, bodies, sign, upgrade};
use crate::config::OutOfScope;
use crate::destination::Destination;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::session::SessionPolicy;
use crate::store::Store;
use crate::substitute::{self, Outcome, Report, Scrub, Target};
use crate::upstream::ProxyBody;

pub(super) use super::To;

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
                || store.policy().substitute_over_plain_http,
            vaults: self.session.vaults(),
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
        ..
    } = to;
    // A cheap clone (shared bytes): the target borrows the path while the headers change.
    let uri = parts.uri.clone();
    let target = to.target(store, uri.path());
    let mut report = Report::default();
    substitute::headers(
        store.placeholders(),
        target,
        &mut parts.headers,
        &mut report,
    );
    substitute::bearer(
        store.placeholders(),
        target,
        &mut parts.headers,
        &mut report,
    );
    let substituted_uri = substitute::query(store.placeholders(), target, &parts.uri, &mut report);
    let mut scrub = Scrub::default();
    let body = bodies::request(
        store,
        target,
        &mut parts.headers,
        body,
        &mut report,
        &mut scrub,
        shared,
    )
    .await?;
    check_report(&report, store, session, dest, &shared.metrics)?;
    scrub.add_report(&report);
    let memo = to.sticky.map(|sticky| &sticky.scrub);
    let scrubber = store.scrubber(scrub, session, &dest.host, memo);
    if scrubber.is_some() {
        // SECURITY: a client could otherwise read a reflected or stored secret back in pieces,
        // none of which the scrubber would recognise. A 200 with the whole body is a valid answer
        // to a range request (RFC 9110 §14.2), so downloads still work, only without resuming.
        // Compressed WebSocket frames could not be scrubbed either. One look over the names
        // first: most requests carry none of the three.
        let unscrubbable = [
            header::RANGE,
            header::IF_RANGE,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ];
        if parts.headers.keys().any(|k| unscrubbable.contains(k)) {
            for name in unscrubbable {
                parts.headers.remove(name);
            }
        }
        bodies::limit_encoding(&mut parts.headers);
    }
    // Last: the signature covers the head as it is sent.
    let (body, signed_uri) = if store.placeholders().signing_entries().is_empty() {
        (body, None)
    } else {
        let current = substituted_uri.clone().unwrap_or_else(|| parts.uri.clone());
        // Boxed, as the rare detour it is: its state (held bodies, the chunk re-signer) stays
        // off every request's future.
        Box::pin(sign::request(&mut parts, &current, body, to, store, shared)).await?
    };
    let path = signed_uri
        .as_ref()
        .or(substituted_uri.as_ref())
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
            // Boxed, as the rare detour it is: its own connection's handshake futures stay off
            // every request's state.
            let response =
                Box::pin(upgrade::exchange_upgrade(request, dest, scheme, shared)).await?;
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
            exchange(Request::from_parts(parts, body), to, store, shared).await?
        }
    };
    let response =
        bodies::scrub_response(response, scrubber, &method, &dest.host, &shared.buffered).await?;
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

/// Logs the one line per placeholder-carrying request (ids and outcomes, never a value) and
/// applies `out_of_scope_placeholder = "block"`.
fn check_report(
    report: &Report,
    store: &Store,
    session: &SessionPolicy,
    dest: &Destination,
    metrics: &Metrics,
) -> Result<(), ProxyError> {
    if report.is_empty() {
        return Ok(());
    }
    for &(entry, location) in report.substitutions() {
        let e = store.entry(entry);
        store
            .counters(entry)
            .substituted(metrics, &e.credential_id, location)
            .inc();
    }
    for &(entry, outcome) in report.outcomes() {
        if outcome == Outcome::OutOfScope {
            let e = store.entry(entry);
            store
                .counters(entry)
                .out_of_scope(metrics, &e.credential_id)
                .inc();
        }
    }
    info!(session = %session.id, host = %dest.host, credentials = %report.display(store.entries()), "placeholders");
    if report.any(Outcome::OutOfScope)
        && store.policy().out_of_scope_placeholder == OutOfScope::Block
    {
        let credentials = out_of_scope_ids(report, store);
        return Err(ProxyError::PlaceholderOutOfScope {
            host: dest.host.clone(),
            credentials,
        });
    }
    Ok(())
}

/// Sends the request upstream — on the tunnel's own or shared connection, else the pooled client —
/// within the response timeout.
async fn exchange(
    request: Request<ProxyBody>,
    to: To<'_>,
    store: &Store,
    shared: &Shared,
) -> Result<Response<Incoming>, ProxyError> {
    let dest = to.dest;
    let started = std::time::Instant::now();
    // One deadline for every try: the tunnel's own or shared connection, the pool, the resends.
    let deadline =
        tokio::time::Instant::from_std(started) + shared.limits.upstream_response_timeout;
    let late = || ProxyError::UpstreamTimeout {
        host: dest.host.clone(),
    };
    // The tunnel's own connection first (HTTP/1.1 upstreams); what it does not take, the pool.
    let request = match to.sticky {
        Some(sticky) => {
            let own = super::sticky::send(sticky, request, dest, store.egress_epoch, shared);
            match tokio::time::timeout_at(deadline, own)
                .await
                .map_err(|_| late())?
            {
                Ok(result) => return answered(result, started, dest, shared),
                Err(request) => request,
            }
        }
        None => request,
    };
    let client = shared.client.client(store);
    // A request whose body is empty or short can be sent again as it was: its head and body are
    // kept for a refusal of the kind below (the reservation holds the body's budget until then).
    let (request, body, _held) = hold_short_body(request, &shared.buffered).await?;
    let again = body.map(|body| (head_of(&request), body));
    // An HTTP/2 upstream: the worker's shared connection first; what it does not take, the pool.
    let request = match to.sticky {
        Some(sticky) => {
            let on_shared = super::sticky::send_shared(sticky, request, dest, &client, shared);
            match tokio::time::timeout_at(deadline, on_shared)
                .await
                .map_err(|_| late())?
            {
                // Refused unprocessed (see below): sent again, on the pool.
                Ok(Err(e)) if not_processed(&e) => match &again {
                    Some(held) => rebuilt(held),
                    None => {
                        return answered(Err::<Response<Incoming>, _>(e), started, dest, shared);
                    }
                },
                Ok(result) => return answered(result, started, dest, shared),
                Err(request) => request,
            }
        }
        None => request,
    };
    let mut result = tokio::time::timeout_at(deadline, client.request(request)).await;
    // An HTTP/2 server that closes a pooled connection (nginx after keepalive_requests) refuses
    // the streams it had not started: RFC 9113 §8.7, safe to send again — a few times, as the
    // next pooled connection may be closing too.
    for _ in 0..MAX_RESENDS {
        let (Ok(Err(e)), Some(held)) = (&result, again.as_ref()) else {
            break;
        };
        if !not_processed(e) {
            break;
        }
        tracing::debug!(host = %dest.host, "the upstream closed the connection before the request: sent again");
        result = tokio::time::timeout_at(deadline, client.request(rebuilt(held))).await;
    }
    let result = result.map_err(|_| late())?;
    if let (Some(sticky), Ok(response)) = (to.sticky, &result) {
        sticky.learn(response.version());
    }
    answered(result, started, dest, shared)
}

/// A held request (head and body) to send again.
fn rebuilt((head, body): &(Request<ProxyBody>, Bytes)) -> Request<ProxyBody> {
    let mut request = head_of(head);
    *request.body_mut() = bodies::full(body.clone());
    request
}

/// An upstream's answer (counted) or its failure (classified and logged).
fn answered<E>(
    result: Result<Response<Incoming>, E>,
    started: std::time::Instant,
    dest: &Destination,
    shared: &Shared,
) -> Result<Response<Incoming>, ProxyError>
where
    E: std::error::Error + 'static,
{
    match result {
        Ok(response) => {
            shared
                .metrics
                .upstream_latency
                .observe(started.elapsed().as_secs_f64());
            Ok(response)
        }
        Err(e) => {
            let err = ProxyError::from_upstream(&dest.host, &e);
            info!(host = %dest.host, error = err.code(), detail = %error_chain(&e), "upstream request failed");
            Err(err)
        }
    }
}

/// How often a request the upstream refused unprocessed is sent again. Each resend may meet the
/// next pooled connection closing too (a server with a low `keepalive_requests` under parallel
/// load refuses several rounds in a row); all within the response timeout.
const MAX_RESENDS: usize = 8;

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

/// Whether the request was never processed upstream: an HTTP/2 stream above the last one a
/// graceful GOAWAY accepted, refused with REFUSED_STREAM, or given up by the pool before it was
/// sent — hyper-util's `Canceled`, e.g. "ALPN upgraded to HTTP/2" when a new connection turned
/// out to be HTTP/2 while the pooled one was closing. hyper-util has no accessor for that kind;
/// its Display is the kind's name (checked against the locked 0.1 version).
fn not_processed(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(|e| e.to_string() == "client error (Canceled)")
    {
        return true;
    }
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
