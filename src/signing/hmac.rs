//! `hmac_signature` (SPEC §11): the message a template describes, and its signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderMap;
use ring::hmac;

use super::sigv4::hex;
use crate::vault::{HmacAlgorithm, HmacAuth};

/// The facts a template may name.
pub struct Fields<'a> {
    pub method: &'a str,
    /// The path with its query, as sent.
    pub path: &'a str,
    /// The destination host, with `:port` only when the port is not the scheme's default.
    pub host: &'a str,
    pub body: &'a [u8],
    pub timestamp: &'a str,
    pub headers: &'a HeaderMap,
}

/// The message: the template with each `{field}` replaced (a header the request lacks is empty).
pub fn message(template: &str, f: &Fields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + f.body.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.extend_from_slice(&rest.as_bytes()[open..]);
            return out;
        };
        let field = &after[..close];
        match field {
            "method" => out.extend_from_slice(f.method.as_bytes()),
            "path" => out.extend_from_slice(f.path.as_bytes()),
            "host" => out.extend_from_slice(f.host.as_bytes()),
            "body" => out.extend_from_slice(f.body),
            "timestamp" => out.extend_from_slice(f.timestamp.as_bytes()),
            _ => match field.strip_prefix("header:") {
                Some(name) => {
                    if let Some(v) = f.headers.get(name) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
                // Validated at load: only the fields above exist.
                None => out.extend_from_slice(&rest.as_bytes()[open..open + close + 2]),
            },
        }
        rest = &after[close + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// Whether the template needs the body (it is then held, within the limit).
pub fn needs_body(template: &str) -> bool {
    template.contains("{body}")
}

/// The signature of `message` with the credential's secret, encoded as configured.
pub fn signature(auth: &HmacAuth, message: &[u8]) -> String {
    let algorithm = match auth.algorithm {
        HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
        HmacAlgorithm::Sha512 => hmac::HMAC_SHA512,
    };
    let tag = hmac::sign(&hmac::Key::new(algorithm, auth.secret.expose()), message);
    if auth.base64 {
        BASE64.encode(tag.as_ref())
    } else {
        hex(tag.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(algorithm: HmacAlgorithm, base64: bool) -> HmacAuth {
        HmacAuth {
            secret_name: "S".into(),
            secret: crate::secret::Secret::new("key"),
            placeholder: "ks-ph-vcrd_h".into(),
            algorithm,
            base64,
            message: String::new(),
            signature_header: http::HeaderName::from_static("x-signature"),
            timestamp_header: None,
            networking: crate::vault::Networking::Unrestricted,
        }
    }

    #[test]
    fn templates_fill_every_field() {
        let mut headers = HeaderMap::new();
        headers.insert("x-nonce", "n1".parse().unwrap());
        let f = Fields {
            method: "POST",
            path: "/v1/order?x=1",
            host: "api.exchange.test:8443",
            body: b"{\"a\":1}",
            timestamp: "1700000000",
            headers: &headers,
        };
        assert_eq!(
            message("{timestamp}{method}{path}{body}", &f),
            b"1700000000POST/v1/order?x=1{\"a\":1}"
        );
        assert_eq!(
            message("{host}|{header:x-nonce}|{header:x-none}|x", &f),
            b"api.exchange.test:8443|n1||x"
        );
    }

    #[test]
    fn known_answers_of_rfc_4231_and_the_wikipedia_example() {
        // "The quick brown fox jumps over the lazy dog" with key "key".
        let m = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(
            signature(&auth(HmacAlgorithm::Sha256, false), m),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(
            signature(&auth(HmacAlgorithm::Sha1, false), m),
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        assert_eq!(
            signature(&auth(HmacAlgorithm::Sha256, true), m),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
        assert_eq!(signature(&auth(HmacAlgorithm::Sha512, false), m).len(), 128);
    }
}
