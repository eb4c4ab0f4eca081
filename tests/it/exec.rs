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

/// A process the command left running in the namespace must stay confined while keyswap exec
/// tears the namespace down: removing the nftables table while the veth is still up opens, for a
/// moment, every port of the host (and forwarding) to it.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_left_behind_reaches_nothing_while_the_namespace_is_removed() {
    if !netns::available() {
        return;
    }
    let (_ca, _upstream, keyswap) = start().await;
    // A service of the host, on every address.
    let listener = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // In the background, for 3 s: datagrams to the gateway (the host); the command exits at once.
    let script = format!(
        "exec bash -c 'gw=$(ip route | awk \"/default/{{print \\$3}}\"); ( end=$((SECONDS+3)); while [ $SECONDS -lt $end ]; do echo leak > /dev/udp/$gw/{port}; done ) >/dev/null 2>&1 & sleep 0.3'"
    );
    let (code, out, err) = exec(&keyswap, &script).await;
    assert_eq!(code, 0, "{out}{err}");
    let received = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 64];
        let mut received = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < until {
            if let Ok((_, from)) = listener.recv_from(&mut buf) {
                received.push(from);
            }
        }
        received
    })
    .await
    .unwrap();
    assert!(
        received.is_empty(),
        "{} datagrams from the namespace reached the host, first from {:?}",
        received.len(),
        received.first()
    );
}

/// `--session` binds the command's address to the session chosen; a reload of the configuration
/// (SIGHUP, or an edit of the file) while the command runs must not undo that binding: new
/// connections would be refused, or picked by another session's `source_cidrs`.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_while_the_command_runs_keeps_the_session_chosen() {
    if !netns::available() {
        return;
    }
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let rest = format!(
        "{VAULT}
[[vaults]]
id = \"vlt_y\"
[[vaults.credentials]]
id = \"vcrd_y\"
auth = {{ type = \"environment_variable\", secret_name = \"Y_TOKEN\", secret_value = \"SECRET_exec_other\", networking = {{ type = \"limited\", allowed_hosts = [\"api.example.test\"] }} }}

[[sessions]]
id = \"sesn_cmd\"
vault_ids = [\"vlt_x\"]
proxy_token_env = \"PROXY_TOKEN_CMD\"

[[sessions]]
id = \"sesn_wide\"
vault_ids = [\"vlt_y\"]
source_cidrs = [\"0.0.0.0/0\"]
"
    );
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: &rest,
            env: &[("PROXY_TOKEN_CMD", "token-cmd")],
            ..Setup::default()
        },
    );
    let port = upstream.port();
    let curl = |path: &str| {
        format!(
            "curl -sS --max-time 10 -H \"x-token: $X_TOKEN\" -H \"x-other: ks-ph-vcrd_y\" https://api.example.test:{port}/{path}; echo \" {path}=$?\""
        )
    };
    let script = format!(
        "{}; kill -HUP $PPID; sleep 2; {}",
        curl("before"),
        curl("after")
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["exec", "--config"])
        .arg(keyswap.config_path())
        .args(["--session", "sesn_cmd", "--", "sh", "-c", &script])
        .env("PROXY_TOKEN_CMD", "token-cmd")
        .env("KEYSWAP_LOG", "info")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("before=0") && stdout.contains("after=0"),
        "{stdout}{stderr}"
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "{stdout}{stderr}");
    for request in &seen {
        assert_eq!(
            request.header("x-token"),
            Some("SECRET_exec_1"),
            "{request:?}"
        );
        assert_eq!(
            request.header("x-other"),
            Some("ks-ph-vcrd_y"),
            "{request:?}"
        );
    }
}

/// The command gets `keyswap env`'s variables, not keyswap's own environment: the real secrets
/// keyswap read from `_env` keys (here an AWS key whose session token is in AWS_SESSION_TOKEN,
/// which `keyswap env` does not print) and the proxy variables stay out of it.
#[tokio::test(flavor = "multi_thread")]
async fn the_command_inherits_no_real_secret_and_no_proxy_variable() {
    if !netns::available() {
        return;
    }
    let ca = TestCa::new();
    let rest = r#"
[[vaults]]
id = "vlt_aws"
[[vaults.credentials]]
id = "vcrd_aws"
auth = { type = "aws_sigv4", access_key_id_env = "REAL_AKID", secret_access_key_env = "REAL_AWS_SECRET", session_token_env = "AWS_SESSION_TOKEN", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
[[vaults.credentials]]
id = "vcrd_x"
auth = { type = "environment_variable", secret_name = "X_TOKEN", secret_value_env = "REAL_X_TOKEN", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;
    let secrets = [
        ("REAL_AKID", "AKIAREALEXEC00000001"),
        (
            "REAL_AWS_SECRET",
            "realExecSecretValue0000000000000000000000",
        ),
        ("AWS_SESSION_TOKEN", "RealExecSessionToken0000"),
        ("REAL_X_TOKEN", "SECRET_exec_inherited"),
    ];
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest,
            env: &secrets,
            ..Setup::default()
        },
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["exec", "--config"])
        .arg(keyswap.config_path())
        .args(["--", "env"])
        .envs(secrets)
        .env("HTTPS_PROXY", "http://corp-proxy.example:3128")
        .env("no_proxy", "internal.example")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("AWS_ACCESS_KEY_ID=AKIA"), "{stdout}");
    for (name, value) in secrets {
        assert!(
            !stdout.contains(value),
            "the command got the real value of {name}: {stdout}"
        );
    }
    assert!(
        !stdout.to_ascii_lowercase().contains("_proxy="),
        "the command got a proxy variable: {stdout}"
    );
}

/// Run by root, the command still cannot leave the namespace (no CAP_SYS_ADMIN for `setns`) nor
/// read keyswap's environment or memory (keyswap is not dumpable; no CAP_SYS_PTRACE), and setuid
/// programs give nothing back (`no_new_privs`).
#[tokio::test(flavor = "multi_thread")]
async fn a_root_command_cannot_enter_keyswaps_namespace_or_read_its_environment() {
    if !netns::available() {
        return;
    }
    let (_ca, _upstream, keyswap) = start().await;
    let script = "nsenter -t $PPID -n true 2>/dev/null; echo nsenter=$?; \
                  cat /proc/$PPID/environ >/dev/null 2>&1; echo environ=$?; \
                  grep -c SECRET_exec_1 /proc/$PPID/environ 2>/dev/null; \
                  grep CapEff /proc/self/status";
    let (code, out, err) = exec(&keyswap, script).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("nsenter=0"), "{out}");
    assert!(!out.contains("environ=0"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
}
