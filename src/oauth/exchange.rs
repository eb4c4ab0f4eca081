//! One HTTP exchange keyswap makes on its own behalf (token endpoint, MCP probe) through the
//! upstream client, and the scrubbed copy of the answer it may show to an operator.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use zeroize::Zeroizing;

use crate::upstream::{BoxError, UpstreamClient};

/// Longest answer read from a token endpoint or MCP server.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Longest body kept in a [`Captured`] answer.
const MAX_CAPTURED_BYTES: usize = 4096;

/// An `application/x-www-form-urlencoded` body, zeroized on drop (it carries tokens).
#[derive(Default)]
pub struct Form {
    body: Zeroizing<Vec<u8>>,
    authorization: Option<Zeroizing<String>>,
}

impl Form {
    pub fn field(&mut self, name: &str, value: &[u8]) {
        if !self.body.is_empty() {
            self.body.push(b'&');
        }
        encode_into(&mut self.body, name.as_bytes());
        self.body.push(b'=');
        encode_into(&mut self.body, value);
    }

    /// `client_secret_basic`: both parts form-encoded, then base64 (RFC 6749 §2.3.1).
    pub fn basic_auth(&mut self, user: &[u8], password: &[u8]) {
        use base64::Engine as _;
        let mut pair = Zeroizing::new(Vec::new());
        encode_into(&mut pair, user);
        pair.push(b':');
        encode_into(&mut pair, password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
        self.authorization = Some(Zeroizing::new(format!("Basic {encoded}")));
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn authorization(&self) -> Option<&String> {
        self.authorization.as_deref()
    }
}

/// Form encoding: unreserved bytes as they are, space as `+`, everything else `%XX`.
fn encode_into(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        match b {
            b' ' => out.push(b'+'),
            _ if crate::vault::is_url_safe(b) => out.push(b),
            _ => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

/// An HTTP answer as reported to an operator: truncated, and with every known secret masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub status_code: u16,
    pub content_type: String,
    pub body: String,
    pub body_truncated: bool,
}

impl Captured {
    /// Masked before it is cut, so that a secret cut in two by the truncation leaves no part:
    /// in a JSON body every value under a key naming a token or secret, then every known secret
    /// (raw and JSON-escaped) wherever it appears.
    fn new(status: u16, content_type: &str, body: &[u8], secrets: &[&[u8]]) -> Self {
        let text = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(mut json) => {
                redact_json(&mut json);
                json.to_string()
            }
            Err(_) => String::from_utf8_lossy(body).into_owned(),
        };
        let mut captured = Captured {
            status_code: status,
            content_type: content_type.to_string(),
            body: text,
            body_truncated: false,
        };
        captured.scrub(secrets);
        if captured.body.len() > MAX_CAPTURED_BYTES {
            captured
                .body
                .truncate(floor_char_boundary(&captured.body, MAX_CAPTURED_BYTES));
            captured.body_truncated = true;
        }
        captured
    }

    /// Masks each of `secrets` in the body, as it is and as JSON would escape it.
    fn scrub(&mut self, secrets: &[&[u8]]) {
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            let raw = String::from_utf8_lossy(s).into_owned();
            let escaped = serde_json::to_string(&raw).unwrap_or_default();
            let escaped = escaped.trim_matches('"').to_string();
            let slashes = escaped.replace('/', "\\/");
            for form in [raw, escaped, slashes] {
                if !form.is_empty() && self.body.contains(&form) {
                    self.body = self.body.replace(&form, "[redacted]");
                }
            }
        }
    }
}

/// Replaces the string values of keys that name a token or a secret (`access_token`, `id_token`,
/// `client_secret`…), at any depth.
fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if (key.contains("token") || key.contains("secret")) && v.is_string() {
                    *v = serde_json::Value::String("[redacted]".into());
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// A complete answer: the status and the raw body (zeroized on drop: it may hold tokens).
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Zeroizing<Vec<u8>>,
}

impl Answer {
    /// The copy an operator may see, with `secrets` and token-like JSON values masked.
    pub fn capture(&self, secrets: &[&[u8]]) -> Captured {
        Captured::new(self.status, &self.content_type, &self.body, secrets)
    }
}

/// POSTs `form` to `url` and reads the whole answer. `Err` is a description of a failure to
/// connect or to read (never a secret).
pub async fn post(
    client: &UpstreamClient,
    url: &str,
    form: Form,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut request = request(url, form.body().to_vec())?;
    let headers = request.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(auth) = form.authorization() {
        let mut value = HeaderValue::from_str(auth).map_err(|_| "bad client credentials")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    send(client, request, timeout).await
}

/// A POST to `url` with `body`, `Host` set from the URL (the upstream client does not set it).
pub fn request(url: &str, body: Vec<u8>) -> Result<Request<crate::upstream::ProxyBody>, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url} has no host"))?
        .clone();
    let body = Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed();
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| "bad host".to_string())?;
    request.headers_mut().insert(HOST, host);
    Ok(request)
}

/// Sends `request` and reads the whole answer within `timeout`.
pub async fn send(
    client: &UpstreamClient,
    request: Request<crate::upstream::ProxyBody>,
    timeout: Duration,
) -> Result<Answer, String> {
    let exchange = async {
        let response = client.request(request).await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e: BoxError| format!("reading the answer failed: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body: Zeroizing::new(body.to_vec()),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// The connect error behind a client error, in words (hyper-util's own message says little).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    match crate::upstream::connect_error(e) {
        Some(c) => c.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        let mut f = Form::default();
        f.field("a b", b"x y&z=1/~._-");
        f.field("n", "é".as_bytes());
        assert_eq!(f.body(), b"a+b=x+y%26z%3D1%2F~._-&n=%C3%A9");
    }

    #[test]
    fn captured_answers_mask_secrets_even_when_cut() {
        let body = format!("{}tok-SECRET-123 and tok-SECRET-123", "x".repeat(4090));
        let c = Captured::new(
            200,
            "application/json",
            body.as_bytes(),
            &[b"tok-SECRET-123"],
        );
        assert!(c.body_truncated);
        assert!(
            !c.body.contains("tok-"),
            "a cut secret survived: {}",
            &c.body[4080..]
        );
        assert!(c.body.len() <= MAX_CAPTURED_BYTES);
        let c = Captured::new(
            400,
            "",
            br#"{"error":"invalid_grant","hint":"r-1"}"#,
            &[b"r-1"],
        );
        assert_eq!(c.body, r#"{"error":"invalid_grant","hint":"[redacted]"}"#);
        assert!(!c.body_truncated);
    }

    #[test]
    fn token_values_are_masked_even_unknown_or_escaped() {
        // Values under token/secret keys go, known or not (a malformed answer's new tokens).
        let body =
            br#"{"access_token":"a b","refresh_token":"R2","nested":{"id_token":"J"},"n":1}"#;
        let c = Captured::new(200, "application/json", body, &[]);
        assert!(
            !c.body.contains("R2") && !c.body.contains("a b") && !c.body.contains("\"J\""),
            "{}",
            c.body
        );
        assert!(c.body.contains("\"n\":1"));
        // A known secret escaped by the server's JSON encoder (`\/`) is still found.
        let c = Captured::new(200, "text/plain", br#"tok=ab\/cd"#, &[b"ab/cd"]);
        assert_eq!(c.body, "tok=[redacted]");
    }
}
