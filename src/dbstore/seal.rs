//! Secrets at rest (SPEC §10): AES-256-GCM with the key from `[store] key_env`, a fresh random
//! nonce for every write, and the credential id as associated data — a sealed value copied onto
//! another credential's row does not open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use zeroize::Zeroizing;

/// Why the store key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{0} is not set: export it with the base64 of 32 random bytes (`head -c 32 /dev/urandom | base64`) before `keyswap run`"
    )]
    Missing(String),
    #[error("{0} is not the base64 of 32 bytes: give `head -c 32 /dev/urandom | base64`")]
    Malformed(String),
}

/// A sealed value could not be opened: the wrong key, or a value moved or altered.
#[derive(Debug, thiserror::Error)]
#[error("a sealed value does not open with this key")]
pub struct OpenError;

/// The key that seals every secret in the database.
pub struct StoreKey(LessSafeKey);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// The key in the variable `name` (base64 of 32 bytes).
    pub fn from_env(name: &str) -> Result<Self, KeyError> {
        let text = Zeroizing::new(
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| KeyError::Missing(name.to_string()))?,
        );
        Self::from_base64(text.trim()).ok_or_else(|| KeyError::Malformed(name.to_string()))
    }

    pub fn from_base64(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()?,
        );
        let key = UnboundKey::new(&AES_256_GCM, &bytes).ok()?;
        Some(Self(LessSafeKey::new(key)))
    }

    /// `nonce ‖ ciphertext ‖ tag`, bound to `id`.
    pub fn seal(&self, id: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The system's generator does not fail on Linux; an all-zero nonce would be reused, so
        // a failure is not ignored: it is the only way this can go wrong, and it is fatal.
        if SystemRandom::new().fill(&mut nonce).is_err() {
            std::process::abort();
        }
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        // Sealing only fails for inputs over ~64 GiB.
        if self
            .0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut body,
            )
            .is_err()
        {
            std::process::abort();
        }
        out.extend_from_slice(&body);
        out
    }

    /// The plaintext of a value [`seal`](Self::seal)ed for `id`.
    pub fn open(&self, id: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut body)
            .map_err(|_| OpenError)?
            .len();
        body.truncate(plain);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoreKey {
        use base64::Engine as _;
        StoreKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32]))
            .unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_id() {
        let k = key(1);
        let sealed = k.seal("vcrd_a", b"ghp_secret");
        assert!(!sealed.windows(10).any(|w| w == b"ghp_secret"));
        assert_eq!(&*k.open("vcrd_a", &sealed).unwrap(), b"ghp_secret");
        assert!(
            k.open("vcrd_b", &sealed).is_err(),
            "moved to another credential"
        );
        assert!(key(2).open("vcrd_a", &sealed).is_err(), "another key");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(k.open("vcrd_a", &altered).is_err());
        assert!(k.open("vcrd_a", &sealed[..5]).is_err());
    }

    #[test]
    fn every_write_has_a_fresh_nonce() {
        let k = key(1);
        assert_ne!(k.seal("vcrd_a", b"x"), k.seal("vcrd_a", b"x"));
    }

    #[test]
    fn a_key_must_be_32_bytes_of_base64() {
        assert!(StoreKey::from_base64("c2hvcnQ=").is_none());
        assert!(StoreKey::from_base64("not base64!").is_none());
    }
}
