//! `POST …/credentials/{id}/mcp_oauth_validate`: probes the MCP server with the stored access token
//! (an MCP `initialize`), refreshes once when the server refuses it, and reports what happened.

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use zeroize::Zeroizing;

use super::exchange::{self, Captured};
use super::{Reason, RefreshError, Refreshed, Refresher};
use crate::secret::Secret;
use crate::vault::OauthAuth;

/// The MCP method the probe calls.
const PROBE_METHOD: &str = "initialize";

/// The verdict and its evidence, shaped like the API's `vault_credential_validation`.
#[derive(Debug, Clone)]
pub struct Validation {
    /// `valid`, `invalid` (the server refused the token) or `unknown`.
    pub status: &'static str,
    pub has_refresh_token: bool,
    /// The failing probe step; `None` when the probe succeeded.
    pub mcp_probe: Option<Probe>,
    /// The refresh attempted during validation, if any.
    pub refresh: Option<RefreshReport>,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub method: &'static str,
    pub http_response: Option<Captured>,
}

#[derive(Debug, Clone)]
pub struct RefreshReport {
    /// `succeeded`, `failed`, `connect_error` or `no_refresh_token`.
    pub status: &'static str,
    pub http_response: Option<Captured>,
}

/// Validates an `mcp_oauth` credential; `None` when it is not one (or no longer exists).
pub async fn validate(
    refresher: &Refresher,
    vault_id: &str,
    credential_id: &str,
) -> Option<Validation> {
    let current = || {
        let config = refresher.live.store().load().config().clone();
        super::find(&config, vault_id, credential_id).cloned()
    };
    let oauth = current()?;
    let has_refresh_token = oauth.refresh.is_some();
    let mut refresh = None;
    if has_refresh_token
        && oauth
            .expires_at
            .is_some_and(|t| t - super::EXPIRY_MARGIN <= time::OffsetDateTime::now_utc())
    {
        refresh = Some(report(
            refresher
                .refresh(vault_id, credential_id, Reason::Expiring)
                .await,
        ));
    }
    let oauth = current()?;
    let mut outcome = probe(refresher, &oauth).await;
    if outcome.refused() {
        if !has_refresh_token {
            refresh = Some(RefreshReport {
                status: "no_refresh_token",
                http_response: None,
            });
        } else if refresh.is_none() {
            let result = refresher
                .refresh(
                    vault_id,
                    credential_id,
                    Reason::Validation(&oauth.access_token),
                )
                .await;
            let succeeded = result.is_ok();
            refresh = Some(report(result));
            if succeeded && let Some(renewed) = current() {
                outcome = probe(refresher, &renewed).await;
            }
        }
    }
    Some(Validation {
        status: outcome.verdict(),
        has_refresh_token,
        mcp_probe: (!outcome.succeeded()).then(|| Probe {
            method: PROBE_METHOD,
            http_response: outcome.0.ok(),
        }),
        refresh,
    })
}

fn report(result: Result<Refreshed, RefreshError>) -> RefreshReport {
    let (status, http_response) = match result {
        Ok(Refreshed::New(captured)) => ("succeeded", Some(captured)),
        Ok(Refreshed::AlreadyDone | Refreshed::CoolingDown) => ("succeeded", None),
        Err(RefreshError::NoRefreshToken) => ("no_refresh_token", None),
        Err(RefreshError::Connect(_)) => ("connect_error", None),
        Err(e) => ("failed", e.captured().cloned()),
    };
    RefreshReport {
        status,
        http_response,
    }
}

/// What the MCP server answered, or `Err` when it could not be reached.
struct ProbeOutcome(Result<Captured, String>);

impl ProbeOutcome {
    fn succeeded(&self) -> bool {
        self.0
            .as_ref()
            .is_ok_and(|c| (200..300).contains(&c.status_code))
    }

    fn refused(&self) -> bool {
        self.0
            .as_ref()
            .is_ok_and(|c| matches!(c.status_code, 401 | 403))
    }

    fn verdict(&self) -> &'static str {
        if self.succeeded() {
            "valid"
        } else if self.refused() {
            "invalid"
        } else {
            "unknown"
        }
    }
}

/// An MCP `initialize` call with the token, as a client would open a session.
async fn probe(refresher: &Refresher, oauth: &OauthAuth) -> ProbeOutcome {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": PROBE_METHOD,
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "keyswap", "version": env!("CARGO_PKG_VERSION") },
        },
    });
    let result = async {
        let mut request = exchange::request(&oauth.mcp_server_url, body.to_string().into_bytes())?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(AUTHORIZATION, bearer(&oauth.access_token)?);
        let answer = exchange::send(&refresher.client(), request, refresher.timeout).await?;
        Ok(answer.capture(&[oauth.access_token.expose()]))
    }
    .await;
    ProbeOutcome(result)
}

fn bearer(token: &Secret) -> Result<HeaderValue, String> {
    let mut value = Zeroizing::new(b"Bearer ".to_vec());
    value.extend_from_slice(token.expose());
    let mut value =
        HeaderValue::from_bytes(&value).map_err(|_| "the token cannot be sent in a header")?;
    value.set_sensitive(true);
    Ok(value)
}
