//! Host matching: which destination hosts a credential may be sent to.
//!
//! The only input is the destination host (CONNECT target or absolute-URI host), normalised once by
//! [`normalize_host`]. Entries of `allowed_hosts` are parsed into [`HostPattern`]s at load time.

use std::net::Ipv4Addr;

/// The most entries a credential's `allowed_hosts` may hold.
pub const MAX_ALLOWED_HOSTS: usize = 16;

/// One `allowed_hosts` entry: an exact host or a `*.` wildcard over subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A hostname or an IPv4 address, normalised.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`: any subdomain, never the apex.
    Subdomains(String),
}

/// Why an `allowed_hosts` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("an allowed host must not be empty")]
    Empty,
    #[error("`{0}` is a URL; write the bare host name (e.g. `api.example.com`)")]
    Url(String),
    #[error("`{0}` has a port; allowed hosts match any port, write the host alone")]
    Port(String),
    #[error("`{0}` is an IPv6 address; only host names and IPv4 addresses are supported")]
    Ipv6(String),
    #[error("`{0}` has a path; write the bare host name")]
    Path(String),
    #[error("`{0}`: a wildcard is only allowed as a leading `*.` (e.g. `*.example.com`)")]
    Wildcard(String),
    #[error("`{0}` is not a valid host name")]
    Invalid(String),
}

impl HostPattern {
    /// Parses one `allowed_hosts` entry by the rules of SPEC §2.
    pub fn parse(entry: &str) -> Result<Self, PatternError> {
        let owned = || entry.to_string();
        if entry.is_empty() {
            return Err(PatternError::Empty);
        }
        if entry.contains("://") {
            return Err(PatternError::Url(owned()));
        }
        if entry.starts_with('[') || entry.matches(':').count() > 1 {
            return Err(PatternError::Ipv6(owned()));
        }
        if entry.contains(':') {
            return Err(PatternError::Port(owned()));
        }
        if entry.contains('/') {
            return Err(PatternError::Path(owned()));
        }
        let (wildcard, rest) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if rest.contains('*') {
            return Err(PatternError::Wildcard(owned()));
        }
        let host = normalize_host(rest);
        if !is_valid_hostname(&host) || (wildcard && host.parse::<Ipv4Addr>().is_ok()) {
            return Err(PatternError::Invalid(owned()));
        }
        Ok(if wildcard {
            HostPattern::Subdomains(format!(".{host}"))
        } else {
            HostPattern::Exact(host)
        })
    }

    /// Whether a destination host (already normalised) falls under this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// Lower-cases a host and removes trailing dots: the one canonical form every decision uses.
/// Idempotent (found by the `scope` fuzz target: removing one dot made `a..` take two rounds).
pub fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.');
    host.to_ascii_lowercase()
}

/// A DNS name (letters, digits, `-`, `_` in dot-separated labels of 1–63) or a dotted IPv4 address.
fn is_valid_hostname(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, host: &str) -> bool {
        HostPattern::parse(entry)
            .unwrap()
            .matches(&normalize_host(host))
    }

    #[test]
    fn exact_host_matches_case_insensitively_and_ignores_trailing_dots() {
        assert!(allows("api.example.com", "api.example.com"));
        assert!(allows("api.example.com", "API.Example.COM"));
        assert!(allows("api.example.com", "api.example.com."));
        assert!(allows("API.example.com.", "api.example.com"));
        // One canonical form, however many dots (normalising twice changes nothing).
        assert!(allows("api.example.com", "api.example.com.."));
        assert_eq!(
            normalize_host("A.b.."),
            normalize_host(&normalize_host("A.b.."))
        );
        assert!(!allows("api.example.com", "xapi.example.com"));
        assert!(!allows("api.example.com", "api.example.com.evil.test"));
    }

    #[test]
    fn wildcard_matches_subdomains_but_not_the_apex() {
        assert!(allows("*.example.com", "a.example.com"));
        assert!(allows("*.example.com", "a.b.example.com"));
        assert!(allows("*.example.com", "A.EXAMPLE.COM."));
        assert!(!allows("*.example.com", "example.com"));
        assert!(!allows("*.example.com", "badexample.com"));
        assert!(!allows("*.example.com", ".example.com"));
    }

    #[test]
    fn ipv4_literal_matches_exactly() {
        assert!(allows("192.0.2.1", "192.0.2.1"));
        assert!(!allows("192.0.2.1", "192.0.2.10"));
    }

    #[test]
    fn refuses_urls_ports_paths_ipv6_and_stray_wildcards() {
        use PatternError::*;
        let err = |e: &str| HostPattern::parse(e).unwrap_err();
        assert!(matches!(err("https://api.example.com"), Url(_)));
        assert!(matches!(err("api.example.com:443"), Port(_)));
        assert!(matches!(err("api.example.com/v1"), Path(_)));
        assert!(matches!(err("::1"), Ipv6(_)));
        assert!(matches!(err("[2001:db8::1]"), Ipv6(_)));
        assert!(matches!(err("api.*.com"), Wildcard(_)));
        assert!(matches!(err("*"), Invalid(_) | Wildcard(_)));
        assert!(matches!(err("*.1.2.3.4"), Invalid(_)));
        assert!(matches!(err("bad host"), Invalid(_)));
        assert!(matches!(err("a..b"), Invalid(_)));
        assert!(matches!(err(""), Empty));
    }
}
