//! Bodies: placeholders replaced in request bodies (where `injection_location.body` allows), and
//! every answer from a host where some credential is in scope scrubbed, so no secret comes back —
//! whether or not this request carried one.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use tracing::debug;

use std::sync::Arc;

use super::budget::{Budget, Reservation, Reserved};
use crate::error::{BodyTooSlow, ProxyError};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::substitute::stream::{self, ReplacingBody, StreamReplacer};
use crate::substitute::{self, Location, Outcome, Report, Scrub, Target};
use crate::upstream::{BoxError, ProxyBody};
use hyper::ext::ReasonPhrase;

/// Bodies announced at most this long are replaced whole, so `Content-Length` stays exact; longer
/// or unannounced bodies are streamed and sent without a length (chunked on HTTP/1.1).
pub(super) const BUFFER_LIMIT: usize = 1 << 20;

/// Answers announced at most this long are scrubbed whole and keep their `Content-Length`.
const RESPONSE_HELD_WHOLE: usize = 64 << 10;

/// The request body to forward, with placeholders replaced where allowed. `scrub` receives the
/// secrets this body may carry (all candidates when streamed, the ones found when buffered).
pub async fn request(
    store: &Store,
    target: Target<'_>,
    headers: &mut HeaderMap,
    body: ProxyBody,
    report: &mut Report,
    scrub: &mut Scrub,
    shared: &super::Shared,
) -> Result<ProxyBody, ProxyError> {
    if http_body::Body::is_end_stream(&body) {
        return Ok(body);
    }
    let Some(table) = store.body_table() else {
        return Ok(body);
    };
    let applies = |i: usize| {
        let e = store.entry(i);
        target.vaults.allows(e)
            && substitute::decide(e, target, Location::Body) == Outcome::Substituted
    };
    // Only credentials with body injection on are looked at: most requests allocate nothing here.
    if !store.body_entries().iter().any(|&i| applies(i)) {
        return Ok(body);
    }
    let mut allowed = vec![false; store.entries().len()];
    for &i in store.body_entries() {
        allowed[i] = applies(i);
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v != "identity")
    {
        debug!(
            host = target.host,
            "request body has a Content-Encoding: not substituted"
        );
        return Ok(body);
    }
    let mut replacer = StreamReplacer::new(table.clone(), allowed.clone());
    match hold(headers, BUFFER_LIMIT, &shared.buffered) {
        Some((limit, reservation)) => {
            let bytes = read_request_body(body, limit).await?;
            let mut out = replacer.push(bytes).to_vec();
            out.extend_from_slice(&replacer.finish());
            for &i in replacer.hits() {
                report.record_substituted(i, Location::Body);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            Ok(Reserved::new(full(bytes::Bytes::from(out)), reservation).boxed())
        }
        _ => {
            // The length may change and is unknown until the end: send it without one.
            headers.remove(header::CONTENT_LENGTH);
            for (i, _) in allowed.iter().enumerate().filter(|(_, ok)| **ok) {
                scrub.add_entry(i);
            }
            let found = found_in_stream(store, target.host, &allowed, shared.metrics.clone());
            Ok(ReplacingBody::new(body, replacer).on_end(found).boxed())
        }
    }
}

/// What a streamed request body substituted is known only at its end: then it is logged (in the
/// request's span) and counted, like the substitutions of the head.
fn found_in_stream(
    store: &Store,
    host: &str,
    allowed: &[bool],
    metrics: Arc<Metrics>,
) -> substitute::stream::OnEnd {
    let span = tracing::Span::current();
    let host = host.to_string();
    let ids: Vec<(usize, String)> = allowed
        .iter()
        .enumerate()
        .filter(|(_, ok)| **ok)
        .map(|(i, _)| (i, store.entry(i).credential_id.clone()))
        .collect();
    Box::new(move |hits: &[usize]| {
        let found: Vec<&str> = ids
            .iter()
            .filter(|(i, _)| hits.contains(i))
            .map(|(_, id)| id.as_str())
            .collect();
        if found.is_empty() {
            return;
        }
        for id in &found {
            let labels = crate::metrics::CredentialLabels {
                credential_id: (*id).to_string(),
                location: Location::Body.as_str().to_string(),
            };
            metrics.substitutions.get_or_create(&labels).inc();
        }
        let credentials = found
            .iter()
            .map(|id| format!("{id}: substituted (body)"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(parent: &span, host = %host, credentials = %credentials, "placeholders in the streamed body");
    })
}

/// The announced length of a body that may be held whole: at most `max` bytes, and that many
/// free in the shared budget (reserved until the reservation drops). `None`: stream it.
pub(super) fn hold(
    headers: &HeaderMap,
    max: usize,
    budget: &Arc<Budget>,
) -> Option<(usize, Reservation)> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= max)?;
    let reservation = budget.reserve(length);
    if reservation.is_none() {
        debug!(length, "buffering budget spent: the body is streamed");
    }
    Some((length, reservation?))
}

pub(super) fn full(bytes: bytes::Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A whole request body announced as `limit` bytes long.
pub(super) async fn read_request_body(
    mut body: ProxyBody,
    limit: usize,
) -> Result<bytes::Bytes, ProxyError> {
    let mismatch = ProxyError::BadRequest("the request body does not match its Content-Length");
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| broken_body(&*e))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(mismatch);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// What a request body's failure while it is held means for the client: too slow, or cut short.
pub(super) fn broken_body(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ProxyError {
    if e.is::<BodyTooSlow>() {
        ProxyError::BodyTooSlow
    } else {
        ProxyError::BadRequest("the request body ended before its Content-Length")
    }
}

/// The whole body, or `None` when it fails or is longer than `limit`.
pub(super) async fn read_to_limit<B>(mut body: B, limit: usize) -> Option<bytes::Bytes>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    // Most short bodies arrive in one frame: kept as they are, not copied.
    let mut first: Option<bytes::Bytes> = None;
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            let held = first.as_ref().map_or(0, bytes::Bytes::len) + out.len();
            if held + data.len() > limit {
                return None;
            }
            match first.take() {
                None if out.is_empty() => first = Some(data),
                earlier => {
                    if let Some(earlier) = earlier {
                        out.extend_from_slice(&earlier);
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
    Some(first.unwrap_or_else(|| out.freeze()))
}

/// Masks secrets in a response head: the reason phrase hyper keeps from the upstream's HTTP/1
/// status line (it is written back to an HTTP/1 client as it was), header names and values.
pub fn scrub_head(scrubber: &mut StreamReplacer, parts: &mut http::response::Parts) {
    if let Some(reason) = parts.extensions.get::<ReasonPhrase>()
        && let Some(masked) = scrubber.replace_once(reason.as_bytes())
    {
        match ReasonPhrase::try_from(masked) {
            Ok(masked) => {
                parts.extensions.insert(masked);
            }
            Err(_) => {
                parts.extensions.remove::<ReasonPhrase>();
            }
        }
    }
    stream::scrub_headers(scrubber, &mut parts.headers);
}

/// Asks for an answer keyswap can read: a compressed body could carry a secret past the scrubber.
pub fn limit_encoding(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// Masks every secret (and rewritten value) in the response's headers and body with what the client
/// sent. A compressed body cannot be read, so it is withheld rather than passed on.
pub async fn scrub_response(
    response: Response<Incoming>,
    scrubber: Option<StreamReplacer>,
    method: &Method,
    host: &str,
    budget: &Arc<Budget>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    let Some(mut scrubber) = scrubber else {
        return Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ));
    };
    scrub_head(&mut scrubber, &mut parts);
    let bodiless = *method == Method::HEAD
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if bodiless {
        return Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ));
    }
    // Every value counts (a second header, a list), and this runs before hop-by-hop removal, so
    // `Connection: content-encoding` cannot hide the encoding.
    let encoded = |name, allowed: &[&str]| {
        parts
            .headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .any(|t| {
                let t = t.trim();
                !t.is_empty() && !allowed.iter().any(|a| t.eq_ignore_ascii_case(a))
            })
    };
    if encoded(header::CONTENT_ENCODING, &["identity"])
        || encoded(header::TRANSFER_ENCODING, &["chunked"])
    {
        return Err(ProxyError::UpstreamEncoding {
            host: host.to_string(),
        });
    }
    // A short answer is scrubbed whole and keeps an exact length (clients reuse the connection
    // and show progress as they would without keyswap); a longer or unannounced one is streamed,
    // and as masking changes lengths it goes without one (chunked on HTTP/1.1).
    if let Some((limit, reservation)) = hold(&parts.headers, RESPONSE_HELD_WHOLE, budget) {
        let bytes =
            read_to_limit(body, limit)
                .await
                .ok_or_else(|| ProxyError::UpstreamConnect {
                    host: host.to_string(),
                })?;
        // Usually nothing matched: the body goes on as it came, uncopied, and so does its one
        // Content-Length.
        let out = scrubber.whole(bytes);
        let kept =
            out.len() == limit && parts.headers.get_all(header::CONTENT_LENGTH).iter().count() == 1;
        if !kept {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        }
        let body = Reserved::new(Full::new(out).map_err(|never| match never {}), reservation);
        return Ok(Response::from_parts(parts, body.boxed()));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(
        parts,
        ReplacingBody::new(body, scrubber)
            .map_err(BoxError::from)
            .boxed(),
    ))
}
