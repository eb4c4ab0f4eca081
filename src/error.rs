//! Every answer keyswap itself gives a proxy client, made in one place: a status, the
//! `x-keyswap-error` code, and a short plain-text body saying what happened and what to change.
//!
//! SECURITY: messages are built from host names, credential ids and fixed text only, never from
//! header values or secrets.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, PROXY_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

use crate::upstream::{ConnectError, ProxyBody};

/// The header that carries the machine-readable error code.
pub const ERROR_HEADER: &str = "x-keyswap-error";

/// A request keyswap refuses or cannot complete.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("proxy authentication required")]
    ProxyAuthRequired,
    #[error("session {session} has as many open connections as it may")]
    TooManyConnections { session: String },
    #[error("the request head is larger than [limits] allows")]
    HeadersTooLarge,
    #[error("the request head was not complete within the header timeout")]
    RequestTimeout,
    #[error("the request body arrived slower than 500 bytes/s")]
    BodyTooSlow,
    #[error("this tunnel is for {expected}; the request names {got}")]
    HostMismatch { expected: String, got: String },
    #[error("egress to {host} is refused: {rule}")]
    EgressDenied { host: String, rule: EgressRule },
    #[error("placeholder of {credentials} is not allowed on {host}")]
    PlaceholderOutOfScope { host: String, credentials: String },
    #[error("cannot resolve {host}")]
    UpstreamDns { host: String },
    #[error("cannot connect to {host}")]
    UpstreamConnect { host: String },
    #[error("TLS with {host} failed")]
    UpstreamTls { host: String },
    #[error("{host} sent a compressed response to a request that carried a secret")]
    UpstreamEncoding { host: String },
    #[error("{host} did not answer in time")]
    UpstreamTimeout { host: String },
    #[error(
        "the request signed with the placeholder of {credential} cannot be signed again: {detail}"
    )]
    SigningMismatch { credential: String, detail: String },
    #[error("credential {credential} does not sign for {detail}")]
    SigningScope { credential: String, detail: String },
    #[error("credential {credential} cannot sign this request: {detail}")]
    SigningUnsupported { credential: String, detail: String },
    #[error(
        "the body of a request credential {credential} signs is larger than keyswap holds ({limit} bytes)"
    )]
    PayloadTooLarge { credential: String, limit: usize },
    #[error("refreshing the OAuth token of credential {credential_id} failed: {detail}")]
    CredentialRefresh {
        credential_id: String,
        detail: String,
    },
}

/// A request body cut off for arriving too slowly (see `proxy::pace`). The upstream client that was
/// sending it reports only a failed exchange (over HTTP/2 the cause is lost), so the request path
/// learns it from the body's own flag, not from this error's place in a cause chain.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than 500 bytes/s")]
pub struct BodyTooSlow;

/// The rule behind a `403 egress-denied`, carried as a value so that the advice names the setting
/// that really refused (never inferred from a message).
///
/// SECURITY: no variant holds a resolved address. The sandbox sees this text; an address in it
/// would let the sandbox map internal names (a DNS oracle). The operator's log keeps the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    /// `[[sessions]] network` of this session does not include the host.
    SessionNetwork { session: String },
    /// `[proxy] block_private_addresses`: the host resolves only to non-public addresses that
    /// `allow_private_cidrs` does not open.
    PrivateAddress,
    /// The host is one of keyswap's own listeners (loop guard).
    OwnListener,
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressRule::SessionNetwork { session } => write!(
                f,
                "the network policy of session {session} does not include it"
            ),
            EgressRule::PrivateAddress => f.write_str(
                "it resolves to a non-public address, and [proxy] block_private_addresses refuses those",
            ),
            EgressRule::OwnListener => f.write_str("it is keyswap's own listener"),
        }
    }
}

impl ProxyError {
    /// The status and `x-keyswap-error` code of SPEC §5.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ProxyError::ProxyAuthRequired => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "proxy-auth-required",
            ),
            ProxyError::TooManyConnections { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-connections")
            }
            ProxyError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
            ),
            ProxyError::RequestTimeout | ProxyError::BodyTooSlow => {
                (StatusCode::REQUEST_TIMEOUT, "request-timeout")
            }
            ProxyError::HostMismatch { .. } => (StatusCode::MISDIRECTED_REQUEST, "host-mismatch"),
            ProxyError::EgressDenied { .. } => (StatusCode::FORBIDDEN, "egress-denied"),
            ProxyError::PlaceholderOutOfScope { .. } => {
                (StatusCode::FORBIDDEN, "placeholder-out-of-scope")
            }
            ProxyError::UpstreamDns { .. } => (StatusCode::BAD_GATEWAY, "upstream-dns"),
            ProxyError::UpstreamConnect { .. } => (StatusCode::BAD_GATEWAY, "upstream-connect"),
            ProxyError::UpstreamTls { .. } => (StatusCode::BAD_GATEWAY, "upstream-tls"),
            ProxyError::UpstreamEncoding { .. } => (StatusCode::BAD_GATEWAY, "upstream-encoding"),
            ProxyError::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
            ProxyError::CredentialRefresh { .. } => (StatusCode::BAD_GATEWAY, "credential-refresh"),
            ProxyError::SigningMismatch { .. } => (StatusCode::BAD_REQUEST, "signing-mismatch"),
            ProxyError::SigningScope { .. } => (StatusCode::FORBIDDEN, "signing-scope"),
            ProxyError::SigningUnsupported { .. } => (StatusCode::FORBIDDEN, "signing-unsupported"),
            ProxyError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large")
            }
        }
    }

    /// What the user should change, after the one-line statement of what happened.
    fn advice(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "Send a well-formed HTTP/1.1 or HTTP/2 request.",
            ProxyError::ProxyAuthRequired => {
                "Send Proxy-Authorization: Basic base64(session_id:token), e.g. HTTPS_PROXY=http://session_id:token@host:port (see keyswap env --session)."
            }
            ProxyError::TooManyConnections { .. } => {
                "Reuse or close idle connections to keyswap, or raise max_connections_per_session under [limits]."
            }
            ProxyError::HeadersTooLarge => {
                "Send fewer or smaller headers, or raise max_headers / max_header_bytes under [limits]."
            }
            ProxyError::BodyTooSlow => {
                "Send the request body without long pauses; the allowance is header_read_timeout_secs under [limits] plus one second per 500 bytes."
            }
            ProxyError::RequestTimeout => {
                "Send the whole request head promptly; the limit is header_read_timeout_secs under [limits]."
            }
            ProxyError::HostMismatch { .. } => {
                "Send requests inside a CONNECT tunnel only to the host it was opened for (TLS SNI, Host and :authority must all name it)."
            }
            ProxyError::EgressDenied { rule, .. } => match rule {
                EgressRule::SessionNetwork { .. } => {
                    "Send requests only to hosts the session may reach; an operator can add this host to the session's network allowed_hosts under [[sessions]]."
                }
                EgressRule::PrivateAddress => {
                    "Private, loopback and link-local upstreams are refused; an operator can open a range with [proxy] allow_private_cidrs."
                }
                EgressRule::OwnListener => {
                    "keyswap does not proxy to its own listeners; send the request to the real upstream."
                }
            },
            ProxyError::PlaceholderOutOfScope { .. } => {
                "The credential's allowed_hosts does not include this host: send it only to its allowed hosts, or widen its networking scope."
            }
            ProxyError::UpstreamDns { .. } => {
                "Check the host name, or add it to [upstream.resolve]."
            }
            ProxyError::UpstreamConnect { .. } => {
                "Check that the upstream is up and reachable from keyswap."
            }
            ProxyError::UpstreamTls { .. } => {
                "The upstream's certificate is not trusted for this host; add its CA to [tls] upstream_ca_files if it is private."
            }
            ProxyError::UpstreamEncoding { .. } => {
                "keyswap asked for an uncompressed answer so it could keep the secret out of it; the upstream compressed it anyway, so it was withheld."
            }
            ProxyError::UpstreamTimeout { .. } => {
                "The upstream was too slow; retry, or raise the timeouts under [limits]."
            }
            ProxyError::SigningMismatch { .. } => {
                "Sign with the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the placeholder) that `keyswap env` prints, and send the body the signature covers, unchanged."
            }
            ProxyError::SigningScope { .. } => {
                "Send the request to a region and service the credential's auth.regions / auth.services allow, or widen them."
            }
            ProxyError::SigningUnsupported { .. } => {
                "Sign with AWS4-HMAC-SHA256 (SigV4), not SigV4A (AWS4-ECDSA-P256-SHA256); in the AWS SDKs, leave sigv4a off or use a regional endpoint."
            }
            ProxyError::PayloadTooLarge { .. } => {
                "Sign the body as UNSIGNED-PAYLOAD or a chunk-signed stream (the AWS SDKs do for large uploads), or send a smaller body."
            }
            ProxyError::CredentialRefresh { .. } => {
                "The stored tokens are unchanged. Check the credential's refresh settings (token_endpoint, client_id, client authentication), or store a new token through the admin API."
            }
        }
    }

    /// The body of every error answer: what happened, then what to change.
    fn body(&self) -> String {
        format!("keyswap: {self}.\n{}\n", self.advice())
    }

    /// The answer as HTTP/1.1 bytes, for refusals made before hyper parses a request; the
    /// connection closes after it.
    pub fn to_http1_bytes(&self) -> Bytes {
        let (status, code) = self.status_and_code();
        let body = self.body();
        Bytes::from(format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n{ERROR_HEADER}: {code}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
        ))
    }

    /// The answer the client sees.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let (status, code) = self.status_and_code();
        let body = self.body();
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        );
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
        if matches!(self, ProxyError::ProxyAuthRequired) {
            headers.insert(
                PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"keyswap\""),
            );
        }
        response
    }

    /// Classifies an upstream client failure by walking its `source()` chain.
    pub fn from_upstream(host: &str, err: &(dyn std::error::Error + 'static)) -> ProxyError {
        let host = host.to_string();
        match crate::upstream::connect_error(err) {
            Some(ConnectError::Dns { .. } | ConnectError::NoHost) => {
                ProxyError::UpstreamDns { host }
            }
            // SECURITY: the resolved address stays out of the answer (see `EgressRule`).
            Some(ConnectError::Denied { .. }) => ProxyError::EgressDenied {
                host,
                rule: EgressRule::PrivateAddress,
            },
            Some(ConnectError::Loop { .. }) => ProxyError::EgressDenied {
                host,
                rule: EgressRule::OwnListener,
            },
            Some(ConnectError::Tls { .. }) => ProxyError::UpstreamTls { host },
            Some(ConnectError::Timeout { .. }) => ProxyError::UpstreamTimeout { host },
            Some(ConnectError::Connect { .. }) | None => ProxyError::UpstreamConnect { host },
        }
    }

    /// Short label for logs and metrics.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

impl From<ConnectError> for ProxyError {
    fn from(err: ConnectError) -> Self {
        let host = match &err {
            ConnectError::Dns { host, .. }
            | ConnectError::Denied { host, .. }
            | ConnectError::Loop { host }
            | ConnectError::Connect { host, .. }
            | ConnectError::Tls { host, .. }
            | ConnectError::Timeout { host } => host.clone(),
            ConnectError::NoHost => String::new(),
        };
        ProxyError::from_upstream(&host, &err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_spec_code_and_a_helpful_body() {
        let e = ProxyError::HostMismatch {
            expected: "a.test:443".into(),
            got: "b.test".into(),
        };
        let r = e.to_response();
        assert_eq!(r.status(), 421);
        assert_eq!(r.headers()[ERROR_HEADER], "host-mismatch");
        let e = ProxyError::from(ConnectError::Denied {
            host: "x.test".into(),
            addr: "10.0.0.1".parse().unwrap(),
        });
        assert_eq!(
            e.status_and_code(),
            (StatusCode::FORBIDDEN, "egress-denied")
        );
        let body = String::from_utf8_lossy(&e.to_http1_bytes()).into_owned();
        assert!(!body.contains("10.0.0.1"), "{body}");
        assert!(
            body.contains("x.test") && body.contains("allow_private_cidrs"),
            "{body}"
        );
        let e = ProxyError::EgressDenied {
            host: "x.test".into(),
            rule: EgressRule::SessionNetwork {
                session: "sesn_a".into(),
            },
        };
        let body = String::from_utf8_lossy(&e.to_http1_bytes()).into_owned();
        assert!(
            body.contains("sesn_a") && body.contains("allowed_hosts"),
            "{body}"
        );
        assert!(!body.contains("allow_private_cidrs"), "{body}");
        let e = ProxyError::from(ConnectError::Tls {
            host: "x.test".into(),
            source: std::io::Error::other("bad cert"),
        });
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_GATEWAY, "upstream-tls")
        );
        let e = ProxyError::from(ConnectError::Timeout {
            host: "x.test".into(),
        });
        assert_eq!(
            e.status_and_code(),
            (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout")
        );
    }
}
