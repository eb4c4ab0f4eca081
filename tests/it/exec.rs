//! `keyswap exec` (SPEC §12): a command in a namespace whose only way out is keyswap, with no
//! proxy variables. curl and Node 20's built-in `fetch` (which ignores HTTPS_PROXY) reach an
//! allowed host with the secret substituted; what has no name bound to it is closed; the exit
//! status is passed through; nothing is left behind, after SIGTERM too.

use crate::common;

use std::time::Duration;

use common::netns;
use common::{Keyswap, Setup, TestCa, Upstream};

const VAULT: &str = r#"
[[vaults]]
id = "vlt_x"
[[vaults.credentials]]
id = "vcrd_x"
auth = { type = "environment_variable", secret_name = "X_TOKEN", secret_value = "SECRET_exec_1", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

async fn start() -> (TestCa, Upstream, Keyswap) {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: VAULT,
            ..Setup::default()
        },
    );
    (ca, upstream, keyswap)
}

/// `keyswap exec --config … -- sh -c SCRIPT`: (exit code, stdout, stderr).
async fn exec(keyswap: &Keyswap, script: &str) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["exec", "--config"])
        .arg(keyswap.config_path())
        .args(["--", "sh", "-c", script])
        .env("KEYSWAP_LOG", "info")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn leftovers(pid: u32) -> Vec<String> {
    netns::traces(&format!("ksx{pid}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_and_node_fetch_without_proxy_variables_go_through_keyswap() {
    if !netns::available() {
        return;
    }
    let (_ca, upstream, keyswap) = start().await;
    let port = upstream.port();
    let script = format!(
        "env | grep -ci _proxy; curl -sS --max-time 10 -H \"x-token: $X_TOKEN\" https://api.example.test:{port}/curl"
    );
    let (code, out, err) = exec(&keyswap, &script).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("0\n"),
        "no proxy variable in the command's environment: {out}"
    );
    assert!(
        out.contains("ks-ph-vcrd_x") && !out.contains("SECRET_exec_1"),
        "{out}"
    );
    assert_eq!(upstream.only().header("x-token"), Some("SECRET_exec_1"));
    let ready_ms: u64 = err
        .split("ready_ms=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("ready_ms in {err}"));
    eprintln!("keyswap exec: namespace ready in {ready_ms} ms");

    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let node = format!(
            "node -e \"fetch('https://api.example.test:{port}/node', {{ headers: {{ 'x-token': process.env.X_TOKEN }} }}).then(r => r.text()).then(t => console.log(t))\""
        );
        let (code, out, err) = exec(&keyswap, &node).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("/node") && out.contains("ks-ph-vcrd_x"),
            "{out}{err}"
        );
        assert_eq!(
            upstream.requests()[1].header("x-token"),
            Some("SECRET_exec_1")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_way_around_the_exit_status_is_passed_and_nothing_is_left_behind() {
    if !netns::available() {
        return;
    }
    let (_ca, upstream, keyswap) = start().await;
    // An address with no name bound to it (no SNI, or a Host keyswap's DNS never gave out): closed.
    let script = "curl -sk --max-time 5 https://198.51.100.7/; echo tls=$?; curl -s --max-time 5 http://10.9.9.9/; echo http=$?; exit 7";
    let (code, out, err) = exec(&keyswap, script).await;
    assert_eq!(code, 7, "{out}{err}");
    assert!(!out.contains("tls=0") && !out.contains("http=0"), "{out}");
    assert!(upstream.requests().is_empty());

    // SIGTERM to keyswap exec: passed to the command, everything removed.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["exec", "--config"])
        .arg(keyswap.config_path())
        .args(["--", "sleep", "30"])
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    for _ in 0..100 {
        if !leftovers(pid).is_empty()
            && std::path::Path::new(&format!("/etc/netns/ksx{pid}/resolv.conf")).exists()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !leftovers(pid).is_empty(),
        "the namespace exists while the command runs"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(
        leftovers(pid).is_empty(),
        "left behind: {:?}",
        leftovers(pid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_cap_net_admin_it_says_what_is_missing() {
    if !netns::available() {
        return;
    }
    // As `nobody`, in a folder with no config (the embedded defaults): nothing to read as root.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    // A copy of the binary `nobody` can run wherever the repository lives.
    let binary = dir.path().join("keyswap");
    std::fs::copy(env!("CARGO_BIN_EXE_keyswap"), &binary).unwrap();
    let out = tokio::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&binary)
        .args(["exec", "--", "true"])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("needs root or CAP_NET_ADMIN"), "{err}");
}
