//! Sessions (SPEC §1): which vaults a sandbox may use, which hosts it may reach, and how it proves
//! who it is (`Proxy-Authorization: Basic base64(session_id:token)`).
//!
//! With no `[[sessions]]` in the config there is one implicit session: every vault, unrestricted
//! network, no authentication.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;

use crate::config::Config;
use crate::scope::HostPattern;
use crate::secret::Secret;
use crate::substitute::{Entry, VaultFilter};
use crate::vault::Networking;

/// The id of the implicit session, as logs show it.
pub const IMPLICIT: &str = "default";

/// One session, compiled for the request path.
#[derive(Debug)]
pub struct SessionPolicy {
    pub id: String,
    token: Option<Secret>,
    /// Every vault for the implicit session.
    vaults: VaultFilter,
    network: Networking,
    /// Client addresses that pick this session on the transparent listener.
    source_cidrs: Vec<ipnet::IpNet>,
    /// The hosts some live credential of this session is scoped to (for `mitm = "auto"`).
    scopes: Scopes,
}

impl SessionPolicy {
    /// The sessions of `config` (or the implicit one), with scopes over `entries`.
    pub fn compile(config: &Config, entries: &[Entry]) -> Vec<SessionPolicy> {
        if config.sessions.is_empty() {
            let scopes = Scopes::over(entries.iter());
            return vec![SessionPolicy {
                id: IMPLICIT.to_string(),
                token: None,
                vaults: VaultFilter::all(),
                network: Networking::Unrestricted,
                source_cidrs: Vec::new(),
                scopes,
            }];
        }
        config
            .sessions
            .iter()
            .map(|s| {
                let vaults = VaultFilter::only(s.vault_ids.iter().cloned());
                let scopes = Scopes::over(entries.iter().filter(|e| vaults.allows(e)));
                SessionPolicy {
                    id: s.id.clone(),
                    token: s.proxy_token.clone(),
                    vaults,
                    network: s.network.clone(),
                    source_cidrs: s.source_cidrs.clone(),
                    scopes,
                }
            })
            .collect()
    }

    /// Whether this session may use `entry` at all; another session's placeholder is plain text here.
    pub fn may_use(&self, entry: &Entry) -> bool {
        self.vaults.allows(entry)
    }

    /// The vaults this session may use: what a substitution [`Target`](crate::substitute::Target)
    /// carries.
    pub fn vaults(&self) -> &VaultFilter {
        &self.vaults
    }

    /// Whether the session's network policy lets it reach `host` (normalised).
    pub fn reaches(&self, host: &str) -> bool {
        self.network.allows(host)
    }

    /// Whether any live credential of this session could be substituted on `host`.
    pub fn could_apply_to(&self, host: &str) -> bool {
        self.scopes.covers(host)
    }
}

/// The session a transparent client's address picks (SPEC §12): the implicit session when there
/// are no `[[sessions]]`; otherwise the first whose `source_cidrs` contains it, or none (refused).
pub fn by_source(sessions: &[SessionPolicy], ip: std::net::IpAddr) -> Option<&SessionPolicy> {
    let ip = ip.to_canonical();
    if let [only] = sessions
        && only.vaults.is_all()
        && only.source_cidrs.is_empty()
        && only.token.is_none()
    {
        return Some(only);
    }
    sessions
        .iter()
        .find(|s| s.source_cidrs.iter().any(|net| net.contains(&ip)))
}

/// Picks the session a `Proxy-Authorization` header proves. With the implicit session no header is
/// needed (and one sent is ignored); otherwise the header must name a session that has a token, and
/// carry that token.
pub fn authenticate<'s>(
    sessions: &'s [SessionPolicy],
    header: Option<&HeaderValue>,
) -> Option<&'s SessionPolicy> {
    if let [only] = sessions
        && only.vaults.is_all()
    {
        return Some(only);
    }
    let value = header?.as_bytes();
    if !value
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"basic "))
    {
        return None;
    }
    let decoded = zeroize::Zeroizing::new(BASE64.decode(value[6..].trim_ascii()).ok()?);
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (id, token) = (&decoded[..colon], &decoded[colon + 1..]);
    let session = sessions.iter().find(|s| s.id.as_bytes() == id)?;
    // SECURITY: a session without a token (one reached by `source_cidrs`) is never selected here:
    // its id is no secret. The token is compared in constant time (`Secret::matches`).
    let expected = session.token.as_ref()?;
    expected.matches(token).then_some(session)
}

/// The hosts a set of credentials is scoped to, compiled for quick "could any apply here?" checks.
#[derive(Debug, Default)]
struct Scopes {
    exact: HashSet<String>,
    /// Suffixes (`.example.com`) of `*.` entries.
    suffixes: HashSet<String>,
    any_unrestricted: bool,
}

impl Scopes {
    /// Over the live (not archived) entries given.
    fn over<'e>(entries: impl Iterator<Item = &'e Entry>) -> Scopes {
        let mut scopes = Scopes::default();
        for entry in entries.filter(|e| !e.archived) {
            match &entry.networking {
                Networking::Unrestricted => scopes.any_unrestricted = true,
                Networking::Limited { patterns, .. } => {
                    for p in patterns {
                        match p {
                            HostPattern::Exact(h) => scopes.exact.insert(h.clone()),
                            HostPattern::Subdomains(s) => scopes.suffixes.insert(s.clone()),
                        };
                    }
                }
            }
        }
        scopes
    }

    fn covers(&self, host: &str) -> bool {
        if self.any_unrestricted || self.exact.contains(host) {
            return true;
        }
        // Walk the parent domains: `a.b.example.com` tries `.b.example.com`, `.example.com`, `.com`.
        host.match_indices('.')
            .any(|(i, _)| i > 0 && self.suffixes.contains(&host[i..]))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn basic(user_pass: &str) -> HeaderValue {
        HeaderValue::try_from(format!("Basic {}", BASE64.encode(user_pass))).unwrap()
    }

    #[test]
    fn a_session_without_a_token_is_never_selected_by_proxy_authentication() {
        // PATH is always set: it stands in for a token variable.
        let text = "[[vaults]]\nid = \"vlt_a\"\n\
            [[sessions]]\nid = \"sesn_tok\"\nproxy_token_env = \"PATH\"\n\
            [[sessions]]\nid = \"sesn_net\"\nsource_cidrs = [\"10.200.0.2/32\"]\n";
        let config = Config::from_toml(text, "k.toml", Path::new("")).unwrap();
        let sessions = SessionPolicy::compile(&config, &[]);
        for offered in ["sesn_net:", "sesn_net:anything", "sesn_net:x:y"] {
            assert!(
                authenticate(&sessions, Some(&basic(offered))).is_none(),
                "{offered} must not select a session without a token"
            );
        }
        let path = std::env::var("PATH").unwrap();
        let found = authenticate(&sessions, Some(&basic(&format!("sesn_tok:{path}"))));
        assert_eq!(found.map(|s| s.id.as_str()), Some("sesn_tok"));
        assert!(authenticate(&sessions, Some(&basic("sesn_tok:wrong"))).is_none());
    }
}
