//! The destination of a request: the one host every decision is made on.
//!
//! It comes from the CONNECT target or the absolute-form URI, never from a header the client
//! controls, and is normalised once (lower case, one trailing dot removed).

use std::fmt;

use http::uri::{Authority, Scheme};

use crate::scope::normalize_host;

/// Where a request's bytes really go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Normalised host: a DNS name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// From an authority with an optional port (`api.example.com:443`, `[::1]:8443`).
    pub fn from_authority(authority: &Authority, default_port: u16) -> Option<Destination> {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        let host = normalize_host(host);
        if host.is_empty()
            || host
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"-._:".contains(&b)))
        {
            return None;
        }
        let port = authority.port_u16().unwrap_or(default_port);
        (port != 0).then_some(Destination { host, port })
    }

    /// `host[:port]` as it goes in a URI or a `Host` header; the port is left out when it is the
    /// scheme's default.
    pub fn authority_for(&self, scheme: &Scheme) -> String {
        let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = self.uri_host();
        if self.port == default {
            host.into_owned()
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The host as a URI spells it: IPv6 addresses in brackets.
    pub fn uri_host(&self) -> std::borrow::Cow<'_, str> {
        if self.host.contains(':') {
            format!("[{}]", self.host).into()
        } else {
            self.host.as_str().into()
        }
    }

    /// Whether a `Host` header or `:authority` names this destination. A port, when given, must be
    /// ours; when absent the scheme's default is not required (clients omit it for 443 and 80).
    pub fn matches_authority(&self, value: &str) -> bool {
        let Ok(authority) = value.parse::<Authority>() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        match Destination::from_authority(&authority, self.port) {
            Some(other) => other == *self,
            None => false,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uri_host(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> Destination {
        Destination::from_authority(&s.parse().unwrap(), 443).unwrap()
    }

    #[test]
    fn normalises_host_and_keeps_port() {
        assert_eq!(
            dest("API.Example.COM.:8443"),
            Destination {
                host: "api.example.com".into(),
                port: 8443
            }
        );
        assert_eq!(dest("api.example.com").port, 443);
        assert_eq!(dest("[::1]:9").host, "::1");
        assert_eq!(dest("[::1]:9").to_string(), "[::1]:9");
    }

    #[test]
    fn authority_leaves_out_default_ports() {
        assert_eq!(dest("a.test:443").authority_for(&Scheme::HTTPS), "a.test");
        assert_eq!(
            dest("a.test:8443").authority_for(&Scheme::HTTPS),
            "a.test:8443"
        );
        assert_eq!(dest("a.test:80").authority_for(&Scheme::HTTP), "a.test");
    }

    #[test]
    fn host_header_must_name_the_destination() {
        let d = dest("api.example.com:8443");
        assert!(d.matches_authority("api.example.com:8443"));
        assert!(d.matches_authority("API.example.com.:8443"));
        assert!(d.matches_authority("api.example.com"));
        assert!(!d.matches_authority("api.example.com:9999"));
        assert!(!d.matches_authority("evil.test:8443"));
        assert!(!d.matches_authority("user@api.example.com:8443"));
        assert!(!d.matches_authority(""));
    }

    #[test]
    fn rejects_empty_ports_and_odd_hosts() {
        assert!(Destination::from_authority(&"a.test:0".parse().unwrap(), 443).is_none());
    }
}
