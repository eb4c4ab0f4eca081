//! OAuth for `mcp_oauth` credentials: a new access token from the token endpoint before the old one
//! expires or after the MCP server refuses it, one refresh per credential at a time, the new tokens
//! persisted like an admin write.
//!
//! The token endpoint is reached through the same verified upstream client as proxied traffic, so
//! egress rules, `[upstream.resolve]` and the upstream CAs apply to it too.

mod exchange;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::Deserialize;
use time::OffsetDateTime;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::live::{Live, WriteError};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::secret::Secret;
use crate::upstream::UpstreamPool;
use crate::vault::{Auth, OauthAuth, OauthRefresh, TokenEndpointAuth};
pub use exchange::Captured;

/// A token this close to `expires_at` is refreshed before it is used.
pub const EXPIRY_MARGIN: time::Duration = time::Duration::seconds(60);
/// After a refresh (successful or not), the request path does not refresh the same credential
/// again for this long: a token rejected right after a refresh is not refreshed in a loop (the
/// sandbox could otherwise make every request rewrite the config file), tokens that live less
/// than the margin are not refreshed on every request, and requests queued behind a failed
/// refresh share its answer instead of retrying one after another.
pub const COOLDOWN: Duration = Duration::from_secs(10);
/// How long a failed refresh's answer is reused: long enough for the requests that queued behind
/// it to share it, short enough that a fixed token endpoint is tried again at once.
pub const FAILURE_REUSE: Duration = Duration::from_secs(2);
/// The longest a token endpoint may take to answer.
const TOKEN_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a refresh did not produce a new token. Never carries a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    #[error("the credential has no refresh settings")]
    NoRefreshToken,
    #[error("the credential no longer exists")]
    Gone,
    #[error("cannot reach the token endpoint: {0}")]
    Connect(String),
    #[error("the token endpoint answered {}", .0.status_code)]
    Status(Captured),
    #[error("the token endpoint's answer has no access_token")]
    Malformed(Captured),
    #[error("the new tokens could not be saved: {0}")]
    Persist(String),
    #[error("the stored tokens were replaced while refreshing")]
    Superseded,
}

impl RefreshError {
    /// The token endpoint's HTTP status, when it answered.
    pub fn endpoint_status(&self) -> Option<u16> {
        match self {
            RefreshError::Status(c) | RefreshError::Malformed(c) => Some(c.status_code),
            _ => None,
        }
    }

    /// The token endpoint's answer, when there was one (scrubbed).
    pub fn captured(&self) -> Option<&Captured> {
        match self {
            RefreshError::Status(c) | RefreshError::Malformed(c) => Some(c),
            _ => None,
        }
    }

    fn metric_label(&self) -> &'static str {
        match self {
            RefreshError::NoRefreshToken | RefreshError::Gone => "not_refreshable",
            RefreshError::Connect(_) => "connect_error",
            RefreshError::Status(_) | RefreshError::Malformed(_) => "failed",
            RefreshError::Persist(_) => "persist_failed",
            RefreshError::Superseded => "superseded",
        }
    }
}

/// Why a refresh is asked for: it is skipped when, by the time this caller holds the credential's
/// lock, another caller has already done it.
#[derive(Debug, Clone, Copy)]
pub enum Reason<'a> {
    /// The token is about to expire.
    Expiring,
    /// The MCP server refused this token.
    Rejected(&'a Secret),
    /// An operator asked (`mcp_oauth_validate`) after the server refused this token: the
    /// cooldown does not apply.
    Validation(&'a Secret),
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// A new token was obtained (the endpoint's answer, scrubbed, for the validation report).
    New(Captured),
    /// Another caller refreshed while this one waited, or an operator stored new tokens.
    AlreadyDone,
    /// Refreshed moments ago and refused again: not refreshed in a loop.
    CoolingDown,
}

/// Refreshes `mcp_oauth` tokens, one flight per credential.
pub struct Refresher {
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    pool: Arc<UpstreamPool>,
    timeout: Duration,
    /// One lock per credential, holding the outcome of its last refresh and when it ended.
    flights: DashMap<String, Arc<tokio::sync::Mutex<Option<Last>>>>,
}

/// The last refresh of a credential.
struct Last {
    at: std::time::Instant,
    result: Result<(), RefreshError>,
}

impl Refresher {
    pub fn new(
        live: Arc<Live>,
        pool: Arc<UpstreamPool>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            live,
            metrics,
            pool,
            timeout: timeout.min(TOKEN_ENDPOINT_TIMEOUT),
            flights: DashMap::new(),
        }
    }

    /// The upstream client for the egress rules in force now.
    pub fn client(&self) -> Arc<crate::upstream::Pooled> {
        self.pool.client(&self.live.store().load())
    }

    /// Obtains a new access token for the credential unless `reason` no longer holds. Concurrent
    /// callers for one credential wait for the first; the stored tokens change only on success.
    pub async fn refresh(
        &self,
        vault_id: &str,
        credential_id: &str,
        reason: Reason<'_>,
    ) -> Result<Refreshed, RefreshError> {
        let flight = self
            .flights
            .entry(credential_id.to_string())
            .or_default()
            .clone();
        let mut last = flight.lock().await;
        let still_needed = |config: &crate::config::Config| {
            let oauth = find(config, vault_id, credential_id).ok_or(RefreshError::Gone)?;
            Ok::<_, RefreshError>(match reason {
                Reason::Expiring => oauth
                    .expires_at
                    .is_none_or(|t| t - EXPIRY_MARGIN <= OffsetDateTime::now_utc()),
                Reason::Rejected(used) | Reason::Validation(used) => oauth.access_token == *used,
            })
        };
        if !still_needed(self.live.store().load().config())? {
            return Ok(Refreshed::AlreadyDone);
        }
        let recent = last.as_ref().filter(|l| {
            l.at.elapsed()
                < if l.result.is_ok() {
                    COOLDOWN
                } else {
                    FAILURE_REUSE
                }
        });
        if let (Some(recent), false) = (recent, matches!(reason, Reason::Validation(_))) {
            return match (&recent.result, reason) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), Reason::Rejected(_)) => Ok(Refreshed::CoolingDown),
                (Ok(()), _) => Ok(Refreshed::AlreadyDone),
            };
        }
        // Across replicas (database backend): one refresh at a time per credential — taken only
        // now, so a burst of 401s in the cooldown costs no database connection — and the tokens
        // another replica stored meanwhile are seen before deciding again.
        let _across = self
            .live
            .refresh_flight(credential_id)
            .await
            .map_err(|e| RefreshError::Persist(e.to_string()))?;
        let config = self.live.store().load().config().clone();
        if !still_needed(&config)? {
            return Ok(Refreshed::AlreadyDone);
        }
        let oauth = find(&config, vault_id, credential_id).ok_or(RefreshError::Gone)?;
        let result = self.exchange_and_save(vault_id, credential_id, oauth).await;
        *last = Some(Last {
            at: std::time::Instant::now(),
            result: match &result {
                Ok(_) | Err(RefreshError::Superseded) => Ok(()),
                Err(e) => Err(e.clone()),
            },
        });
        if let Err(RefreshError::Superseded) = result {
            return Ok(Refreshed::AlreadyDone);
        }
        let label = match &result {
            Ok(_) => "succeeded",
            Err(e) => e.metric_label(),
        };
        self.metrics
            .oauth_refreshes
            .get_or_create(&OutcomeLabel {
                outcome: label.to_string(),
            })
            .inc();
        match &result {
            Ok(_) => info!(credential_id, "OAuth access token refreshed"),
            Err(e) => {
                warn!(credential_id, status = ?e.endpoint_status(), error = %e, "OAuth refresh failed")
            }
        }
        result.map(Refreshed::New)
    }

    async fn exchange_and_save(
        &self,
        vault_id: &str,
        credential_id: &str,
        oauth: &OauthAuth,
    ) -> Result<Captured, RefreshError> {
        let refresh = oauth.refresh.as_ref().ok_or(RefreshError::NoRefreshToken)?;
        let request = token_request(refresh);
        let mut known: Vec<&[u8]> =
            vec![oauth.access_token.expose(), refresh.refresh_token.expose()];
        if let TokenEndpointAuth::ClientSecretBasic(s) | TokenEndpointAuth::ClientSecretPost(s) =
            &refresh.token_endpoint_auth
        {
            known.push(s.expose());
        }
        let answer = exchange::post(
            &self.client(),
            &refresh.token_endpoint,
            request,
            self.timeout,
        )
        .await
        .map_err(RefreshError::Connect)?;
        if !(200..300).contains(&answer.status) {
            return Err(RefreshError::Status(answer.capture(&known)));
        }
        let Some(tokens) = Tokens::parse(&answer.body) else {
            return Err(RefreshError::Malformed(answer.capture(&known)));
        };
        // The answer carries the new tokens: masked (before any cut) in the copy kept for reports.
        known.push(tokens.access_token.expose());
        if let Some(r) = &tokens.refresh_token {
            known.push(r.expose());
        }
        let captured = answer.capture(&known);
        self.save(vault_id, credential_id, &oauth.access_token, &tokens)
            .await?;
        Ok(captured)
    }

    /// Writes the new tokens to the file (atomically, validated) and swaps the store in.
    async fn save(
        &self,
        vault_id: &str,
        credential_id: &str,
        refreshed_from: &Secret,
        tokens: &Tokens,
    ) -> Result<(), RefreshError> {
        let written = self
            .live
            .write(|doc, config| {
                // An operator who stored tokens meanwhile wins over the ones refreshed from the old.
                let current = find(config, vault_id, credential_id).ok_or(RefreshError::Gone)?;
                if current.access_token != *refreshed_from {
                    return Err(RefreshError::Superseded);
                }
                let table = crate::admin::document::credential(doc, vault_id, credential_id)
                    .ok_or(RefreshError::Gone)?;
                let auth = table
                    .get_mut("auth")
                    .and_then(toml_edit::Item::as_table_like_mut)
                    .ok_or(RefreshError::Gone)?;
                tokens.apply(auth);
                Ok(())
            })
            .await;
        match written {
            Ok(result) => result,
            Err(WriteError::FileInvalid(_) | WriteError::Invalid(_)) => Err(RefreshError::Persist(
                "the configuration file does not validate".into(),
            )),
            Err(e) => Err(RefreshError::Persist(e.to_string())),
        }
    }
}

/// The `mcp_oauth` settings of a credential in `config`.
fn find<'c>(
    config: &'c crate::config::Config,
    vault_id: &str,
    credential_id: &str,
) -> Option<&'c OauthAuth> {
    let vault = config.vaults.iter().find(|v| v.id == vault_id)?;
    let credential = vault.credentials.iter().find(|c| c.id == credential_id)?;
    match &credential.auth {
        Auth::McpOauth(o) => Some(o),
        _ => None,
    }
}

/// The form body and extra headers of a `grant_type=refresh_token` request (RFC 6749 §6), with the
/// client authenticated as configured (§2.3.1).
fn token_request(refresh: &OauthRefresh) -> exchange::Form {
    let mut form = exchange::Form::default();
    form.field("grant_type", b"refresh_token");
    form.field("refresh_token", refresh.refresh_token.expose());
    form.field("client_id", refresh.client_id.as_bytes());
    if let Some(scope) = &refresh.scope {
        form.field("scope", scope.as_bytes());
    }
    if let Some(resource) = &refresh.resource {
        form.field("resource", resource.as_bytes());
    }
    match &refresh.token_endpoint_auth {
        TokenEndpointAuth::None => {}
        TokenEndpointAuth::ClientSecretPost(secret) => {
            form.field("client_secret", secret.expose());
        }
        TokenEndpointAuth::ClientSecretBasic(secret) => {
            form.basic_auth(refresh.client_id.as_bytes(), secret.expose());
        }
    }
    form
}

/// The part of a token response (RFC 6749 §5.1) keyswap keeps.
struct Tokens {
    access_token: Secret,
    /// Absent: the old refresh token stays valid.
    refresh_token: Option<Secret>,
    expires_at: Option<OffsetDateTime>,
}

impl Tokens {
    fn parse(body: &[u8]) -> Option<Tokens> {
        #[derive(Deserialize)]
        struct Raw {
            access_token: String,
            refresh_token: Option<String>,
            expires_in: Option<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(body).ok()?;
        let access_token = Zeroizing::new(raw.access_token);
        let refresh_token = raw.refresh_token.map(Zeroizing::new);
        let valid = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic());
        if !valid(&access_token) {
            return None;
        }
        // Some servers send the lifetime as a string.
        let lifetime = match raw.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        let expires_at = lifetime.and_then(|secs| {
            let secs = i64::try_from(secs).ok()?;
            OffsetDateTime::now_utc().checked_add(time::Duration::seconds(secs))
        });
        Some(Tokens {
            access_token: Secret::new(access_token.as_bytes()),
            refresh_token: refresh_token
                .filter(|t| valid(t))
                .map(|t| Secret::new(t.as_bytes())),
            expires_at,
        })
    }

    /// Sets the new tokens in a credential's `auth` table. A token that came from `_env` or `_file`
    /// is now written in place: the file is the store of record for rotated tokens.
    fn apply(&self, auth: &mut dyn toml_edit::TableLike) {
        use crate::admin::document::{set_opt, set_secret};
        set_secret(
            auth,
            "access_token",
            &String::from_utf8_lossy(self.access_token.expose()),
        );
        let expires = self
            .expires_at
            .map(|t| t.replace_nanosecond(0).unwrap_or(t))
            .map(crate::vault::timestamp);
        set_opt(auth, "expires_at", expires.as_deref());
        if let Some(token) = &self.refresh_token
            && let Some(refresh) = auth
                .get_mut("refresh")
                .and_then(toml_edit::Item::as_table_like_mut)
        {
            set_secret(
                refresh,
                "refresh_token",
                &String::from_utf8_lossy(token.expose()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_parsing() {
        let t = Tokens::parse(br#"{"access_token":"a1","token_type":"Bearer","expires_in":3600,"refresh_token":"r2"}"#).unwrap();
        assert_eq!(t.access_token.expose(), b"a1");
        assert_eq!(t.refresh_token.unwrap().expose(), b"r2");
        let left = t.expires_at.unwrap() - OffsetDateTime::now_utc();
        assert!((3590..=3600).contains(&left.whole_seconds()));
        let t = Tokens::parse(br#"{"access_token":"a1","expires_in":"60"}"#).unwrap();
        assert!(t.refresh_token.is_none() && t.expires_at.is_some());
        assert!(
            Tokens::parse(br#"{"access_token":"a1"}"#)
                .unwrap()
                .expires_at
                .is_none()
        );
        // No token, an empty one, or one no header can carry: refused.
        assert!(Tokens::parse(br#"{"error":"invalid_grant"}"#).is_none());
        assert!(Tokens::parse(br#"{"access_token":""}"#).is_none());
        assert!(Tokens::parse(b"{\"access_token\":\"a\\r\\nx: y\"}").is_none());
        assert!(Tokens::parse(b"not json").is_none());
    }

    fn refresh(auth: TokenEndpointAuth) -> OauthRefresh {
        OauthRefresh {
            client_id: "app 1".into(),
            refresh_token: Secret::new("r/1+"),
            token_endpoint: "https://auth.example.com/token".into(),
            token_endpoint_auth: auth,
            scope: Some("read write".into()),
            resource: None,
        }
    }

    #[test]
    fn token_request_per_client_authentication() {
        let none = token_request(&refresh(TokenEndpointAuth::None));
        assert_eq!(
            none.body(),
            b"grant_type=refresh_token&refresh_token=r%2F1%2B&client_id=app+1&scope=read+write"
        );
        assert!(none.authorization().is_none());
        let post = token_request(&refresh(TokenEndpointAuth::ClientSecretPost(Secret::new(
            "s&1",
        ))));
        assert!(post.body().ends_with(b"&client_secret=s%261"));
        let basic = token_request(&refresh(TokenEndpointAuth::ClientSecretBasic(Secret::new(
            "s:1",
        ))));
        assert!(!basic.body().windows(13).any(|w| w == b"client_secret"));
        // RFC 6749 §2.3.1: both parts form-encoded before base64.
        assert_eq!(
            basic.authorization().unwrap(),
            &format!("Basic {}", b64("app+1:s%3A1"))
        );
    }

    fn b64(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
