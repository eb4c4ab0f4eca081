//! A hyper client inside a CONNECT tunnel: every request on the connection (each HTTP/2 stream, each
//! keep-alive HTTP/1.1 request) is checked against the CONNECT host.

use crate::common;

use bytes::Bytes;
use common::{Keyswap, Setup, TestCa, Upstream};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const VAULT: &str = r#"
[[vaults]]
id = "vlt_t"
[[vaults.credentials]]
id = "vcrd_t"
auth = { type = "environment_variable", secret_name = "T", secret_value = "SECRET_t", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

async fn tunnel(
    keyswap: &Keyswap,
    host: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    common::tunnel(keyswap.proxy, &pem, host, port, alpn).await
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
            let tls = common::tunnel(proxy, &pem, "api.example.test", port, b"http/1.1").await;
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
