//! Hostile input, bytes in and bytes out, against the real binary: malformed and ambiguous HTTP/1
//! framing on the proxy listener and inside an intercepted tunnel, authority tricks, and the
//! address spellings `getaddrinfo` accepts for this machine. A recording origin on 127.0.0.1 shows
//! whether anything got through. Only loopback is ever dialled, even by a faulty build.

use crate::common;

use std::time::Duration;

use common::{Keyswap, Setup, TestCa, Upstream};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SECRET: &str = "SECRET_hostile_value";

fn vault(port: u16) -> String {
    format!(
        r#"
[[vaults]]
id = "vlt_h"
[[vaults.credentials]]
id = "vcrd_h"
auth = {{ type = "environment_variable", secret_name = "H", secret_value = "{SECRET}", networking = {{ type = "limited", allowed_hosts = ["api.example.test"] }} }}
# port {port}
"#
    )
}

/// Writes `request`, then reads until the peer closes (or 5 s pass).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn plain(keyswap: &Keyswap, request: &str) -> String {
    let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
    exchange(&mut tcp, request.as_bytes()).await
}

/// The status and `x-keyswap-error` of the last answer in `raw` (answers may follow a body
/// without a line break, and bodies may mention `HTTP/1.1`).
fn verdict(raw: &str) -> (String, Option<String>) {
    let Some(start) = raw.rmatch_indices("HTTP/1.1 ").map(|(i, _)| i).find(|&i| {
        raw.as_bytes()
            .get(i + 9..i + 13)
            .is_some_and(|s| s[..3].iter().all(u8::is_ascii_digit) && s[3] == b' ')
    }) else {
        return (String::new(), None);
    };
    let last = &raw[start..];
    let code = last
        .split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("x-keyswap-error: "))
        .map(str::to_string);
    (last[9..12].to_string(), code)
}

/// Requests that must be refused, as `{url}` (absolute-form origin URL) templates.
fn malformed(url: &str, authority: &str) -> Vec<(&'static str, String, &'static str)> {
    let req = |rest: &str| format!("POST {url} HTTP/1.1\r\nHost: {authority}\r\n{rest}");
    vec![
        (
            "CL+TE",
            req("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "TE+CL",
            req("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "differing CL",
            req("Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            "400",
        ),
        ("CL +3", req("Content-Length: +3\r\n\r\nabc"), "400"),
        ("CL -1", req("Content-Length: -1\r\n\r\n"), "400"),
        ("CL hex", req("Content-Length: 0x3\r\n\r\nabc"), "400"),
        (
            "CL 2^64",
            req("Content-Length: 18446744073709551616\r\n\r\n"),
            "400",
        ),
        (
            "TE chunked, chunked",
            req("Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "TE xchunked",
            req("Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            "400",
        ),
        ("TE gzip", req("Transfer-Encoding: gzip\r\n\r\n"), "400"),
        (
            "TE \\x0b",
            req("Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "TE on HTTP/1.0",
            format!(
                "POST {url} HTTP/1.0\r\nHost: {authority}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "400",
        ),
        (
            "obs-fold",
            req("X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
            "400",
        ),
        (
            "NUL in value",
            req("X-A: a\0b\r\nContent-Length: 0\r\n\r\n"),
            "400",
        ),
        (
            "bare CR in value",
            req("X-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
            "400",
        ),
        (
            "space in name",
            req("X A: b\r\nContent-Length: 0\r\n\r\n"),
            "400",
        ),
        (
            "space before colon",
            req("X-A : b\r\nContent-Length: 0\r\n\r\n"),
            "400",
        ),
        (
            "space in target",
            format!("GET {url}a b HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
            "400",
        ),
        (
            "bad chunk size",
            req("Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "chunk longer than size",
            req("Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "two Host headers",
            format!("GET {url} HTTP/1.1\r\nHost: {authority}\r\nHost: other.example.test\r\n\r\n"),
            "400",
        ),
        (
            "101 headers",
            format!(
                "GET {url} HTTP/1.1\r\nHost: {authority}\r\n{}\r\n",
                (0..101)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
            "431",
        ),
        (
            "70 KB head",
            format!(
                "GET {url} HTTP/1.1\r\nHost: {authority}\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70_000)
            ),
            "431",
        ),
    ]
}

fn expected_code(status: &str) -> &'static str {
    match status {
        "431" => "headers-too-large",
        _ => "bad-request",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_on_the_listener_is_refused_and_never_forwarded() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let rest = vault(upstream.port());
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nsubstitute_over_plain_http = true",
            rest: &rest,
            ..Setup::default()
        },
    );
    let authority = format!("api.example.test:{}", upstream.port());
    let url = format!("http://{authority}/");
    for (name, request, status) in malformed(&url, &authority) {
        let answer = plain(&keyswap, &request).await;
        let (got, code) = verdict(&answer);
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(
            code.as_deref(),
            Some(expected_code(status)),
            "{name}: {answer}"
        );
        assert!(upstream.requests().is_empty(), "{name} reached the origin");
    }
    // The proxy-only refusals: origin-form to the proxy, CONNECT without a port or with a URI.
    for (name, request) in [
        (
            "origin-form",
            "GET / HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "CONNECT without port",
            "CONNECT api.example.test HTTP/1.1\r\nHost: api.example.test\r\n\r\n".into(),
        ),
        (
            "CONNECT with a URI",
            format!("CONNECT {url} HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
        ),
    ] {
        let answer = plain(&keyswap, &request).await;
        assert_eq!(
            verdict(&answer),
            ("400".into(), Some("bad-request".into())),
            "{name}: {answer}"
        );
    }
    assert!(upstream.requests().is_empty());
    // Still serving, and a good request gets through.
    let good = format!("GET {url}ok HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    assert_eq!(verdict(&plain(&keyswap, &good).await).0, "200");
    assert_eq!(upstream.only().path, "/ok");
    assert!(!keyswap.log().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_inside_a_tunnel_is_refused_and_never_forwarded() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let rest = vault(upstream.port());
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: &rest,
            ..Setup::default()
        },
    );
    let ca_pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let port = upstream.port();
    let authority = format!("api.example.test:{port}");
    for (name, request, status) in malformed("/", &authority) {
        let mut tls = common::tunnel(
            keyswap.proxy,
            &ca_pem,
            "api.example.test",
            port,
            b"http/1.1",
        )
        .await;
        let answer = exchange(&mut tls, request.as_bytes()).await;
        let (got, code) = verdict(&answer);
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(
            code.as_deref(),
            Some(expected_code(status)),
            "{name}: {answer}"
        );
        assert!(upstream.requests().is_empty(), "{name} reached the origin");
    }
    // Authority tricks inside the tunnel: another host in absolute-form or Host is 421.
    for request in [
        format!(
            "GET https://other.example.test:{port}/ HTTP/1.1\r\nHost: other.example.test:{port}\r\n\r\n"
        ),
        format!("GET / HTTP/1.1\r\nHost: other.example.test:{port}\r\n\r\n"),
    ] {
        let mut tls = common::tunnel(
            keyswap.proxy,
            &ca_pem,
            "api.example.test",
            port,
            b"http/1.1",
        )
        .await;
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 512];
        let n = tls.read(&mut head).await.unwrap();
        let answer = String::from_utf8_lossy(&head[..n]).to_string();
        assert_eq!(
            verdict(&answer),
            ("421".into(), Some("host-mismatch".into())),
            "{answer}"
        );
    }
    let mut tls = common::tunnel(
        keyswap.proxy,
        &ca_pem,
        "api.example.test",
        port,
        b"http/1.1",
    )
    .await;
    let nested = format!(
        "CONNECT other.example.test:{port} HTTP/1.1\r\nHost: other.example.test:{port}\r\n\r\n"
    );
    let answer = exchange(&mut tls, nested.as_bytes()).await;
    assert_eq!(verdict(&answer).0, "400", "{answer}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_request_pipelined_before_a_bad_one_is_answered_then_the_bad_one_refused() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(&ca, Setup::default());
    let authority = format!("api.example.test:{}", upstream.port());
    let request = format!(
        "GET http://{authority}/first HTTP/1.1\r\nHost: {authority}\r\n\r\nPOST http://{authority}/second HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let answer = plain(&keyswap, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        verdict(&answer),
        ("400".into(), Some("bad-request".into())),
        "{answer}"
    );
    assert_eq!(upstream.only().path, "/first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrades_and_proxy_headers_never_reach_the_origin() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(&ca, Setup::default());
    let authority = format!("api.example.test:{}", upstream.port());
    let request = format!(
        "GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\n\r\n"
    );
    let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tcp.read(&mut head).await.unwrap();
    let answer = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "no 101: {answer}");
    let seen = upstream.only();
    for name in [
        "upgrade",
        "http2-settings",
        "proxy-authorization",
        "proxy-connection",
        "connection",
    ] {
        assert_eq!(seen.header(name), None, "{name} was forwarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_keyswaps_own_listeners_are_refused() {
    let ca = TestCa::new();
    let keyswap = Keyswap::start(&ca, Setup::default());
    for target in [keyswap.proxy, keyswap.admin] {
        assert_egress_denied(&keyswap, &target.to_string()).await;
    }
}

/// A GET to `http://{authority}/` and a `CONNECT {authority}` are both answered
/// `403 egress-denied`.
async fn assert_egress_denied(keyswap: &Keyswap, authority: &str) {
    for request in [
        format!(
            "GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        ),
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
    ] {
        let answer = plain(keyswap, &request).await;
        assert_eq!(
            verdict(&answer),
            ("403".into(), Some("egress-denied".into())),
            "{request:?}: {answer}"
        );
    }
}

/// Spellings of this machine that `getaddrinfo` resolves (or that are literals): with
/// `block_private_addresses = true` every one is refused before any connection, plain and CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_this_machine_is_refused_when_private_addresses_are_blocked() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = true",
            ..Setup::default()
        },
    );
    let port = upstream.port();
    for host in [
        "127.0.0.1",
        "127.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "localhost",
        "0",
        "0.0.0.0",
        "[::]",
        "api.example.test", // resolved to 127.0.0.1 by [upstream.resolve]
    ] {
        assert_egress_denied(&keyswap, &format!("{host}:{port}")).await;
    }
    assert!(
        upstream.requests().is_empty(),
        "an origin on loopback was reached"
    );
}

/// A refusal must not turn keyswap into a DNS oracle for the sandbox: the body names the host and
/// the rule, never the address the host resolved to (the operator's log keeps it). Nothing is
/// dialled: the addresses are refused before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_denied_bodies_never_name_a_resolved_address() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    // These lines land in the config's [upstream.resolve] table.
    let rest = "\"ten.example.test\" = \"10.203.40.57\"\n\"lo.example.test\" = \"127.0.0.1\"\n\"v6.example.test\" = \"fd12:3456::789a\"\n";
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = true",
            rest,
            ..Setup::default()
        },
    );
    let port = upstream.port();
    for (host, addresses) in [
        ("ten.example.test", &["10.203.40.57"][..]),
        ("lo.example.test", &["127.0.0.1"][..]),
        ("v6.example.test", &["fd12:3456::789a", "fd12"][..]),
        ("localhost", &["127.0.0.1", "::1"][..]),
    ] {
        let authority = format!("{host}:{port}");
        for request in [
            format!(
                "GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
            ),
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
        ] {
            let answer = plain(&keyswap, &request).await;
            assert_eq!(
                verdict(&answer),
                ("403".into(), Some("egress-denied".into())),
                "{answer}"
            );
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert!(body.contains(host), "the body names the host: {answer}");
            assert!(
                body.contains("block_private_addresses"),
                "the body names the rule: {answer}"
            );
            for address in addresses {
                assert!(!answer.contains(address), "{address} leaked: {answer}");
            }
        }
    }
    assert!(upstream.requests().is_empty());
    let log = keyswap.wait_log("10.203.40.57");
    assert!(
        log.contains("10.203.40.57"),
        "the operator's log keeps the address: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_private_cidrs_opens_exactly_its_range() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = true\nallow_private_cidrs = [\"127.0.0.1/32\"]",
            ..Setup::default()
        },
    );
    let port = upstream.port();
    let get = |host: &str| {
        format!(
            "GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(verdict(&plain(&keyswap, &get("127.1")).await).0, "200");
    let answer = plain(&keyswap, &get("[::1]")).await;
    assert_eq!(
        verdict(&answer),
        ("403".into(), Some("egress-denied".into())),
        "{answer}"
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dribbled_byte_by_byte_is_still_served_whole() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(&ca, Setup::default());
    let authority = format!("api.example.test:{}", upstream.port());
    let request = format!(
        "POST http://{authority}/drip HTTP/1.1\r\nHost: {authority}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    );
    let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    for byte in request.as_bytes() {
        tcp.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let answer = exchange(&mut tcp, b"").await;
    assert_eq!(verdict(&answer).0, "200", "{answer}");
    let seen = upstream.only();
    assert_eq!(seen.body, b"hello world");
}

/// After a CONNECT or an upgrade that was not granted, the connection ends: the bytes after such
/// a head skip the framing check (they were meant for another protocol), so nothing more may be
/// parsed from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_or_upgrade_ends_the_connection() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(&ca, Setup::default());
    let authority = format!("api.example.test:{}", upstream.port());
    let smuggled = format!(
        "POST http://{authority}/smuggled HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    // A CONNECT refused (keyswap's own admin listener: loop guard), then a smuggling attempt.
    let request = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n{smuggled}",
        keyswap.admin
    );
    let answer = plain(&keyswap, &request).await;
    assert_eq!(
        verdict(&answer),
        ("403".into(), Some("egress-denied".into())),
        "{answer}"
    );
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    // An upgrade the origin does not grant (it answers 200), then the same attempt.
    let request = format!(
        "GET http://{authority}/ws HTTP/1.1\r\nHost: {authority}\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{smuggled}"
    );
    let answer = plain(&keyswap, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let paths: Vec<String> = upstream.requests().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/ws"], "the smuggled request was parsed");
}
