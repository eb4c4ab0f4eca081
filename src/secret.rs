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
    fn expose_returns_the_bytes() {
        assert_eq!(Secret::new("abc").expose(), b"abc");
    }
}
