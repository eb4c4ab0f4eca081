//! The vault admin API against the real binary: authentication, every route, update semantics,
//! persistence into the operator's file, and the proxy using what the API wrote.

use crate::common;

use common::{Keyswap, Setup, TestCa, Upstream, curl};
use serde_json::{Value, json};

const KEY: &str = "test-admin-key";

const VAULT: &str = r#"
# Vault kept by hand.
[[vaults]]
id = "vlt_hand"
display_name = "Hand"

[[vaults.credentials]]
id = "vcrd_hand"
auth.type = "environment_variable"    # dotted keys, as operators write them
auth.secret_name = "HAND"
auth.secret_value = "SECRET_hand_1"
auth.networking = { type = "limited", allowed_hosts = ["api.example.test"] }
"#;

struct World {
    ca: TestCa,
    upstream: Upstream,
    keyswap: Keyswap,
}

struct Reply {
    status: u16,
    body: Value,
}

impl World {
    async fn start() -> World {
        let ca = TestCa::new();
        let upstream = Upstream::https(&ca).await;
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                rest: VAULT,
                env: &[("KEYSWAP_ADMIN_KEY", KEY)],
                ..Setup::default()
            },
        );
        World {
            ca,
            upstream,
            keyswap,
        }
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: &[&str],
    ) -> Reply {
        let url = format!("http://{}{path}", self.keyswap.admin);
        let mut args = vec![
            "-X",
            method,
            "-H",
            "content-type: application/json",
            "-H",
            "anthropic-beta: managed-agents-2026-04-01",
        ];
        args.extend_from_slice(auth);
        if let Some(body) = body {
            args.extend_from_slice(&["--data-binary", body]);
        }
        args.push(&url);
        let out = curl(&args).await;
        let body = serde_json::from_str(&out.body).unwrap_or_else(|_| panic!("not JSON: {out:?}"));
        Reply {
            status: out.status,
            body,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        let key = format!("x-api-key: {KEY}");
        self.call_with(method, path, body.as_deref(), &["-H", &key])
            .await
    }

    fn file(&self) -> String {
        std::fs::read_to_string(self.keyswap.config_path()).unwrap()
    }

    /// What the upstream received for `placeholder` on `host`, through the proxy.
    async fn received(&self, host: &str, placeholder: &str) -> String {
        common::token_received(&self.keyswap, &self.ca, &self.upstream, host, placeholder).await
    }
}

fn assert_error(r: &Reply, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["type"], "error", "{}", r.body);
    assert_eq!(r.body["error"]["type"], kind, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_is_required_and_compared_exactly() {
    let w = World::start().await;
    assert_error(
        &w.call_with("GET", "/v1/vaults", None, &[]).await,
        401,
        "authentication_error",
    );
    assert_error(
        &w.call_with("GET", "/v1/vaults", None, &["-H", "x-api-key: wrong"])
            .await,
        401,
        "authentication_error",
    );
    let bearer = format!("Authorization: Bearer {KEY}");
    assert_eq!(
        w.call_with("GET", "/v1/vaults", None, &["-H", &bearer])
            .await
            .status,
        200
    );
    // healthz stays open.
    assert_eq!(
        curl(&[&format!("http://{}/healthz", w.keyswap.admin)])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_the_vault_api_answers_401() {
    let ca = TestCa::new();
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: VAULT,
            ..Setup::default()
        },
    );
    let out = curl(&[
        "-H",
        "x-api-key: anything",
        &format!("http://{}/v1/vaults", keyswap.admin),
    ])
    .await;
    assert_eq!(out.status, 401);
    // The answer says what to do: export the variable api_key_env names, before `run`.
    assert!(
        out.body.contains("export KEYSWAP_ADMIN_KEY=<key>"),
        "{}",
        out.body
    );
    assert!(out.body.contains("before `keyswap run`"), "{}", out.body);
    keyswap.wait_log("export KEYSWAP_ADMIN_KEY=<key> before `keyswap run`");
}

#[tokio::test(flavor = "multi_thread")]
async fn vaults_are_created_listed_paged_updated_archived_and_deleted() {
    let w = World::start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = w
            .call(
                "POST",
                "/v1/vaults?beta=true",
                Some(json!({"display_name": format!("V{i}"), "metadata": {"n": i.to_string()}})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        assert!(
            id.starts_with("vlt_")
                && id.len() == 28
                && id[4..].bytes().all(|b| b.is_ascii_alphanumeric()),
            "{id}"
        );
        assert_eq!(r.body["type"], "vault");
        assert_eq!(r.body["metadata"]["n"], i.to_string());
        assert!(r.body["archived_at"].is_null());
        assert!(r.body["created_at"].as_str().unwrap().ends_with('Z'));
        ids.push(id);
    }
    // Newest first, two per page.
    let first = w.call("GET", "/v1/vaults?limit=2", None).await;
    let names: Vec<_> = first.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["display_name"].clone())
        .collect();
    assert_eq!(names, [json!("V2"), json!("V1")]);
    let next = first.body["next_page"].as_str().unwrap();
    let second = w
        .call("GET", &format!("/v1/vaults?limit=2&page={next}"), None)
        .await;
    let names: Vec<_> = second.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["display_name"].clone())
        .collect();
    assert_eq!(names, [json!("V0"), json!("Hand")]);
    assert!(second.body["next_page"].is_null());

    let path = format!("/v1/vaults/{}", ids[0]);
    let r = w
        .call(
            "POST",
            &path,
            Some(json!({"display_name": "Renamed", "metadata": {"n": null, "team": "infra"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["display_name"], "Renamed");
    assert_eq!(r.body["metadata"], json!({"team": "infra"}));
    assert_eq!(
        w.call("GET", &path, None).await.body["display_name"],
        "Renamed"
    );

    let r = w.call("POST", &format!("{path}/archive"), None).await;
    assert!(r.body["archived_at"].is_string(), "{}", r.body);
    let listed = w.call("GET", "/v1/vaults", None).await.body["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 3, "archived vaults are left out by default");
    let listed = w
        .call("GET", "/v1/vaults?include_archived=true", None)
        .await
        .body["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 4);

    let r = w.call("DELETE", &path, None).await;
    assert_eq!(r.body, json!({"id": ids[0], "type": "vault_deleted"}));
    assert_error(&w.call("GET", &path, None).await, 404, "not_found_error");
    let file = w.file();
    assert!(
        file.starts_with("# Operator comment: kept across admin writes.\n"),
        "{file}"
    );
    assert!(
        file.contains("# Vault kept by hand.")
            && file.contains("# dotted keys, as operators write them"),
        "{file}"
    );
    assert!(!file.contains(&ids[0]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_created_and_rotated_through_the_api_is_used_by_the_proxy() {
    let w = World::start().await;
    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand/credentials",
            Some(json!({
                "display_name": "Made by API",
                "metadata": {"owner": "ci"},
                "auth": {
                    "type": "environment_variable",
                    "secret_name": "API_TOKEN",
                    "secret_value": "SECRET_api_1",
                    "networking": {"type": "limited", "allowed_hosts": ["api.example.test"]},
                }
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("vcrd_") && id.len() == 29, "{id}");
    assert_eq!(r.body["type"], "vault_credential");
    assert_eq!(r.body["vault_id"], "vlt_hand");
    assert_eq!(r.body["auth"]["secret_name"], "API_TOKEN");
    assert_eq!(
        r.body["auth"]["injection_location"],
        json!({"header": true, "body": false, "query": false})
    );
    assert_eq!(
        r.body["auth"]["networking"],
        json!({"type": "limited", "allowed_hosts": ["api.example.test"]})
    );
    assert!(!r.body.to_string().contains("SECRET"), "{}", r.body);
    let placeholder = format!("ks-ph-{id}");
    assert_eq!(
        w.received("api.example.test", &placeholder).await,
        "SECRET_api_1"
    );

    // Rotate the secret; the placeholder stays the same.
    let path = format!("/v1/vaults/vlt_hand/credentials/{id}");
    let r = w
        .call(
            "POST",
            &path,
            Some(json!({"auth": {"type": "environment_variable", "secret_value": "SECRET_api_2"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.to_string().contains("SECRET"));
    assert_eq!(
        w.received("api.example.test", &placeholder).await,
        "SECRET_api_2"
    );

    // Networking replaced whole; injection_location merged.
    let r = w
        .call(
            "POST",
            &path,
            Some(json!({"auth": {"type": "environment_variable", "networking": {"type": "limited", "allowed_hosts": ["other.example.test"]}, "injection_location": {"body": true}}})),
        )
        .await;
    assert_eq!(
        r.body["auth"]["networking"]["allowed_hosts"],
        json!(["other.example.test"])
    );
    assert_eq!(
        r.body["auth"]["injection_location"],
        json!({"header": true, "body": true, "query": false})
    );
    assert_eq!(
        w.received("api.example.test", &placeholder).await,
        placeholder
    );
    assert_eq!(
        w.received("other.example.test", &placeholder).await,
        "SECRET_api_2"
    );

    // The hand-written credential can be rotated too, keeping its dotted layout and comment.
    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand/credentials/vcrd_hand",
            Some(
                json!({"auth": {"type": "environment_variable", "secret_value": "SECRET_hand_2"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        w.received("api.example.test", "ks-ph-vcrd_hand").await,
        "SECRET_hand_2"
    );
    let file = w.file();
    assert!(
        file.contains("auth.secret_value = \"SECRET_hand_2\""),
        "{file}"
    );
    assert!(
        file.contains("# dotted keys, as operators write them"),
        "{file}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(w.keyswap.config_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Archive: listed only with include_archived, never substituted.
    let r = w.call("POST", &format!("{path}/archive"), None).await;
    assert!(r.body["archived_at"].is_string());
    assert_eq!(
        w.received("other.example.test", &placeholder).await,
        placeholder
    );
    let list = w.call("GET", "/v1/vaults/vlt_hand/credentials", None).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    let list = w
        .call(
            "GET",
            "/v1/vaults/vlt_hand/credentials?include_archived=true",
            None,
        )
        .await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);

    let r = w.call("DELETE", &path, None).await;
    assert_eq!(
        r.body,
        json!({"id": id, "type": "vault_credential_deleted"})
    );
    assert_error(&w.call("GET", &path, None).await, 404, "not_found_error");
    assert!(!w.keyswap.log().contains("SECRET_"), "{}", w.keyswap.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_credentials_are_stored_and_their_secrets_never_returned() {
    let w = World::start().await;
    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand/credentials",
            Some(json!({"auth": {"type": "static_bearer", "mcp_server_url": "https://mcp.example.test/mcp", "token": "SECRET_bearer"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["auth"],
        json!({"type": "static_bearer", "mcp_server_url": "https://mcp.example.test/mcp"})
    );
    assert!(r.body["display_name"].is_null());
    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand/credentials",
            Some(json!({"auth": {
                "type": "mcp_oauth", "mcp_server_url": "https://mcp.example.test/", "access_token": "SECRET_access",
                "expires_at": "2030-01-01T00:00:00Z",
                "refresh": {"client_id": "cid", "refresh_token": "SECRET_refresh", "token_endpoint": "https://auth.example.test/token",
                            "token_endpoint_auth": {"type": "client_secret_post", "client_secret": "SECRET_client"}, "scope": "read"}
            }})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.to_string().contains("SECRET"), "{}", r.body);
    assert_eq!(
        r.body["auth"]["refresh"]["token_endpoint_auth"],
        json!({"type": "client_secret_post"})
    );
    let id = r.body["id"].as_str().unwrap();
    let path = format!("/v1/vaults/vlt_hand/credentials/{id}");
    let r = w
        .call("POST", &path, Some(json!({"auth": {"type": "mcp_oauth", "access_token": "SECRET_access_2", "expires_at": null, "refresh": {"scope": null}}})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["auth"]["expires_at"].is_null());
    assert!(r.body["auth"]["refresh"]["scope"].is_null());
    let file = w.file();
    assert!(
        file.contains("SECRET_access_2") && file.contains("SECRET_client"),
        "stored in the file"
    );
    assert_error(
        &w.call(
            "POST",
            &path,
            Some(
                json!({"auth": {"type": "mcp_oauth", "mcp_server_url": "https://elsewhere.test/"}}),
            ),
        )
        .await,
        400,
        "invalid_request_error",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_the_documented_error_and_change_nothing() {
    let w = World::start().await;
    let cred = "/v1/vaults/vlt_hand/credentials/vcrd_hand";
    let env = |extra: Value| {
        let mut auth = json!({"type": "environment_variable"});
        auth.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "auth": auth })
    };
    let hosts17: Vec<String> = (0..17).map(|i| format!("h{i}.example.test")).collect();
    let meta17: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("GET", "/v1/vaults/vlt_nope".into(), None, 404, "not_found_error"),
        ("GET", "/v1/vaults/vlt_hand/credentials/vcrd_nope".into(), None, 404, "not_found_error"),
        ("POST", "/v1/vaults/vlt_nope/credentials".into(), Some(json!({"auth": {"type": "static_bearer", "token": "t", "mcp_server_url": "https://x.test/"}}).to_string()), 404, "not_found_error"),
        ("POST", cred.into(), Some(json!({"auth": {"type": "static_bearer", "token": "t"}}).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(env(json!({"secret_name": "OTHER"})).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(env(json!({"networking": {"type": "limited", "allowed_hosts": hosts17}})).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(env(json!({"networking": {"type": "limited", "allowed_hosts": ["api.example.test:443"]}})).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(env(json!({"networking": {"type": "limited", "allowed_hosts": ["2001:db8::1"]}})).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(json!({"metadata": meta17}).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(json!({"metadata": {"k".repeat(65): "v"}}).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(json!({"display_name": ""}).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some(json!({"display_name": "x".repeat(256)}).to_string()), 400, "invalid_request_error"),
        ("POST", "/v1/vaults".into(), Some(json!({"display_name": ""}).to_string()), 400, "invalid_request_error"),
        ("POST", cred.into(), Some("{not json".into()), 400, "invalid_request_error"),
        ("POST", "/v1/vaults".into(), Some(json!({"display_name": "a", "unknown": 1}).to_string()), 400, "invalid_request_error"),
        ("GET", "/v1/vaults?limit=101".into(), None, 400, "invalid_request_error"),
    ];
    let file = w.file();
    let generation = |w: &World| {
        let w = w.keyswap.admin;
        async move {
            let out = curl(&[&format!("http://{w}/healthz")]).await;
            serde_json::from_str::<Value>(&out.body).unwrap()["store_generation"].clone()
        }
    };
    let before = generation(&w).await;
    for (method, path, body, status, kind) in &cases {
        let key = format!("x-api-key: {KEY}");
        let r = w
            .call_with(method, path, body.as_deref(), &["-H", &key])
            .await;
        assert_error(&r, *status, kind);
        assert!(!r.body.to_string().contains("SECRET"), "{}", r.body);
    }
    let wrong = w
        .call_with("POST", cred, Some("{}"), &["-H", "x-api-key: nope"])
        .await;
    assert_error(&wrong, 401, "authentication_error");
    assert_eq!(w.file(), file, "the file is unchanged");
    assert_eq!(generation(&w).await, before, "the store is unchanged");
    assert_eq!(
        w.received("api.example.test", "ks-ph-vcrd_hand").await,
        "SECRET_hand_1"
    );
}

/// SPEC §8: the admin API's 400/409 messages never repeat a secret: not one sent as a JSON
/// number, not one the operator's broken file holds.
#[tokio::test(flavor = "multi_thread")]
async fn admin_errors_never_repeat_a_secret_from_the_request_or_the_file() {
    let w = World::start().await;
    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand/credentials",
            Some(json!({
                "display_name": "n",
                "auth": {
                    "type": "environment_variable",
                    "secret_name": "N",
                    "secret_value": 31415926,
                    "networking": {"type": "unrestricted"}
                }
            })),
        )
        .await;
    assert_error(&r, 400, "invalid_request_error");
    assert!(!r.body.to_string().contains("31415926"), "{}", r.body);
    // A file broken by hand: the write is refused (409) and the message shows the file's errors.
    let text = w.file().replace(
        "auth.secret_value = \"SECRET_hand_1\"",
        "auth.secret_value = 27182818",
    );
    std::fs::write(w.keyswap.config_path(), &text).unwrap();
    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand",
            Some(json!({"display_name": "Renamed"})),
        )
        .await;
    assert_error(&r, 409, "conflict_error");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("secret_value"), "{message}");
    assert!(!message.contains("27182818"), "{message}");
    let log = w.keyswap.log();
    assert!(
        !log.contains("27182818") && !log.contains("31415926"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_credentials_are_created_read_and_updated_without_their_secrets() {
    let w = World::start().await;
    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand/credentials",
            Some(json!({"auth": {
                "type": "aws_sigv4", "access_key_id": "AKIASECRETKEYID00001", "secret_access_key": "SECRET_aws_key",
                "session_token": "SECRET_session", "regions": ["us-east-1"], "services": ["s3"],
                "networking": {"type": "limited", "allowed_hosts": ["*.amazonaws.com"]}
            }})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.to_string().contains("SECRET"), "{}", r.body);
    assert_eq!(r.body["auth"]["type"], "aws_sigv4");
    assert_eq!(r.body["auth"]["regions"], json!(["us-east-1"]));
    let placeholder = r.body["auth"]["placeholder"].as_str().unwrap().to_string();
    assert!(
        placeholder.starts_with("AKIA") && placeholder.len() == 20,
        "{placeholder}"
    );
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/vaults/vlt_hand/credentials/{id}");
    let r = w
        .call("POST", &path, Some(json!({"auth": {"type": "aws_sigv4", "secret_access_key": "SECRET_aws_key_2", "session_token": null, "services": ["s3", "sts"]}})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["auth"]["services"], json!(["s3", "sts"]));
    assert_eq!(
        r.body["auth"]["placeholder"],
        placeholder.as_str(),
        "the placeholder stays"
    );
    let file = w.file();
    assert!(
        file.contains("SECRET_aws_key_2") && !file.contains("SECRET_session"),
        "{file}"
    );
    let r = w.call("GET", &path, None).await;
    assert!(!r.body.to_string().contains("SECRET"), "{}", r.body);

    let r = w
        .call(
            "POST",
            "/v1/vaults/vlt_hand/credentials",
            Some(json!({"auth": {
                "type": "hmac_signature", "secret_name": "EXCHANGE_SECRET", "secret_value": "SECRET_hmac",
                "algorithm": "sha512", "encoding": "base64", "signature_header": "X-Sig",
                "networking": {"type": "unrestricted"}
            }})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.to_string().contains("SECRET_hmac"), "{}", r.body);
    assert_eq!(r.body["auth"]["algorithm"], "sha512");
    assert_eq!(r.body["auth"]["message"], "{timestamp}{method}{path}{body}");
    let hmac = format!(
        "/v1/vaults/vlt_hand/credentials/{}",
        r.body["id"].as_str().unwrap()
    );
    assert_error(
        &w.call(
            "POST",
            &hmac,
            Some(json!({"auth": {"type": "hmac_signature", "secret_name": "OTHER"}})),
        )
        .await,
        400,
        "invalid_request_error",
    );
    // Bad values are refused with what to change, and nothing is written.
    let before = w.file();
    for bad in [
        json!({"auth": {"type": "aws_sigv4", "access_key_id": "A", "secret_access_key": "S", "regions": ["US EAST"], "networking": {"type": "unrestricted"}}}),
        json!({"auth": {"type": "aws_sigv4", "access_key_id": "A", "secret_access_key": "S", "placeholder": "lowercase-placeholder", "networking": {"type": "unrestricted"}}}),
        json!({"auth": {"type": "hmac_signature", "secret_name": "X", "secret_value": "S", "algorithm": "md5", "signature_header": "X-Sig", "networking": {"type": "unrestricted"}}}),
        json!({"auth": {"type": "hmac_signature", "secret_name": "X", "secret_value": "S", "message": "{nonce}", "signature_header": "X-Sig", "networking": {"type": "unrestricted"}}}),
    ] {
        let r = w
            .call("POST", "/v1/vaults/vlt_hand/credentials", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    assert_eq!(w.file(), before);
}
