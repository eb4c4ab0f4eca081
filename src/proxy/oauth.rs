//! Requests an `mcp_oauth` credential authorizes: the token is refreshed before it is used when it
//! is about to expire, and once more, with the request replayed, when the MCP server answers 401.

use std::sync::Arc;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use time::OffsetDateTime;
use tracing::info;

use super::budget::Reservation;
use super::exchange::{To, attempt};
use super::{Shared, bodies};
use crate::error::ProxyError;
use crate::oauth::{EXPIRY_MARGIN, Reason, Refreshed};
use crate::secret::Secret;
use crate::store::Store;
use crate::substitute;
use crate::upstream::ProxyBody;

/// The refreshable `mcp_oauth` credential this request is authorized with, if any: one whose URL
/// covers it, with the request carrying exactly `Authorization: Bearer <token>` once substituted
/// (no Authorization, or `Bearer <placeholder>`). Only then does a 401 say the token was refused:
/// a client that wraps the placeholder in anything else must not make keyswap refresh at will.
pub(super) fn refreshable_credential(store: &Store, to: To<'_>, parts: &Parts) -> Option<usize> {
    let entry = substitute::mcp_credential(
        store.placeholders(),
        to.target(store, parts.uri.path()),
        &parts.headers,
    )?;
    let credential = store.entry(entry);
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let exact = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v
            .as_bytes()
            .split_at_checked(7)
            .is_some_and(|(scheme, rest)| {
                scheme.eq_ignore_ascii_case(b"bearer ") && rest == credential.placeholder.as_bytes()
            }),
        _ => false,
    };
    (exact && credential.oauth.is_some_and(|o| o.refreshable)).then_some(entry)
}

/// Forwards a request that store entry `entry` (a refreshable `mcp_oauth` credential) authorizes.
pub(super) async fn forward(
    parts: Parts,
    body: ProxyBody,
    entry: usize,
    to: To<'_>,
    store: &Store,
    shared: &Shared,
) -> Result<Response<ProxyBody>, ProxyError> {
    let credential = store.entry(entry);
    let flight = Flight {
        vault_id: credential.vault_id.clone(),
        credential_id: credential.credential_id.clone(),
        shared,
    };
    let mut renewed: Option<Arc<Store>> = None;
    if credential
        .oauth
        .is_some_and(|o| o.due(OffsetDateTime::now_utc(), EXPIRY_MARGIN))
    {
        flight.refresh(Reason::Expiring).await?;
        renewed = Some(shared.store.load());
    }
    let store = renewed.as_deref().unwrap_or(store);
    let (bytes, _reservation) = replayable(&parts, body, shared).await?;
    let bytes = match bytes {
        Replay::Buffered(bytes) => bytes,
        // Too large to keep for a second try: sent once, a 401 goes back to the client as it is.
        Replay::Streamed(body) => return attempt(parts, body, None, to, store, shared).await,
    };
    let used = flight.token(store);
    let first = attempt(
        copy(&parts),
        bodies::full(bytes.clone()),
        None,
        to,
        store,
        shared,
    )
    .await?;
    if first.status() != StatusCode::UNAUTHORIZED {
        return Ok(first);
    }
    let Some(used) = used else { return Ok(first) };
    info!(credential_id = %flight.credential_id, "the MCP server refused the access token: refreshing");
    if flight.refresh(Reason::Rejected(&used)).await? == Refreshed::CoolingDown {
        // Refreshed moments ago and refused again: the token is not the problem.
        return Ok(first);
    }
    drop(first);
    let renewed = shared.store.load();
    attempt(parts, bodies::full(bytes), None, to, &renewed, shared).await
}

/// The credential being refreshed, and where.
struct Flight<'a> {
    vault_id: String,
    credential_id: String,
    shared: &'a Shared,
}

impl Flight<'_> {
    async fn refresh(&self, reason: Reason<'_>) -> Result<Refreshed, ProxyError> {
        self.shared
            .refresher
            .refresh(&self.vault_id, &self.credential_id, reason)
            .await
            .map_err(|e| ProxyError::CredentialRefresh {
                credential_id: self.credential_id.clone(),
                detail: e.to_string(),
            })
    }

    /// The access token `store` holds for the credential (the one a request sent with it carries).
    fn token(&self, store: &Store) -> Option<Secret> {
        store
            .placeholders()
            .mcp_entries()
            .iter()
            .map(|&i| store.entry(i))
            .find(|e| e.credential_id == self.credential_id && e.vault_id == self.vault_id)
            .map(|e| e.secret.clone())
    }
}

enum Replay {
    Buffered(Bytes),
    Streamed(ProxyBody),
}

/// Reads a body of a known length up to the buffering limit, so it can be sent twice; a longer or
/// unannounced one is passed through. `None`: the body did not match its `Content-Length`.
/// The reservation of the shared buffering budget lives as long as the bytes are kept.
async fn replayable(
    parts: &Parts,
    body: ProxyBody,
    shared: &Shared,
) -> Result<(Replay, Option<Reservation>), ProxyError> {
    if http_body::Body::is_end_stream(&body) {
        return Ok((Replay::Buffered(Bytes::new()), None));
    }
    match bodies::hold(&parts.headers, bodies::BUFFER_LIMIT, &shared.buffered) {
        Some((limit, reservation)) => {
            let bytes = bodies::read_request_body(body, limit).await?;
            Ok((Replay::Buffered(bytes), Some(reservation)))
        }
        None => Ok((Replay::Streamed(body), None)),
    }
}

/// The request head again, for the replay (extensions are per connection and are not copied).
fn copy(parts: &Parts) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}
