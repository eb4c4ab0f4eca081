//! The TLS primitives keyswap uses on both legs: ring's, with AES-128-GCM preferred.
//!
//! Why: every request is decrypted and encrypted twice (client leg and upstream leg), and every
//! tunnel runs a TLS 1.3 key schedule. AES-128-GCM is TLS 1.3's mandatory suite and as secure for
//! this use as AES-256-GCM, with four fewer AES rounds per block and a SHA-256 key schedule
//! instead of SHA-384; clients (rustls, OpenSSL) list AES-256 first, so the preference is the
//! server's (keyswap's leaves) and, towards upstreams that follow the client's order, ours.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedCipherSuite};

/// ring's provider, its cipher suites reordered: AES-128-GCM first, otherwise as ring lists them.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

/// The sort key: AES-128-GCM (TLS 1.3, then 1.2) ahead of everything else; a stable sort keeps
/// ring's order among the rest.
fn rank(suite: &SupportedCipherSuite) -> u8 {
    match suite.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_comes_first_and_nothing_is_dropped() {
        let ours = provider();
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(ours.cipher_suites.len(), ring.cipher_suites.len());
        assert_eq!(
            ours.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        for suite in &ring.cipher_suites {
            assert!(
                ours.cipher_suites
                    .iter()
                    .any(|s| s.suite() == suite.suite())
            );
        }
    }
}
