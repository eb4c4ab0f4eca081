//! `mcp_oauth` refresh end to end: a local MCP server and OAuth token endpoint (one HTTPS server on
//! 127.0.0.1), the real binary in between. Refresh before expiry, after a 401 (with the request
//! replayed), once for concurrent requests, persisted to the file, failures answered 502 with the
//! stored tokens unchanged, the three client authentications, and `mcp_oauth_validate`.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use common::{Keyswap, Setup, TestCa, curl};
use http_body_util::Full;
use hyper::Response;
use serde_json::{Value, json};

const KEY: &str = "test-admin-key";
const PAST: &str = "2020-01-01T00:00:00Z";
const FUTURE: &str = "2099-01-01T00:00:00Z";

/// What the scripted servers saw.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    authorization: Option<String>,
    body: String,
}

/// The MCP server accepts exactly the last token the token endpoint issued (initially `valid`).
#[derive(Default)]
struct AuthServer {
    valid: Mutex<String>,
    issued: AtomicUsize,
    fail: AtomicBool,
    /// The MCP server refuses every token.
    refuse: AtomicBool,
    delay_ms: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

impl AuthServer {
    fn calls(&self, prefix: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    async fn answer(&self, parts: http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
        let call = Call {
            path: parts.uri.path().to_string(),
            authorization: parts
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string()),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        self.calls.lock().unwrap().push(call.clone());
        if call.path.starts_with("/token") {
            let delay = self.delay_ms.load(Ordering::SeqCst) as u64;
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            if self.fail.load(Ordering::SeqCst) {
                // Echoes the refresh token, as some servers do in error details.
                let sent = call
                    .body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("refresh_token="));
                return reply(
                    400,
                    json!({"error": "invalid_grant", "hint": format!("{} was revoked", sent.unwrap_or(""))}),
                );
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            *self.valid.lock().unwrap() = format!("SECRET_access_{n}");
            return reply(
                200,
                json!({
                    "access_token": format!("SECRET_access_{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "refresh_token": format!("SECRET_refresh_{n}"),
                }),
            );
        }
        let expected = format!("Bearer {}", self.valid.lock().unwrap());
        if call.authorization.as_deref() == Some(expected.as_str())
            && !self.refuse.load(Ordering::SeqCst)
        {
            reply(200, json!({"ok": true, "received": call.body}))
        } else {
            reply(401, json!({"error": "invalid_token"}))
        }
    }
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

struct World {
    _ca: TestCa,
    server: Arc<AuthServer>,
    port: u16,
    keyswap: Keyswap,
    /// keyswap's CA for curl, written once (concurrent writers would race).
    bundle: std::path::PathBuf,
}

/// One `mcp_oauth` credential per (id, path, client authentication) entry.
struct Cred<'a> {
    id: &'a str,
    path: &'a str,
    expires_at: &'a str,
    token_auth: &'a str,
    refresh: bool,
}

impl World {
    async fn start(valid: &str, creds: &[Cred<'_>]) -> World {
        let ca = TestCa::new();
        let server = Arc::new(AuthServer::default());
        *server.valid.lock().unwrap() = valid.to_string();
        let handler = {
            let server = server.clone();
            move |parts, body| {
                let server = server.clone();
                async move { server.answer(parts, body).await }
            }
        };
        let port = common::serve_https(&ca, handler).await.port();
        let mut rest = String::from("[[vaults]]\nid = \"vlt_o\"\n");
        for c in creds {
            let refresh = if c.refresh {
                format!(
                    "refresh = {{ client_id = \"app {id}\", refresh_token = \"SECRET_refresh_0\", token_endpoint = \"https://other.example.test:{port}/token/{id}\", scope = \"mcp read\", resource = \"https://api.example.test:{port}{path}\"{auth} }}\n",
                    id = c.id,
                    path = c.path,
                    auth = c.token_auth
                )
            } else {
                String::new()
            };
            rest.push_str(&format!(
                "\n[[vaults.credentials]]\nid = \"{id}\"\n[vaults.credentials.auth]\ntype = \"mcp_oauth\"\nmcp_server_url = \"https://api.example.test:{port}{path}\"\naccess_token = \"SECRET_access_0\"\nexpires_at = \"{exp}\"\n{refresh}",
                id = c.id,
                path = c.path,
                exp = c.expires_at,
            ));
        }
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                rest: &rest,
                env: &[("KEYSWAP_ADMIN_KEY", KEY)],
                ..Setup::default()
            },
        );
        let bundle = keyswap.client_bundle(&ca);
        World {
            _ca: ca,
            server,
            port,
            keyswap,
            bundle,
        }
    }

    /// A JSON-RPC POST to `path` on the MCP host through keyswap, with no Authorization.
    async fn call(&self, path: &str, body: &str) -> common::CurlOut {
        let url = format!("https://api.example.test:{}{path}", self.port);
        curl(&[
            "--proxy",
            &self.keyswap.proxy_url(),
            "--cacert",
            self.bundle.to_str().unwrap(),
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
            &url,
        ])
        .await
    }

    fn file(&self) -> String {
        std::fs::read_to_string(self.keyswap.config_path()).unwrap()
    }

    fn assert_no_secret_leaked(&self, answers: &[&str]) {
        let log = self.keyswap.log();
        assert!(!log.contains("SECRET_"), "a token reached the log:\n{log}");
        for a in answers {
            assert!(!a.contains("SECRET_"), "a token reached a client: {a}");
        }
    }

    async fn validate(&self, id: &str) -> (u16, Value) {
        let url = format!(
            "http://{}/v1/vaults/vlt_o/credentials/{id}/mcp_oauth_validate",
            self.keyswap.admin
        );
        let out = curl(&["-X", "POST", "-H", &format!("x-api-key: {KEY}"), &url]).await;
        (out.status, serde_json::from_str(&out.body).unwrap())
    }
}

fn one(id: &'static str, expires_at: &'static str) -> [Cred<'static>; 1] {
    [Cred {
        id,
        path: "/mcp",
        expires_at,
        token_auth: "",
        refresh: true,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_refreshed_before_use_and_persisted() {
    let w = World::start("SECRET_access_0", &one("vcrd_a", PAST)).await;
    let out = w
        .call("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    let token_calls = w.server.calls("/token");
    assert_eq!(token_calls.len(), 1, "{token_calls:?}");
    assert_eq!(
        token_calls[0].body,
        "grant_type=refresh_token&refresh_token=SECRET_refresh_0&client_id=app+vcrd_a&scope=mcp+read&resource=https%3A%2F%2Fapi.example.test%3A".to_string()
            + &w.port.to_string()
            + "%2Fmcp"
    );
    // The MCP server never saw the expired token.
    let mcp = w.server.calls("/mcp");
    assert_eq!(mcp.len(), 1);
    assert_eq!(
        mcp[0].authorization.as_deref(),
        Some("Bearer SECRET_access_1")
    );
    // Persisted: the new access token, its expiry, the rotated refresh token; the comment kept.
    let file = w.file();
    assert!(
        file.contains(r#"access_token = "SECRET_access_1""#),
        "{file}"
    );
    assert!(
        file.contains(r#"refresh_token = "SECRET_refresh_1""#),
        "{file}"
    );
    assert!(
        !file.contains("SECRET_access_0") && !file.contains(PAST),
        "{file}"
    );
    assert!(file.contains("# Operator comment"), "{file}");
    // A second request uses the stored token without a refresh.
    assert_eq!(w.call("/mcp", "{}").await.status, 200);
    assert_eq!(w.server.calls("/token").len(), 1);
    let metrics = curl(&[&format!("http://{}/metrics", w.keyswap.admin)])
        .await
        .body;
    assert!(
        metrics.contains(r#"keyswap_oauth_refreshes_total{outcome="succeeded"} 1"#),
        "{metrics}"
    );
    w.assert_no_secret_leaked(&[&out.body, &metrics]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_once_and_replays_the_request() {
    // The server has revoked the stored token although it has not expired.
    let w = World::start("revoked", &one("vcrd_a", FUTURE)).await;
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#;
    let out = w.call("/mcp", body).await;
    assert_eq!(out.status, 200, "{out:?}");
    let mcp = w.server.calls("/mcp");
    assert_eq!(mcp.len(), 2, "{mcp:?}");
    assert_eq!(
        mcp[0].authorization.as_deref(),
        Some("Bearer SECRET_access_0")
    );
    assert_eq!(
        mcp[1].authorization.as_deref(),
        Some("Bearer SECRET_access_1")
    );
    assert_eq!(mcp[0].body, body);
    assert_eq!(mcp[1].body, body, "the replay carries the same body");
    assert_eq!(w.server.calls("/token").len(), 1);
    // Refused again right after a refresh: the 401 goes back as it is, no refresh loop.
    w.server.refuse.store(true, Ordering::SeqCst);
    let out = w.call("/mcp", body).await;
    assert_eq!(out.status, 401);
    assert_eq!(w.server.calls("/token").len(), 1);
    assert_eq!(w.server.calls("/mcp").len(), 3);
    w.assert_no_secret_leaked(&[&out.body]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_wrapped_in_something_else_never_triggers_a_refresh() {
    let w = World::start("SECRET_access_0", &one("vcrd_a", FUTURE)).await;
    let url = format!("https://api.example.test:{}/mcp", w.port);
    for _ in 0..3 {
        let out = curl(&[
            "--proxy",
            &w.keyswap.proxy_url(),
            "--cacert",
            w.bundle.to_str().unwrap(),
            "-H",
            "Authorization: Bearer x-ks-ph-vcrd_a",
            &url,
        ])
        .await;
        assert_eq!(out.status, 401, "{out:?}");
    }
    assert!(
        w.server.calls("/token").is_empty(),
        "the sandbox made keyswap refresh"
    );
    let file = w.file();
    assert!(file.contains("SECRET_access_0"), "{file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_share_one_refresh() {
    let w = Arc::new(World::start("SECRET_access_0", &one("vcrd_a", PAST)).await);
    w.server.delay_ms.store(300, Ordering::SeqCst);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let w = w.clone();
        set.spawn(async move { w.call("/mcp", &format!("{{\"id\":{i}}}")).await });
    }
    let answers = set.join_all().await;
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(w.server.calls("/token").len(), 1, "one refresh for all");
    let mcp = w.server.calls("/mcp");
    assert_eq!(mcp.len(), 20);
    assert!(
        mcp.iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer SECRET_access_1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_answers_502_and_keeps_the_stored_tokens() {
    let w = World::start("SECRET_access_0", &one("vcrd_a", PAST)).await;
    w.server.fail.store(true, Ordering::SeqCst);
    let before = w.file();
    let out = w.call("/mcp", "{}").await;
    assert_eq!(out.status, 502, "{out:?}");
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("credential-refresh")
    );
    assert!(
        out.body.contains("vcrd_a") && out.body.contains("400"),
        "{}",
        out.body
    );
    assert!(
        w.server.calls("/mcp").is_empty(),
        "nothing sent with the expired token"
    );
    assert_eq!(w.file(), before, "stored tokens unchanged");
    w.keyswap.wait_log("OAuth refresh failed");
    w.assert_no_secret_leaked(&[&out.body]);
    // Fixed at the endpoint: once the failure's short reuse window is over, the next request
    // refreshes and succeeds.
    w.server.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(keyswap::oauth::FAILURE_REUSE).await;
    assert_eq!(w.call("/mcp", "{}").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_authentication_reaches_the_token_endpoint_as_configured() {
    let creds = [
        Cred {
            id: "vcrd_none",
            path: "/none",
            expires_at: PAST,
            token_auth: "",
            refresh: true,
        },
        Cred {
            id: "vcrd_basic",
            path: "/basic",
            expires_at: PAST,
            token_auth: r#", token_endpoint_auth = { type = "client_secret_basic", client_secret = "SECRET_client:1" }"#,
            refresh: true,
        },
        Cred {
            id: "vcrd_post",
            path: "/post",
            expires_at: PAST,
            token_auth: r#", token_endpoint_auth = { type = "client_secret_post", client_secret = "SECRET_client&2" }"#,
            refresh: true,
        },
    ];
    let w = World::start("x", &creds).await;
    for path in ["/none", "/basic", "/post"] {
        assert_eq!(w.call(path, "{}").await.status, 200, "{path}");
    }
    let call = |id: &str| w.server.calls(&format!("/token/{id}")).remove(0);
    let none = call("vcrd_none");
    assert_eq!(none.authorization, None);
    assert!(none.body.contains("client_id=app+vcrd_none") && !none.body.contains("client_secret"));
    let basic = call("vcrd_basic");
    let expected =
        base64::engine::general_purpose::STANDARD.encode("app+vcrd_basic:SECRET_client%3A1");
    assert_eq!(basic.authorization, Some(format!("Basic {expected}")));
    assert!(!basic.body.contains("client_secret"), "{}", basic.body);
    let post = call("vcrd_post");
    assert_eq!(post.authorization, None);
    assert!(
        post.body.ends_with("&client_secret=SECRET_client%262"),
        "{}",
        post.body
    );
    w.assert_no_secret_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_probes_refreshes_and_reports_without_tokens() {
    let creds = [
        Cred {
            id: "vcrd_ok",
            path: "/mcp",
            expires_at: FUTURE,
            token_auth: "",
            refresh: true,
        },
        Cred {
            id: "vcrd_bare",
            path: "/bare",
            expires_at: FUTURE,
            token_auth: "",
            refresh: false,
        },
    ];
    let w = World::start("SECRET_access_0", &creds).await;
    let (status, v) = w.validate("vcrd_ok").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "vault_credential_validation");
    assert_eq!(
        (v["vault_id"].as_str(), v["credential_id"].as_str()),
        (Some("vlt_o"), Some("vcrd_ok"))
    );
    assert_eq!(v["status"], "valid");
    assert_eq!(v["has_refresh_token"], true);
    assert!(v["mcp_probe"].is_null() && v["refresh"].is_null(), "{v}");
    assert!(v["validated_at"].as_str().unwrap().ends_with('Z'));
    let probe = &w.server.calls("/mcp")[0];
    assert!(
        probe.body.contains(r#""method":"initialize""#),
        "{}",
        probe.body
    );

    // Revoked at the server: validation refreshes and probes again.
    *w.server.valid.lock().unwrap() = "revoked".into();
    let (_, v) = w.validate("vcrd_ok").await;
    assert_eq!(v["status"], "valid", "{v}");
    assert_eq!(v["refresh"]["status"], "succeeded");
    assert_eq!(v["refresh"]["http_response"]["status_code"], 200);
    let shown = v.to_string();
    assert!(!shown.contains("SECRET_"), "a token in the report: {shown}");
    assert!(w.file().contains("SECRET_access_1"));

    // No refresh settings: the refusal is reported with the failing step.
    let (_, v) = w.validate("vcrd_bare").await;
    assert_eq!(v["status"], "invalid", "{v}");
    assert_eq!(v["has_refresh_token"], false);
    assert_eq!(v["refresh"]["status"], "no_refresh_token");
    assert_eq!(v["mcp_probe"]["method"], "initialize");
    assert_eq!(v["mcp_probe"]["http_response"]["status_code"], 401);
    assert_eq!(
        v["mcp_probe"]["http_response"]["content_type"],
        "application/json"
    );
    assert_eq!(v["mcp_probe"]["http_response"]["body_truncated"], false);

    // The refresh fails: reported with the endpoint's (scrubbed) answer.
    *w.server.valid.lock().unwrap() = "revoked".into();
    w.server.fail.store(true, Ordering::SeqCst);
    let (_, v) = w.validate("vcrd_ok").await;
    assert_eq!(v["status"], "invalid", "{v}");
    assert_eq!(v["refresh"]["status"], "failed");
    assert_eq!(v["refresh"]["http_response"]["status_code"], 400);
    let body = v["refresh"]["http_response"]["body"].as_str().unwrap();
    assert!(
        body.contains("invalid_grant") && body.contains("[redacted]"),
        "{body}"
    );
    assert!(!v.to_string().contains("SECRET_"), "{v}");

    let (status, v) = w.validate("vcrd_missing").await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
    w.assert_no_secret_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_an_operator_stores_during_a_refresh_are_kept() {
    let w = Arc::new(World::start("SECRET_access_0", &one("vcrd_a", PAST)).await);
    w.server.delay_ms.store(800, Ordering::SeqCst);
    let request = {
        let w = w.clone();
        tokio::spawn(async move { w.call("/mcp", "{}").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let url = format!(
        "http://{}/v1/vaults/vlt_o/credentials/vcrd_a",
        w.keyswap.admin
    );
    let update = r#"{"auth":{"type":"mcp_oauth","access_token":"SECRET_operator","expires_at":"2099-01-01T00:00:00Z"}}"#;
    let out = curl(&[
        "-H",
        &format!("x-api-key: {KEY}"),
        "--data-binary",
        update,
        &url,
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    let _ = request.await.unwrap();
    let file = w.file();
    assert!(
        file.contains(r#"access_token = "SECRET_operator""#),
        "{file}"
    );
    assert!(
        !file.contains("SECRET_access_1"),
        "the refresh overwrote the operator's token: {file}"
    );
}
