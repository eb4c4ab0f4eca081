//! SPEC §8 end to end: a hostile upstream, in scope for a credential, tries to hand the secret back
//! to the sandbox. The upstream (`tests/reflector/reflector.py`) reflects what it received through
//! real encoders (Python's json, urllib, html and base64, and PHP/Go/Gson JSON rules), stores it for
//! later requests and hides it in the reason phrase, header names, a compressed body and ranges.
//! It logs exactly what it sent; each test decodes what the client got back, line by line, with
//! the inverse of the encoder that made it, and requires the secret to be absent.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Keyswap, Setup, TestCa, curl};

/// Every character some encoder treats specially, and a space.
const SECRET: &str = r#"tok_R3al/sec+ret=&<>"'~!*() x\y;%"#;
/// The same, as a TOML basic string.
const SECRET_TOML: &str = r#""tok_R3al/sec+ret=&<>\"'~!*() x\\y;%""#;
const PLACEHOLDER: &str = "ks-ph-vcrd_leak";

/// The reflecting upstream, a Python process; killed on drop.
struct Reflector {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reflector {
    fn start(ca: &TestCa) -> Reflector {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.leaf_pem(common::NAMES);
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let port_file = dir.path().join("port");
        let log = dir.path().join("sent.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reflector/reflector.py");
        let child = Command::new("python3")
            .arg(script)
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "reflector did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Reflector {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// What the reflector sent in its last answer: (encoding name, text).
    fn last_sent(&self) -> (Vec<(String, String)>, serde_json::Value) {
        let text = std::fs::read_to_string(&self.log).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let sent = last["sent"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        (sent, last["request_headers"].clone())
    }
}

struct World {
    ca: TestCa,
    reflector: Reflector,
    keyswap: Keyswap,
}

impl World {
    fn start(vaults: &str) -> World {
        let ca = TestCa::new();
        let reflector = Reflector::start(&ca);
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                proxy: "block_private_addresses = false",
                rest: vaults,
                ..Setup::default()
            },
        );
        World {
            ca,
            reflector,
            keyswap,
        }
    }

    fn one_credential() -> World {
        World::start(&format!(
            r#"
[[vaults]]
id = "vlt_a"
[[vaults.credentials]]
id = "vcrd_leak"
auth = {{ type = "environment_variable", secret_name = "T", secret_value = {SECRET_TOML}, networking = {{ type = "limited", allowed_hosts = ["api.example.test"] }} }}
"#
        ))
    }

    async fn get(&self, path: &str, extra: &[&str]) -> common::CurlOut {
        let bundle = self.keyswap.client_bundle(&self.ca);
        let url = format!("https://api.example.test:{}{path}", self.reflector.port);
        let proxy = self.keyswap.proxy_url();
        let mut args = vec!["--proxy", &proxy, "--cacert", bundle.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args).await
    }
}

/// The text of a reflected line decoded the way its encoder wrote it.
fn decode(name: &str, text: &str) -> Vec<u8> {
    let percent = |s: &str, plus: bool| {
        let s = if plus {
            s.replace('+', " ")
        } else {
            s.to_string()
        };
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match (b[i], b.get(i + 1..i + 3)) {
                (b'%', Some(h))
                    if u8::from_str_radix(std::str::from_utf8(h).unwrap_or("zz"), 16).is_ok() =>
                {
                    out.push(u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap());
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    };
    if name == "jwt_php_json" {
        let json = base64_groups(text);
        let token = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v["k"].as_str().map(str::to_string));
        return token.map_or(json, String::into_bytes);
    }
    if name == "html_of_json" {
        let json = unescape_html(text);
        return serde_json::from_str::<String>(&json)
            .unwrap_or(json)
            .into_bytes();
    }
    if name == "quote_twice" {
        let once = percent(text, false);
        return percent(&String::from_utf8_lossy(&once), false);
    }
    if name == "quoted_printable" {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match (
                b[i],
                b.get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
            ) {
                (b'=', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        return out;
    }
    if name.starts_with("json_document") {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        return v["received"]["token"]
            .as_str()
            .unwrap_or(text)
            .as_bytes()
            .to_vec();
    }
    if name.starts_with("json_") {
        return serde_json::from_str::<String>(text)
            .unwrap_or_else(|_| text.to_string())
            .into_bytes();
    }
    if name.starts_with("base64") {
        return base64_groups(text);
    }
    if name.starts_with("html_") || name.starts_with("xml_") {
        return unescape_html(text).into_bytes();
    }
    match name {
        "quote" | "quote_path" | "quote_lower" | "js_encodeuricomponent" => percent(text, false),
        "quote_plus" | "java_urlencoder" | "urlencode_form" => percent(text, true),
        _ => text.as_bytes().to_vec(),
    }
}

/// Decodes every whole 4-character base64 group (standard or URL-safe), skipping what does not
/// decode: a masked value need not decode as a whole, but no part of it may hold the secret.
fn base64_groups(text: &str) -> Vec<u8> {
    let normal: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
        .collect();
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut out = Vec::new();
    for group in normal.as_bytes().chunks(4) {
        if let Ok(bytes) = engine.decode(group) {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

fn unescape_html(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A request header as the reflector received it (names in any case).
fn field<'a>(received: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    received
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every reflected line the client got, decoded by its encoder, is free of the secret; the
/// non-base64 ones show the placeholder instead.
fn assert_no_reflection(out: &common::CurlOut, sent: &[(String, String)]) {
    assert!(!sent.is_empty());
    let got: Vec<(&str, &str)> = out
        .body
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .collect();
    assert_eq!(got.len(), sent.len(), "every line came back: {}", out.body);
    for (name, text) in got {
        let decoded = decode(name, text);
        assert!(
            !contains(&decoded, SECRET.as_bytes()),
            "{name}: the client could decode the secret from {text:?}"
        );
        if !name.starts_with("base64") && name != "jwt_php_json" {
            assert!(
                contains(&decoded, PLACEHOLDER.as_bytes()),
                "{name}: masked as the placeholder: {text:?}"
            );
        }
    }
    for (name, value) in &out.headers {
        for candidate in [value.clone().into_bytes(), base64_groups(value)] {
            assert!(
                !contains(&candidate, SECRET.as_bytes()),
                "header {name}: {value}"
            );
        }
    }
    assert!(!out.head.contains(SECRET), "head: {}", out.head);
}

#[tokio::test]
async fn a_secret_reflected_in_any_encoding_comes_back_as_the_placeholder() {
    let w = World::one_credential();
    let header = format!("x-token: {PLACEHOLDER}");
    let out = w.get("/reflect", &["--http1.1", "-H", &header]).await;
    assert_eq!(out.status, 200, "{out:?}");
    let (sent, received) = w.reflector.last_sent();
    assert_eq!(
        field(&received, "x-token"),
        Some(SECRET),
        "the upstream got the secret"
    );
    assert_no_reflection(&out, &sent);
    // The reason phrase ("OK <secret>") is the client's too.
    assert!(out.head.starts_with("HTTP/1.1 200"), "{}", out.head);
    assert!(
        out.head.lines().next().unwrap().contains(PLACEHOLDER),
        "{}",
        out.head
    );
}

#[tokio::test]
async fn a_secret_stored_by_one_request_is_masked_when_read_by_another() {
    let w = World::one_credential();
    let header = format!("x-token: {PLACEHOLDER}");
    let stored = w.get("/store", &["-H", &header, "-X", "POST"]).await;
    assert_eq!(stored.status, 200, "{stored:?}");
    // No placeholder in this request: its answer is scrubbed all the same.
    let out = w.get("/stored", &[]).await;
    assert_eq!(out.status, 200, "{out:?}");
    let (sent, _) = w.reflector.last_sent();
    assert_no_reflection(&out, &sent);
}

#[tokio::test]
async fn a_compressed_answer_from_an_in_scope_host_is_refused_even_without_a_placeholder() {
    let w = World::one_credential();
    let header = format!("x-token: {PLACEHOLDER}");
    w.get("/store", &["-H", &header, "-X", "POST"]).await;
    let out = w.get("/gzip", &["-H", "Accept-Encoding: gzip"]).await;
    assert_eq!(out.status, 502, "{out:?}");
    assert_eq!(out.headers["x-keyswap-error"], "upstream-encoding");
    let (_, received) = w.reflector.last_sent();
    assert_eq!(
        field(&received, "accept-encoding"),
        Some("identity"),
        "keyswap asked for an answer it can read"
    );
}

#[tokio::test]
async fn a_stored_secret_cannot_be_read_back_in_ranges() {
    let w = World::one_credential();
    let header = format!("x-token: {PLACEHOLDER}");
    w.get("/store", &["-H", &header, "-X", "POST"]).await;
    // Two ranges of the stored value, neither a whole secret, no placeholder in either request.
    let mut rebuilt = String::new();
    for range in ["bytes=0-9", "bytes=10-"] {
        let out = w
            .get("/range?stored", &["-H", &format!("Range: {range}")])
            .await;
        let (_, received) = w.reflector.last_sent();
        assert_eq!(field(&received, "range"), None, "{received}");
        assert_eq!(out.status, 200, "{out:?}");
        rebuilt.push_str(&out.body);
    }
    assert!(!rebuilt.contains(SECRET), "{rebuilt}");
}

#[tokio::test]
async fn range_is_removed_from_a_request_that_received_a_secret() {
    let w = World::one_credential();
    let header = format!("x-token: {PLACEHOLDER}");
    // Without the fix the client rebuilds the secret from two ranges, neither of which is masked.
    let out = w
        .get(
            "/range",
            &[
                "-H",
                &header,
                "-H",
                "Range: bytes=6-11",
                "-H",
                "If-Range: x",
            ],
        )
        .await;
    let (_, received) = w.reflector.last_sent();
    assert_eq!(field(&received, "range"), None, "{received}");
    assert_eq!(field(&received, "if-range"), None, "{received}");
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.body, format!("token={PLACEHOLDER}"));
}

#[tokio::test]
async fn a_secret_in_a_header_name_or_reason_phrase_is_masked() {
    // A secret that can be a header name; hyper reads names in lower case.
    let w = World::start(
        r#"
[[vaults]]
id = "vlt_a"
[[vaults.credentials]]
id = "vcrd_name"
auth = { type = "environment_variable", secret_name = "T", secret_value = "NameSecret_9f8e7d6c", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#,
    );
    // HTTP/1.1 to the client: HTTP/2 has no reason phrase.
    let out = w
        .get("/name", &["--http1.1", "-H", "x-token: ks-ph-vcrd_name"])
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    let head = out.head.to_ascii_lowercase();
    assert!(!head.contains("namesecret_9f8e7d6c"), "{}", out.head);
    assert!(head.contains("x-ks-ph-vcrd_name"), "{}", out.head);
    assert!(
        out.head.lines().next().unwrap().contains("ks-ph-vcrd_name"),
        "{}",
        out.head
    );
}

/// Credentials whose secrets equal or extend the used one: they must not switch masking off.
const OVERLAPPING: &str = r#"
[[vaults]]
id = "vlt_a"
[[vaults.credentials]]
id = "vcrd_used"
auth = { type = "environment_variable", secret_name = "USED", secret_value = "ovl-secret-0123456789", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
[[vaults.credentials]]
id = "vcrd_copy"
archived_at = "2026-01-01T00:00:00Z"
auth = { type = "environment_variable", secret_name = "COPY", secret_value = "ovl-secret-0123456789", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
[[vaults.credentials]]
id = "vcrd_longer"
auth = { type = "environment_variable", secret_name = "LONGER", secret_value = "ovl-secret-0123456789-tail", networking = { type = "limited", allowed_hosts = ["other.example.test"] } }
[[vaults.credentials]]
id = "vcrd_elsewhere"
auth = { type = "environment_variable", secret_name = "ELSEWHERE", secret_value = "ovl-secret-0123456789", networking = { type = "limited", allowed_hosts = ["other.example.test"] } }
"#;

#[tokio::test]
async fn another_credential_with_an_equal_or_longer_secret_never_stops_the_masking() {
    let w = World::start(OVERLAPPING);
    // The sandbox appends the longer secret's tail itself.
    for (sent, expected) in [
        ("ks-ph-vcrd_used", "ks-ph-vcrd_used"),
        ("ks-ph-vcrd_used-tail", "ks-ph-vcrd_used-tail"),
        ("xks-ph-vcrd_usedx", "xks-ph-vcrd_usedx"),
    ] {
        let header = format!("x-token: {sent}");
        let out = w.get("/reflect", &["-H", &header]).await;
        assert_eq!(out.status, 200, "{out:?}");
        let (_, received) = w.reflector.last_sent();
        assert!(
            field(&received, "x-token")
                .unwrap()
                .contains("ovl-secret-0123456789")
        );
        assert!(
            !out.body.contains("ovl-secret-0123456789"),
            "{sent}: {}",
            out.body
        );
        let raw = out
            .body
            .lines()
            .find_map(|l| l.strip_prefix("raw\t"))
            .unwrap();
        assert_eq!(raw, expected, "masked as the credential the request used");
        assert!(!out.head.contains("ovl-secret"), "{}", out.head);
    }
}

#[tokio::test]
async fn placeholders_in_headers_servers_log_or_forward_stay_placeholders() {
    let w = World::one_credential();
    for name in [
        "User-Agent",
        "Referer",
        "Origin",
        "Via",
        "Forwarded",
        "X-Forwarded-For",
        "X-Forwarded-Host",
    ] {
        let header = format!("{name}: a {PLACEHOLDER} b");
        let out = w.get("/store", &["-H", &header, "-X", "POST"]).await;
        assert_eq!(out.status, 200, "{out:?}");
        let (_, received) = w.reflector.last_sent();
        let expected = format!("a {PLACEHOLDER} b");
        assert_eq!(field(&received, name), Some(expected.as_str()), "{name}");
    }
    w.keyswap.wait_log("vcrd_leak=location_disabled");
}

/// h2 prints every frame it reads at debug level, an upstream's GOAWAY debug data included (which
/// a hostile server fills with the secret): keyswap caps it at info whatever KEYSWAP_LOG says (the
/// test fixture runs keyswap at trace).
#[tokio::test]
async fn library_frame_logs_are_capped_even_at_trace() {
    let ca = TestCa::new();
    let upstream = common::Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            ..Setup::default()
        },
    );
    let bundle = keyswap.client_bundle(&ca);
    let url = format!("https://api.example.test:{}/", upstream.port());
    let out = curl(&[
        "--proxy",
        &keyswap.proxy_url(),
        "--cacert",
        bundle.to_str().unwrap(),
        &url,
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert!(
        upstream.only().version.contains("HTTP/2"),
        "the upstream leg spoke h2"
    );
    let log = keyswap.log();
    assert!(log.contains("TRACE"), "the fixture logs at trace");
    assert!(!log.contains("h2::"), "h2 frame logs reached the log");
}

/// A rotated secret may still be valid upstream (a grace period) and stored there: it stays masked
/// on the hosts it was in scope for.
#[tokio::test]
async fn a_rotated_secret_is_still_masked_where_it_was_in_scope() {
    let w = World::one_credential();
    let header = format!("x-token: {PLACEHOLDER}");
    w.get("/store", &["-H", &header, "-X", "POST"]).await;
    let text = w.keyswap.edited_config("tok_R3al", "tok_ROTATED");
    std::fs::write(w.keyswap.config_path(), text).unwrap();
    w.keyswap.wait_store_generation(2).await;
    let out = w.get("/stored", &[]).await;
    assert_eq!(out.status, 200, "{out:?}");
    let (sent, _) = w.reflector.last_sent();
    let raw = sent
        .iter()
        .find(|(name, _)| name == "raw")
        .map(|(_, v)| v.as_str());
    assert_eq!(raw, Some(SECRET), "the upstream still holds the old secret");
    assert_no_reflection(&out, &sent);
}

/// A tunnel remembers its destination's scrubbing table between requests: a rotation must reach
/// the tunnels already open, or the new secret, substituted into a request on such a tunnel and
/// reflected, would come back in clear.
#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_open_across_a_rotation_masks_the_new_secret() {
    use http_body_util::BodyExt as _;
    const NEW: &str = "tok_N3w-rotated-value_42";
    let w = World::one_credential();
    let port = w.reflector.port;
    let mut sender = common::tunnel_client(&w.keyswap, "api.example.test", port).await;
    let reflect = |sender: &mut hyper::client::conn::http1::SendRequest<
        http_body_util::Empty<bytes::Bytes>,
    >| {
        let request = http::Request::get("/reflect")
            .header("host", format!("api.example.test:{port}"))
            .header("x-token", PLACEHOLDER)
            .body(http_body_util::Empty::new())
            .unwrap();
        sender.send_request(request)
    };
    let answer = reflect(&mut sender).await.unwrap();
    let head = format!("{:?}", answer.headers());
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    assert!(!contains(&body, SECRET.as_bytes()) && !head.contains(SECRET));
    assert!(contains(&body, PLACEHOLDER.as_bytes()), "{body:?}");

    let text = w.keyswap.edited_config(SECRET_TOML, &format!("\"{NEW}\""));
    std::fs::write(w.keyswap.config_path(), text).unwrap();
    w.keyswap.wait_store_generation(2).await;
    // The same tunnel: the new secret goes out and comes back masked.
    sender.ready().await.unwrap();
    let answer = reflect(&mut sender).await.unwrap();
    let head = format!("{:?}", answer.headers());
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let (sent, _) = w.reflector.last_sent();
    let raw = sent
        .iter()
        .find(|(name, _)| name == "raw")
        .map(|(_, v)| v.as_str());
    assert_eq!(raw, Some(NEW), "the upstream received the rotated secret");
    assert!(
        !contains(&body, NEW.as_bytes()),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(!head.contains(NEW), "{head}");
    assert!(contains(&body, PLACEHOLDER.as_bytes()), "{body:?}");
}
