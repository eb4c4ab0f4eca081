//! Real upstream servers (SPEC §9): nginx from Debian's package, started by the test on
//! 127.0.0.1 with a leaf from the test CA, serving HTTP/2 and HTTP/1.1 on one port (by ALPN) and
//! HTTP/1.1 only on another. Its access log records what it received (the `x-token` header and the
//! protocol), so assertions read what a real server got; its answer reflects the token, so the
//! client side checks scrubbing against a real server too.
//!
//! `.ci/run` installs nginx and sets `KEYSWAP_EXTERNAL_TOOLS=required`; elsewhere a missing nginx
//! skips these tests with a note.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::nginx::{Nginx, World, free_port, keyswap};
use common::{Keyswap, TestCa, curl};

/// One curl through keyswap for every URL (`args` first: protocol, --parallel…); each
/// transfer's `status version`, one a line, and curl's stderr.
async fn curl_each(
    keyswap: &Keyswap,
    bundle: &Path,
    args: &[&str],
    urls: &[String],
) -> (String, String) {
    let mut command = tokio::process::Command::new("curl");
    command.arg("-sS").args(args);
    command.args(["--proxy", &keyswap.proxy_url()]);
    command.args(["--cacert", bundle.to_str().unwrap()]);
    command.args(["-w", "%{http_code} %{http_version}\n"]);
    for url in urls {
        command.args(["-o", "/dev/null", url]);
    }
    let out = command.output().await.unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every client protocol against nginx's HTTP/2 and HTTP/1.1 ports: each request is accepted (no
/// 400 for a duplicate Host), nginx received the secret over the protocol expected, and the
/// reflected secret comes back to the client as the placeholder.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_over_http2_and_http1_receives_the_secret_and_the_client_never_sees_it() {
    let Some(w) = World::start() else {
        return;
    };
    let nginx = &w.nginx;
    for (port, upstream_protocol) in [(nginx.h2, "HTTP/2.0"), (nginx.h1, "HTTP/1.1")] {
        for client in ["--http2", "--http1.1"] {
            let url = format!("https://api.example.test:{port}/hello");
            let out = w
                .curl(&[client, "-H", "x-token: ks-ph-vcrd_real", &url])
                .await;
            assert_eq!(
                out.status,
                200,
                "{client} to {upstream_protocol}: {out:?}\n{}",
                nginx.error_log()
            );
            assert_eq!(
                out.body,
                format!("token=ks-ph-vcrd_real protocol={upstream_protocol}\n"),
                "{client} to {upstream_protocol}: the reflection is scrubbed"
            );
            let seen = nginx.seen_on(port);
            let last = seen.last().expect("nginx logged the request");
            assert!(
                last.contains(&format!(
                    "{upstream_protocol} GET /hello token=[SECRET_for_nginx_42]"
                )),
                "{last}"
            );
        }
    }
    assert!(
        !nginx.error_log().contains("duplicate host"),
        "{}",
        nginx.error_log()
    );
}

/// A POST with a body (substituted whole) and many multiplexed HTTP/2 streams at once.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_takes_bodies_and_many_multiplexed_streams() {
    let Some(w) = World::start() else {
        return;
    };
    let World {
        nginx,
        keyswap,
        bundle,
    } = &w;
    let url = format!("https://api.example.test:{}/upload", nginx.h2);
    let body = "{\"token\":\"ks-ph-vcrd_real\"}";
    let out = w.curl(&["--http2", "--data-binary", body, &url]).await;
    assert_eq!(out.status, 200, "{out:?}\n{}", nginx.error_log());
    assert_eq!(out.body, "received\n");
    // 50 streams at once on one connection (curl multiplexes --parallel transfers over HTTP/2).
    let urls: Vec<String> = (0..50)
        .map(|i| format!("https://api.example.test:{}/s{i}", nginx.h2))
        .collect();
    let args = [
        "--http2",
        "--parallel",
        "--parallel-max",
        "50",
        "-H",
        "x-token: ks-ph-vcrd_real",
    ];
    let (report, _) = curl_each(keyswap, bundle, &args, &urls).await;
    assert_eq!(report.lines().count(), 50, "{report}");
    assert!(report.lines().all(|l| l.starts_with("200 2")), "{report}");
    let seen = nginx.seen_on(nginx.h2);
    for i in 0..50 {
        assert!(
            seen.iter()
                .any(|l| l.contains(&format!("HTTP/2.0 GET /s{i} token=[SECRET_for_nginx_42]"))),
            "/s{i} missing: {seen:?}"
        );
    }
}

const APACHE: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";

/// Apache httpd (Debian's package) on 127.0.0.1 with mod_ssl and mod_http2 (`Protocols h2
/// http/1.1`), serving `git http-backend` under `/git/` behind Basic authentication: user
/// `x-access-token`, password the real token — as GitHub does. Killed on drop.
struct Apache {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Apache {
    fn start(ca: &TestCa, password: &str) -> Option<Apache> {
        if !Path::new(APACHE).exists() {
            assert!(
                std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
                "apache2 is required here but not installed (apt-get install apache2)"
            );
            eprintln!("skipped: apache2 is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // Apache's children run as www-data: they read the tree and write the repository.
        run(Command::new("chmod").args(["755", &d]));
        let (cert, key) = ca.leaf_pem(common::NAMES);
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        run(Command::new("htpasswd").args([
            "-cbB",
            &format!("{d}/htpasswd"),
            "x-access-token",
            password,
        ]));
        // A bare repository with one commit, pushable over HTTP.
        let seed = dir.path().join("seed");
        run(Command::new("git").args([
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &format!("{d}/repos/project.git"),
        ]));
        run(Command::new("git").args([
            "-C",
            &format!("{d}/repos/project.git"),
            "config",
            "http.receivepack",
            "true",
        ]));
        run(Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .arg(&seed));
        std::fs::write(seed.join("README"), "hello\n").unwrap();
        run(Command::new("git")
            .arg("-C")
            .arg(&seed)
            .args(["add", "README"]));
        run(Command::new("git").arg("-C").arg(&seed).args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "first",
        ]));
        run(Command::new("git").arg("-C").arg(&seed).args([
            "push",
            "-q",
            &format!("{d}/repos/project.git"),
            "main",
        ]));
        run(Command::new("chown").args(["-R", "www-data:www-data", &format!("{d}/repos")]));
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let backend = format!(
            "{}/git-http-backend",
            String::from_utf8_lossy(&exec_path.stdout).trim()
        );
        let port = free_port();
        let modules = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("authn_core_module", "mod_authn_core.so"),
            ("authn_file_module", "mod_authn_file.so"),
            ("auth_basic_module", "mod_auth_basic.so"),
            ("authz_user_module", "mod_authz_user.so"),
            ("ssl_module", "mod_ssl.so"),
            ("http2_module", "mod_http2.so"),
            ("cgid_module", "mod_cgid.so"),
            ("alias_module", "mod_alias.so"),
            ("env_module", "mod_env.so"),
        ]
        .iter()
        .map(|(name, file)| format!("LoadModule {name} {MODULES}/{file}\n"))
        .collect::<String>();
        let conf = format!(
            r#"ServerRoot "{d}"
ServerName api.example.test
PidFile {d}/httpd.pid
Listen 127.0.0.1:{port}
{modules}
User www-data
Group www-data
ErrorLog {d}/error.log
LogLevel warn
LogFormat "%{{local}}p %H %m %U token=[%{{x-token}}i] user=[%u] status=%>s" seen
CustomLog {d}/access.log seen
ScriptSock {d}/cgisock
DocumentRoot {d}
<VirtualHost 127.0.0.1:{port}>
    SSLEngine on
    SSLCertificateFile {d}/cert.pem
    SSLCertificateKeyFile {d}/key.pem
    Protocols h2 http/1.1
    SetEnv GIT_PROJECT_ROOT {d}/repos
    SetEnv GIT_HTTP_EXPORT_ALL 1
    ScriptAlias /git/ {backend}/
    <Location /git/>
        AuthType Basic
        AuthName "git"
        AuthUserFile {d}/htpasswd
        Require valid-user
    </Location>
    <Directory "{exec_dir}">
        Require all granted
    </Directory>
</VirtualHost>
"#,
            exec_dir = Path::new(&backend).parent().unwrap().display(),
        );
        let conf_path = dir.path().join("httpd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(APACHE)
            .arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let apache = Apache { child, dir, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "apache did not start: {}",
                apache.log("error.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(apache)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The log once it holds `line`, or as it is after five seconds: Apache writes an access
    /// line after it has sent the answer, so a client can be done before the line is.
    fn log_with(&self, name: &str, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log(name);
            if log.contains(line) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// git clones and pushes through keyswap with a placeholder as the password in the URL (git sends
/// it as `Authorization: Basic` after Apache's 401): Apache lets git in only with the real token,
/// so a clone and a push that succeed prove the substitution inside Basic; and Apache serves h2.
#[tokio::test(flavor = "multi_thread")]
async fn git_clones_and_pushes_through_keyswap_to_apache_with_a_placeholder_password() {
    let ca = TestCa::new();
    let Some(apache) = Apache::start(&ca, "SECRET_for_nginx_42") else {
        return;
    };
    let keyswap = keyswap(&ca);
    let bundle = keyswap.client_bundle(&ca);
    let work = tempfile::tempdir().unwrap();
    let url = format!(
        "https://x-access-token:ks-ph-vcrd_real@api.example.test:{}/git/project.git",
        apache.port
    );
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.current_dir(work.path())
            .env("HTTPS_PROXY", keyswap.proxy_url())
            .env("GIT_SSL_CAINFO", &bundle)
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args);
        c
    };
    run(&mut git(&["clone", "-q", &url, "clone"]));
    assert_eq!(
        std::fs::read_to_string(work.path().join("clone/README")).unwrap(),
        "hello\n"
    );
    std::fs::write(work.path().join("clone/NEW"), "pushed\n").unwrap();
    run(&mut git(&["-C", "clone", "add", "NEW"]));
    run(&mut git(&["-C", "clone", "commit", "-qm", "second"]));
    run(&mut git(&["-C", "clone", "push", "-q", "origin", "main"]));
    let pushed =
        "POST /git/project.git/git-receive-pack token=[-] user=[x-access-token] status=200";
    let access = apache.log_with("access.log", pushed);
    assert!(access.contains(pushed), "{access}");
    // The remote URL the clone keeps holds the placeholder, never the token.
    let config = std::fs::read_to_string(work.path().join("clone/.git/config")).unwrap();
    assert!(
        config.contains("ks-ph-vcrd_real") && !config.contains("SECRET"),
        "{config}"
    );
    // Apache speaks HTTP/2 through keyswap too.
    let out = curl(&[
        "--http2",
        "--proxy",
        &keyswap.proxy_url(),
        "--cacert",
        bundle.to_str().unwrap(),
        "-u",
        "x-access-token:ks-ph-vcrd_real",
        &format!(
            "https://api.example.test:{}/git/project.git/info/refs?service=git-upload-pack",
            apache.port
        ),
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}\n{}", apache.log("error.log"));
    let fetched = "HTTP/2.0 GET /git/project.git/info/refs";
    let access = apache.log_with("access.log", fetched);
    assert!(access.contains(fetched), "{access}");
}

/// pip installs from a private index behind Basic authentication, through keyswap, configured
/// only by `keyswap env` (HTTPS_PROXY, PIP_CERT) with the placeholder in the index URL.
#[tokio::test(flavor = "multi_thread")]
async fn pip_installs_from_a_private_index_through_keyswap_with_a_placeholder_password() {
    let pip = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clients-venv/bin/pip");
    let ca = TestCa::new();
    let Some(nginx) = Nginx::start(&ca) else {
        return;
    };
    if !pip.exists() {
        assert!(
            std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
            "target/clients-venv is required here"
        );
        return;
    }
    let keyswap = keyswap(&ca);
    let out = Command::new(env!("CARGO_BIN_EXE_keyswap"))
        .args([
            "env",
            "--format",
            "json",
            "--proxy-url",
            &keyswap.proxy_url(),
            "--config",
        ])
        .arg(keyswap.config_path())
        .output()
        .unwrap();
    let vars: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    let target = tempfile::tempdir().unwrap();
    let index = format!(
        "https://__token__:ks-ph-vcrd_real@api.example.test:{}/simple/",
        nginx.h2
    );
    let out = tokio::process::Command::new(&pip)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())))
        .env("PIP_NO_CACHE_DIR", "1")
        .args([
            "install",
            "--disable-pip-version-check",
            "--no-deps",
            "--index-url",
            &index,
            "--target",
        ])
        .arg(target.path())
        .arg("ksdemo")
        .output()
        .await
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}\n{}", nginx.error_log());
    assert!(
        std::fs::read_to_string(target.path().join("ksdemo/__init__.py"))
            .unwrap()
            .contains("installed through keyswap")
    );
    assert!(!report.contains("SECRET"), "{report}");
    assert!(
        nginx
            .seen_on(nginx.h2)
            .iter()
            .any(|l| l.contains("/packages/ksdemo-0.1-py3-none-any.whl"))
    );
}

/// What differs between lenient test servers and real ones, against nginx over HTTP/2 and
/// HTTP/1.1: HEAD (no body, the length kept), a conditional GET answered 304, a large POST with
/// `Expect: 100-continue`, and `TE: trailers`.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_head_304_expect_continue_and_te_trailers_behave_as_they_would_directly() {
    let Some(World {
        nginx,
        keyswap,
        bundle,
    }) = World::start()
    else {
        return;
    };
    let proxy = keyswap.proxy_url();
    let body_dir = tempfile::tempdir().unwrap();
    let big = body_dir.path().join("big");
    std::fs::write(&big, "x".repeat(2 << 20)).unwrap();
    let big = format!("@{}", big.display());
    for (port, client) in [(nginx.h2, "--http2"), (nginx.h1, "--http1.1")] {
        let base = |path: &str| format!("https://api.example.test:{port}{path}");
        let common = [
            "--proxy",
            proxy.as_str(),
            "--cacert",
            bundle.to_str().unwrap(),
            client,
        ];
        let head = curl(&[&common[..], &["-I", &base("/static/file.txt")]].concat()).await;
        assert_eq!(head.status, 200, "{port}: {head:?}");
        // HEAD keeps the length of the body it does not carry (curl -I writes the head as its output).
        assert_eq!(
            head.headers.get("content-length").map(String::as_str),
            Some("15"),
            "{port}"
        );
        let etag = head.headers["etag"].clone();
        let cond = curl(
            &[
                &common[..],
                &[
                    "-H",
                    &format!("If-None-Match: {etag}"),
                    &base("/static/file.txt"),
                ],
            ]
            .concat(),
        )
        .await;
        assert_eq!(cond.status, 304, "{port}: {cond:?}");
        assert_eq!(cond.body, "");
        let get = curl(
            &[
                &common[..],
                &["-H", "TE: trailers", &base("/static/file.txt")],
            ]
            .concat(),
        )
        .await;
        assert_eq!(
            (get.status, get.body.as_str()),
            (200, "static content\n"),
            "{port}"
        );
        let post = curl(
            &[
                &common[..],
                &[
                    "-H",
                    "Expect: 100-continue",
                    "--data-binary",
                    big.as_str(),
                    &base("/upload"),
                ],
            ]
            .concat(),
        )
        .await;
        assert_eq!(
            (post.status, post.body.as_str()),
            (200, "received\n"),
            "{port}: {}",
            nginx.error_log()
        );
    }
}

/// Many tunnels to nginx's HTTP/2 port are multiplexed onto few upstream connections: at most
/// two per connection worker (the pool's, which each tunnel's first request takes, and the
/// worker's shared one for the rest), however many tunnels there are.
#[tokio::test(flavor = "multi_thread")]
async fn tunnels_to_an_http2_upstream_share_a_few_connections() {
    let Some(World {
        nginx,
        keyswap,
        bundle,
    }) = World::start()
    else {
        return;
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tunnels = 4 * workers + 4;
    let urls: Vec<String> = (0..4)
        .map(|i| format!("https://api.example.test:{}/m{i}", nginx.h2))
        .collect();
    let runs = (0..tunnels).map(|_| curl_each(&keyswap, &bundle, &["--http1.1"], &urls));
    for (codes, stderr) in futures_util::future::join_all(runs).await {
        assert_eq!(
            codes.lines().filter(|l| l.starts_with("200 ")).count(),
            4,
            "{codes}{stderr}"
        );
    }
    let seen = nginx.seen_on(nginx.h2);
    let multiplexed: Vec<&String> = seen.iter().filter(|l| l.contains(" /m")).collect();
    assert_eq!(multiplexed.len(), 4 * tunnels);
    assert!(multiplexed.iter().all(|l| l.contains(" HTTP/2.0 ")));
    let connections: std::collections::HashSet<&str> = multiplexed
        .iter()
        .filter_map(|l| l.rsplit("conn=").next())
        .collect();
    assert!(
        connections.len() <= 2 * workers,
        "{tunnels} tunnels used {} upstream connections ({workers} workers)",
        connections.len()
    );
}

/// nginx ends each connection after 5 requests (GOAWAY on HTTP/2, `Connection: close` on
/// HTTP/1.1): keyswap's pooled upstream connections are replaced without a client seeing an error,
/// for requests with a body too (a short one is held so it can be sent again).
#[tokio::test(flavor = "multi_thread")]
async fn upstream_goaway_and_connection_close_never_reach_the_client() {
    let Some(World {
        nginx,
        keyswap,
        bundle,
    }) = World::start()
    else {
        return;
    };
    // In parallel on HTTP/2, so requests race the GOAWAY on the shared upstream connection.
    let urls: Vec<String> = (0..40)
        .map(|i| format!("https://api.example.test:{}/r{i}", nginx.short))
        .collect();
    for client in [
        &["--http2", "--parallel", "--parallel-max", "10"][..],
        &["--http1.1"][..],
        &[
            "--http2",
            "--parallel",
            "--parallel-max",
            "10",
            "--data-binary",
            "{\"a\":1}",
        ][..],
    ] {
        let (codes, stderr) = curl_each(&keyswap, &bundle, client, &urls).await;
        assert_eq!(
            codes.lines().filter(|l| l.starts_with("200 ")).count(),
            40,
            "{client:?}: {codes}{stderr}\n{}",
            keyswap
                .log()
                .lines()
                .filter(|l| l.contains("upstream request failed") || l.contains("sent again"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    let seen = nginx.seen_on(nginx.short);
    assert!(seen.len() >= 120, "{}", seen.len());
    assert_eq!(seen.iter().filter(|l| l.contains(" POST /r")).count(), 40);
}
