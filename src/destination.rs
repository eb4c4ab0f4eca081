//! The destination of a request: the one host every decision is made on.
//!
//! It comes from the CONNECT target or the absolute-form URI, never from a header the client
//! controls, and is normalised once (lower case, one trailing dot removed).

use std::fmt;
use std::sync::OnceLock;

use http::HeaderValue;
use http::uri::{Authority, Scheme};

use crate::scope::normalize_host;

/// Where a request's bytes really go.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Normalised host: a DNS name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// What goes on the wire for this destination, made once (a tunnel's requests share it).
    wire: OnceLock<Wire>,
}

/// The upstream URI's authority and the identical `Host` value, for one scheme.
#[derive(Debug, Clone)]
pub struct Wire {
    https: bool,
    pub authority: Authority,
    pub host: HeaderValue,
}

// Equality is the destination, not what has been cached about it.
impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host && self.port == other.port
    }
}

impl Eq for Destination {}

impl Destination {
    pub fn new(host: impl Into<String>, port: u16) -> Destination {
        Destination {
            host: host.into(),
            port,
            wire: OnceLock::new(),
        }
    }

    /// The authority and `Host` value for `scheme` (`None` only if the host cannot be written in
    /// a URI, which validation excludes).
    pub fn wire(&self, scheme: &Scheme) -> Option<Wire> {
        let https = *scheme == Scheme::HTTPS;
        if let Some(w) = self.wire.get()
            && w.https == https
        {
            return Some(w.clone());
        }
        let text = bytes::Bytes::from(self.authority_for(scheme));
        let wire = Wire {
            https,
            authority: Authority::from_maybe_shared(text.clone()).ok()?,
            host: HeaderValue::from_maybe_shared(text).ok()?,
        };
        // The first scheme asked for is cached: a destination is used with one scheme.
        let _ = self.wire.set(wire.clone());
        Some(wire)
    }

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
        // A port that is there but not a number (`host:443x`) is refused, not defaulted (the
        // `http` crate reports such a port as absent).
        let text = authority.as_str();
        let after_host = &text[text.rfind(']').map_or(0, |i| i + 1)..];
        let port = match after_host.rsplit_once(':').map(|(_, p)| p) {
            None | Some("") => default_port,
            Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        (port != 0).then(|| Destination::new(host, port))
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
        if self.is_plain_spelling(value) {
            return true;
        }
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

impl Destination {
    /// `host` or `host:port` exactly (letter case aside): how clients write `Host`, checked
    /// without parsing or allocating. Anything else takes the full parse.
    fn is_plain_spelling(&self, value: &str) -> bool {
        if self.host.contains(':') {
            return false;
        }
        let Some(head) = value.get(..self.host.len()) else {
            return false;
        };
        if !head.eq_ignore_ascii_case(&self.host) {
            return false;
        }
        match &value.as_bytes()[self.host.len()..] {
            [] => true,
            [b':', port @ ..] => {
                !port.is_empty()
                    && port.len() <= 5
                    && port[0] != b'0'
                    && port.iter().all(u8::is_ascii_digit)
                    && std::str::from_utf8(port)
                        .ok()
                        .and_then(|p| p.parse::<u16>().ok())
                        == Some(self.port)
            }
            _ => false,
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
            Destination::new("api.example.com", 8443)
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
        // The no-parse fast path agrees with the parse on its edge cases.
        assert!(d.matches_authority("api.example.com:")); // RFC 3986: an empty port is the default
        assert!(!d.matches_authority("api.example.com:08443x"));
        assert!(!d.matches_authority("api.example.com.evil:8443"));
        assert!(!d.matches_authority("api.example.co"));
        assert!(!d.matches_authority("api.example.com:84430"));
    }

    #[test]
    fn the_wire_authority_is_made_once_per_scheme() {
        let d = dest("a.test:8443");
        let w = d.wire(&Scheme::HTTPS).unwrap();
        assert_eq!(
            (w.authority.as_str(), w.host.to_str().unwrap()),
            ("a.test:8443", "a.test:8443")
        );
        let d = dest("a.test:443");
        assert_eq!(d.wire(&Scheme::HTTPS).unwrap().authority.as_str(), "a.test");
        // Another scheme is not served from the cache.
        assert_eq!(
            d.wire(&Scheme::HTTP).unwrap().authority.as_str(),
            "a.test:443"
        );
        assert_eq!(
            dest("[::1]:80")
                .wire(&Scheme::HTTP)
                .unwrap()
                .authority
                .as_str(),
            "[::1]"
        );
    }

    #[test]
    fn rejects_empty_ports_and_odd_hosts() {
        assert!(Destination::from_authority(&"a.test:0".parse().unwrap(), 443).is_none());
    }
}
