//! Several keyswap replicas on one real PostgreSQL (SPEC §10): a change made through one replica
//! (or imported by the operator) is in force on the others within a second, concurrent admin
//! writes on different replicas all land, no table or dump holds a secret in any encoding, the
//! replicas keep proxying while the database is down (admin writes `503`, `/healthz` degraded) and
//! recover by themselves, and replicas that start at once migrate the schema once.
//!
//! `.ci/run` installs Debian's `postgresql`; each test makes its own cluster (tests/common/postgres.rs).

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::postgres::Postgres;
use common::{Keyswap, Setup, TestCa, Upstream, curl, token_received};
use serde_json::{Value, json};

/// base64 of the bytes 0..32: the store key of every test replica.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ADMIN: &str = "admin-key-replicas";
const STORE: &str = "[store]\nbackend = \"postgres\"\npoll_interval_secs = 1\n";

const VAULTS: &str = r#"
[[vaults]]
id = "vlt_pg"
display_name = "Shared"

[[vaults.credentials]]
id = "vcrd_pg"
auth = { type = "environment_variable", secret_name = "PG", secret_value = "SECRET_pg_4242", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

fn replica(ca: &TestCa, pg: &Postgres) -> Keyswap {
    let url = pg.url();
    Keyswap::start(
        ca,
        Setup {
            proxy: "block_private_addresses = false",
            rest: STORE,
            env: &[
                ("KEYSWAP_DATABASE_URL", &url),
                ("KEYSWAP_STORE_KEY", KEY),
                ("KEYSWAP_ADMIN_KEY", ADMIN),
            ],
            ..Setup::default()
        },
    )
}

/// `keyswap store …` with the replica's config and the database's variables.
fn store_command(keyswap: &Keyswap, pg: &Postgres, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .arg("store")
        .args(args)
        .arg("--config")
        .arg(keyswap.config_path())
        .env("KEYSWAP_DATABASE_URL", pg.url())
        .env("KEYSWAP_STORE_KEY", KEY)
        .output()
        .unwrap()
}

async fn admin(keyswap: &Keyswap, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("http://{}{path}", keyswap.admin);
    let key = format!("x-api-key: {ADMIN}");
    let mut args = vec![
        "-X",
        method,
        "-H",
        &key,
        "-H",
        "content-type: application/json",
    ];
    let body = body.map(|b| b.to_string());
    if let Some(body) = &body {
        args.extend_from_slice(&["--data-binary", body]);
    }
    args.push(&url);
    let out = curl(&args).await;
    (
        out.status,
        serde_json::from_str(&out.body).unwrap_or(Value::Null),
    )
}

async fn healthz(keyswap: &Keyswap) -> Value {
    admin(keyswap, "GET", "/healthz", None).await.1
}

/// Polls `check` every 50 ms for up to `limit`; how long it took.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Every spelling of `secret` a dump could hold it in.
fn spellings(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![secret.to_string(), hex, secret.to_ascii_lowercase()];
    // Base64 at each of the three alignments a secret can sit at inside a longer value.
    for pad in ["", "x", "xx"] {
        let encoded = b64.encode(format!("{pad}{secret}"));
        out.push(encoded[4..encoded.len() - 4].to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_through_one_replica_is_in_force_on_the_other_and_no_secret_is_stored_in_clear() {
    let Some(pg) = Postgres::start() else { return };
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let a = replica(&ca, &pg);
    let b = replica(&ca, &pg);

    // The operator imports a file-backed config's vaults; both replicas follow.
    let from = common::write(a.dir.path(), "vaults.toml", VAULTS);
    let out = store_command(&a, &pg, &["import", "--from", from.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "imported 1 vault(s) from ".to_string() + from.to_str().unwrap() + "\n"
    );
    let took = within(Duration::from_secs(3), || async {
        token_received(&b, &ca, &upstream, "api.example.test", "ks-ph-vcrd_pg").await
            == "SECRET_pg_4242"
    })
    .await;
    assert!(
        took.is_some(),
        "replica b never substituted the imported credential"
    );
    eprintln!("import → in force on replica b: {took:?}");
    // `keyswap env` prints the stored credentials' placeholders (never a secret).
    let env = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args([
            "env",
            "--format",
            "json",
            "--proxy-url",
            "http://keyswap:8080",
            "--config",
        ])
        .arg(a.config_path())
        .env("KEYSWAP_DATABASE_URL", pg.url())
        .env("KEYSWAP_STORE_KEY", KEY)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&env.stdout);
    assert!(
        env.status.success(),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    assert!(printed.contains("\"PG\":\"ks-ph-vcrd_pg\""), "{printed}");
    assert!(!printed.contains("SECRET_"), "{printed}");
    // Importing again changes nothing (ids kept).
    let again = store_command(&a, &pg, &["import", "--from", from.to_str().unwrap()]);
    assert!(again.status.success());
    assert_eq!(pg.psql("SELECT count(*) FROM keyswap_credentials"), "1\n");

    // An admin write on replica a is in force on replica b within a second.
    let (status, created) = admin(
        &a,
        "POST",
        "/v1/vaults/vlt_pg/credentials",
        Some(json!({
            "display_name": "Second",
            "auth": {"type": "environment_variable", "secret_name": "TWO", "secret_value": "SECRET_two_7777",
                     "networking": {"type": "limited", "allowed_hosts": ["api.example.test"]}}
        })),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let placeholder = created["auth"]["placeholder"].as_str().unwrap().to_string();
    let took = within(Duration::from_secs(2), || async {
        token_received(&b, &ca, &upstream, "api.example.test", &placeholder).await
            == "SECRET_two_7777"
    })
    .await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "{took:?}");
    eprintln!("admin write on a → in force on b: {took:?}");
    // The admin API answers the same on both replicas.
    let path = format!(
        "/v1/vaults/vlt_pg/credentials/{}",
        created["id"].as_str().unwrap()
    );
    assert_eq!(
        admin(&b, "GET", &path, None).await.1,
        admin(&a, "GET", &path, None).await.1
    );

    // No table, and no dump, holds a secret in any encoding.
    let dump = pg.dump();
    for secret in ["SECRET_pg_4242", "SECRET_two_7777"] {
        for spelling in spellings(secret) {
            assert!(
                !dump.contains(&spelling),
                "{spelling} of {secret} in the dump"
            );
        }
    }
    assert!(dump.contains("ks-ph-vcrd_pg") || dump.contains("vcrd_pg"));
    let exported = store_command(&a, &pg, &["export"]);
    let exported = String::from_utf8_lossy(&exported.stdout);
    assert!(exported.contains("id = \"vcrd_pg\""), "{exported}");
    assert!(!exported.contains("SECRET_"), "{exported}");
    let health = healthz(&b).await;
    assert_eq!(health["store"], "ok", "{health}");
    assert!(health["store_sync_age_seconds"].is_number(), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_patches_sent_to_three_replicas_at_once_all_land() {
    let Some(pg) = Postgres::start() else { return };
    let ca = TestCa::new();
    let replicas: Vec<Keyswap> = (0..3).map(|_| replica(&ca, &pg)).collect();
    let (status, vault) = admin(
        &replicas[0],
        "POST",
        "/v1/vaults",
        Some(json!({"display_name": "V"})),
    )
    .await;
    assert_eq!(status, 200, "{vault}");
    let path = format!("/v1/vaults/{}", vault["id"].as_str().unwrap());
    for round in 0..3 {
        let patches = replicas.iter().enumerate().map(|(i, r)| {
            let body = json!({"metadata": {format!("k{round}_{i}"): "v"}});
            admin(r, "POST", &path, Some(body))
        });
        for (status, body) in futures_util::future::join_all(patches).await {
            assert_eq!(status, 200, "{body}");
        }
    }
    let all = within(Duration::from_secs(3), || async {
        let mut same = true;
        for r in &replicas {
            let metadata = admin(r, "GET", &path, None).await.1["metadata"].clone();
            same &= metadata.as_object().is_some_and(|m| m.len() == 9);
        }
        same
    })
    .await;
    assert!(
        all.is_some(),
        "{}",
        admin(&replicas[0], "GET", &path, None).await.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_database_down_replicas_keep_proxying_refuse_writes_and_recover() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let a = replica(&ca, &pg);
    let from = common::write(a.dir.path(), "vaults.toml", VAULTS);
    assert!(
        store_command(&a, &pg, &["import", "--from", from.to_str().unwrap()])
            .status
            .success()
    );
    let b = replica(&ca, &pg);
    assert_eq!(
        token_received(&b, &ca, &upstream, "api.example.test", "ks-ph-vcrd_pg").await,
        "SECRET_pg_4242"
    );

    pg.kill();
    // Fail static: the last store keeps serving.
    assert_eq!(
        token_received(&b, &ca, &upstream, "api.example.test", "ks-ph-vcrd_pg").await,
        "SECRET_pg_4242"
    );
    let (status, body) = admin(&a, "POST", "/v1/vaults", Some(json!({"display_name": "X"}))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    let degraded = within(Duration::from_secs(4), || async {
        healthz(&b).await["store"] == "degraded"
    })
    .await;
    assert!(degraded.is_some(), "{}", healthz(&b).await);
    let health = healthz(&b).await;
    assert!(
        health["store_sync_age_seconds"]
            .as_f64()
            .is_some_and(|s| s >= 0.0),
        "{health}"
    );

    pg.start_again();
    let recovered = within(Duration::from_secs(6), || async {
        healthz(&b).await["store"] == "ok"
    })
    .await;
    assert!(recovered.is_some(), "{}", healthz(&b).await);
    let (status, body) = admin(
        &a,
        "POST",
        "/v1/vaults",
        Some(json!({"display_name": "After"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let metrics = curl(&[&format!("http://{}/metrics", b.admin)]).await.body;
    assert!(
        metrics.contains("keyswap_store_errors_total{op="),
        "{metrics}"
    );
    assert!(metrics.contains("keyswap_store_revision"), "{metrics}");
}

#[test]
fn replicas_starting_at_once_migrate_once_and_a_wrong_key_or_file_vaults_are_refused() {
    let Some(pg) = Postgres::start() else { return };
    let ca = std::sync::Arc::new(TestCa::new());
    let pg = std::sync::Arc::new(pg);
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let (ca, pg) = (ca.clone(), pg.clone());
            std::thread::spawn(move || replica(&ca, &pg))
        })
        .collect();
    let replicas: Vec<Keyswap> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(pg.psql("SELECT count(*) FROM keyswap_migrations"), "1\n");

    // Another key: refused at start, naming the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["store", "migrate", "--config"])
        .arg(replicas[0].config_path())
        .env("KEYSWAP_DATABASE_URL", pg.url())
        .env(
            "KEYSWAP_STORE_KEY",
            "//////////////////////////////////////////8=",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("KEYSWAP_STORE_KEY does not open"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No key at all.
    let out = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["store", "migrate", "--config"])
        .arg(replicas[0].config_path())
        .env("KEYSWAP_DATABASE_URL", pg.url())
        .env_remove("KEYSWAP_STORE_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYSWAP_STORE_KEY is not set"));
    // [[vaults]] beside backend = "postgres": one source of truth.
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "k.toml", &format!("{STORE}{VAULTS}"));
    let out = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["check", "--config", "k.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("k.toml:5:") && stderr.contains("keyswap store import"),
        "{stderr}"
    );
}

/// An `mcp_oauth` credential whose token has expired, used through two replicas at once: one
/// token-endpoint call in all (the refresh token rotates: a second call would burn it), and both
/// replicas then send the new token.
#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_token_is_refreshed_once_across_replicas() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let Some(pg) = Postgres::start() else { return };
    let ca = TestCa::new();
    let issued = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let handler = {
        let (issued, seen) = (issued.clone(), seen.clone());
        move |parts: http::request::Parts, _body: bytes::Bytes| {
            let (issued, seen) = (issued.clone(), seen.clone());
            async move {
                let reply = |body: Value| {
                    let mut r = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body.to_string()),
                    ));
                    r.headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    r
                };
                if parts.uri.path() == "/token" {
                    // Slow enough that both replicas' requests arrive during the first refresh.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                    return reply(json!({"access_token": format!("SECRET_access_{n}"),
                        "token_type": "Bearer", "expires_in": 3600,
                        "refresh_token": format!("SECRET_refresh_{n}")}));
                }
                let auth = parts
                    .headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                seen.lock().unwrap().push(auth);
                reply(json!({"ok": true}))
            }
        }
    };
    let port = common::serve_https(&ca, handler).await.port();
    let vaults = format!(
        "[[vaults]]\nid = \"vlt_o\"\n[[vaults.credentials]]\nid = \"vcrd_o\"\n[vaults.credentials.auth]\ntype = \"mcp_oauth\"\nmcp_server_url = \"https://api.example.test:{port}/mcp\"\naccess_token = \"SECRET_access_0\"\nexpires_at = \"2020-01-01T00:00:00Z\"\nrefresh = {{ client_id = \"app\", refresh_token = \"SECRET_refresh_0\", token_endpoint = \"https://other.example.test:{port}/token\" }}\n"
    );
    let a = replica(&ca, &pg);
    let from = common::write(a.dir.path(), "vaults.toml", &vaults);
    assert!(
        store_command(&a, &pg, &["import", "--from", from.to_str().unwrap()])
            .status
            .success()
    );
    let b = replica(&ca, &pg);
    let bundles = [a.client_bundle(&ca), b.client_bundle(&ca)];
    let url = format!("https://api.example.test:{port}/mcp");
    let calls = (0..10).map(|i| {
        let proxy = [&a, &b][i % 2].proxy_url();
        let bundle = bundles[i % 2].to_str().unwrap().to_string();
        let url = url.clone();
        async move {
            curl(&[
                "--proxy",
                &proxy,
                "--cacert",
                &bundle,
                "--data-binary",
                "{}",
                &url,
            ])
            .await
        }
    });
    for out in futures_util::future::join_all(calls).await {
        assert_eq!(out.status, 200, "{out:?}");
    }
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "one token-endpoint call across replicas"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 10);
    assert!(
        seen.iter().all(|a| a == "Bearer SECRET_access_1"),
        "{seen:?}"
    );
    // Stored once, sealed: the rotated refresh token is the one in the database.
    let dump = pg.dump();
    assert!(!dump.contains("SECRET_refresh_1") && !dump.contains("SECRET_access_1"));
}

/// The example manifests' keyswap.toml (deploy/kubernetes) is a valid database-backed config.
#[test]
fn the_kubernetes_example_config_is_valid() {
    let manifests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/keyswap.yaml"
    ))
    .unwrap();
    let block: String = manifests
        .split("keyswap.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(block.contains("backend = \"postgres\""), "{block}");
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "keyswap.toml", &block);
    let out = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["check", "--config", "keyswap.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TLS to the database (rustls, the CA from `upstream_ca_files`): a cluster that accepts TLS only
/// serves keyswap, and a keyswap that does not trust the cluster's certificate is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_connection_is_tls_and_its_certificate_is_verified() {
    let ca = TestCa::new();
    let Some(pg) = Postgres::start_tls(&ca) else {
        return;
    };
    assert!(pg.url().ends_with("sslmode=require"));
    let a = replica(&ca, &pg);
    let (status, body) = admin(&a, "POST", "/v1/vaults", Some(json!({"display_name": "T"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pg.psql("SELECT count(*) FROM keyswap_vaults"), "1\n");
    // Without the cluster's CA among the trusted roots: refused before any query.
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "k.toml", STORE);
    let out = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["store", "migrate", "--config", "k.toml"])
        .current_dir(dir.path())
        .env("KEYSWAP_DATABASE_URL", pg.url())
        .env("KEYSWAP_STORE_KEY", KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
