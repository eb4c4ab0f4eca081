//! Shared fixtures for the end-to-end tests: a test CA, HTTPS and HTTP recording upstreams on
//! 127.0.0.1, the real `keyswap` binary started on a written config, and a curl runner. Compiled
//! into `tests/it` and into `benches/load.rs` (both through `#[path]`).
#![allow(dead_code)]

pub mod netns;
pub mod nginx;
pub mod postgres;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Host names the upstreams answer for; keyswap resolves them all to 127.0.0.1.
pub const NAMES: &[&str] = &[
    "api.example.test",
    "other.example.test",
    "a.wild.example.test",
    "wild.example.test",
];

/// A CA that only the tests trust: it signs the upstreams' certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "keyswap test upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names` and its key, as PEM: for upstreams that are not written in
    /// Rust (a Python server, nginx).
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS server config with a leaf for `names` (DNS names or IPs), offering h2 and http/1.1.
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], der)
                .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The first [`KEPT_BODY_BYTES`] of the body.
    pub body: Vec<u8>,
    pub body_len: usize,
}

/// How much of each request body the recording upstream keeps.
pub const KEPT_BODY_BYTES: usize = 64 * 1024;

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The authority the request named: `Host` on HTTP/1.1, `:authority` on HTTP/2.
    pub fn authority(&self) -> Option<&str> {
        self.header("host").or_else(|| self.header(":authority"))
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A recording upstream on 127.0.0.1 that echoes each request as JSON.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The single request received so far; fails the test if there is not exactly one.
    pub fn only(&self) -> Seen {
        let seen = self.requests();
        assert_eq!(
            seen.len(),
            1,
            "upstream saw {} requests: {seen:#?}",
            seen.len()
        );
        seen.into_iter().next().unwrap()
    }

    /// An HTTPS upstream (h2 and http/1.1) with a certificate from `ca` for [`NAMES`] and 127.0.0.1.
    pub async fn https(ca: &TestCa) -> Upstream {
        let mut names = NAMES.to_vec();
        names.push("127.0.0.1");
        Self::start(Some(tokio_rustls::TlsAcceptor::from(
            ca.server_config(&names),
        )))
        .await
    }

    /// A plain-HTTP upstream.
    pub async fn http() -> Upstream {
        Self::start(None).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (tls, record) = (tls.clone(), record.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| echo(req, record.clone()));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Upstream { addr, seen }
    }
}

async fn echo(
    req: Request<Incoming>,
    record: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    // `/slow…` answers after a second: a request in flight for shutdown tests.
    if parts.uri.path().starts_with("/slow") {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    // Keep the first bytes and count the rest: a 1 GiB upload must not fill the test's memory.
    let (mut kept, mut body_len) = (Vec::new(), 0usize);
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            body_len += data.len();
            let room = KEPT_BODY_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    let body = kept;
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // HTTP/2 carries the authority as a pseudo-header, not a Host header.
    if let (Some(authority), true) = (
        parts.uri.authority(),
        parts.version == http::Version::HTTP_2,
    ) {
        headers.push((":authority".into(), authority.to_string()));
    }
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: format!("{:?}", parts.version),
        headers,
        body,
        body_len,
    };
    let json = serde_json::json!({
        "method": seen.method, "path": seen.path, "version": seen.version,
        "headers": seen.headers.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(&seen.body),
    });
    // Echo the credentials in headers too, as some APIs and debugging endpoints do.
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    for (name, echo) in [
        ("authorization", "x-echo-authorization"),
        ("x-token", "x-echo-token"),
    ] {
        if let Some(v) = parts.headers.get(name) {
            response.headers_mut().insert(echo, v.clone());
        }
    }
    record.lock().unwrap().push(seen);
    Ok(response)
}

/// The real keyswap binary, running on a config written by the test into its own folder.
pub struct Keyswap {
    child: Child,
    pub dir: tempfile::TempDir,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// The parts of a test config; `start` adds listeners on port 0, the upstream CA and name overrides.
pub struct Setup<'a> {
    /// Extra lines for the `[proxy]` table.
    pub proxy: &'a str,
    /// Everything after the standard tables: `[[vaults]]` and so on.
    pub rest: &'a str,
    /// Environment variables for the process.
    pub env: &'a [(&'a str, &'a str)],
    /// Lay the config out like a Kubernetes volume: `keyswap.toml -> ..data/keyswap.toml`,
    /// `..data -> ..v1`.
    pub symlinked: bool,
    /// More `[upstream.resolve]` entries (name, address) besides [`NAMES`] → 127.0.0.1.
    pub resolve: &'a [(&'a str, &'a str)],
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            proxy: "block_private_addresses = false",
            rest: "",
            env: &[],
            symlinked: false,
            resolve: &[],
        }
    }
}

impl Keyswap {
    pub fn start(ca: &TestCa, setup: Setup<'_>) -> Keyswap {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upstream-ca.pem"), &ca.pem).unwrap();
        let resolve: String = NAMES
            .iter()
            .map(|n| (*n, "127.0.0.1"))
            .chain(setup.resolve.iter().copied())
            .map(|(n, a)| format!("\"{n}\" = \"{a}\"\n"))
            .collect();
        let config = format!(
            "# Operator comment: kept across admin writes.\n[proxy]\nlisten = \"127.0.0.1:0\"\n{}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[tls]\nupstream_ca_files = [\"upstream-ca.pem\"]\n\n[upstream.resolve]\n{resolve}\n{}\n",
            setup.proxy, setup.rest
        );
        if setup.symlinked {
            std::fs::create_dir(dir.path().join("..v1")).unwrap();
            write(&dir.path().join("..v1"), "keyswap.toml", &config);
            std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/keyswap.toml", dir.path().join("keyswap.toml"))
                .unwrap();
        } else {
            write(dir.path(), "keyswap.toml", &config);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyswap"));
        cmd.arg("run")
            .arg("--config")
            .arg(dir.path().join("keyswap.toml"));
        cmd.env("KEYSWAP_LOG", "trace")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY");
        for (k, v) in setup.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let proxy = wait_for_addr(&log, "proxy listening on ", &mut child);
        let admin = wait_for_addr(&log, "admin listening on ", &mut child);
        Keyswap {
            child,
            dir,
            proxy,
            admin,
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (logs are written asynchronously).
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// keyswap's CA certificate file (created on start).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    /// A bundle trusted by curl: keyswap's CA and the test upstream CA (for raw tunnels).
    pub fn client_bundle(&self, ca: &TestCa) -> PathBuf {
        let path = self.dir.path().join("client-bundle.pem");
        let keyswap_ca = std::fs::read_to_string(self.ca_path()).unwrap();
        std::fs::write(&path, format!("{keyswap_ca}{}", ca.pem)).unwrap();
        path
    }

    /// curl with `args` through this keyswap, trusting its CA and `ca`.
    pub async fn curl(&self, ca: &TestCa, args: &[&str]) -> CurlOut {
        let bundle = self.client_bundle(ca);
        let proxy = self.proxy_url();
        let mut all = vec!["--proxy", &proxy, "--cacert", bundle.to_str().unwrap()];
        all.extend_from_slice(args);
        curl(&all).await
    }

    /// The admin listener's `/healthz` answer.
    pub async fn healthz(&self) -> serde_json::Value {
        let out = curl(&[&format!("http://{}/healthz", self.admin)]).await;
        serde_json::from_str(&out.body).unwrap()
    }

    /// Waits (up to 5 s) until the store in force is generation `n`, as after an edit is loaded.
    pub async fn wait_store_generation(&self, n: u64) {
        let started = Instant::now();
        loop {
            let health = self.healthz().await;
            if health["store_generation"] == n {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{health}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("keyswap.toml")
    }

    /// The current config text with `from` replaced by `to`.
    pub fn edited_config(&self, from: &str, to: &str) -> String {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        assert!(text.contains(from), "{from} not in config");
        text.replace(from, to)
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Keyswap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_addr(log: &Mutex<String>, prefix: &str, child: &mut Child) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(addr) = log.lock().unwrap().lines().find_map(|l| {
            let at = l.find(prefix)?;
            l[at + prefix.len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        }) {
            return addr;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "keyswap exited ({status}) before listening:\n{}",
                log.lock().unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "keyswap did not start:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What curl got back.
#[derive(Debug)]
pub struct CurlOut {
    pub status: u16,
    /// `1.1` or `2`: the version curl spoke with keyswap.
    pub http_version: String,
    pub headers: HashMap<String, String>,
    /// The final response's head as curl received it (status line included).
    pub head: String,
    pub body: String,
    pub stderr: String,
}

/// Runs curl with `args` (after `-sS`), capturing the final response's status, headers and body.
pub async fn curl(args: &[&str]) -> CurlOut {
    let dir = tempfile::tempdir().unwrap();
    let (body_path, head_path) = (dir.path().join("body"), dir.path().join("head"));
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(&body_path)
        .arg("-D")
        .arg(&head_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("curl runs");
    let head = std::fs::read_to_string(&head_path).unwrap_or_default();
    // -D holds every response (the proxy's CONNECT answer first); keep the last block.
    let last = head.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut written = written.split_whitespace();
    CurlOut {
        status: written.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: written.next().unwrap_or("").to_string(),
        headers,
        head: last.to_string(),
        body: std::fs::read_to_string(&body_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sends `x-token: <placeholder>` to `host` on `upstream` through keyswap and returns what the
/// upstream received in that header.
pub async fn token_received(
    keyswap: &Keyswap,
    ca: &TestCa,
    upstream: &Upstream,
    host: &str,
    placeholder: &str,
) -> String {
    let bundle = keyswap.client_bundle(ca);
    let url = format!("https://{host}:{}/", upstream.port());
    let before = upstream.requests().len();
    let header = format!("x-token: {placeholder}");
    let proxy = keyswap.proxy_url();
    let out = curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        bundle.to_str().unwrap(),
        "-H",
        &header,
        &url,
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), before + 1, "one request reached the upstream");
    seen[before]
        .header("x-token")
        .unwrap_or_default()
        .to_string()
}

/// An HTTP/1.1 client inside a tunnel through `keyswap` to `host:port` (see [`tunnel`]), its
/// connection driven by a task of its own.
#[allow(dead_code)]
pub async fn tunnel_client(
    keyswap: &Keyswap,
    host: &str,
    port: u16,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>> {
    let ca_pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let tls = tunnel(keyswap.proxy, &ca_pem, host, port, b"http/1.1").await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Opens `CONNECT host:port` through the proxy at `proxy` and returns the TLS stream inside,
/// trusting only keyswap's CA (`ca_pem`) and offering ALPN `alpn`.
pub async fn tunnel(
    proxy: std::net::SocketAddr,
    ca_pem: &str,
    host: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let connect = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            tcp.read(&mut byte).await.unwrap(),
            1,
            "proxy closed during CONNECT"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(keyswap::ca::pem_to_der(ca_pem).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

/// Writes `dir/name` with mode 0600, as an operator must for a config holding literal secrets
/// (keyswap refuses one that group or others can read).
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// An HTTPS server on 127.0.0.1 (certificate from `ca` for [`NAMES`]) whose answers come from
/// `handler`, given the request head and whole body: for upstreams a test scripts (OAuth servers).
pub async fn serve_https<H, F>(ca: &TestCa, handler: H) -> SocketAddr
where
    H: Fn(http::request::Parts, Bytes) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(NAMES));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(handler(parts, body).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A process's resident memory at its peak (`VmHWM` in `/proc/<pid>/status`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The Python of `target/clients-venv` (real client libraries, installed by `.ci/run`).
pub fn python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clients-venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
        "target/clients-venv is required here (pip install -r tests/clients/requirements.txt)"
    );
    eprintln!("skipped: no target/clients-venv");
    None
}

/// The environment `keyswap env --format json` gives a sandbox of the implicit session.
pub fn sandbox_env(keyswap: &Keyswap) -> Vec<(String, String)> {
    let config = keyswap.config_path();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args([
            "env",
            "--format",
            "json",
            "--proxy-url",
            &keyswap.proxy_url(),
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    vars.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect()
}
