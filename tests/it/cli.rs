//! The `keyswap` command line: check, ca, env, and run's start-up and shutdown.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};
use std::time::Duration;

fn keyswap(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyswap"));
    cmd.args(args).current_dir(dir).env("KEYSWAP_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const CRED_HEAD: &str = "[[vaults]]\nid = \"vlt_a\"\n\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"TOKEN\"\nauth.secret_value = \"SECRET_value\"\n";

/// Runs `keyswap check` on `body` and returns (exit code, stderr).
fn check(body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "bad.toml", body);
    let out = keyswap(&["check", "--config", "bad.toml"], dir.path(), &[]);
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

mod check {
    use super::*;

    fn assert_refused(body: &str, position: &str, words: &str) {
        let (code, stderr) = check(body);
        assert_eq!(code, 1, "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("bad.toml:{position}: ")))
            .unwrap_or_else(|| {
                panic!("no error at bad.toml:{position} in:\n{stderr}");
            });
        assert!(line.contains(words), "{line}");
        assert!(!stderr.contains("SECRET_value"), "{stderr}");
    }

    #[test]
    fn port_in_allowed_hosts() {
        let body = format!(
            "{CRED_HEAD}auth.networking = {{ type = \"limited\", allowed_hosts = [\"api.example.com:443\"] }}\n"
        );
        assert_refused(&body, "9:56", "port");
    }

    #[test]
    fn ipv6_in_allowed_hosts() {
        let body = format!(
            "{CRED_HEAD}auth.networking = {{ type = \"limited\", allowed_hosts = [\"2001:db8::1\"] }}\n"
        );
        assert_refused(&body, "9:56", "IPv6");
    }

    #[test]
    fn url_in_allowed_hosts() {
        let body = format!(
            "{CRED_HEAD}auth.networking = {{ type = \"limited\", allowed_hosts = [\"ok.test\", \"https://api.example.com\"] }}\n"
        );
        assert_refused(&body, "9:67", "URL");
    }

    #[test]
    fn seventeen_allowed_hosts() {
        let hosts: Vec<String> = (0..17).map(|i| format!("\"h{i}.test\"")).collect();
        let body = format!(
            "{CRED_HEAD}auth.networking = {{ type = \"limited\", allowed_hosts = [{}] }}\n",
            hosts.join(",")
        );
        assert_refused(&body, "9:55", "at most 16");
    }

    #[test]
    fn unknown_key() {
        assert_refused(
            "[proxy]\nblock_private_adresses = false\n",
            "2:1",
            "block_private_adresses",
        );
    }

    #[test]
    fn duplicate_placeholder() {
        let body = format!(
            "{CRED_HEAD}auth.networking = {{ type = \"unrestricted\" }}\n\n[[vaults.credentials]]\nid = \"vcrd_b\"\nauth = {{ type = \"environment_variable\", secret_name = \"B\", secret_value = \"x\", placeholder = \"ks-ph-vcrd_a\", networking = {{ type = \"unrestricted\" }} }}\n"
        );
        assert_refused(&body, "13:94", "already used");
    }

    #[test]
    fn a_session_without_a_token_or_source_cidrs() {
        assert_refused(
            "[[vaults]]\nid = \"vlt_a\"\n\n[[sessions]]\nid = \"sesn_open\"\nvault_ids = [\"vlt_a\"]\n",
            "4:1",
            "`proxy_token_env` or `source_cidrs`",
        );
    }

    /// SPEC §8: `keyswap check` names the key and position, never the secret.
    #[test]
    fn errors_never_repeat_a_secret_or_a_value_put_in_an_env_or_file_key() {
        let head = "[[vaults]]\nid = \"vlt_a\"\n\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"TOKEN\"\nauth.networking = { type = \"unrestricted\" }\n";
        for (line, secret, key) in [
            ("auth.secret_value = 31415926", "31415926", "secret_value"),
            (
                "auth.secret_value = 2.718281828",
                "2.718281828",
                "secret_value",
            ),
            (
                "auth.secret_value_env = \"ghp_ZQXenvSECRET\"",
                "ZQXenvSECRET",
                "secret_value_env",
            ),
            (
                "auth.secret_value_file = \"ghp_ZQXfileSECRET\"",
                "ZQXfileSECRET",
                "secret_value_file",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            common::write(dir.path(), "bad.toml", &format!("{head}{line}\n"));
            for command in ["check", "run"] {
                let out = keyswap(&[command, "--config", "bad.toml"], dir.path(), &[]);
                let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
                assert_eq!(out.status.code(), Some(1), "{shown}");
                assert!(shown.contains("bad.toml:9:"), "{shown}");
                assert!(shown.contains(&format!("`{key}`")), "{shown}");
                assert!(
                    !shown.contains(secret),
                    "{command}: {secret} repeated: {shown}"
                );
            }
        }
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let body = format!(
            "{CRED_HEAD}auth.placeholder = \"bad placeholder\"\nauth.networking = {{ type = \"limited\", allowed_hosts = [\"a.test:1\", \"b.test/x\"] }}\n"
        );
        let (code, stderr) = check(&body);
        assert_eq!(code, 1);
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.starts_with("bad.toml:"))
                .count(),
            3,
            "{stderr}"
        );
    }

    #[test]
    fn a_valid_file_prints_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        common::write(
            dir.path(),
            "ok.toml",
            "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth = { type = \"environment_variable\", secret_name = \"T\", secret_value_env = \"KS_TEST_SECRET\", networking = { type = \"unrestricted\" } }\n[[vaults.credentials]]\nid = \"vcrd_b\"\nauth = { type = \"static_bearer\", mcp_server_url = \"https://mcp.example.com/\", token = \"t\" }\n",
        );
        let out = keyswap(
            &["check", "--config", "ok.toml"],
            dir.path(),
            &[("KS_TEST_SECRET", "SECRET_env")],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("vaults: 1"), "{stdout}");
        assert!(
            stdout.contains(
                "credentials: 2 (environment_variable: 1, static_bearer: 1, mcp_oauth: 0)"
            ),
            "{stdout}"
        );
        assert!(!stdout.contains("SECRET"));
        // Without the variable, the same file is refused at the key that names it.
        let out = keyswap(&["check", "--config", "ok.toml"], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("ok.toml:5:"),
            "{}",
            text(&out.stderr)
        );
    }

    /// `check` opens the CA files as `run` would: none yet is fine (and says where one will be
    /// made, making none), a complete CA is named, half of one or an invalid one fails.
    #[test]
    fn the_ca_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        common::write(dir.path(), "ok.toml", "");
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let check = || keyswap(&["check", "--config", "ok.toml"], dir.path(), &[]);
        let out = check();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let expected = format!(
            "CA: none yet: `keyswap ca` or `run` creates {}",
            root.join("certs/ca.pem").display()
        );
        assert!(
            text(&out.stdout).contains(&expected),
            "{}",
            text(&out.stdout)
        );
        assert!(!dir.path().join("certs").exists(), "check creates nothing");
        assert!(keyswap(&["ca"], dir.path(), &[]).status.success());
        let out = check();
        assert!(
            text(&out.stdout).contains(&format!(
                "CA: {} (and its key)",
                root.join("certs/ca.pem").display()
            )),
            "{}",
            text(&out.stdout)
        );
        let key = dir.path().join("certs/ca-key.pem");
        let saved = std::fs::read(&key).unwrap();
        std::fs::remove_file(&key).unwrap();
        let out = check();
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("ca-key.pem does not"), "{stderr}");
        assert!(stderr.contains("keep both CA files together"), "{stderr}");
        common::write(
            dir.path(),
            "certs/ca-key.pem",
            &String::from_utf8(saved).unwrap(),
        );
        std::fs::write(dir.path().join("certs/ca.pem"), "not a certificate\n").unwrap();
        let out = check();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("invalid CA certificate"),
            "{}",
            text(&out.stderr)
        );
    }

    /// The example is copied and made private as the README says (it holds a demo secret, so a
    /// copy others can read is refused with the chmod to run).
    #[test]
    fn the_shipped_example_config_is_valid() {
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keyswap.example.toml");
        let example = std::fs::read_to_string(shipped).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        let copy = common::write(&dir.path().join("config"), "keyswap.toml", &example);
        let out = keyswap(&["check"], dir.path(), &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = keyswap(&["check"], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("chmod 600 config/keyswap.toml"),
            "{}",
            text(&out.stderr)
        );
    }

    /// The repository must not ship a file that `keyswap run` picks up by default (SPEC §9).
    #[test]
    fn the_repository_ships_no_default_config() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let tracked = Command::new("git")
            .args(["ls-files", "--error-unmatch", "config/keyswap.toml"])
            .current_dir(root)
            .output();
        if let Ok(out) = tracked {
            assert!(!out.status.success(), "config/keyswap.toml is tracked");
        }
        let ignore = std::fs::read_to_string(root.join(".gitignore")).unwrap();
        assert!(
            ignore.lines().any(|l| l == "/config/keyswap.toml"),
            "{ignore}"
        );
    }

    #[test]
    fn a_missing_explicit_config_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = keyswap(&["check", "--config", "nope.toml"], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).starts_with("nope.toml:1:1: cannot read"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn ca_creates_the_ca_once_with_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = keyswap(&["ca"], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = text(&out.stdout).trim().to_string();
    assert!(path.ends_with("certs/ca.pem"), "{path}");
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let mode = std::fs::metadata(dir.path().join("certs/ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = keyswap(&["ca"], dir.path(), &[]);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        pem,
        "the CA is kept, not remade"
    );
    assert!(again.status.success());
}

#[test]
fn env_for_another_host_names_no_path_or_port_of_this_one_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "k.toml",
        &format!(
            "[proxy]\nlisten = \"0.0.0.0:18080\"\n{CRED_HEAD}auth.networking = {{ type = \"unrestricted\" }}\n"
        ),
    );
    assert!(
        keyswap(&["ca", "--config", "k.toml"], dir.path(), &[])
            .status
            .success()
    );
    // A wildcard listen address is no address for a sandbox: --proxy-url is required.
    let out = keyswap(&["env", "--config", "k.toml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--proxy-url"),
        "{}",
        text(&out.stderr)
    );
    let reach = [
        "--proxy-url",
        "http://keyswap.internal:3128",
        "--ca-path",
        "/certs/ca-bundle.pem",
    ];
    let here = dir.path().display().to_string();
    for format in ["sh", "dotenv", "json"] {
        let mut args = vec!["env", "--config", "k.toml", "--format", format];
        args.extend(reach);
        let out = keyswap(&args, dir.path(), &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            !stdout.contains(&here) && !stdout.contains("18080"),
            "{format}: {stdout}"
        );
        assert!(!stdout.contains("SECRET"), "{stdout}");
        match format {
            "dotenv" => {
                assert!(
                    stdout.contains("\nHTTPS_PROXY=http://keyswap.internal:3128\n"),
                    "{stdout}"
                );
                assert!(stdout.contains("\nTOKEN=ks-ph-vcrd_a\n"), "{stdout}");
            }
            "json" => {
                let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(v["NODE_EXTRA_CA_CERTS"], "/certs/ca-bundle.pem");
                assert!(
                    v["JAVA_TOOL_OPTIONS"]
                        .as_str()
                        .unwrap()
                        .contains("trustStore=/certs/ca-bundle.p12")
                );
            }
            _ => assert!(
                stdout.contains("export SSL_CERT_FILE='/certs/ca-bundle.pem'"),
                "{stdout}"
            ),
        }
    }
}

#[test]
fn env_prints_what_a_sandbox_needs_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "k.toml",
        &format!(
            "[proxy]\nlisten = \"127.0.0.1:18080\"\n{CRED_HEAD}auth.networking = {{ type = \"unrestricted\" }}\n"
        ),
    );
    // env never creates a CA: it says to run `keyswap ca` first.
    let out = keyswap(&["env", "--config", "k.toml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("run `keyswap ca` first"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("certs").exists(), "env wrote nothing");
    assert!(
        keyswap(&["ca", "--config", "k.toml"], dir.path(), &[])
            .status
            .success()
    );
    let out = keyswap(&["env", "--config", "k.toml"], dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in [
        "ALL_PROXY",
        "NODE_USE_ENV_PROXY",
        "NPM_CONFIG_CAFILE",
        "PIP_CERT",
        "AWS_CA_BUNDLE",
        "CARGO_HTTP_CAINFO",
        "DENO_CERT",
        "NIX_SSL_CERT_FILE",
        "HTTPLIB2_CA_CERTS",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        "JAVA_TOOL_OPTIONS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
    ] {
        assert!(
            stdout.contains(&format!("export {name}=")),
            "{name} missing:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("export HTTPS_PROXY='http://127.0.0.1:18080'"),
        "{stdout}"
    );
    assert!(stdout.contains("export TOKEN='ks-ph-vcrd_a'"), "{stdout}");
    assert!(!stdout.contains("SECRET"), "{stdout}");
    // The lines are valid POSIX shell.
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!("{stdout}\necho \"$TOKEN $CURL_CA_BUNDLE\""))
        .output()
        .unwrap();
    let echoed = text(&sh.stdout);
    assert!(echoed.starts_with("ks-ph-vcrd_a /"), "{echoed}");
    let bundle = echoed.split_whitespace().nth(1).unwrap();
    assert!(
        std::fs::read_to_string(bundle)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
}

#[test]
fn run_without_a_config_file_uses_the_embedded_defaults_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .arg("run")
        .current_dir(dir.path())
        .env("KEYSWAP_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dir.path().join("certs/ca.pem").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    let log = text(&out.stderr);
    assert!(log.contains("embedded defaults"), "{log}");
    // Where the new CA is, as an absolute path without links (the temp dir may be one).
    let ca = std::fs::canonicalize(dir.path().join("certs/ca.pem")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("created a new CA") && l.contains(&*ca.to_string_lossy())),
        "{log}"
    );
    if log.contains("cannot listen") {
        return; // the default ports are taken on this machine; the fallback itself was shown
    }
    assert!(out.status.success(), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_joined_by_a_request_id() {
    let upstream = common::Upstream::http().await;
    let vault = "[[vaults]]\nid = \"vlt_j\"\n[[vaults.credentials]]\nid = \"vcrd_j\"\nauth = { type = \"environment_variable\", secret_name = \"J\", secret_value = \"SECRET_json\", networking = { type = \"unrestricted\" } }\n";
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nblock_private_addresses = false\nsubstitute_over_plain_http = true\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream.resolve]\n\"api.example.test\" = \"127.0.0.1\"\n{vault}"
    );
    common::write(dir.path(), "k.toml", &config);
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args(["--log-format", "json", "run", "--config", "k.toml"])
        .current_dir(dir.path())
        .env("KEYSWAP_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let proxy = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("keyswap logs");
        let parsed: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        lines.push(parsed.clone());
        if let Some(addr) = parsed["fields"]["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("proxy listening on "))
        {
            break addr.to_string();
        }
    };
    let url = format!("http://api.example.test:{}/", upstream.port());
    let out = common::curl(&[
        "--proxy",
        &format!("http://{proxy}"),
        "-H",
        "x: ks-ph-vcrd_j",
        &url,
    ])
    .await;
    assert_eq!(out.status, 200);
    assert_eq!(upstream.only().header("x"), Some("SECRET_json"));
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    while let Ok(line) = rx.try_recv() {
        let parsed: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains("SECRET"), "{line}");
        lines.push(parsed);
    }
    let summary = lines
        .iter()
        .find(|l| l["fields"]["message"] == "placeholders")
        .expect("the substitution summary");
    assert_eq!(summary["fields"]["credentials"], "vcrd_j=substituted");
    let id = &summary["span"]["id"];
    assert!(id.is_number(), "{summary}");
    let joined = lines.iter().filter(|l| &l["span"]["id"] == id).count();
    assert!(joined >= 2, "the request's lines share its id: {lines:#?}");
}

/// SPEC §8: a CA key, or a config file holding literal secrets, that group or others can read is
/// refused at start, with the `chmod` to run; `keyswap check` reports it the same way.
mod file_modes {
    use super::*;

    const LISTEN: &str = "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";

    /// `keyswap run --config k.toml` in `dir`: its exit code (None: still running after 10 s,
    /// then killed) and its stderr.
    fn run(dir: &std::path::Path) -> (Option<i32>, String) {
        let log = dir.join("run.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyswap"))
            .args(["run", "--config", "k.toml"])
            .current_dir(dir)
            .env("KEYSWAP_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, std::fs::read_to_string(log).unwrap_or_default())
    }

    fn chmod(path: &std::path::Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_config_with_literal_secrets_readable_by_others_is_refused_with_the_chmod() {
        let literal = [
            format!("{CRED_HEAD}auth.networking = {{ type = \"unrestricted\" }}\n"),
            "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth = { type = \"static_bearer\", mcp_server_url = \"https://mcp.example.com/\", token = \"SECRET_value\" }\n".to_string(),
            "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth = { type = \"mcp_oauth\", mcp_server_url = \"https://mcp.example.com/\", access_token_env = \"PATH\", refresh = { client_id = \"c\", token_endpoint = \"https://a.example.com/t\", refresh_token_env = \"PATH\", token_endpoint_auth = { type = \"client_secret_post\", client_secret = \"SECRET_value\" } } }\n".to_string(),
        ];
        for (body, mode) in literal.iter().zip([0o644, 0o640, 0o604]) {
            let dir = tempfile::tempdir().unwrap();
            let path = common::write(dir.path(), "k.toml", &format!("{LISTEN}{body}"));
            chmod(&path, mode);
            let out = keyswap(&["check", "--config", "k.toml"], dir.path(), &[]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{mode:o}: {stderr}");
            assert!(stderr.contains("chmod 600 k.toml"), "{mode:o}: {stderr}");
            assert!(!stderr.contains("SECRET_value"), "{stderr}");
            let (code, log) = run(dir.path());
            assert!(code.is_some_and(|c| c != 0), "{mode:o}: {code:?} {log}");
            assert!(log.contains("chmod 600 k.toml"), "{mode:o}: {log}");
            // Fixed as told, it is accepted.
            chmod(&path, 0o600);
            let out = keyswap(&["check", "--config", "k.toml"], dir.path(), &[]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        // Secrets by reference only: the file holds none, its mode is the operator's business.
        let dir = tempfile::tempdir().unwrap();
        let path = common::write(
            dir.path(),
            "k.toml",
            &format!(
                "{LISTEN}[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth = {{ type = \"environment_variable\", secret_name = \"T\", secret_value_env = \"PATH\", networking = {{ type = \"unrestricted\" }} }}\n"
            ),
        );
        chmod(&path, 0o644);
        let out = keyswap(&["check", "--config", "k.toml"], dir.path(), &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    #[test]
    fn a_ca_key_readable_by_others_is_refused_with_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        common::write(dir.path(), "k.toml", LISTEN);
        let out = keyswap(&["ca", "--config", "k.toml"], dir.path(), &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let key = dir.path().join("certs/ca-key.pem");
        chmod(&key, 0o644);
        let (code, log) = run(dir.path());
        assert!(code.is_some_and(|c| c != 0), "{code:?} {log}");
        assert!(log.contains("chmod 600 certs/ca-key.pem"), "{log}");
        let out = keyswap(&["check", "--config", "k.toml"], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("chmod 600 certs/ca-key.pem"),
            "{}",
            text(&out.stderr)
        );
        chmod(&key, 0o600);
        let out = keyswap(&["check", "--config", "k.toml"], dir.path(), &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// Java ignores every CA variable but its trust store: `keyswap ca` writes `ca-bundle.p12`, which the
/// real `keytool` lists as trusted certificates (and refuses with a wrong password: the MAC holds),
/// and a Java 17 `HttpClient` configured only by `keyswap env`'s JAVA_TOOL_OPTIONS reaches an
/// upstream through keyswap with the secret substituted.
#[tokio::test(flavor = "multi_thread")]
async fn java_trusts_the_pkcs12_store_and_goes_through_keyswap_by_java_tool_options() {
    use std::path::Path;
    if !Path::new("/usr/bin/keytool").exists() || !Path::new("/usr/bin/java").exists() {
        assert!(
            std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
            "Java 17 is required here but not installed"
        );
        eprintln!("skipped: java is not installed");
        return;
    }
    let ca = common::TestCa::new();
    let upstream = common::Upstream::https(&ca).await;
    let proxy_process = common::Keyswap::start(
        &ca,
        common::Setup {
            proxy: "block_private_addresses = false",
            rest: &format!(
                "{CRED_HEAD}auth.networking = {{ type = \"limited\", allowed_hosts = [\"api.example.test\"] }}\n"
            ),
            ..common::Setup::default()
        },
    );
    let dir = proxy_process.dir.path();
    let config = proxy_process.config_path();
    let config = config.to_str().unwrap();
    let store = proxy_process.ca_path().with_file_name("ca-bundle.p12");
    let list = Command::new("keytool")
        .args([
            "-list",
            "-storetype",
            "PKCS12",
            "-storepass",
            "changeit",
            "-keystore",
        ])
        .arg(&store)
        .output()
        .unwrap();
    let listing = text(&list.stdout);
    assert!(list.status.success(), "{listing}{}", text(&list.stderr));
    assert!(
        listing.contains("keyswap-ca,") && listing.contains("trustedCertEntry"),
        "{listing}"
    );
    let wrong = Command::new("keytool")
        .args([
            "-list",
            "-storetype",
            "PKCS12",
            "-storepass",
            "wrong-pw",
            "-keystore",
        ])
        .arg(&store)
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    // The config listens on port 0; the operator says where keyswap really is.
    let proxy = proxy_process.proxy_url();
    let out = keyswap(
        &[
            "env",
            "--config",
            config,
            "--format",
            "json",
            "--proxy-url",
            &proxy,
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vars: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let options = vars["JAVA_TOOL_OPTIONS"].as_str().unwrap().to_string();
    let url = format!("https://api.example.test:{}/java", upstream.port());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/Fetch.java");
    let java = tokio::process::Command::new("java")
        .env("JAVA_TOOL_OPTIONS", &options)
        .arg(&source)
        .args([url.as_str(), "x-token", "ks-ph-vcrd_a"])
        .output()
        .await
        .unwrap();
    let stdout = text(&java.stdout);
    assert!(java.status.success(), "{stdout}{}", text(&java.stderr));
    assert!(stdout.starts_with("200 HTTP_2"), "{stdout}");
    assert_eq!(upstream.only().header("x-token"), Some("SECRET_value"));
    assert!(
        stdout.contains("ks-ph-vcrd_a") && !stdout.contains("SECRET"),
        "{stdout}"
    );
}
