//! The transparent listener (SPEC §12) behind a real nftables `redirect`, with clients in a
//! network namespace the test makes (tests/common/netns.rs) and an upstream in another: the
//! destination is bound from the SNI or `Host` and the original address together; a name that does
//! not resolve to the address dialled, a ClientHello without SNI, and an address no session claims
//! are closed with nothing forwarded; nothing of the lab is left behind.

use crate::common;

use std::path::Path;

use common::netns::{self, Lab};
use common::{Keyswap, Setup, TestCa, python};

const NAME: &str = "svc.transparent.test";
/// The same upstream by its IPv6 address.
const NAME6: &str = "svc6.transparent.test";

const VAULT: &str = r#"
[[vaults]]
id = "vlt_t"
[[vaults.credentials]]
id = "vcrd_t"
auth = { type = "environment_variable", secret_name = "T_TOKEN", secret_value = "SECRET_transparent_1", networking = { type = "limited", allowed_hosts = ["svc.transparent.test", "svc6.transparent.test"] } }
"#;

struct World {
    lab: Lab,
    keyswap: Keyswap,
    bundle: std::path::PathBuf,
    _upstream: tokio::process::Child,
    _dir: tempfile::TempDir,
}

async fn start(python: &Path, sessions: &str, listen: &str) -> World {
    let ca = TestCa::new();
    let mut lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf_pem(&[NAME, NAME6]);
    let cert_path = common::write(dir.path(), "cert.pem", &cert);
    let key_path = common::write(dir.path(), "key.pem", &key);
    let mut upstream = Lab::exec(&lab.upstream_ns, &[python.to_str().unwrap()])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/echo_https.py"))
        .args([
            "--bind",
            if netns::ipv6() {
                "::"
            } else {
                &lab.upstream_ip
            },
            "--port",
            "443",
            "--http-port",
            "80",
            "--cert",
        ])
        .arg(&cert_path)
        .arg("--key")
        .arg(&key_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for "ready".
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(upstream.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    let listen = if listen.is_empty() {
        lab.host_ip.clone()
    } else {
        listen.to_string()
    };
    let proxy = format!("block_private_addresses = false\ntransparent_listen = \"{listen}:0\"");
    let rest = format!("{VAULT}{sessions}");
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: &proxy,
            rest: &rest,
            resolve: &[(NAME, &lab.upstream_ip), (NAME6, &lab.upstream_ip6)],
            ..Setup::default()
        },
    );
    let line = keyswap.wait_log("transparent listening on ");
    let port: u16 = line
        .lines()
        .find_map(|l| l.split("transparent listening on ").nth(1))
        .and_then(|a| a.trim().rsplit(':').next()?.parse().ok())
        .expect("transparent port");
    lab.redirect_tcp_to(port);
    let bundle = keyswap.client_bundle(&ca);
    World {
        lab,
        keyswap,
        bundle,
        _upstream: upstream,
        _dir: dir,
    }
}

impl World {
    /// curl inside the client namespace, with no proxy setting: `--resolve` is the client's
    /// own idea of where NAME is.
    async fn curl(&self, url: &str, resolve_to: &str) -> (i32, String) {
        let port = if url.starts_with("https") { 443 } else { 80 };
        let name = if url.contains(NAME6) { NAME6 } else { NAME };
        let resolve = format!("{name}:{port}:{resolve_to}");
        let out = Lab::exec(
            &self.lab.client_ns,
            &["curl", "-sS", "--max-time", "10", "--noproxy", "*"],
        )
        .args(["--resolve", &resolve, "--cacert"])
        .arg(&self.bundle)
        .args(["-H", "x-token: ks-ph-vcrd_t", url])
        .output()
        .await
        .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redirected_tls_and_http_are_bound_to_sni_or_host_and_the_original_address() {
    if !netns::available() {
        return;
    }
    let Some(python) = python() else { return };
    let w = start(&python, "", "").await;
    let id = w.lab.id.clone();
    let upstream_ip = w.lab.upstream_ip.clone();
    // TLS: the secret reaches the upstream, its echo comes back as the placeholder.
    let (code, out) = w.curl(&format!("https://{NAME}/x"), &upstream_ip).await;
    assert_eq!(code, 0, "{out}\n{}", w.keyswap.log());
    assert!(
        out.contains("ks-ph-vcrd_t") && !out.contains("SECRET_transparent_1"),
        "{out}"
    );
    assert!(
        w.keyswap.log().contains("vcrd_t=substituted"),
        "{}",
        w.keyswap.log()
    );
    // Plain HTTP: bound by Host; the secret does not go over plain HTTP by default.
    let (code, out) = w.curl(&format!("http://{NAME}/y"), &upstream_ip).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"/y\""), "{out}");
    assert!(!out.contains("SECRET_transparent_1"), "{out}");
    // The name resolves elsewhere than the address dialled: closed, nothing forwarded.
    let elsewhere = w.lab.host_ip.clone();
    let (code, out) = w.curl(&format!("https://{NAME}/z"), &elsewhere).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        w.keyswap
            .wait_log("host-mismatch")
            .contains("host-mismatch")
    );
    // No SNI (an address as the URL): closed.
    let (code, out) = w
        .curl(&format!("https://{upstream_ip}/"), &upstream_ip)
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(
        w.keyswap
            .wait_log("TLS without SNI")
            .contains("TLS without SNI")
    );
    drop(w);
    let leftover = netns::traces(&id);
    assert!(leftover.is_empty(), "left behind: {leftover:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_address_no_session_claims_is_closed() {
    if !netns::available() {
        return;
    }
    let Some(python) = python() else { return };
    let sessions = "\n[[sessions]]\nid = \"sesn_other\"\nvault_ids = [\"vlt_t\"]\nsource_cidrs = [\"10.213.255.0/24\"]\n";
    let w = start(&python, sessions, "").await;
    let upstream_ip = w.lab.upstream_ip.clone();
    let (code, out) = w.curl(&format!("https://{NAME}/x"), &upstream_ip).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        w.keyswap
            .wait_log("no session claims")
            .contains("no session claims")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dual_stack_listener_binds_ipv6_and_ipv4_redirected_connections() {
    if !netns::available() || !netns::ipv6() {
        return;
    }
    let Some(python) = python() else { return };
    let w = start(&python, "", "[::]").await;
    let upstream6 = format!("[{}]", w.lab.upstream_ip6);
    // IPv6: the original destination from IP6T_SO_ORIGINAL_DST.
    let (code, out) = w.curl(&format!("https://{NAME6}/v6"), &upstream6).await;
    assert_eq!(code, 0, "{out}\n{}", w.keyswap.log());
    assert!(out.contains("/v6") && out.contains("ks-ph-vcrd_t"), "{out}");
    assert!(!out.contains("SECRET_transparent_1"), "{out}");
    // IPv4 on the same listener arrives v4-mapped: still SO_ORIGINAL_DST's IPv4 answer.
    let upstream4 = w.lab.upstream_ip.clone();
    let (code, out) = w.curl(&format!("https://{NAME}/v4"), &upstream4).await;
    assert_eq!(code, 0, "{out}\n{}", w.keyswap.log());
    // The IPv6 name dialled at the IPv4 address: not what it resolves to.
    let (code, out) = w.curl(&format!("https://{NAME6}/x"), &upstream4).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        w.keyswap
            .wait_log("host-mismatch")
            .contains("host-mismatch")
    );
}
