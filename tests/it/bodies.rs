//! Request bodies (placeholder → secret, streamed) and responses scrubbed (secret → placeholder).

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::{Keyswap, Setup, TestCa, Upstream, curl};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const VAULT: &str = r#"
[[vaults]]
id = "vlt_b"
[[vaults.credentials]]
id = "vcrd_body"
auth = { type = "environment_variable", secret_name = "BODY", secret_value = "SECRET_body_value_1", networking = { type = "limited", allowed_hosts = ["api.example.test"] }, injection_location = { header = true, body = true } }
[[vaults.credentials]]
id = "vcrd_hdr"
auth = { type = "environment_variable", secret_name = "HDR", secret_value = "SECRET_hdr_2", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

struct World {
    ca: TestCa,
    upstream: Upstream,
    keyswap: Keyswap,
}

impl World {
    async fn start() -> World {
        Self::with(VAULT).await
    }

    async fn with(rest: &str) -> World {
        let ca = TestCa::new();
        let upstream = Upstream::https(&ca).await;
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                rest,
                ..Setup::default()
            },
        );
        World {
            ca,
            upstream,
            keyswap,
        }
    }

    async fn curl(&self, extra: &[&str]) -> common::CurlOut {
        let bundle = self.keyswap.client_bundle(&self.ca);
        let url = format!("https://api.example.test:{}/upload", self.upstream.port());
        let proxy = self.keyswap.proxy_url();
        let mut args = vec!["--proxy", &proxy, "--cacert", bundle.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args).await
    }
}

const JSON: &str = r#"{"token":"ks-ph-vcrd_body","other":"ks-ph-vcrd_hdr"}"#;
const EXPECTED: &str = r#"{"token":"SECRET_body_value_1","other":"ks-ph-vcrd_hdr"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn json_body_is_substituted_with_content_length_chunked_and_http2() {
    let w = World::start().await;
    let cases: [&[&str]; 3] = [
        &["--http1.1", "--data-binary", JSON],
        &[
            "--http1.1",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            JSON,
        ],
        &["--http2", "--data-binary", JSON],
    ];
    for args in cases {
        let out = w.curl(args).await;
        assert_eq!(out.status, 200, "{args:?}: {out:?}");
        // The echo comes back scrubbed: the client never sees the secret.
        assert!(
            out.body.contains("ks-ph-vcrd_body") && !out.body.contains("SECRET"),
            "{}",
            out.body
        );
    }
    let seen = w.upstream.requests();
    for s in &seen {
        assert_eq!(String::from_utf8_lossy(&s.body), EXPECTED, "{s:?}");
    }
    assert_eq!(
        seen[0].header("content-length"),
        Some(EXPECTED.len().to_string().as_str()),
        "length corrected"
    );
    assert!(!w.keyswap.log().contains("SECRET"));
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_bodies_and_header_only_credentials_are_left_alone() {
    let w = World::start().await;
    w.curl(&["-H", "Content-Encoding: gzip", "--data-binary", JSON])
        .await;
    assert_eq!(String::from_utf8_lossy(&w.upstream.only().body), JSON);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_placeholder_split_across_chunks_is_found() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nsubstitute_over_plain_http = true",
            rest: VAULT,
            ..Setup::default()
        },
    );
    let mut tcp = tokio::net::TcpStream::connect(keyswap.proxy).await.unwrap();
    let head = format!(
        "POST http://api.example.test:{0}/ HTTP/1.1\r\nHost: api.example.test:{0}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        upstream.port()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for piece in ["{\"t\":\"ks-p", "h-vc", "rd_bo", "dy\"}"] {
        tcp.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        tcp.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        String::from_utf8_lossy(&upstream.only().body),
        "{\"t\":\"SECRET_body_value_1\"}"
    );
    // Found only at the stream's end: still logged once (no value) and counted.
    let line = keyswap.wait_log("placeholders in the streamed body");
    assert!(line.contains("vcrd_body: substituted (body)"), "{line}");
    assert!(!keyswap.log().contains("SECRET_body_value_1"));
    let metrics = curl(&[&format!("http://{}/metrics", keyswap.admin)])
        .await
        .body;
    assert!(
        metrics.contains(
            r#"keyswap_substitutions_total{credential_id="vcrd_body",location="body"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn echoed_secrets_come_back_as_the_placeholder_in_headers_and_body() {
    let w = World::start().await;
    let out = w
        .curl(&[
            "--compressed",
            "-H",
            "Authorization: Bearer ks-ph-vcrd_hdr",
            "-H",
            "x-token: ks-ph-vcrd_body",
        ])
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    let seen = w.upstream.only();
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer SECRET_hdr_2"),
        "the upstream got the secret"
    );
    assert_eq!(
        seen.header("accept-encoding"),
        Some("identity"),
        "keyswap asks for a body it can read"
    );
    assert_eq!(
        out.headers.get("x-echo-authorization").map(String::as_str),
        Some("Bearer ks-ph-vcrd_hdr")
    );
    assert_eq!(
        out.headers.get("x-echo-token").map(String::as_str),
        Some("ks-ph-vcrd_body")
    );
    assert!(
        !out.body.contains("SECRET") && out.body.contains("Bearer ks-ph-vcrd_hdr"),
        "{}",
        out.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_echoed_basic_header_is_masked_back_to_what_the_client_sent() {
    let w = World::start().await;
    let url = format!(
        "https://git:ks-ph-vcrd_hdr@api.example.test:{}/info/refs",
        w.upstream.port()
    );
    let bundle = w.keyswap.client_bundle(&w.ca);
    let out = curl(&[
        "--proxy",
        &w.keyswap.proxy_url(),
        "--cacert",
        bundle.to_str().unwrap(),
        &url,
    ])
    .await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        w.upstream.only().header("authorization"),
        Some(format!("Basic {}", b64("git:SECRET_hdr_2")).as_str())
    );
    let sent = format!("Basic {}", b64("git:ks-ph-vcrd_hdr"));
    assert_eq!(out.headers.get("x-echo-authorization"), Some(&sent));
    assert!(
        out.body.contains(&sent) && !out.body.contains(&b64("git:SECRET_hdr_2")),
        "{}",
        out.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_gib_upload_streams_through_in_flat_memory() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 4096; // 1 GiB
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nsubstitute_over_plain_http = true",
            rest: VAULT,
            ..Setup::default()
        },
    );
    // Every chunk carries one placeholder, and one more is split across each chunk boundary.
    let placeholder = b"ks-ph-vcrd_body";
    let mut chunk = vec![b'a'; CHUNK];
    chunk[100..100 + placeholder.len()].copy_from_slice(placeholder);
    chunk[CHUNK - 7..].copy_from_slice(&placeholder[..7]);
    chunk[..placeholder.len() - 7].copy_from_slice(&placeholder[7..]);
    let chunk = bytes::Bytes::from(chunk);
    let frames =
        (0..CHUNKS).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone())));
    let body = StreamBody::new(futures_util::stream::iter(frames));

    let tcp = tokio::net::TcpStream::connect(keyswap.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = format!("http://api.example.test:{}/big", upstream.port());
    let req = hyper::Request::post(uri)
        .header("host", "api.example.test")
        .body(body)
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();

    let seen = upstream.only();
    let secret = b"SECRET_body_value_1";
    // Each chunk: one whole placeholder; each boundary but the first: one split placeholder. The
    // very first chunk starts with the tail of a placeholder that never began, and the last ends
    // with a head that never ends: those stay as they are.
    let replaced = CHUNKS + (CHUNKS - 1);
    let grown = replaced * (secret.len() - placeholder.len());
    assert_eq!(seen.body_len, CHUNK * CHUNKS + grown);
    assert!(seen.body.windows(secret.len()).any(|w| w == secret));
    let peak = common::peak_rss_kib(keyswap.pid());
    assert!(peak < 100 * 1024, "keyswap's peak RSS was {peak} KiB");
    eprintln!("1 GiB upload: keyswap peak RSS {} MiB", peak / 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_buffering_budget_a_body_is_streamed_not_refused() {
    let body = format!("{}{}", "x".repeat(3000), JSON);
    let expected = format!("{}{}", "x".repeat(3000), EXPECTED);
    for (budget, held) in [(1 << 20, true), (2000, false)] {
        let w = World::with(&format!(
            "[limits]\nmax_buffered_body_bytes = {budget}\n{VAULT}"
        ))
        .await;
        let out = w.curl(&["--http2", "--data-binary", &body]).await;
        assert_eq!(out.status, 200, "{out:?}");
        let seen = w.upstream.only();
        assert_eq!(
            String::from_utf8_lossy(&seen.body),
            expected,
            "substituted either way"
        );
        let length = seen.header("content-length").map(str::to_string);
        if held {
            assert_eq!(
                length,
                Some(expected.len().to_string()),
                "held whole: exact length"
            );
        } else {
            assert_eq!(length, None, "over the budget: streamed without a length");
        }
    }
}
