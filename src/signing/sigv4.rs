//! AWS Signature Version 4, the parts keyswap needs to sign a request again: reading the client's
//! `Authorization` (or presigned query), the canonical request, the signing key and signatures.
//!
//! Why not the `aws-sigv4` crate: it signs a request it is given and chooses the signed headers
//! itself; keyswap must sign exactly the headers the client signed (SPEC §11), keep the client's
//! date and scope, and chain chunk signatures from a seed it computed. What remains is HMAC-SHA256
//! over text built by fixed rules, done here with `ring` (already built for rustls).

use std::fmt::Write as _;

use http::HeaderMap;
use ring::{digest, hmac};

/// The header algorithm keyswap signs with.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SigV4A: asymmetric, with a key derived from the secret; keyswap does not re-sign it.
pub const ALGORITHM_V4A: &str = "AWS4-ECDSA-P256-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// The SHA-256 of nothing, in hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `<key id>/<date>/<region>/<service>/aws4_request`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Credential {
    pub fn parse(s: &str) -> Option<Credential> {
        let mut parts = s.split('/');
        let key_id = parts.next()?.to_string();
        let date = parts.next()?.to_string();
        let region = parts.next()?.to_string();
        let service = parts.next()?.to_string();
        let ok = parts.next() == Some("aws4_request")
            && parts.next().is_none()
            && date.len() == 8
            && date.bytes().all(|b| b.is_ascii_digit());
        ok.then_some(Credential {
            key_id,
            date,
            region,
            service,
        })
    }

    /// `<date>/<region>/<service>/aws4_request`: the scope in the string to sign.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }

    /// The credential with another key id, as written in `Credential=` and `X-Amz-Credential`.
    pub fn with_key(&self, key_id: &str) -> String {
        format!("{key_id}/{}", self.scope())
    }
}

/// The parts of an `Authorization: AWS4-… Credential=…, SignedHeaders=…, Signature=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAuth {
    pub algorithm: String,
    pub credential: Credential,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl HeaderAuth {
    /// `None` when the value is not a SigV4 (or SigV4A) authorization at all; `Some(Err)` when it
    /// claims to be one and is malformed.
    pub fn parse(value: &str) -> Option<Result<HeaderAuth, &'static str>> {
        let (algorithm, rest) = value.trim().split_once(' ')?;
        if !algorithm.starts_with("AWS4-") {
            return None;
        }
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for field in rest.split(',') {
            let Some((k, v)) = field.trim().split_once('=') else {
                continue;
            };
            match k.trim() {
                "Credential" => credential = Some(v.trim()),
                "SignedHeaders" => signed = Some(v.trim()),
                "Signature" => signature = Some(v.trim()),
                _ => {}
            }
        }
        let parsed = (|| {
            let credential = credential.ok_or("the Authorization header has no Credential")?;
            let credential = Credential::parse(credential).ok_or(
                "the Authorization Credential is not <key id>/<date>/<region>/<service>/aws4_request",
            )?;
            let signed_headers: Vec<String> = signed
                .ok_or("the Authorization header has no SignedHeaders")?
                .split(';')
                .map(str::to_ascii_lowercase)
                .collect();
            Ok(HeaderAuth {
                algorithm: algorithm.to_string(),
                credential,
                signed_headers,
                signature: signature
                    .ok_or("the Authorization header has no Signature")?
                    .to_string(),
            })
        })();
        Some(parsed)
    }

    /// The header value for `key_id` and `signature`, with these signed headers.
    pub fn render(&self, key_id: &str, signed_headers: &str, signature: &str) -> String {
        format!(
            "{ALGORITHM} Credential={}, SignedHeaders={signed_headers}, Signature={signature}",
            self.credential.with_key(key_id)
        )
    }
}

/// The key that signs for one day, region and service.
pub fn signing_key(secret: &[u8], credential: &Credential) -> hmac::Key {
    let mut k = Vec::with_capacity(secret.len() + 4);
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret);
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let date = step(&k, &credential.date);
    zeroize::Zeroize::zeroize(&mut k);
    let region = step(date.as_ref(), &credential.region);
    let service = step(region.as_ref(), &credential.service);
    let signing = step(service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, signing.as_ref())
}

/// `HMAC(key, text)` in lowercase hex.
pub fn sign(key: &hmac::Key, text: &str) -> String {
    hex(hmac::sign(key, text.as_bytes()).as_ref())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, credential: &Credential, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        credential.scope(),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The string to sign for one chunk of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body.
pub fn chunk_string_to_sign(
    amz_date: &str,
    scope: &str,
    previous: &str,
    chunk_sha256: &str,
) -> String {
    format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
    )
}

/// The string to sign for the trailing headers of a `…-PAYLOAD-TRAILER` body.
pub fn trailer_string_to_sign(
    amz_date: &str,
    scope: &str,
    previous: &str,
    trailers_sha256: &str,
) -> String {
    format!("AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous}\n{trailers_sha256}")
}

/// The canonical request of SigV4.
pub struct Canonical<'a> {
    pub method: &'a str,
    /// The path as sent.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Lowercase names, in the order they are to be signed (sorted here).
    pub signed_headers: &'a [String],
    pub payload_hash: &'a str,
    /// Whether the service is S3 (its paths are encoded once and not normalised).
    pub s3: bool,
    /// Leave this query parameter out (the presigned signature itself).
    pub skip_param: Option<&'a str>,
}

impl Canonical<'_> {
    /// The canonical request text, with the headers' values taken from `headers` (`host` from
    /// `host`, the authority keyswap sends). `Err` names a signed header the request lacks.
    pub fn text(&self, headers: &HeaderMap, host: &str) -> Result<String, String> {
        let mut names: Vec<&str> = self.signed_headers.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut out = String::with_capacity(512);
        out.push_str(self.method);
        out.push('\n');
        if self.s3 {
            out.push_str(if self.path.is_empty() { "/" } else { self.path });
        } else {
            uri_encode_into(&mut out, &remove_dot_segments(self.path), true);
        }
        out.push('\n');
        out.push_str(&canonical_query(self.query, self.skip_param));
        out.push('\n');
        for name in &names {
            out.push_str(name);
            out.push(':');
            if *name == "host" {
                out.push_str(host);
            } else {
                let mut values = headers.get_all(*name).iter().peekable();
                if values.peek().is_none() {
                    return Err(format!("the signed header `{name}` is not in the request"));
                }
                let mut first = true;
                for v in values {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    let v = String::from_utf8_lossy(v.as_bytes());
                    let mut words = v.split_ascii_whitespace();
                    if let Some(w) = words.next() {
                        out.push_str(w);
                        for w in words {
                            out.push(' ');
                            out.push_str(w);
                        }
                    }
                }
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&names.join(";"));
        out.push('\n');
        out.push_str(self.payload_hash);
        Ok(out)
    }
}

/// The query's parameters decoded, encoded the AWS way and sorted (`skip` left out).
pub fn canonical_query(query: Option<&str>, skip: Option<&str>) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&percent_decode(k)), encode(&percent_decode(v)))
        })
        .filter(|(k, _)| skip.is_none_or(|s| k != s))
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(query.len() + 16);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// A query component's bytes, `%XX` decoded (`+` is kept: AWS SDKs encode a space as `%20`).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The AWS URI encoding: everything but `A-Za-z0-9-_.~` as `%XX` (uppercase).
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        push_encoded(&mut s, b, false);
    }
    s
}

fn uri_encode_into(out: &mut String, s: &str, keep_slash: bool) {
    for &b in s.as_bytes() {
        push_encoded(out, b, keep_slash);
    }
}

fn push_encoded(out: &mut String, b: u8, keep_slash: bool) {
    if b.is_ascii_alphanumeric()
        || matches!(b, b'-' | b'_' | b'.' | b'~')
        || (keep_slash && b == b'/')
    {
        out.push(b as char);
    } else {
        let _ = write!(out, "%{b:02X}");
    }
}

/// RFC 3986 §5.2.4, and empty segments dropped, as AWS normalises paths (not S3's).
fn remove_dot_segments(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    if path.starts_with('/') {
        s.push('/');
    }
    s.push_str(&out.join("/"));
    if path.ends_with('/') && !out.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
