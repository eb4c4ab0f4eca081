//! The credential model shared by the config file and the admin API: vaults, credentials and
//! their `auth` variants (SPEC §2), already validated.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::scope::HostPattern;
use crate::secret::Secret;

/// Free-form string pairs attached by operators; never interpreted by keyswap.
pub type Metadata = BTreeMap<String, String>;

/// A named set of credentials.
#[derive(Debug, Clone)]
pub struct Vault {
    pub id: String,
    pub display_name: Option<String>,
    pub metadata: Metadata,
    pub times: Times,
    pub credentials: Vec<Credential>,
}

/// One secret in a vault.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: String,
    pub vault_id: String,
    pub display_name: Option<String>,
    pub metadata: Metadata,
    pub times: Times,
    /// Archived itself, or in an archived vault: never substituted.
    pub archived: bool,
    pub auth: Auth,
}

/// When an object was created, last changed and archived (RFC 3339 in the file and the API).
/// Objects written by hand may lack the first two; keyswap fills them in on its next write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    pub created_at: Option<OffsetDateTime>,
    pub updated_at: Option<OffsetDateTime>,
    pub archived_at: Option<OffsetDateTime>,
}

/// What the credential is and how it is injected.
#[derive(Debug, Clone)]
pub enum Auth {
    EnvironmentVariable(EnvVarAuth),
    StaticBearer(BearerAuth),
    McpOauth(OauthAuth),
    /// keyswap's extension (SPEC §11): requests are signed again with the real AWS key.
    AwsSigv4(AwsSigv4Auth),
    /// keyswap's extension (SPEC §11): a signature header computed with a shared secret.
    HmacSignature(HmacAuth),
}

impl Auth {
    /// The wire name of the variant (`auth.type`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Auth::EnvironmentVariable(_) => "environment_variable",
            Auth::StaticBearer(_) => "static_bearer",
            Auth::McpOauth(_) => "mcp_oauth",
            Auth::AwsSigv4(_) => "aws_sigv4",
            Auth::HmacSignature(_) => "hmac_signature",
        }
    }

    /// The placeholder the sandbox holds (MCP credentials answer to `ks-ph-` + id).
    pub fn placeholder(&self, credential_id: &str) -> String {
        match self {
            Auth::EnvironmentVariable(e) => e.placeholder.clone(),
            Auth::AwsSigv4(a) => a.placeholder.clone(),
            Auth::HmacSignature(h) => h.placeholder.clone(),
            Auth::StaticBearer(_) | Auth::McpOauth(_) => default_placeholder(credential_id),
        }
    }

    /// Every secret of the credential, the OAuth refresh token and client secret included (what a
    /// placeholder must never contain, what `keyswap exec` keeps from the command).
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            Auth::EnvironmentVariable(e) => vec![&e.secret],
            Auth::StaticBearer(b) => vec![&b.token],
            Auth::McpOauth(o) => {
                let mut all = vec![&o.access_token];
                if let Some(r) = &o.refresh {
                    all.push(&r.refresh_token);
                    if let TokenEndpointAuth::ClientSecretBasic(s)
                    | TokenEndpointAuth::ClientSecretPost(s) = &r.token_endpoint_auth
                    {
                        all.push(s);
                    }
                }
                all
            }
            Auth::AwsSigv4(a) => [&a.access_key_id, &a.secret_access_key]
                .into_iter()
                .chain(a.session_token.as_ref())
                .collect(),
            Auth::HmacSignature(h) => vec![&h.secret],
        }
    }
}

/// An AWS access key that never leaves keyswap: the sandbox signs with a placeholder key id and
/// [`AWS_DUMMY_SECRET`]; keyswap signs the request again with this key.
#[derive(Debug, Clone)]
pub struct AwsSigv4Auth {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub networking: Networking,
    /// Empty: any region (service).
    pub regions: Vec<String>,
    pub services: Vec<String>,
    pub placeholder: String,
}

/// The secret access key `keyswap env` hands every sandbox: well-formed (40 characters of the
/// alphabet AWS uses), fixed, and worthless. The real secret is masked as this in answers.
pub const AWS_DUMMY_SECRET: &str = "ksDummySecretKeySignedAgainByKeyswap0000";

/// A shared secret that signs each request (exchange and payment APIs).
#[derive(Debug, Clone)]
pub struct HmacAuth {
    pub secret_name: String,
    pub secret: Secret,
    pub placeholder: String,
    pub algorithm: HmacAlgorithm,
    /// Base64 (standard, padded) instead of lowercase hex.
    pub base64: bool,
    /// `{method}{path}…`: what is signed (SPEC §11).
    pub message: String,
    pub signature_header: http::HeaderName,
    pub timestamp_header: Option<http::HeaderName>,
    pub networking: Networking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl HmacAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            HmacAlgorithm::Sha1 => "sha1",
            HmacAlgorithm::Sha256 => "sha256",
            HmacAlgorithm::Sha512 => "sha512",
        }
    }
}

/// The default placeholder of an `aws_sigv4` credential: `AKIA` and 16 characters of the base32
/// alphabet derived from the id, so that it looks like an access key id to every SDK and stays the
/// same across restarts and replicas.
pub fn default_aws_placeholder(credential_id: &str) -> String {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, credential_id.as_bytes());
    let tail: String = digest.as_ref()[..16]
        .iter()
        .map(|b| BASE32[usize::from(b & 31)] as char)
        .collect();
    format!("AKIA{tail}")
}

/// Whether `s` can stand for an access key id: 16 to 128 characters of `[A-Z0-9]`.
pub fn is_valid_aws_placeholder(s: &str) -> bool {
    (16..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A secret handed to the sandbox as a placeholder in an environment variable.
#[derive(Debug, Clone)]
pub struct EnvVarAuth {
    pub secret_name: String,
    pub secret: Secret,
    pub networking: Networking,
    pub injection: Injection,
    pub placeholder: String,
}

/// Where a credential may be substituted.
#[derive(Debug, Clone)]
pub enum Networking {
    Unrestricted,
    /// The entries as the operator wrote them, and their parsed patterns (same order).
    Limited {
        allowed_hosts: Vec<String>,
        patterns: Vec<HostPattern>,
    },
}

impl Networking {
    /// Whether a normalised destination host is in this credential's scope.
    pub fn allows(&self, host: &str) -> bool {
        match self {
            Networking::Unrestricted => true,
            Networking::Limited { patterns, .. } => patterns.iter().any(|p| p.matches(host)),
        }
    }
}

/// Which parts of a request a placeholder is replaced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    pub header: bool,
    pub body: bool,
    pub query: bool,
}

impl Default for Injection {
    fn default() -> Self {
        Self {
            header: true,
            body: false,
            query: false,
        }
    }
}

/// `Authorization: Bearer <token>` for one MCP server URL.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    pub mcp_server_url: String,
    pub token: Secret,
}

/// An OAuth access token for one MCP server URL, with an optional refresh grant.
#[derive(Debug, Clone)]
pub struct OauthAuth {
    pub mcp_server_url: String,
    pub access_token: Secret,
    pub expires_at: Option<time::OffsetDateTime>,
    pub refresh: Option<OauthRefresh>,
}

/// How to obtain a new access token.
#[derive(Debug, Clone)]
pub struct OauthRefresh {
    pub client_id: String,
    pub refresh_token: Secret,
    pub token_endpoint: String,
    pub token_endpoint_auth: TokenEndpointAuth,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone)]
pub enum TokenEndpointAuth {
    None,
    ClientSecretBasic(Secret),
    ClientSecretPost(Secret),
}

/// The default placeholder of a credential: `ks-ph-` + its id.
pub fn default_placeholder(credential_id: &str) -> String {
    format!("{PLACEHOLDER_PREFIX}{credential_id}")
}

/// The prefix of every default placeholder; the hot path scans for it first.
pub const PLACEHOLDER_PREFIX: &str = "ks-ph-";

/// Whether `s` is a valid placeholder: 8–256 characters of the URL-safe set `[A-Za-z0-9._~-]`.
pub fn is_valid_placeholder(s: &str) -> bool {
    (8..=256).contains(&s.len()) && s.bytes().all(is_url_safe)
}

/// The unreserved URL characters: they survive URL and form encoding unchanged.
pub fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

/// Whether `s` is a valid environment variable name.
pub fn is_valid_secret_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// RFC 3339, as the admin API and the config file write times.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_form() {
        assert!(is_valid_placeholder("ks-ph-vcrd_abc"));
        assert!(is_valid_placeholder("A.b_c~d-1"));
        assert!(!is_valid_placeholder("short"));
        assert!(!is_valid_placeholder("has space here"));
        assert!(!is_valid_placeholder("with/slash1"));
        assert!(!is_valid_placeholder(&"a".repeat(257)));
        assert!(is_valid_placeholder(&"a".repeat(256)));
    }

    #[test]
    fn secret_name_form() {
        assert!(is_valid_secret_name("GITHUB_TOKEN"));
        assert!(is_valid_secret_name("_x1"));
        assert!(!is_valid_secret_name("1X"));
        assert!(!is_valid_secret_name("A-B"));
        assert!(!is_valid_secret_name(""));
    }
}
