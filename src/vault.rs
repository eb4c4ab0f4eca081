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
}

impl Auth {
    /// The wire name of the variant (`auth.type`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Auth::EnvironmentVariable(_) => "environment_variable",
            Auth::StaticBearer(_) => "static_bearer",
            Auth::McpOauth(_) => "mcp_oauth",
        }
    }
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
