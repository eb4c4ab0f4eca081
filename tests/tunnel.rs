//! A hyper client inside a CONNECT tunnel: every request on the connection (each HTTP/2 stream, each
//! keep-alive HTTP/1.1 request) is checked against the CONNECT host.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Keyswap, Setup, TestCa, Upstream};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const VAULT: &str = r#"
[[vaults]]
id = "vlt_t"
[[vaults.credentials]]
id = "vcrd_t"
auth = { type = "environment_variable", secret_name = "T", secret_value = "SECRET_t", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

/// Opens `CONNECT host:port` through keyswap and returns the TLS stream inside, with ALPN `alpn`.
async fn tunnel(
    keyswap: &Keyswap,
    host: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    tunnel_via(keyswap.proxy, &pem, host, port, alpn).await
}

async fn tunnel_via(
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

fn get(uri: &str, host: Option<&str>) -> Request<Empty<Bytes>> {
    let mut req = Request::get(uri).header("x-token", "ks-ph-vcrd_t");
    if let Some(host) = host {
        req = req.header("host", host);
    }
    req.body(Empty::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_http2_stream_is_checked_against_the_connect_host() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: VAULT,
            ..Setup::default()
        },
    );
    let port = upstream.port();
    let tls = tunnel(&keyswap, "api.example.test", port, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);

    let ok = sender
        .send_request(get(&format!("https://api.example.test:{port}/one"), None))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = sender
        .send_request(get(&format!("https://other.example.test:{port}/two"), None))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 421);
    assert_eq!(wrong.headers()["x-keyswap-error"], "host-mismatch");
    let body = wrong.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("api.example.test"));
    let again = sender
        .send_request(get(&format!("https://api.example.test:{port}/three"), None))
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the connection stays usable");

    let seen = upstream.requests();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/one", "/three"]);
    assert!(seen.iter().all(|s| s.header("x-token") == Some("SECRET_t")));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_keep_alive_http1_request_is_checked_against_the_connect_host() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: VAULT,
            ..Setup::default()
        },
    );
    let port = upstream.port();
    let tls = tunnel(&keyswap, "api.example.test", port, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);

    let host = format!("api.example.test:{port}");
    let ok = sender.send_request(get("/one", Some(&host))).await.unwrap();
    assert_eq!(ok.status(), 200);
    ok.into_body().collect().await.unwrap();
    let other = format!("other.example.test:{port}");
    sender.ready().await.unwrap();
    let wrong = sender
        .send_request(get("/two", Some(&other)))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 421);
    wrong.into_body().collect().await.unwrap();
    // Absolute-form inside the tunnel naming another host is refused too.
    sender.ready().await.unwrap();
    let absolute = sender
        .send_request(get(
            &format!("https://other.example.test:{port}/three"),
            Some(&host),
        ))
        .await
        .unwrap();
    assert_eq!(absolute.status(), 421);
    absolute.into_body().collect().await.unwrap();

    let paths: Vec<_> = upstream.requests().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/one"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_connections_to_one_host_share_one_certificate() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: VAULT,
            ..Setup::default()
        },
    );
    let port = upstream.port();
    let pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (proxy, pem) = (keyswap.proxy, pem.clone());
        tasks.spawn(async move {
            let tls = tunnel_via(proxy, &pem, "api.example.test", port, b"http/1.1").await;
            tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        });
    }
    let certs = tasks.join_all().await;
    assert_eq!(certs.len(), 8);
    assert!(
        certs.windows(2).all(|w| w[0] == w[1]),
        "one leaf for one host"
    );
}
