//! Credentials that sign (SPEC §11). Real signers on the client side (boto3, curl's
//! `--aws-sigv4`), configured only by `keyswap env`; every signature the upstream receives is
//! checked by botocore's own signer with the real key (tests/clients/sigv4_check.py), never by
//! keyswap's code. Refusals are checked to forward nothing.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::{CurlOut, Keyswap, Seen, Setup, TestCa, Upstream, python, sandbox_env};

const KEY_ID: &str = "AKIAREALKEY000000001";
const SECRET: &str = "realSecretKey/+ABCDEFGHIJKLMNOPQRSTUVWXYZ0";
const HMAC_SECRET: &str = "hmac-real-secret-123";

const VAULT: &str = r#"
[[vaults]]
id = "vlt_sign"
[[vaults.credentials]]
id = "vcrd_aws"
auth = { type = "aws_sigv4", access_key_id = "AKIAREALKEY000000001", secret_access_key = "realSecretKey/+ABCDEFGHIJKLMNOPQRSTUVWXYZ0", regions = ["us-east-1"], networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
[[vaults.credentials]]
id = "vcrd_hmac"
auth = { type = "hmac_signature", secret_name = "EXCHANGE_API_SECRET", secret_value = "hmac-real-secret-123", message = "{timestamp}{method}{path}{body}", signature_header = "X-Signature", timestamp_header = "X-Timestamp", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

async fn start() -> (TestCa, Upstream, Keyswap, Vec<(String, String)>) {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            rest: VAULT,
            ..Setup::default()
        },
    );
    let env = sandbox_env(&keyswap);
    (ca, upstream, keyswap, env)
}

fn var<'e>(env: &'e [(String, String)], name: &str) -> &'e str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("keyswap env prints {name}"))
}

/// botocore's verdict on the signature of a request the upstream received.
async fn botocore_check(python: &Path, seen: &Seen) -> String {
    let host = seen.authority().unwrap_or_default().to_string();
    let input = serde_json::json!({
        "method": seen.method,
        "path": seen.path,
        "host": host,
        "headers": seen.headers,
        "body": base64::engine::general_purpose::STANDARD.encode(&seen.body),
        "key_id": KEY_ID,
        "secret": SECRET,
    });
    let mut child = tokio::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/sigv4_check.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn aws_curl(
    keyswap: &Keyswap,
    ca: &TestCa,
    sigv4: &str,
    key: &str,
    extra: &[&str],
    url: &str,
) -> CurlOut {
    let user = format!("{key}:{}", keyswap::vault::AWS_DUMMY_SECRET);
    let mut args = vec!["--aws-sigv4", sigv4, "--user", &user];
    args.extend_from_slice(extra);
    args.push(url);
    keyswap.curl(ca, &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn keyswap_env_hands_out_the_placeholder_key_and_the_dummy_secret() {
    let (_ca, _upstream, _keyswap, env) = start().await;
    let id = var(&env, "AWS_ACCESS_KEY_ID");
    assert!(id.starts_with("AKIA") && id.len() == 20, "{id}");
    assert_ne!(id, KEY_ID);
    assert_eq!(
        var(&env, "AWS_SECRET_ACCESS_KEY"),
        keyswap::vault::AWS_DUMMY_SECRET
    );
    assert!(!env.iter().any(|(k, _)| k == "AWS_SESSION_TOKEN"));
    assert_eq!(var(&env, "EXCHANGE_API_SECRET"), "ks-ph-vcrd_hmac");
}

/// An upstream shaped like S3 for botocore (which reads a 200 with an unexpected body as an
/// error): PUT answers an empty 200, GET echoes the request. Records what it received.
async fn s3_like(ca: &TestCa) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let record: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let kept = record.clone();
    let addr = common::serve_https(
        ca,
        move |parts: http::request::Parts, body: bytes::Bytes| {
            let record = kept.clone();
            async move {
                let mut headers: Vec<(String, String)> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                if let Some(a) = parts.uri.authority() {
                    headers.push((":authority".into(), a.to_string()));
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
                    body_len: body.len(),
                    body: body.to_vec(),
                };
                let echo = if parts.method == http::Method::GET {
                    format!("{seen:?}")
                } else {
                    String::new()
                };
                record.lock().unwrap().push(seen);
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from(echo)))
            }
        },
    )
    .await;
    (addr.port(), record)
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_s3_put_and_a_presigned_get_are_signed_again_with_the_real_key() {
    let Some(python) = python() else { return };
    let (ca, _upstream, _keyswap, env) = start().await;
    let (port, record) = s3_like(&ca).await;
    let script = r#"
import sys, boto3, botocore.config, requests
port = sys.argv[1]
s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=f"https://api.example.test:{port}",
                  config=botocore.config.Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
s3.put_object(Bucket="bucket", Key="dir/k ey.txt", Body=b"hello signed world")
url = s3.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "dir/k ey.txt"}, ExpiresIn=300)
r = requests.get(url, timeout=20)
print(r.status_code)
print(r.text)
"#;
    let out = tokio::process::Command::new(&python)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["-c", script, &port.to_string()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.starts_with("200"), "{stdout}");
    // The echo of the presigned request carries the real key id in its query: masked.
    assert!(
        !stdout.contains(KEY_ID),
        "the client saw the real key id: {stdout}"
    );
    assert!(stdout.contains(var(&env, "AWS_ACCESS_KEY_ID")), "{stdout}");
    let seen = record.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for request in &seen {
        let verdict = botocore_check(&python, request).await;
        assert!(
            verdict.starts_with(&format!("ok {KEY_ID}")),
            "{verdict}\n{request:#?}"
        );
    }
    assert!(
        seen[1].path.contains("X-Amz-Signature="),
        "{:?}",
        seen[1].path
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_sigv4_with_a_body_hash_is_signed_again_and_a_tampered_body_is_refused() {
    let Some(python) = python() else { return };
    let (ca, upstream, keyswap, env) = start().await;
    let key = var(&env, "AWS_ACCESS_KEY_ID").to_string();
    let url = format!(
        "https://api.example.test:{}/prod/items?b=2&a=1",
        upstream.port()
    );
    // A service that sends no x-amz-content-sha256: keyswap hashes the body itself.
    let out = aws_curl(
        &keyswap,
        &ca,
        "aws:amz:us-east-1:execute-api",
        &key,
        &["--data", "{\"n\":1}"],
        &url,
    )
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert!(
        !out.body.contains(KEY_ID) && !out.body.contains(SECRET),
        "{}",
        out.body
    );
    let verdict = botocore_check(&python, &upstream.only()).await;
    assert!(verdict.starts_with("ok"), "{verdict}");
    // S3 with the body's hash in x-amz-content-sha256, then the same hash over another body.
    let s3 = format!("https://api.example.test:{}/bucket/obj", upstream.port());
    let out = aws_curl(
        &keyswap,
        &ca,
        "aws:amz:us-east-1:s3",
        &key,
        &["-X", "PUT", "--data", "payload-1"],
        &s3,
    )
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    let verdict = botocore_check(&python, &upstream.requests()[1]).await;
    assert!(verdict.starts_with("ok"), "{verdict}");
    let other_hash = keyswap::signing::sigv4::sha256_hex(b"payload-1");
    let header = format!("x-amz-content-sha256: {other_hash}");
    let out = aws_curl(
        &keyswap,
        &ca,
        "aws:amz:us-east-1:s3",
        &key,
        &["-X", "PUT", "--data", "payload-2", "-H", &header],
        &s3,
    )
    .await;
    assert_eq!(out.status, 400, "{out:?}");
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("signing-mismatch")
    );
    assert_eq!(upstream.requests().len(), 2, "nothing forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_scope_regions_hosts_and_sigv4a_are_refused_and_nothing_is_forwarded() {
    let (ca, upstream, keyswap, env) = start().await;
    let key = var(&env, "AWS_ACCESS_KEY_ID").to_string();
    let url = format!("https://api.example.test:{}/bucket/obj", upstream.port());
    let out = aws_curl(&keyswap, &ca, "aws:amz:eu-west-1:s3", &key, &[], &url).await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("signing-scope")
    );
    assert!(out.body.contains("eu-west-1"), "{}", out.body);
    let other = format!("https://other.example.test:{}/bucket/obj", upstream.port());
    // A host no credential covers is relayed untouched with mitm = "auto" (SPEC §5); with
    // interception on, the placeholder's signature there is refused.
    let out = aws_curl(&keyswap, &ca, "aws:amz:us-east-1:s3", &key, &[], &other).await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("placeholder-out-of-scope")
    );
    let v4a = format!(
        "Authorization: AWS4-ECDSA-P256-SHA256 Credential={key}/20261204/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
    );
    let out = keyswap
        .curl(
            &ca,
            &["-H", &v4a, "-H", "x-amz-date: 20261204T000000Z", &url],
        )
        .await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("signing-unsupported")
    );
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_signature_header_gets_the_real_signature() {
    let (ca, upstream, keyswap, env) = start().await;
    let placeholder = var(&env, "EXCHANGE_API_SECRET").to_string();
    let url = format!(
        "https://api.example.test:{}/v1/order?sym=BTC",
        upstream.port()
    );
    let header = format!("X-Signature: {placeholder}");
    let out = keyswap
        .curl(&ca, &["-H", &header, "--data", "qty=1", &url])
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    let seen = upstream.only();
    let timestamp = seen
        .header("x-timestamp")
        .expect("keyswap sets the timestamp header");
    let message = format!("{timestamp}POST/v1/order?sym=BTCqty=1");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC_SECRET.as_bytes());
    let expected: String = ring::hmac::sign(&key, message.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(seen.header("x-signature"), Some(expected.as_str()));
    // Out of scope: refused, nothing forwarded.
    let other = format!("https://other.example.test:{}/v1/order", upstream.port());
    let out = keyswap.curl(&ca, &["-H", &header, &other]).await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_upstream_reflecting_the_real_key_gets_back_the_placeholder_and_the_dummy() {
    let (ca, _upstream, keyswap, env) = start().await;
    let key = var(&env, "AWS_ACCESS_KEY_ID").to_string();
    let addr = common::serve_https(&ca, |_parts: http::request::Parts, _body: bytes::Bytes| async {
        let url = SECRET.replace('/', "%2F").replace('+', "%2B");
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
        let json = serde_json::json!({ "id": KEY_ID, "secret": SECRET, "url": url, "b64": b64, "hmac": HMAC_SECRET });
        let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(json.to_string())));
        r.headers_mut().insert("x-reflected", http::HeaderValue::from_static(KEY_ID));
        r
    })
    .await;
    let url = format!("https://api.example.test:{}/reflect", addr.port());
    let out = aws_curl(&keyswap, &ca, "aws:amz:us-east-1:s3", &key, &[], &url).await;
    assert_eq!(out.status, 200, "{out:?}");
    let all = format!("{}{}", out.head, out.body);
    for leaked in [KEY_ID, SECRET, "realSecretKey", HMAC_SECRET] {
        assert!(!all.contains(leaked), "{leaked} reached the client: {all}");
    }
    assert!(out.body.contains(&key), "{}", out.body);
    assert!(
        out.body.contains(keyswap::vault::AWS_DUMMY_SECRET),
        "{}",
        out.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_aws_keys_in_one_session_the_first_by_id_is_printed_and_the_others_listed() {
    let ca = TestCa::new();
    let two = r#"
[[vaults]]
id = "vlt_two"
[[vaults.credentials]]
id = "vcrd_b_second"
auth = { type = "aws_sigv4", access_key_id = "AKIASECOND000000002", secret_access_key = "second/secret", networking = { type = "unrestricted" } }
[[vaults.credentials]]
id = "vcrd_a_first"
auth = { type = "aws_sigv4", access_key_id = "AKIAFIRST0000000001", secret_access_key = "first/secret", placeholder = "AKIAFIRSTPLACEHOLDR1", networking = { type = "unrestricted" } }
"#;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: two,
            ..Setup::default()
        },
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args([
            "env",
            "--format",
            "sh",
            "--proxy-url",
            &keyswap.proxy_url(),
            "--config",
        ])
        .arg(keyswap.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("export AWS_ACCESS_KEY_ID='AKIAFIRSTPLACEHOLDR1'\n"),
        "{text}"
    );
    let second = keyswap::vault::default_aws_placeholder("vcrd_b_second");
    assert!(
        text.contains(&format!(
            "# other aws_sigv4 access key ids: vcrd_b_second={second}"
        )),
        "{text}"
    );
    assert!(
        !text.contains("AKIASECOND000000002") && !text.contains("AKIAFIRST0000000001"),
        "{text}"
    );
}

/// 413, or the stream reset that may overtake it while the client still sends (curl: 92).
fn refused(out: &CurlOut) -> bool {
    out.status == 413 || (out.status == 0 && out.stderr.contains("(92)"))
}

/// Bodies held to be signed count against `[limits] max_buffered_body_bytes` like every other
/// held body (SPEC §8), whether or not the request announces its length, and for
/// `hmac_signature` as for `aws_sigv4`: else many streams each sending up to 64 MiB pin memory
/// without bound.
#[tokio::test(flavor = "multi_thread")]
async fn held_bodies_count_against_the_buffering_budget_for_hmac_and_unannounced_lengths() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let rest = format!("[limits]\nmax_buffered_body_bytes = 4096\n{VAULT}");
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            rest: &rest,
            ..Setup::default()
        },
    );
    let env = sandbox_env(&keyswap);
    let body = std::env::temp_dir().join(format!("ks-held-{}", std::process::id()));
    // Past the budget, within one HTTP/2 flow-control window (the client has sent it all when
    // the refusal comes).
    std::fs::write(&body, vec![b'a'; 16 << 10]).unwrap();
    let data = format!("@{}", body.display());
    let url = format!("https://api.example.test:{}/v1/order", upstream.port());
    // The body an aws_sigv4 request announces (Content-Length) is refused past the budget.
    let key = var(&env, "AWS_ACCESS_KEY_ID").to_string();
    let out = aws_curl(
        &keyswap,
        &ca,
        "aws:amz:us-east-1:execute-api",
        &key,
        &["--data-binary", &data],
        &url,
    )
    .await;
    assert!(refused(&out), "{out:?}");
    // The same body without Content-Length.
    let out = aws_curl(
        &keyswap,
        &ca,
        "aws:amz:us-east-1:execute-api",
        &key,
        &["--data-binary", &data, "-H", "Transfer-Encoding: chunked"],
        &url,
    )
    .await;
    assert!(refused(&out), "{out:?}");
    // hmac_signature with {body}.
    let header = format!("X-Signature: {}", var(&env, "EXCHANGE_API_SECRET"));
    let out = keyswap
        .curl(&ca, &["-H", &header, "--data-binary", &data, &url])
        .await;
    assert!(refused(&out), "{out:?}");
    let _ = std::fs::remove_file(&body);
    assert!(
        upstream.requests().is_empty(),
        "{}",
        upstream.requests().len()
    );
}
