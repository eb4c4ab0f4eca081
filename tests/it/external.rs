//! Attack tools no one here wrote, against the real binary on 127.0.0.1: `varnishtest` (HAProxy's
//! and Varnish's regression tool) sends the exact bytes of `tests/vtc/*.vtc` through keyswap and
//! checks what the origin received; `slowhttptest` runs slow-loris and slow-body attacks.
//!
//! `.ci/run` installs both from Debian's packages and sets `KEYSWAP_EXTERNAL_TOOLS=required`;
//! elsewhere a missing tool skips its test with a note.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Keyswap, Setup, TestCa, Upstream, curl};

/// Whether `tool` can run; panics when it is missing but required.
fn available(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
            "{tool} is required here but not installed (apt-get install varnish slowhttptest)"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

#[test]
fn varnishtest_scripts_pass_through_keyswap() {
    if !available("varnishtest") {
        return;
    }
    let ca = TestCa::new();
    let keyswap = Keyswap::start(&ca, Setup::default());
    let scripts: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vtc"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "vtc"))
            .collect();
    assert!(scripts.len() >= 7, "the .vtc scripts are missing");
    let out = Command::new("varnishtest")
        .args(["-q", "-k", "-t", "30", "-D"])
        .arg(format!("proxy={}", keyswap.proxy))
        .args(&scripts)
        .output()
        .expect("varnishtest runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "varnishtest failed:\n{report}");
    // The battery leaves keyswap serving.
    assert!(keyswap.log().contains("request refused before parsing"));
}

/// Runs slowhttptest through keyswap (as its proxy) and returns its final `Exit status` line
/// and the most connections it held open at once.
fn slowhttptest(keyswap: &Keyswap, origin: u16, mode: &str, dir: &Path) -> (String, u32) {
    let csv = dir.join("run");
    let out = Command::new("slowhttptest")
        .arg(mode)
        .args([
            "-c", "50", "-r", "50", "-i", "1", "-x", "10", "-l", "20", "-p", "3", "-s", "8192",
            "-g", "-o",
        ])
        .arg(&csv)
        .arg("-d")
        .arg(keyswap.proxy.to_string())
        .arg("-u")
        .arg(format!("http://127.0.0.1:{origin}/"))
        .output()
        .expect("slowhttptest runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let exit = text
        .lines()
        .map(strip_ansi)
        .find_map(|l| l.trim().strip_prefix("Exit status: ").map(str::to_string))
        .unwrap_or_else(|| panic!("no exit status in:\n{text}"));
    let table = std::fs::read_to_string(dir.join("run.csv")).unwrap_or_default();
    let most = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(3)?.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    (exit, most)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn open_connections(keyswap: &Keyswap) -> String {
    let metrics = curl(&[&format!("http://{}/metrics", keyswap.admin)])
        .await
        .body;
    metrics
        .lines()
        .find(|l| l.starts_with("keyswap_open_connections "))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_slow_body_connections_are_all_closed() {
    if !available("slowhttptest") {
        return;
    }
    let ca = TestCa::new();
    let origin = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: "[limits]\nheader_read_timeout_secs = 2\n",
            ..Setup::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    for (mode, logged) in [
        (
            "-H",
            "the request head was not complete within the header timeout",
        ),
        ("-B", "request body slower than"),
    ] {
        let started = Instant::now();
        let (exit, most) = {
            let (k, d) = (&keyswap, dir.path());
            tokio::task::block_in_place(|| slowhttptest(k, origin.port(), mode, d))
        };
        assert_eq!(
            exit, "No open connections left",
            "{mode}: keyswap left connections open"
        );
        assert!(most >= 40, "{mode}: only {most} connections were ever open");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1),
            "{mode}: closed at once ({took:?}): not a timeout"
        );
        assert!(took < Duration::from_secs(15), "{mode}: took {took:?}");
        assert!(
            keyswap.log().contains(logged),
            "{mode}: not cut off by its own rule"
        );
        // Nothing is left counted as open once the attack ends.
        let mut gauge = String::new();
        for _ in 0..20 {
            gauge = open_connections(&keyswap).await;
            if gauge == "keyswap_open_connections 0" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(gauge, "keyswap_open_connections 0", "{mode}");
    }
    // Still serving.
    let url = format!("http://api.example.test:{}/after", origin.port());
    let out = curl(&["--proxy", &keyswap.proxy_url(), &url]).await;
    assert_eq!(out.status, 200, "{out:?}");
}
