//! More of what real servers do, against nginx from Debian's package (SPEC §9): a WebSocket
//! through nginx to a real WebSocket server, a 1 GiB upload streamed with flat memory, answers
//! whose length masking changes (HTTP/2 and HTTP/1.1), and several names on one port (one pooled
//! connection per name, a `421` passed on as it came).
//!
//! `.ci/run` installs nginx and the Python clients and sets `KEYSWAP_EXTERNAL_TOOLS=required`;
//! elsewhere a missing tool skips these tests with a note.

use crate::common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nginx::World;
use common::{python, sandbox_env};

const SECRET: &str = "SECRET_for_nginx_42";
const PLACEHOLDER: &str = "ks-ph-vcrd_real";

/// A Python `websockets` server behind nginx's `/ws`, and the same library's client configured by
/// `keyswap env` alone: the handshake's placeholder reaches the server as the secret (nginx logs
/// it), the server's greeting that repeats it comes back masked, and messages flow both ways —
/// through nginx's HTTP/2-capable port (keyswap's upgrade takes its own HTTP/1.1 connection) and
/// its HTTP/1.1 port.
#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_through_nginx_gets_the_secret_and_never_returns_it() {
    let Some(python) = python() else { return };
    let Some(World { nginx, keyswap, .. }) = World::start() else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws.py");
    let mut server = Command::new(&python)
        .args([script, "serve", &nginx.ws_backend.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready, "listening\n");
    let env = sandbox_env(&keyswap);
    for port in [nginx.h2, nginx.h1] {
        let url = format!("wss://api.example.test:{port}/ws");
        let out = tokio::process::Command::new(&python)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args([script, "connect", &url, PLACEHOLDER])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{port}: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            nginx.error_log()
        );
        assert_eq!(
            stdout,
            format!("hello, Bearer {PLACEHOLDER}\necho {PLACEHOLDER}\n"),
            "{port}: the greeting repeating the secret is masked"
        );
        assert!(!stdout.contains(SECRET));
    }
    let _ = server.kill();
    let _ = server.wait();
    // nginx writes the access line when the WebSocket ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    let upgraded = loop {
        let seen: Vec<String> = [nginx.h2, nginx.h1]
            .iter()
            .flat_map(|&p| nginx.seen_on(p))
            .filter(|l| l.contains("GET /ws"))
            .collect();
        if seen.len() == 2 || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(upgraded.len(), 2, "{upgraded:?}");
    for line in &upgraded {
        assert!(line.contains("HTTP/1.1 GET /ws"), "{line}");
        assert!(line.contains(&format!("auth=[Bearer {SECRET}]")), "{line}");
    }
}

/// A 1 GiB `PUT` from curl over HTTP/2, with a placeholder at its start and end, streamed
/// through keyswap to nginx's WebDAV store: nginx stores every byte with both placeholders
/// replaced, and keyswap's memory never grows with the body.
#[tokio::test(flavor = "multi_thread")]
async fn a_gibibyte_upload_streams_to_nginx_substituted_with_flat_memory() {
    let Some(World {
        nginx,
        keyswap,
        bundle,
    }) = World::start()
    else {
        return;
    };
    const GIB: usize = 1 << 30;
    let url = format!("https://api.example.test:{}/dav/big", nginx.h2);
    let mut child = Command::new("curl")
        .args(["-sS", "--http2", "-T", "-", "-o", "/dev/null"])
        .args(["-w", "%{http_code}"])
        .args(["--proxy", &keyswap.proxy_url()])
        .args(["--cacert", bundle.to_str().unwrap(), &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let block = vec![b'x'; 1 << 20];
        stdin.write_all(PLACEHOLDER.as_bytes()).unwrap();
        for _ in 0..GIB >> 20 {
            stdin.write_all(&block).unwrap();
        }
        stdin.write_all(PLACEHOLDER.as_bytes()).unwrap();
    });
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    writer.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        nginx.error_log()
    );
    let stored = nginx.root().join("dav/big");
    let length = std::fs::metadata(&stored).unwrap().len() as usize;
    assert_eq!(length, GIB + 2 * SECRET.len());
    let mut file = std::fs::File::open(&stored).unwrap();
    let mut edge = vec![0; SECRET.len()];
    std::io::Read::read_exact(&mut file, &mut edge).unwrap();
    assert_eq!(edge, SECRET.as_bytes());
    std::io::Seek::seek(&mut file, std::io::SeekFrom::End(-(SECRET.len() as i64))).unwrap();
    std::io::Read::read_exact(&mut file, &mut edge).unwrap();
    assert_eq!(edge, SECRET.as_bytes());
    std::fs::remove_file(&stored).unwrap();
    let peak = common::peak_rss_kib(keyswap.pid());
    assert!(peak < 64 << 10, "keyswap's peak RSS {peak} KiB");
    eprintln!("1 GiB upload: keyswap peak RSS {peak} KiB");
}

/// Answers that carry the secret, short (masked whole, exact `Content-Length`) and long (streamed
/// without one), from nginx's HTTP/2 and HTTP/1.1 ports to curl over both: every body arrives
/// whole and masked, and any `Content-Length` the client gets is the length of what it got (a
/// wrong one is an HTTP/2 stream error or a truncated HTTP/1.1 body).
#[tokio::test(flavor = "multi_thread")]
async fn answers_whose_length_masking_changes_arrive_whole_over_both_protocols() {
    let Some(w) = World::start() else {
        return;
    };
    let nginx = &w.nginx;
    let body = |filler: usize| {
        let half = "y".repeat(filler / 2);
        format!("{SECRET}{half}{SECRET}{half}{SECRET}")
    };
    let files = [("short.txt", body(1 << 10)), ("long.txt", body(300 << 10))];
    for (name, text) in &files {
        std::fs::write(nginx.root().join("static").join(name), text).unwrap();
    }
    for port in [nginx.h2, nginx.h1] {
        for client in ["--http2", "--http1.1"] {
            for (name, text) in &files {
                let url = format!("https://api.example.test:{port}/static/{name}");
                let out = w.curl(&[client, &url]).await;
                let what = format!("{name} from {port} over {client}");
                assert_eq!(out.status, 200, "{what}: {out:?}");
                assert_eq!(
                    out.body,
                    text.replace(SECRET, PLACEHOLDER),
                    "{what}: {}",
                    out.stderr
                );
                if let Some(length) = out.headers.get("content-length") {
                    assert_eq!(length, &out.body.len().to_string(), "{what}");
                }
                assert!(out.stderr.is_empty(), "{what}: {}", out.stderr);
            }
        }
    }
}

/// Two names on one nginx port (one server each, chosen by SNI and `:authority`): keyswap keeps a
/// connection per name, so each request reaches its own server, never one coalesced onto the
/// other's HTTP/2 connection; a name nginx does not serve gets nginx's `421` as it came.
#[tokio::test(flavor = "multi_thread")]
async fn each_name_on_a_shared_port_reaches_its_own_server_and_a_421_passes_through() {
    let Some(w) = World::start() else {
        return;
    };
    for round in 0..3 {
        for (name, answer) in [("api", "api\n"), ("other", "other\n")] {
            let url = format!("https://{name}.example.test:{}/r{round}", w.nginx.named);
            let out = w.curl(&["--http2", &url]).await;
            assert_eq!((out.status, out.body.as_str()), (200, answer), "{url}");
        }
    }
    let url = format!("https://wild.example.test:{}/", w.nginx.named);
    let out = w.curl(&["--http2", &url]).await;
    assert_eq!((out.status, out.body.as_str()), (421, "misdirected\n"));
}

/// oha (the Rust load generator, built by `.ci/run` into `target/tools`) through keyswap to nginx,
/// over HTTP/1.1 and HTTP/2 to keyswap, a placeholder in every request: every answer is a 200, and
/// nginx received the secret in every one. (`--no-pre-lookup`: oha would otherwise resolve the
/// target's name itself before using the proxy.)
#[tokio::test(flavor = "multi_thread")]
async fn oha_loads_nginx_through_keyswap_with_every_request_substituted() {
    let oha = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/oha");
    if !oha.exists() {
        assert!(
            std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
            "target/tools/bin/oha is required here (cargo install oha --root target/tools)"
        );
        eprintln!("skipped: no target/tools/bin/oha");
        return;
    }
    let Some(World {
        nginx,
        keyswap,
        bundle,
    }) = World::start()
    else {
        return;
    };
    const N: usize = 400;
    for (protocol, path) in [("--http-version=1.1", "/oha1"), ("--http2", "/oha2")] {
        let url = format!("https://api.example.test:{}{path}", nginx.h2);
        let out = tokio::process::Command::new(&oha)
            .args([
                "-n",
                &N.to_string(),
                "-c",
                "8",
                "--no-tui",
                "--no-pre-lookup",
            ])
            .args(["--output-format", "json", protocol])
            .args(["-x", &keyswap.proxy_url()])
            .args(["--cacert", bundle.to_str().unwrap()])
            .args(["-H", &format!("x-token: {PLACEHOLDER}"), &url])
            .output()
            .await
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{protocol}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            report["statusCodeDistribution"]["200"].as_u64(),
            Some(N as u64),
            "{protocol}: {report}"
        );
        let got = nginx
            .seen_on(nginx.h2)
            .iter()
            .filter(|l| l.contains(&format!("GET {path} token=[{SECRET}]")))
            .count();
        assert_eq!(got, N, "{protocol}");
    }
}
