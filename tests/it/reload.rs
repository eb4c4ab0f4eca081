//! Live configuration: edits to the file under a running keyswap (in place, by rename, by a
//! Kubernetes-style symlink swap), an invalid edit, and SIGHUP. Each is shown through a proxied
//! request: the new secret or scope is used, the old one no longer.

use crate::common;

use std::time::{Duration, Instant};

use common::{Keyswap, Setup, TestCa, Upstream, curl};

const VAULT: &str = r#"
[[vaults]]
id = "vlt_r"
[[vaults.credentials]]
id = "vcrd_r"
auth = { type = "environment_variable", secret_name = "R", secret_value = "SECRET_v1", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

/// How soon a valid edit must be in force (SPEC §4).
const IN_FORCE_WITHIN: Duration = Duration::from_secs(1);

struct World {
    ca: TestCa,
    upstream: Upstream,
    keyswap: Keyswap,
}

impl World {
    async fn start(rest: &str, symlinked: bool) -> World {
        let ca = TestCa::new();
        let upstream = Upstream::https(&ca).await;
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                rest,
                symlinked,
                ..Setup::default()
            },
        );
        World {
            ca,
            upstream,
            keyswap,
        }
    }

    /// What `host` receives for the placeholder now.
    async fn received(&self, host: &str) -> String {
        common::token_received(
            &self.keyswap,
            &self.ca,
            &self.upstream,
            host,
            "ks-ph-vcrd_r",
        )
        .await
    }

    /// Polls until `host` receives `expected`; fails past [`IN_FORCE_WITHIN`].
    async fn expect_within(&self, host: &str, expected: &str, since: Instant) {
        loop {
            let got = self.received(host).await;
            if got == expected {
                return;
            }
            assert!(
                since.elapsed() < IN_FORCE_WITHIN,
                "{host} still receives {got:?}, not {expected:?}\n{}",
                self.keyswap.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn healthz(&self) -> serde_json::Value {
        self.keyswap.healthz().await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_in_place_rotates_the_secret_and_keeps_the_placeholder() {
    let w = World::start(VAULT, false).await;
    assert_eq!(w.received("api.example.test").await, "SECRET_v1");
    let text = w.keyswap.edited_config("SECRET_v1", "SECRET_v2");
    let t0 = Instant::now();
    std::fs::write(w.keyswap.config_path(), text).unwrap();
    w.expect_within("api.example.test", "SECRET_v2", t0).await;
    assert_eq!(w.healthz().await["store_generation"], 2);
    let log = w.keyswap.log();
    assert!(!log.contains("SECRET_v"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replace_by_rename_changes_the_scope() {
    let w = World::start(VAULT, false).await;
    assert_eq!(w.received("other.example.test").await, "ks-ph-vcrd_r");
    let text = w
        .keyswap
        .edited_config("[\"api.example.test\"]", "[\"other.example.test\"]");
    let temp = w.keyswap.dir.path().join(".keyswap.toml.swp");
    std::fs::write(&temp, text).unwrap();
    let t0 = Instant::now();
    std::fs::rename(&temp, w.keyswap.config_path()).unwrap();
    w.expect_within("other.example.test", "SECRET_v1", t0).await;
    assert_eq!(
        w.received("api.example.test").await,
        "ks-ph-vcrd_r",
        "the old scope no longer applies"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_style_symlink_swap_is_picked_up() {
    let w = World::start(VAULT, true).await;
    assert_eq!(w.received("api.example.test").await, "SECRET_v1");
    let dir = w.keyswap.dir.path();
    let text = w.keyswap.edited_config("SECRET_v1", "SECRET_v2");
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/keyswap.toml"), text).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    let t0 = Instant::now();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    w.expect_within("api.example.test", "SECRET_v2", t0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_edit_is_refused_whole_and_reported() {
    let w = World::start(VAULT, false).await;
    // A valid-looking rotation together with a typo: neither may take effect.
    let text = w
        .keyswap
        .edited_config("SECRET_v1", "SECRET_v2")
        .replace("allowed_hosts", "alowed_hosts");
    std::fs::write(w.keyswap.config_path(), text).unwrap();
    let log = w.keyswap.wait_log("reload refused");
    let line = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect(&log);
    assert!(
        line.contains("keyswap.toml:") && line.contains("alowed_hosts"),
        "{line}"
    );
    assert!(!log.contains("SECRET_v"), "{log}");
    let health = w.healthz().await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["store_generation"], 1);
    let error = health["last_reload"]["errors"][0].as_str().unwrap();
    assert!(
        error.contains("keyswap.toml:") && error.contains(":1"),
        "{error}"
    );
    assert_eq!(
        w.received("api.example.test").await,
        "SECRET_v1",
        "the last good store stays in force"
    );
    // Fixing the file recovers.
    let t0 = Instant::now();
    std::fs::write(
        w.keyswap.config_path(),
        w.keyswap.edited_config("alowed_hosts", "allowed_hosts"),
    )
    .unwrap();
    w.expect_within("api.example.test", "SECRET_v2", t0).await;
    assert_eq!(w.healthz().await["status"], "ok");
}

/// SPEC §8: a refused reload names the key and position, never a secret typed without quotes nor
/// a token pasted into an `_env` / `_file` key: not in the log, not on the unauthenticated
/// `/healthz`.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_reload_never_repeats_a_secret_in_the_log_or_on_healthz() {
    let w = World::start(VAULT, false).await;
    for (from, to, secret) in [
        (
            "secret_value = \"SECRET_v1\"",
            "secret_value = 31415926",
            "31415926",
        ),
        (
            "secret_value = \"SECRET_v1\"",
            "secret_value_env = \"ghp_ZQXenvSECRET\"",
            "ZQXenvSECRET",
        ),
        (
            "secret_value = \"SECRET_v1\"",
            "secret_value_file = \"ghp_ZQXfileSECRET\"",
            "ZQXfileSECRET",
        ),
    ] {
        let before = w.healthz().await["last_reload"]["at"].clone();
        std::fs::write(w.keyswap.config_path(), w.keyswap.edited_config(from, to)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let health = loop {
            let health = w.healthz().await;
            if health["last_reload"]["at"] != before || Instant::now() > deadline {
                break health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(health["status"], "degraded", "{health}");
        let shown = health.to_string();
        assert!(shown.contains("keyswap.toml:"), "{shown}");
        assert!(!shown.contains(secret), "{secret} on /healthz: {shown}");
        let error = health["last_reload"]["errors"][0]
            .as_str()
            .unwrap_or_default();
        let position = error.split(": ").next().unwrap_or_default();
        let log = w.keyswap.wait_log(position);
        assert!(log.contains(position), "{position} not logged: {log}");
        assert!(!log.contains(secret), "{secret} in the log: {log}");
        // Back to the good text before the next variant.
        std::fs::write(w.keyswap.config_path(), w.keyswap.edited_config(to, from)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.healthz().await["status"] != "ok" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// SPEC §8: the watcher reacts to the config file (and `..data`) only. A log file growing in the
/// same folder, and reads of the config (keyswap's own, or anyone's), must not make an idle
/// keyswap read its config again: each read would generate an access event of its own.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keyswap_does_not_reread_its_config_for_other_files_or_reads() {
    for symlinked in [false, true] {
        let w = World::start(VAULT, symlinked).await;
        // Let start-up settle (the first poll tick, the watch being set up).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reads = |log: &str| log.matches("configuration file read").count();
        let before = reads(&w.keyswap.log());
        let dir = w.keyswap.dir.path().to_path_buf();
        let config = w.keyswap.config_path();
        let busy = std::thread::spawn(move || {
            use std::io::Write as _;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("app.log"))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                writeln!(log, "a line of someone else's log").unwrap();
                log.sync_data().unwrap();
                let _ = std::fs::read_to_string(&config).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        busy.join().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = w.keyswap.log();
        let after = reads(&log);
        assert_eq!(
            after - before,
            0,
            "symlinked={symlinked}: {} re-reads of an unchanged config in 3 s",
            after - before
        );
        // A real edit is still picked up.
        let t0 = Instant::now();
        if symlinked {
            let target = w.keyswap.dir.path().join("..v1/keyswap.toml");
            std::fs::write(&target, w.keyswap.edited_config("SECRET_v1", "SECRET_v2")).unwrap();
        } else {
            std::fs::write(
                w.keyswap.config_path(),
                w.keyswap.edited_config("SECRET_v1", "SECRET_v2"),
            )
            .unwrap();
        }
        w.expect_within("api.example.test", "SECRET_v2", t0).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rereads_secret_files() {
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("r");
    std::fs::write(&secret, "SECRET_v1\n").unwrap();
    let rest = VAULT.replace(
        "secret_value = \"SECRET_v1\"",
        &format!("secret_value_file = \"{}\"", secret.display()),
    );
    let w = World::start(&rest, false).await;
    assert_eq!(w.received("api.example.test").await, "SECRET_v1");
    std::fs::write(&secret, "SECRET_v2\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        w.received("api.example.test").await,
        "SECRET_v1",
        "the config text did not change"
    );
    let t0 = Instant::now();
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(w.keyswap.pid().to_string())
        .status();
    w.expect_within("api.example.test", "SECRET_v2", t0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tightening_egress_rules_applies_to_the_next_tunnel() {
    let w = World::start(VAULT, false).await;
    assert_eq!(w.received("api.example.test").await, "SECRET_v1");
    let text = w.keyswap.edited_config(
        "block_private_addresses = false",
        "block_private_addresses = true",
    );
    let t0 = Instant::now();
    std::fs::write(w.keyswap.config_path(), text).unwrap();
    let bundle = w.keyswap.client_bundle(&w.ca);
    let url = format!("https://api.example.test:{}/", w.upstream.port());
    loop {
        let proxy = w.keyswap.proxy_url();
        let out = curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            bundle.to_str().unwrap(),
            &url,
        ])
        .await;
        if out.status == 0 && out.stderr.contains("403") {
            break;
        }
        assert!(
            t0.elapsed() < IN_FORCE_WITHIN,
            "127.0.0.1 still reachable: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A pooled upstream connection was checked against the rules in force when it was dialled: after
/// the rules tighten, the next request (plain HTTP, and inside a tunnel opened before the edit,
/// which holds the worker's shared HTTP/2 connection) is refused instead of riding the old one.
#[tokio::test(flavor = "multi_thread")]
async fn tightening_egress_rules_retires_pooled_connections() {
    let w = World::start(VAULT, false).await;
    let plain = Upstream::http().await;
    let url = format!("http://api.example.test:{}/", plain.port());
    let proxy = w.keyswap.proxy_url();
    assert_eq!(curl(&["--proxy", &proxy, &url]).await.status, 200);
    // A tunnel opened (and used) before the edit, kept open.
    let mut sender = common::tunnel_client(&w.keyswap, "api.example.test", w.upstream.port()).await;
    let get = || {
        hyper::Request::get("/")
            .header("host", format!("api.example.test:{}", w.upstream.port()))
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    // Twice: the first answer tells the tunnel its upstream speaks HTTP/2, the second rides the
    // worker's shared connection, which the tunnel then holds.
    for _ in 0..2 {
        sender.ready().await.unwrap();
        assert_eq!(sender.send_request(get()).await.unwrap().status(), 200);
    }
    assert!(
        w.upstream
            .requests()
            .iter()
            .all(|r| r.version == "HTTP/2.0")
    );

    let text = w.keyswap.edited_config(
        "block_private_addresses = false",
        "block_private_addresses = true",
    );
    let t0 = Instant::now();
    std::fs::write(w.keyswap.config_path(), text).unwrap();
    while w.healthz().await["store_generation"] != 2 {
        assert!(t0.elapsed() < IN_FORCE_WITHIN, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out = curl(&["--proxy", &proxy, &url]).await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("egress-denied")
    );
    assert_eq!(
        plain.requests().len(),
        1,
        "the pooled connection was reused"
    );
    sender.ready().await.unwrap();
    let answer = sender.send_request(get()).await.unwrap();
    assert_eq!(
        answer.status(),
        403,
        "the tunnel's next request rode the old connection"
    );
}
