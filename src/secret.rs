//! A secret value that cannot be logged by accident.
//!
//! `Secret` has a redacting `Debug`, no `Display`, and one explicit way out
//! (`expose`). Its memory is zeroized on drop.

use std::fmt;

use zeroize::Zeroizing;

/// The real value of a credential: never printed, wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The raw bytes. Every caller is a place where the secret leaves the type's protection.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `offered` equals the secret, in constant time: digests are compared, so neither the
    /// content nor the length leaks through timing.
    pub fn matches(&self, offered: &[u8]) -> bool {
        use ring::digest::{SHA256, digest};
        let (a, b) = (digest(&SHA256, offered), digest(&SHA256, &self.0));
        a.as_ref()
            .iter()
            .zip(b.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("ghp_supersecret");
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn matches_whole_values_only() {
        let s = Secret::new("key");
        assert!(s.matches(b"key"));
        assert!(!s.matches(b"kez"));
        assert!(!s.matches(b"key2"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn expose_returns_the_bytes() {
        assert_eq!(Secret::new("abc").expose(), b"abc");
    }
}
