//! What a substitution decides on, and nothing else: the compiled placeholder of one credential
//! ([`Entry`]), where a request is going ([`Target`]), which vaults its session may use
//! ([`VaultFilter`]), where a placeholder was found ([`Location`]) and what became of it
//! ([`Outcome`]). A leaf: it knows no store, session, config or metrics, so the substitution
//! functions and the fuzz targets can be driven from values built in place.

use std::collections::HashSet;
use std::sync::Arc;

use crate::secret::Secret;
use crate::vault::{AwsSigv4Auth, HmacAuth, Injection, Networking};

/// One placeholder the proxy looks for, and everything needed to decide what to do with it.
#[derive(Debug)]
pub struct Entry {
    pub credential_id: String,
    pub vault_id: String,
    pub placeholder: String,
    pub secret: Secret,
    pub networking: Networking,
    pub injection: Injection,
    pub archived: bool,
    /// For MCP credentials: the port and path prefix of `mcp_server_url` (the host is in
    /// `networking`).
    pub mcp: Option<McpScope>,
    /// For `mcp_oauth` credentials: when the access token expires and whether it can be refreshed.
    pub oauth: Option<OauthState>,
    /// Further secrets of the credential and what each is masked as in answers (an AWS key's
    /// secret access key and session token; its key id is `secret`).
    pub masks: Vec<(Secret, String)>,
    /// For credentials that sign (SPEC §11): the key. Their placeholder is never swapped for
    /// `secret` (`injection` is all off); the request is signed again instead.
    pub signing: Option<Signing>,
}

impl Entry {
    /// Every secret of the credential with what it is masked as: `secret` as the placeholder,
    /// then `masks`.
    pub fn masked(&self) -> impl Iterator<Item = (&Secret, &str)> {
        std::iter::once((&self.secret, self.placeholder.as_str()))
            .chain(self.masks.iter().map(|(s, m)| (s, m.as_str())))
    }
}

/// The key of a credential that signs requests.
#[derive(Debug, Clone)]
pub enum Signing {
    Aws(Arc<AwsSigv4Auth>),
    Hmac(Arc<HmacAuth>),
}

/// What the request path needs to know to refresh an `mcp_oauth` token in time.
#[derive(Debug, Clone, Copy)]
pub struct OauthState {
    pub expires_at: Option<time::OffsetDateTime>,
    pub refreshable: bool,
}

impl OauthState {
    /// Whether the token expires within `margin` of `now` (and can be refreshed).
    pub fn due(&self, now: time::OffsetDateTime, margin: time::Duration) -> bool {
        self.refreshable && self.expires_at.is_some_and(|t| t - margin <= now)
    }
}

/// Where an MCP credential applies, besides its host.
#[derive(Debug, Clone)]
pub struct McpScope {
    pub port: u16,
    pub path_prefix: String,
}

impl McpScope {
    /// The URL's port, and its path as a prefix of whole segments (`/mcp` covers `/mcp` and
    /// `/mcp/x`, not `/mcpx`), compared after normalising both paths.
    ///
    /// SECURITY: the server resolves `/mcp/../admin` (and `%2e%2e`, `%2f`, `..;`, `\`) to a path
    /// outside the prefix; the token must not go there, so the prefix is matched on the path as a
    /// server may resolve it (SPEC §8), not on its spelling.
    pub fn covers(&self, target: Target<'_>) -> bool {
        target.port == self.port
            && normalized_segments(target.path).starts_with(&normalized_segments(&self.path_prefix))
    }
}

/// The segments of `path` after percent-decoding (repeatedly: a server or framework may decode
/// twice), treating `\` as `/` and removing dot-segments (RFC 3986 §5.2.4; a segment that is
/// `.` or `..` before a `;` parameter counts too, as Tomcat reads it). Empty segments are dropped.
fn normalized_segments(path: &str) -> Vec<Vec<u8>> {
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..4 {
        let decoded = percent_decode(&bytes);
        if decoded == bytes {
            break;
        }
        bytes = decoded;
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for segment in bytes.split(|&b| b == b'/' || b == b'\\') {
        let bare = segment.split(|&b| b == b';').next().unwrap_or_default();
        match bare {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(segment.to_vec()),
        }
    }
    out
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// What happened to one credential's placeholder in one request (the log's vocabulary, SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Substituted,
    OutOfScope,
    Archived,
    LocationDisabled,
    /// In scope, but the upstream connection is unencrypted and `substitute_over_plain_http` is off.
    PlaintextUpstream,
    /// The placeholder of a credential that signs (SPEC §11), in scope: never swapped; the
    /// request is signed again if it carries a signature made with it.
    ToSign,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Substituted => "substituted",
            Outcome::OutOfScope => "out_of_scope",
            Outcome::Archived => "archived",
            Outcome::LocationDisabled => "location_disabled",
            Outcome::PlaintextUpstream => "plaintext_upstream",
            Outcome::ToSign => "to_sign",
        }
    }
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Header => "header",
            Location::Query => "query",
            Location::Body => "body",
        }
    }
}

/// The part of a request a placeholder was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Header,
    Query,
    Body,
}

/// Where the request is going: the only facts a substitution decision uses.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The normalised destination host.
    pub host: &'a str,
    /// The destination port and the request path (MCP credentials are scoped to a URL prefix).
    pub port: u16,
    pub path: &'a str,
    /// Whether secrets may travel on this upstream connection (TLS, or plain HTTP explicitly allowed).
    pub secrets_allowed: bool,
    /// Only credentials of these vaults are substituted; others' placeholders are plain text.
    pub vaults: &'a VaultFilter,
}

/// The vaults whose credentials a session may use: every one (the implicit session) or a set.
#[derive(Debug, Clone, Default)]
pub struct VaultFilter(Option<HashSet<String>>);

impl VaultFilter {
    /// Every vault.
    pub fn all() -> Self {
        Self(None)
    }

    pub fn only(vault_ids: impl IntoIterator<Item = String>) -> Self {
        Self(Some(vault_ids.into_iter().collect()))
    }

    /// Whether `entry` belongs to an allowed vault; another session's placeholder is plain text.
    pub fn allows(&self, entry: &Entry) -> bool {
        self.0.as_ref().is_none_or(|v| v.contains(&entry.vault_id))
    }

    pub fn allows_vault(&self, vault_id: &str) -> bool {
        self.0.as_ref().is_none_or(|v| v.contains(vault_id))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_prefixes_are_matched_on_the_normalised_path() {
        let scope = McpScope {
            port: 443,
            path_prefix: "/mcp".into(),
        };
        let vaults = VaultFilter::all();
        let at = |path: &'static str| Target {
            host: "h",
            port: 443,
            path,
            secrets_allowed: true,
            vaults: &vaults,
        };
        for inside in [
            "/mcp",
            "/mcp/",
            "/mcp/x",
            "/mcp/a/../b",
            "/mcp/./x",
            "/x/../mcp/y",
            "/mcp/a%2Fb",
        ] {
            assert!(scope.covers(at(inside)), "{inside}");
        }
        for outside in [
            "/mcpx",
            "/",
            "/mcp/..",
            "/mcp/../admin",
            "/mcp/%2e%2e/admin",
            "/mcp/%2E%2E/admin",
            "/mcp/.%2e/admin",
            "/mcp%2f..%2fadmin",
            "/mcp/%252e%252e/admin",
            "/mcp/..;/admin",
            "/mcp\\..\\admin",
            "/mcp/a/../../admin",
        ] {
            assert!(!scope.covers(at(outside)), "{outside}");
        }
    }
}
