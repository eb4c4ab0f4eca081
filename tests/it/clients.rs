//! Real clients (SPEC §9), each configured only by what `keyswap env` prints, as a sandbox would be:
//! Python's requests, httpx (HTTP/2), aiohttp and urllib. Each reaches an HTTPS upstream through
//! keyswap with the secret substituted, and sees the reflected secret as its placeholder.
//!
//! `.ci/run` installs the Python libraries in `target/clients-venv` (tests/clients/requirements.txt)
//! and sets `KEYSWAP_EXTERNAL_TOOLS=required`; elsewhere a missing venv skips these tests.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Keyswap, Setup, TestCa, Upstream, python, sandbox_env};

const VAULT: &str = r#"
[[vaults]]
id = "vlt_clients"
[[vaults.credentials]]
id = "vcrd_client"
auth = { type = "environment_variable", secret_name = "API_TOKEN", secret_value = "SECRET_client_7", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

/// Whether `target/node-clients` has undici (installed by `.ci/run`, required there).
fn node_available() -> bool {
    let found = node_modules().join("undici").exists();
    if !found {
        assert!(
            std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
            "target/node-clients is required here (npm install undici@6)"
        );
        eprintln!("skipped: no target/node-clients");
    }
    found
}

fn node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node-clients/node_modules")
}

/// `node tests/clients/fetch.mjs URL NAME VALUE` with only the sandbox's environment; its output.
async fn node_fetch(env: &[(String, String)], url: &str, name: &str, value: &str) -> String {
    // The script runs from a copy beside node_modules, so `import "undici"` resolves; one copy per
    // call, as tests run at once.
    let dir = node_modules().parent().unwrap().to_path_buf();
    let script = tempfile::Builder::new()
        .suffix(".mjs")
        .tempfile_in(&dir)
        .unwrap()
        .into_temp_path();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/fetch.mjs"),
        &script,
    )
    .unwrap();
    let out = tokio::process::Command::new("node")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg(&*script)
        .args([url, name, value])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An HTTPS upstream and keyswap with one credential scoped to it.
async fn start() -> (TestCa, Upstream, Keyswap) {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false",
            rest: VAULT,
            ..Setup::default()
        },
    );
    (ca, upstream, keyswap)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_clients_configured_by_keyswap_env_go_through_with_the_secret_substituted() {
    let Some(python) = python() else { return };
    let (_ca, upstream, keyswap) = start().await;
    let env = sandbox_env(&keyswap);
    let placeholder = env
        .iter()
        .find(|(k, _)| k == "API_TOKEN")
        .map(|(_, v)| v.clone())
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/fetch.py");
    for (library, version) in [
        ("requests", "HTTP/1.1"),
        ("httpx", "HTTP/2"),
        ("aiohttp", "HTTP/1.1"),
        ("urllib", "HTTP/1.1"),
    ] {
        let before = upstream.requests().len();
        let url = format!("https://api.example.test:{}/{library}", upstream.port());
        let out = tokio::process::Command::new(&python)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg(&script)
            .args([
                library,
                url.as_str(),
                "authorization",
                &format!("Bearer {placeholder}"),
            ])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{library}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("200 {version}")),
            "{library}: {stdout}"
        );
        let seen = &upstream.requests()[before];
        assert_eq!(
            seen.header("authorization"),
            Some("Bearer SECRET_client_7"),
            "{library}"
        );
        assert!(
            !stdout.contains("SECRET"),
            "{library} saw the secret: {stdout}"
        );
        assert!(
            stdout.contains(&placeholder),
            "{library}: the echo comes back as the placeholder"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_fetch_with_undici_env_proxy_agent_goes_through_keyswap() {
    if !node_available() {
        return;
    }
    let (_ca, upstream, keyswap) = start().await;
    let env = sandbox_env(&keyswap);
    let url = format!("https://api.example.test:{}/node", upstream.port());
    let stdout = node_fetch(&env, &url, "x-token", "ks-ph-vcrd_client").await;
    assert!(stdout.starts_with("200"), "{stdout}");
    assert_eq!(upstream.only().header("x-token"), Some("SECRET_client_7"));
    assert!(
        !stdout.contains("SECRET") && stdout.contains("ks-ph-vcrd_client"),
        "{stdout}"
    );
}

/// npm configured by `keyswap env` — even with a `cafile` in the project's `.npmrc` that does not
/// know keyswap's CA (NPM_CONFIG_CAFILE wins) — reads a registry behind keyswap (a real nginx); and
/// Node trusts a host keyswap relays raw (no credential in
/// scope, `mitm = "auto"`) whose certificate comes from `upstream_ca_files`, because
/// NODE_EXTRA_CA_CERTS is the whole bundle.
#[tokio::test(flavor = "multi_thread")]
async fn npm_with_its_own_cafile_and_node_to_a_relayed_host_trust_what_keyswap_env_says() {
    if std::process::Command::new("npm")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
            "npm is required here"
        );
        return;
    }
    let ca = TestCa::new();
    let Some(nginx) = common::nginx::Nginx::start(&ca) else {
        return;
    };
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false",
            rest: VAULT,
            ..Setup::default()
        },
    );
    let env = sandbox_env(&keyswap);
    let project = tempfile::tempdir().unwrap();
    // A CA file that knows nothing of keyswap, as a project's .npmrc might name.
    std::fs::write(project.path().join("other-ca.pem"), TestCa::new().pem).unwrap();
    std::fs::write(
        project.path().join(".npmrc"),
        format!("cafile={}/other-ca.pem\n", project.path().display()),
    )
    .unwrap();
    let registry = format!("https://api.example.test:{}/static/", nginx.h2);
    let out = tokio::process::Command::new("npm")
        .current_dir(project.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", project.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["view", "ksdemo", "description", "--registry", &registry])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "served through keyswap");
    assert!(
        nginx
            .seen_on(nginx.h2)
            .iter()
            .any(|l| l.contains("GET /static/ksdemo"))
    );

    // other.example.test: no credential in scope, so keyswap relays the tunnel raw and Node sees
    // the upstream's own certificate (signed by the tests' CA, one of upstream_ca_files).
    if !node_available() {
        return;
    }
    let url = format!("https://other.example.test:{}/relayed", upstream.port());
    let stdout = node_fetch(&env, &url, "x-token", "plain").await;
    assert!(stdout.starts_with("200"), "{stdout}");
    keyswap.wait_log("no credential of the session is in scope");
}
