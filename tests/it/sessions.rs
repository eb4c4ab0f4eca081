//! Sessions: proxy authentication, per-session vaults, per-session network policy.

use crate::common;

use common::{Keyswap, Setup, TestCa, Upstream, curl};

const CONFIG: &str = r#"
[[vaults]]
id = "vlt_a"
[[vaults.credentials]]
id = "vcrd_a"
auth = { type = "environment_variable", secret_name = "TOKEN_A", secret_value = "SECRET_a", networking = { type = "unrestricted" } }

[[vaults]]
id = "vlt_b"
[[vaults.credentials]]
id = "vcrd_b"
auth = { type = "environment_variable", secret_name = "TOKEN_B", secret_value = "SECRET_b", networking = { type = "unrestricted" } }

[[sessions]]
id = "sesn_a"
vault_ids = ["vlt_a"]
proxy_token_env = "PROXY_TOKEN_A"
network = { type = "limited", allowed_hosts = ["api.example.test", "other.example.test"] }

[[sessions]]
id = "sesn_b"
vault_ids = ["vlt_b"]
proxy_token_env = "PROXY_TOKEN_B"
"#;

struct World {
    ca: TestCa,
    upstream: Upstream,
    keyswap: Keyswap,
}

impl World {
    async fn start() -> World {
        let ca = TestCa::new();
        let upstream = Upstream::https(&ca).await;
        let env = &[("PROXY_TOKEN_A", "token-a"), ("PROXY_TOKEN_B", "token-b")];
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                rest: CONFIG,
                env,
                ..Setup::default()
            },
        );
        World {
            ca,
            upstream,
            keyswap,
        }
    }

    fn proxy(&self, userinfo: &str) -> String {
        format!("http://{userinfo}@{}", self.keyswap.proxy)
    }

    async fn curl_as(&self, userinfo: &str, host: &str, header: &str) -> common::CurlOut {
        let bundle = self.keyswap.client_bundle(&self.ca);
        let url = format!("https://{host}:{}/", self.upstream.port());
        curl(&[
            "--proxy",
            &self.proxy(userinfo),
            "--cacert",
            bundle.to_str().unwrap(),
            "-H",
            header,
            &url,
        ])
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_session_gets_only_its_own_secrets() {
    let w = World::start().await;
    let header = "x-token: ks-ph-vcrd_a ks-ph-vcrd_b";
    assert_eq!(
        w.curl_as("sesn_a:token-a", "api.example.test", header)
            .await
            .status,
        200
    );
    assert_eq!(
        w.curl_as("sesn_b:token-b", "api.example.test", header)
            .await
            .status,
        200
    );
    let seen = w.upstream.requests();
    assert_eq!(seen[0].header("x-token"), Some("SECRET_a ks-ph-vcrd_b"));
    assert_eq!(seen[1].header("x-token"), Some("ks-ph-vcrd_a SECRET_b"));
    assert_eq!(seen[0].header("proxy-authorization"), None);
    let log = w.keyswap.wait_log("session=sesn_b");
    assert!(
        log.lines()
            .any(|l| l.contains("session=sesn_a") && l.contains("vcrd_a=substituted")),
        "{log}"
    );
    assert!(
        !log.contains("token-a") && !log.contains("SECRET_"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_credentials_get_407() {
    let w = World::start().await;
    for userinfo in ["sesn_a:token-b", "sesn_a:", "nobody:token-a"] {
        let out = w.curl_as(userinfo, "api.example.test", "x: 1").await;
        assert_eq!(out.status, 0, "{userinfo}: {out:?}");
        assert!(out.stderr.contains("407"), "{userinfo}: {out:?}");
    }
    // Plain HTTP shows the whole answer.
    let url = format!("http://api.example.test:{}/", w.upstream.port());
    let out = curl(&["--proxy", &w.keyswap.proxy_url(), &url]).await;
    assert_eq!(out.status, 407, "{out:?}");
    assert_eq!(
        out.headers.get("proxy-authenticate").map(String::as_str),
        Some("Basic realm=\"keyswap\"")
    );
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("proxy-auth-required")
    );
    assert!(w.upstream.requests().is_empty());
}

/// The advice names the rule that really refused: this session's network policy, not the
/// private-address rule (`allow_private_cidrs` would not help here).
#[tokio::test(flavor = "multi_thread")]
async fn a_session_policy_refusal_names_the_session_policy_not_allow_private_cidrs() {
    let w = World::start().await;
    let url = format!("http://wild.example.test:{}/", w.upstream.port());
    let out = curl(&["--proxy", &w.proxy("sesn_a:token-a"), &url]).await;
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(
        out.headers.get("x-keyswap-error").map(String::as_str),
        Some("egress-denied")
    );
    assert!(out.body.contains("wild.example.test"), "{}", out.body);
    assert!(out.body.contains("sesn_a"), "{}", out.body);
    assert!(out.body.contains("network"), "{}", out.body);
    assert!(out.body.contains("allowed_hosts"), "{}", out.body);
    assert!(!out.body.contains("allow_private_cidrs"), "{}", out.body);
    assert!(
        !out.body.contains("block_private_addresses"),
        "{}",
        out.body
    );
    assert!(w.upstream.requests().is_empty());
}

/// A session reached by source address (SPEC §12) has no token: its id alone, which is no secret,
/// must not select it, whatever password comes with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_without_a_token_is_never_selected_by_any_password() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let rest = format!(
        "{CONFIG}\n[[sessions]]\nid = \"sesn_net\"\nvault_ids = [\"vlt_a\"]\nsource_cidrs = [\"10.200.0.2/32\"]\n"
    );
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: &rest,
            env: &[("PROXY_TOKEN_A", "token-a"), ("PROXY_TOKEN_B", "token-b")],
            ..Setup::default()
        },
    );
    let url = format!("http://api.example.test:{}/", upstream.port());
    for userinfo in ["sesn_net:", "sesn_net:anything", "sesn_net:token-a"] {
        let proxy = format!("http://{userinfo}@{}", keyswap.proxy);
        let out = curl(&["--proxy", &proxy, "-H", "x: ks-ph-vcrd_a", &url]).await;
        assert_eq!(out.status, 407, "{userinfo}: {out:?}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_outside_the_session_network_are_refused_before_tls() {
    let w = World::start().await;
    let out = w
        .curl_as("sesn_a:token-a", "wild.example.test", "x: ks-ph-vcrd_a")
        .await;
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("403"), "{out:?}");
    // sesn_b is unrestricted.
    assert_eq!(
        w.curl_as("sesn_b:token-b", "wild.example.test", "x: 1")
            .await
            .status,
        200
    );
    assert_eq!(w.upstream.requests().len(), 1);
}

#[test]
fn env_prints_the_session_proxy_url_and_only_its_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "k.toml",
        &format!("[proxy]\nlisten = \"127.0.0.1:18999\"\n{CONFIG}"),
    );
    // keyswap env never creates the CA.
    let ca = std::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["ca", "--config", "k.toml"])
        .current_dir(dir.path())
        .env("PROXY_TOKEN_A", "token-a")
        .env("PROXY_TOKEN_B", "token-b")
        .output()
        .unwrap();
    assert!(
        ca.status.success(),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["env", "--config", "k.toml", "--session", "sesn_a"])
        .current_dir(dir.path())
        .env("PROXY_TOKEN_A", "token-a")
        .env("PROXY_TOKEN_B", "token-b")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("export HTTPS_PROXY='http://sesn_a:token-a@127.0.0.1:18999'"),
        "{stdout}"
    );
    assert!(stdout.contains("export TOKEN_A='ks-ph-vcrd_a'"), "{stdout}");
    assert!(!stdout.contains("TOKEN_B="), "{stdout}");
    // With sessions configured, a session must be chosen.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["env", "--config", "k.toml"])
        .current_dir(dir.path())
        .env("PROXY_TOKEN_A", "token-a")
        .env("PROXY_TOKEN_B", "token-b")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--session"));
}
