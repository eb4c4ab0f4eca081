//! The signing stage (SPEC §11): a request signed with the placeholder of an `aws_sigv4`
//! credential (header or presigned query) is signed again with the real key; the signature
//! header of an `hmac_signature` credential that holds its placeholder gets the real signature.
//!
//! It runs last, after every change keyswap makes to the head, so the signature covers what is
//! sent. A request with a placeholder's signature on a host outside the credential's scope is
//! refused, never forwarded: the placeholder is not secret, but the refusal tells the user.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, Uri};
use http_body_util::BodyExt as _;

use super::budget::Reserved;
use super::{Shared, To, bodies};
use crate::error::ProxyError;
use crate::signing::chunked::{Chain, Resigned};
use crate::signing::hmac;
use crate::signing::sigv4::{self, Canonical, Credential, HeaderAuth};
use crate::store::Store;
use crate::substitute::{Entry, Signing};
use crate::upstream::ProxyBody;
use crate::vault::{AWS_DUMMY_SECRET, AwsSigv4Auth, HmacAuth};

/// The largest body held to be hashed or signed (SPEC §11).
pub const MAX_SIGNED_BODY: usize = 64 << 20;

const SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
const AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");

/// Signs the request again if it carries a signature made with a signing credential's
/// placeholder. Returns the body to send and the URI when the query changed.
pub(super) async fn request(
    parts: &mut Parts,
    uri: &Uri,
    body: ProxyBody,
    to: To<'_>,
    store: &Store,
    shared: &Shared,
) -> Result<(ProxyBody, Option<Uri>), ProxyError> {
    let signing = store.placeholders().signing_entries();
    if signing.is_empty() {
        return Ok((body, None));
    }
    let ours = |key: &str| {
        signing
            .iter()
            .map(|&i| store.entry(i))
            .find(|e| e.placeholder == key && to.session.vaults().allows(e) && !e.archived)
    };
    let host = to
        .dest
        .wire(to.scheme)
        .and_then(|w| w.host.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| to.dest.host.clone());
    // AWS, signed in the header.
    if let Some(parsed) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(HeaderAuth::parse)
    {
        let Ok(auth) = parsed else {
            return Ok((body, None));
        };
        if let Some(entry) = ours(&auth.credential.key_id) {
            let key = aws_key(entry, to, &auth.algorithm, &auth.credential)?;
            return aws_header(parts, uri, body, &auth, entry, key, &host, shared).await;
        }
        return Ok((body, None));
    }
    // AWS, presigned in the query.
    if let Some(query) = uri.query()
        && let Some(credential) = query_param(query, "X-Amz-Credential")
        && let Some(credential) = Credential::parse(&credential)
        && let Some(entry) = ours(&credential.key_id)
    {
        let algorithm = query_param(query, "X-Amz-Algorithm").unwrap_or_default();
        let key = aws_key(entry, to, &algorithm, &credential)?;
        return aws_presigned(parts, uri, body, &credential, entry, key, &host).await;
    }
    // SigV2 presigned (boto3's default for S3 presigning in some setups): HMAC-SHA1 over another
    // string; refused with the way out rather than sent to fail.
    if let Some(query) = uri.query()
        && let Some(key) = query_param(query, "AWSAccessKeyId")
        && let Some(entry) = ours(&key)
    {
        return Err(unsupported(
            entry,
            "a SigV2 presigned URL (AWSAccessKeyId=) is not signed again; presign with SigV4 (boto3: Config(signature_version=\"s3v4\"))",
        ));
    }
    // HMAC: the signature header holds the placeholder.
    for &i in signing {
        let entry = store.entry(i);
        let Some(Signing::Hmac(h)) = &entry.signing else {
            continue;
        };
        let holds = parts
            .headers
            .get(&h.signature_header)
            .is_some_and(|v| v.as_bytes().trim_ascii() == entry.placeholder.as_bytes());
        if holds && to.session.vaults().allows(entry) && !entry.archived {
            in_scope(entry, to)?;
            return hmac_header(parts, uri, body, entry, h, &host, shared).await;
        }
    }
    Ok((body, None))
}

/// The AWS key of `entry` if it may sign this request here.
fn aws_key<'e>(
    entry: &'e Entry,
    to: To<'_>,
    algorithm: &str,
    credential: &Credential,
) -> Result<&'e AwsSigv4Auth, ProxyError> {
    let Some(Signing::Aws(key)) = &entry.signing else {
        return Err(unsupported(entry, "it is not an aws_sigv4 credential"));
    };
    in_scope(entry, to)?;
    if algorithm == sigv4::ALGORITHM_V4A {
        return Err(unsupported(
            entry,
            "SigV4A (AWS4-ECDSA-P256-SHA256) is not signed again",
        ));
    }
    if algorithm != sigv4::ALGORITHM {
        return Err(unsupported(
            entry,
            "the only algorithm signed again is AWS4-HMAC-SHA256",
        ));
    }
    let refuse = |what: &str, name: &str| ProxyError::SigningScope {
        credential: entry.credential_id.clone(),
        detail: format!("{what} {name}"),
    };
    if !key.regions.is_empty() && !key.regions.contains(&credential.region) {
        return Err(refuse("region", &credential.region));
    }
    if !key.services.is_empty() && !key.services.contains(&credential.service) {
        return Err(refuse("service", &credential.service));
    }
    Ok(key)
}

/// SECURITY: decided on the destination dialled. Out of scope (or over plain HTTP, where the
/// real key id would travel in clear) the request is refused, not sent with the placeholder's
/// signature.
fn in_scope(entry: &Entry, to: To<'_>) -> Result<(), ProxyError> {
    if !entry.networking.allows(&to.dest.host) {
        return Err(ProxyError::PlaceholderOutOfScope {
            host: to.dest.host.clone(),
            credentials: entry.credential_id.clone(),
        });
    }
    if *to.scheme != http::uri::Scheme::HTTPS {
        return Err(unsupported(entry, "the upstream connection is not TLS"));
    }
    Ok(())
}

fn unsupported(entry: &Entry, detail: &str) -> ProxyError {
    ProxyError::SigningUnsupported {
        credential: entry.credential_id.clone(),
        detail: detail.to_string(),
    }
}

fn mismatch(entry: &Entry, detail: impl Into<String>) -> ProxyError {
    ProxyError::SigningMismatch {
        credential: entry.credential_id.clone(),
        detail: detail.into(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn aws_header(
    parts: &mut Parts,
    uri: &Uri,
    body: ProxyBody,
    auth: &HeaderAuth,
    entry: &Entry,
    key: &AwsSigv4Auth,
    host: &str,
    shared: &Shared,
) -> Result<(ProxyBody, Option<Uri>), ProxyError> {
    let amz_date = header_str(&parts.headers, &AMZ_DATE)
        .ok_or_else(|| mismatch(entry, "the request has no X-Amz-Date header"))?;
    if !amz_date.starts_with(&auth.credential.date) {
        return Err(mismatch(
            entry,
            "X-Amz-Date is not the day of the Credential scope",
        ));
    }
    let payload = header_str(&parts.headers, &CONTENT_SHA256);
    let streaming = matches!(
        payload.as_deref(),
        Some(sigv4::STREAMING_SIGNED | sigv4::STREAMING_SIGNED_TRAILER)
    );
    let (body, payload_hash) = match payload.as_deref() {
        Some(p @ (sigv4::UNSIGNED_PAYLOAD | sigv4::STREAMING_UNSIGNED_TRAILER)) => {
            (body, p.to_string())
        }
        Some(p @ (sigv4::STREAMING_SIGNED | sigv4::STREAMING_SIGNED_TRAILER)) => {
            (body, p.to_string())
        }
        Some(p) if p.starts_with("STREAMING-") => {
            return Err(unsupported(
                entry,
                "this x-amz-content-sha256 streaming mode is not signed again",
            ));
        }
        Some(p) if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let (held, body) = hold(&parts.headers, body, entry, shared).await?;
            let hash = sigv4::sha256_hex(&held);
            if !hash.eq_ignore_ascii_case(p) {
                return Err(mismatch(
                    entry,
                    "the body is not the one x-amz-content-sha256 names",
                ));
            }
            (body, hash)
        }
        Some(_) => {
            return Err(mismatch(
                entry,
                "x-amz-content-sha256 is neither a SHA-256 nor a payload mode",
            ));
        }
        None => {
            let (held, body) = hold(&parts.headers, body, entry, shared).await?;
            (body, sigv4::sha256_hex(&held))
        }
    };
    // The headers the client signed that are still sent (keyswap may have removed some, e.g.
    // Range on a scrubbed answer), and the session token of the real key.
    parts.headers.remove(&SECURITY_TOKEN);
    let mut signed: Vec<String> = auth
        .signed_headers
        .iter()
        .filter(|n| n.as_str() != SECURITY_TOKEN.as_str() && n.as_str() != "authorization")
        .filter(|n| n.as_str() == "host" || parts.headers.contains_key(n.as_str()))
        .cloned()
        .collect();
    if let Some(token) = &key.session_token {
        let mut v = HeaderValue::from_bytes(token.expose())
            .map_err(|_| mismatch(entry, "the session token is not a header value"))?;
        v.set_sensitive(true);
        parts.headers.insert(SECURITY_TOKEN, v);
        signed.push(SECURITY_TOKEN.as_str().to_string());
    }
    signed.sort_unstable();
    signed.dedup();
    let canonical = Canonical {
        method: parts.method.as_str(),
        path: uri.path(),
        query: uri.query(),
        signed_headers: &signed,
        payload_hash: &payload_hash,
        s3: is_s3(&auth.credential.service),
        skip_param: None,
    };
    let text = canonical
        .text(&parts.headers, host)
        .map_err(|detail| mismatch(entry, detail))?;
    let real = sigv4::signing_key(key.secret_access_key.expose(), &auth.credential);
    let signature = sigv4::sign(
        &real,
        &sigv4::string_to_sign(&amz_date, &auth.credential, &text),
    );
    let real_id = String::from_utf8_lossy(key.access_key_id.expose()).into_owned();
    let mut value = HeaderValue::from_str(&auth.render(&real_id, &signed.join(";"), &signature))
        .map_err(|_| mismatch(entry, "the access key id is not a header value"))?;
    value.set_sensitive(true);
    parts.headers.insert(AUTHORIZATION, value);
    if !streaming {
        return Ok((body, None));
    }
    let chain = Chain {
        amz_date: amz_date.clone(),
        scope: auth.credential.scope(),
        client_key: sigv4::signing_key(AWS_DUMMY_SECRET.as_bytes(), &auth.credential),
        client_previous: auth.signature.clone(),
        real_key: real,
        real_previous: signature,
    };
    let trailer = payload.as_deref() == Some(sigv4::STREAMING_SIGNED_TRAILER);
    let mut resigned = Resigned::new(body, chain, trailer);
    // A chain wrong from the first chunk is refused before anything is forwarded.
    resigned
        .first_chunk()
        .await
        .map_err(|e| mismatch(entry, e.to_string()))?;
    Ok((resigned.boxed(), None))
}

async fn aws_presigned(
    parts: &mut Parts,
    uri: &Uri,
    body: ProxyBody,
    credential: &Credential,
    entry: &Entry,
    key: &AwsSigv4Auth,
    host: &str,
) -> Result<(ProxyBody, Option<Uri>), ProxyError> {
    let query = uri.query().unwrap_or_default();
    let amz_date = query_param(query, "X-Amz-Date")
        .filter(|d| d.starts_with(&credential.date))
        .ok_or_else(|| {
            mismatch(
                entry,
                "X-Amz-Date is missing or not the day of X-Amz-Credential",
            )
        })?;
    let signed: Vec<String> = query_param(query, "X-Amz-SignedHeaders")
        .unwrap_or_else(|| "host".into())
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    let real_id = String::from_utf8_lossy(key.access_key_id.expose()).into_owned();
    let token = key
        .session_token
        .as_ref()
        .map(|t| String::from_utf8_lossy(t.expose()).into_owned());
    // The query as the client wrote it, with the real key id and session token in place.
    let mut rewritten: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        match name {
            "X-Amz-Credential" => rewritten.push(format!(
                "X-Amz-Credential={}",
                sigv4::encode(credential.with_key(&real_id).as_bytes())
            )),
            "X-Amz-Security-Token" | "X-Amz-Signature" => {}
            _ => rewritten.push(pair.to_string()),
        }
    }
    if let Some(token) = &token {
        rewritten.push(format!(
            "X-Amz-Security-Token={}",
            sigv4::encode(token.as_bytes())
        ));
    }
    let unsigned = rewritten.join("&");
    let payload = if is_s3(&credential.service) {
        sigv4::UNSIGNED_PAYLOAD.to_string()
    } else {
        query_param(query, "X-Amz-Content-Sha256").unwrap_or_else(|| sigv4::EMPTY_SHA256.into())
    };
    let canonical = Canonical {
        method: parts.method.as_str(),
        path: uri.path(),
        query: Some(&unsigned),
        signed_headers: &signed,
        payload_hash: &payload,
        s3: is_s3(&credential.service),
        skip_param: None,
    };
    let text = canonical
        .text(&parts.headers, host)
        .map_err(|detail| mismatch(entry, detail))?;
    let real = sigv4::signing_key(key.secret_access_key.expose(), credential);
    let signature = sigv4::sign(&real, &sigv4::string_to_sign(&amz_date, credential, &text));
    let path_and_query = format!("{}?{unsigned}&X-Amz-Signature={signature}", uri.path());
    let path_and_query = PathAndQuery::try_from(path_and_query)
        .map_err(|_| mismatch(entry, "the presigned query cannot be written again"))?;
    Ok((body, Some(Uri::from(path_and_query))))
}

async fn hmac_header(
    parts: &mut Parts,
    uri: &Uri,
    body: ProxyBody,
    entry: &Entry,
    h: &HmacAuth,
    host: &str,
    shared: &Shared,
) -> Result<(ProxyBody, Option<Uri>), ProxyError> {
    let (body, held) = if hmac::needs_body(&h.message) {
        let (held, body) = hold(&parts.headers, body, entry, shared).await?;
        (body, held)
    } else {
        (body, Bytes::new())
    };
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    if let Some(name) = &h.timestamp_header {
        let v = HeaderValue::from_str(&timestamp).map_err(|_| mismatch(entry, "timestamp"))?;
        parts.headers.insert(name.clone(), v);
    }
    let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let message = hmac::message(
        &h.message,
        &hmac::Fields {
            method: parts.method.as_str(),
            path,
            host,
            body: &held,
            timestamp: &timestamp,
            headers: &parts.headers,
        },
    );
    let mut value = HeaderValue::from_str(&hmac::signature(h, &message))
        .map_err(|_| mismatch(entry, "the signature is not a header value"))?;
    value.set_sensitive(true);
    parts.headers.insert(h.signature_header.clone(), value);
    Ok((body, None))
}

/// The whole body, within the buffering budget and [`MAX_SIGNED_BODY`], and the body to send
/// (holding its share of the budget until it is sent).
///
/// SECURITY: every byte held is reserved before it is kept, announced or not (HTTP/2 and chunked
/// bodies announce no length): else many streams each sending up to 64 MiB pin memory without
/// bound (SPEC §8 `max_buffered_body_bytes`).
async fn hold(
    headers: &HeaderMap,
    mut body: ProxyBody,
    entry: &Entry,
    shared: &Shared,
) -> Result<(Bytes, ProxyBody), ProxyError> {
    let too_large = || ProxyError::PayloadTooLarge {
        credential: entry.credential_id.clone(),
        limit: MAX_SIGNED_BODY,
    };
    let length = content_length(headers);
    if length.is_some_and(|n| n > MAX_SIGNED_BODY) {
        return Err(too_large());
    }
    // Held bodies count against max_buffered_body_bytes with all the others.
    let mut reservation = shared
        .buffered
        .reserve(length.unwrap_or(0))
        .ok_or_else(too_large)?;
    let mut reserved = length.unwrap_or(0);
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bodies::broken_body(&*e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = out.len() + data.len();
        if total > MAX_SIGNED_BODY {
            return Err(too_large());
        }
        if total > reserved {
            if !reservation.grow(total - reserved) {
                return Err(too_large());
            }
            reserved = total;
        }
        out.extend_from_slice(&data);
    }
    let held = out.freeze();
    let body = Reserved::new(bodies::full(held.clone()), reservation).boxed();
    Ok((held, body))
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn header_str(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(|s| s.trim().to_string())
}

/// A query parameter, decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| String::from_utf8_lossy(&sigv4::percent_decode(v)).into_owned())
    })
}

/// S3 paths are signed as sent; other services' are normalised and encoded again.
fn is_s3(service: &str) -> bool {
    service == "s3" || service == "s3-object-lambda" || service == "s3express"
}
