//! keyswap's certificate authority: created on first start (or loaded), it mints one leaf
//! certificate per destination host, cached with single-flight minting.
//!
//! All leaves share one ECDSA P-256 key made at start-up, so minting a new host costs one signature.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use tokio::sync::OnceCell;

/// How many per-host server configs are kept; past this an arbitrary one is dropped.
const CACHE_CAPACITY: usize = 10_000;
/// Leaf validity: under the 398 days that browsers and Apple clients accept.
const LEAF_VALIDITY_DAYS: i64 = 365;
/// CA validity.
const CA_VALIDITY_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} exists but {1} does not: keep both CA files together, or remove both to make a new CA"
    )]
    HalfPresent(PathBuf, PathBuf),
    #[error("invalid CA certificate or key: {0}")]
    Invalid(rcgen::Error),
    #[error("cannot mint a certificate for `{host}`: {source}")]
    Mint { host: String, source: rcgen::Error },
    #[error("cannot build a TLS config: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    KeyNotPrivate(#[from] crate::files::NotPrivate),
}

/// The CA and its cache of per-host TLS server configs.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_path: PathBuf,
    leaf_key: KeyPair,
    cache: DashMap<String, Arc<OnceCell<Arc<ServerConfig>>>>,
    capacity: usize,
    hits: AtomicU64,
    minted: AtomicU64,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA at `cert_path`/`key_path`, creating both (key mode 0600) when neither exists;
    /// a CA made here is announced with its normalised path, as sandboxes must be given it.
    pub fn load_or_create(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let (cert_pem, issuer) = match existing(cert_path, key_path)? {
            Some(found) => found,
            None => {
                let (cert_pem, key_pem) = create(cert_path, key_path)?;
                tracing::info!(
                    cert = %normalised(cert_path).display(),
                    key = %normalised(key_path).display(),
                    "created a new CA: sandboxes trust its certificate (`keyswap env` points them at the bundle beside it)"
                );
                let issuer = parse(&cert_pem, &key_pem)?;
                (cert_pem, issuer)
            }
        };
        let leaf_key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Invalid)?;
        Ok(Self {
            issuer,
            cert_pem,
            cert_path: cert_path.to_path_buf(),
            leaf_key,
            cache: DashMap::new(),
            capacity: CACHE_CAPACITY,
            hits: AtomicU64::new(0),
            minted: AtomicU64::new(0),
        })
    }

    /// The CA certificate, PEM-encoded (served at `/ca.pem`, trusted by sandboxes).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Hosts with a cached certificate now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// (cache hits, certificates minted) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.minted.load(Ordering::Relaxed),
        )
    }

    /// The TLS server config presenting a certificate for `host` (normalised), minted on first use.
    /// Concurrent first requests for one host wait for a single mint.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let cell = self.cell(host);
        if let Some(config) = cell.get() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(config.clone());
        }
        cell.get_or_try_init(|| async { self.mint(host) })
            .await
            .cloned()
    }

    fn cell(&self, host: &str) -> Arc<OnceCell<Arc<ServerConfig>>> {
        if let Some(cell) = self.cache.get(host) {
            return cell.clone();
        }
        if self.cache.len() >= self.capacity {
            // Its own statement: the iterator's shard lock must be released before `remove`
            // takes a write lock on the same shard.
            let victim = self.cache.iter().next().map(|e| e.key().clone());
            if let Some(victim) = victim {
                self.cache.remove(&victim);
            }
        }
        self.cache.entry(host.to_string()).or_default().clone()
    }

    /// Signs a leaf for `host` and wraps it in a server config offering h2 and http/1.1.
    fn mint(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let mint_err = |source| CaError::Mint {
            host: host.to_string(),
            source,
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_string().try_into().map_err(mint_err)?),
        }];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(1);
        params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(mint_err)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)?;
        // Our order (AES-128-GCM first, see `tls`), not the client's.
        config.ignore_client_order = true;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.minted.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(config))
    }
}

/// The CA certificate as DER, for tests and for trust stores built in-process.
pub fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.into(),
        source,
    })
}

/// An existing CA: its certificate (PEM) and the issuer that signs leaves.
type Found = (String, Issuer<'static, KeyPair>);

/// The CA at `cert_path`/`key_path` when both exist (read, parsed, the key's mode checked);
/// `None` when neither does. What `keyswap check` reports before `run` would fail on it.
pub fn existing(cert_path: &Path, key_path: &Path) -> Result<Option<Found>, CaError> {
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            // SECURITY: a CA key others can read lets them mint certificates every sandbox
            // trusts; refuse to use it until the operator fixes the mode.
            crate::files::ensure_private("the CA key", key_path)?;
            let cert_pem = read(cert_path)?;
            let issuer = parse(&cert_pem, &read(key_path)?)?;
            Ok(Some((cert_pem, issuer)))
        }
        (false, false) => Ok(None),
        (true, false) => Err(CaError::HalfPresent(cert_path.into(), key_path.into())),
        (false, true) => Err(CaError::HalfPresent(key_path.into(), cert_path.into())),
    }
}

fn parse(cert_pem: &str, key_pem: &str) -> Result<Issuer<'static, KeyPair>, CaError> {
    let key = KeyPair::from_pem(key_pem).map_err(CaError::Invalid)?;
    Issuer::from_ca_cert_pem(cert_pem, key).map_err(CaError::Invalid)
}

/// `path` absolute, links and `..` resolved (only made absolute when it does not exist yet).
pub fn normalised(path: &Path) -> PathBuf {
    fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Makes a new CA key and self-signed certificate and writes them (key first, mode 0600).
fn create(cert_path: &Path, key_path: &Path) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Invalid)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "keyswap CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "keyswap");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(CaError::Invalid)?;
    let key_pem = key.serialize_pem();
    write_file(key_path, key_pem.as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert.pem(), key_pem))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

/// A positive random 16-byte serial (RFC 5280 asks for unpredictable serials).
fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The OS RNG failing is not recoverable in a meaningful way; fall back to the clock.
        let nanos = OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes();
        bytes.copy_from_slice(&nanos);
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn creates_a_ca_with_a_private_key_file_then_loads_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("certs/ca.pem"),
            dir.path().join("certs/ca-key.pem"),
        );
        let ca = CertificateAuthority::load_or_create(&cert, &key).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let first = ca.cert_pem().to_string();
        let again = CertificateAuthority::load_or_create(&cert, &key).unwrap();
        assert_eq!(again.cert_pem(), first);
    }

    /// Our leaves prefer AES-128-GCM (see `tls`), and a client offering only another suite still
    /// gets a handshake.
    #[tokio::test]
    async fn leaves_prefer_aes_128_gcm_and_still_take_any_suite_a_client_offers() {
        use rustls::CipherSuite as S;
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(
            &dir.path().join("c.pem"),
            &dir.path().join("k.pem"),
        )
        .unwrap();
        let server = ca.server_config("api.example.test").await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_to_der(ca.cert_pem()).unwrap()).unwrap();
        let roots = Arc::new(roots);
        for (offered, expected) in [
            (None, S::TLS13_AES_128_GCM_SHA256),
            (
                Some(S::TLS13_CHACHA20_POLY1305_SHA256),
                S::TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (
                Some(S::TLS13_AES_256_GCM_SHA384),
                S::TLS13_AES_256_GCM_SHA384,
            ),
        ] {
            let mut provider = rustls::crypto::ring::default_provider();
            if let Some(only) = offered {
                provider.cipher_suites.retain(|s| s.suite() == only);
            }
            let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            let name = "api.example.test".try_into().unwrap();
            let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
            let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
            for _ in 0..4 {
                let mut wire = Vec::new();
                c.write_tls(&mut wire).unwrap();
                s.read_tls(&mut wire.as_slice()).unwrap();
                s.process_new_packets().unwrap();
                let mut back = Vec::new();
                s.write_tls(&mut back).unwrap();
                c.read_tls(&mut back.as_slice()).unwrap();
                c.process_new_packets().unwrap();
            }
            assert!(!c.is_handshaking() && !s.is_handshaking(), "{offered:?}");
            let got = s.negotiated_cipher_suite().map(|s| s.suite());
            assert_eq!(got, Some(expected), "client offered {offered:?}");
        }
    }

    #[tokio::test]
    async fn a_full_cache_evicts_instead_of_growing_or_locking_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateAuthority::load_or_create(
            &dir.path().join("c.pem"),
            &dir.path().join("k.pem"),
        )
        .unwrap();
        ca.capacity = 3;
        for i in 0..10 {
            let host = format!("h{i}.example.com");
            let done =
                tokio::time::timeout(std::time::Duration::from_secs(5), ca.server_config(&host))
                    .await;
            assert!(done.is_ok(), "minting {host} hung");
        }
        assert!(ca.cache.len() <= 3);
        assert_eq!(ca.stats().1, 10);
    }

    #[tokio::test]
    async fn refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca.pem");
        fs::write(&cert, "x").unwrap();
        let err =
            CertificateAuthority::load_or_create(&cert, &dir.path().join("k.pem")).unwrap_err();
        assert!(matches!(err, CaError::HalfPresent(..)));
    }

    #[tokio::test]
    async fn leaf_configs_are_cached_and_minted_once_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(
            CertificateAuthority::load_or_create(
                &dir.path().join("c.pem"),
                &dir.path().join("k.pem"),
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let ca = ca.clone();
                tokio::spawn(async move { ca.server_config("api.example.com").await.unwrap() })
            })
            .collect();
        let mut configs = Vec::new();
        for t in tasks {
            configs.push(t.await.unwrap());
        }
        assert!(configs.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert_eq!(ca.stats().1, 1, "one mint for one host");
        ca.server_config("192.0.2.1").await.unwrap();
        assert_eq!(ca.stats().1, 2);
        assert_eq!(
            configs[0].alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
