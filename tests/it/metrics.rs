//! `/metrics`: counters move by exactly what was done, and no secret or placeholder appears.

use crate::common;

use common::{Keyswap, Setup, TestCa, Upstream, curl};

const VAULT: &str = r#"
[[vaults]]
id = "vlt_m"
[[vaults.credentials]]
id = "vcrd_m"
auth = { type = "environment_variable", secret_name = "M", secret_value = "SECRET_metrics", networking = { type = "limited", allowed_hosts = ["api.example.test"] }, injection_location = { header = true, query = true } }
"#;

async fn scrape(keyswap: &Keyswap) -> String {
    let out = curl(&[&format!("http://{}/metrics", keyswap.admin)]).await;
    assert_eq!(out.status, 200);
    out.body
}

/// The value of the sample whose line starts with `series` (0 when absent).
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_move_by_exactly_what_happened() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            rest: VAULT,
            ..Setup::default()
        },
    );
    let bundle = keyswap.client_bundle(&ca);
    let proxy = keyswap.proxy_url();
    let base = |host: &str| format!("https://{host}:{}", upstream.port());
    let before = scrape(&keyswap).await;

    let url = format!("{}/x?k=ks-ph-vcrd_m", base("api.example.test"));
    for _ in 0..2 {
        curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            bundle.to_str().unwrap(),
            "-H",
            "x: ks-ph-vcrd_m",
            &url,
        ])
        .await;
    }
    let other = format!("{}/", base("other.example.test"));
    curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        bundle.to_str().unwrap(),
        "-H",
        "x: ks-ph-vcrd_m",
        &other,
    ])
    .await;
    let mismatch = base("api.example.test");
    curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        bundle.to_str().unwrap(),
        "-H",
        "Host: other.example.test",
        &mismatch,
    ])
    .await;

    // Refused at each edge: before hyper parses (a request line with a bare LF), as a plain
    // request (a 407 for a URI that is not absolute), and a CONNECT to a port nothing serves.
    let mut raw = tokio::net::TcpStream::connect(keyswap.proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        b"GET http://api.example.test/ HTTP/1.1\nHost: x\n\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let plain = curl(&["--proxy", &proxy, "http://api.example.test:9/"]).await;
    assert_eq!(plain.status, 502, "{plain:?}");

    let after = scrape(&keyswap).await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    // Each refusal is counted once, by the edge that answered it.
    assert_eq!(
        delta(r#"keyswap_requests_total{outcome="bad-request"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"keyswap_requests_total{outcome="upstream-connect"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"keyswap_substitutions_total{credential_id="vcrd_m",location="header"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"keyswap_substitutions_total{credential_id="vcrd_m",location="query"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"keyswap_out_of_scope_placeholders_total{credential_id="vcrd_m"}"#),
        1.0
    );
    assert_eq!(delta(r#"keyswap_requests_total{outcome="forwarded"}"#), 3.0);
    assert_eq!(
        delta(r#"keyswap_requests_total{outcome="host-mismatch"}"#),
        1.0
    );
    assert_eq!(delta(r#"keyswap_tunnels_total{mode="intercepted"}"#), 4.0);
    assert_eq!(delta("keyswap_upstream_latency_seconds_count"), 3.0);
    assert!(value(&after, "keyswap_certificates_minted") >= 2.0);
    assert!(
        value(&after, "keyswap_certificate_cache_size") >= 2.0,
        "{after}"
    );
    assert!(
        !after.contains("SECRET") && !after.contains("ks-ph-"),
        "{after}"
    );
}
