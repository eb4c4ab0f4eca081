//! End to end: curl and a hyper client through the real keyswap binary to recording upstreams on
//! 127.0.0.1. Assertions read what the upstream received, never what keyswap says it did.

use crate::common;

use base64::Engine as _;
use common::{Keyswap, Setup, TestCa, Upstream, curl};

/// Every secret below starts with `SECRET_`, so a log or body can be searched for any of them.
const VAULT: &str = r#"
[[vaults]]
id = "vlt_test"

[[vaults.credentials]]
id = "vcrd_exact"
auth = { type = "environment_variable", secret_name = "EXACT", secret_value = "SECRET_exact_1", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }

[[vaults.credentials]]
id = "vcrd_wild"
auth = { type = "environment_variable", secret_name = "WILD", secret_value = "SECRET_wild_2", networking = { type = "limited", allowed_hosts = ["*.wild.example.test"] } }

[[vaults.credentials]]
id = "vcrd_ip"
auth = { type = "environment_variable", secret_name = "IP", secret_value = "SECRET_ip_4", networking = { type = "limited", allowed_hosts = ["127.0.0.1"] } }

[[vaults.credentials]]
id = "vcrd_query"
auth = { type = "environment_variable", secret_name = "QUERY", secret_value = "SECRET/q&5", networking = { type = "limited", allowed_hosts = ["api.example.test"] }, injection_location = { query = true } }

[[vaults.credentials]]
id = "vcrd_long"
auth = { type = "environment_variable", secret_name = "LONG", secret_value = "SECRET_long_6", placeholder = "ks-ph-vcrd_exact_long", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

const UNRESTRICTED: &str = r#"
[[vaults.credentials]]
id = "vcrd_any"
auth = { type = "environment_variable", secret_name = "ANY", secret_value = "SECRET_any_3", networking = { type = "unrestricted" } }
"#;

struct World {
    ca: TestCa,
    upstream: Upstream,
    keyswap: Keyswap,
}

impl World {
    async fn start(proxy: &str, rest: &str) -> World {
        let ca = TestCa::new();
        let upstream = Upstream::https(&ca).await;
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                proxy,
                rest,
                ..Setup::default()
            },
        );
        World {
            ca,
            upstream,
            keyswap,
        }
    }

    async fn default() -> World {
        Self::start(
            "block_private_addresses = false",
            &format!("{VAULT}{UNRESTRICTED}"),
        )
        .await
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.upstream.port())
    }

    /// curl through keyswap, trusting keyswap's CA (and the upstream CA, for raw tunnels).
    async fn curl(&self, url: &str, extra: &[&str]) -> common::CurlOut {
        let bundle = self.keyswap.client_bundle(&self.ca);
        let proxy = self.keyswap.proxy_url();
        let mut args = vec![
            "--proxy",
            proxy.as_str(),
            "--cacert",
            bundle.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(url);
        curl(&args).await
    }

    fn assert_no_secret_in_log(&self) {
        let log = self.keyswap.log();
        assert!(!log.contains("SECRET"), "a secret reached the log:\n{log}");
    }
}

mod scope {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn exact_host_gets_the_secret_over_http1_and_http2() {
        let w = World::default().await;
        for version in ["--http1.1", "--http2"] {
            let out = w
                .curl(
                    &w.url("api.example.test", "/v1"),
                    &[version, "-H", "Authorization: Bearer ks-ph-vcrd_exact"],
                )
                .await;
            assert_eq!(out.status, 200, "{out:?}");
            assert_eq!(
                out.http_version,
                if version == "--http2" { "2" } else { "1.1" }
            );
        }
        let seen = w.upstream.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[1].version, "HTTP/2.0",
            "keyswap speaks h2 to an upstream that offers it"
        );
        for s in &seen {
            assert_eq!(
                s.header("authorization"),
                Some("Bearer SECRET_exact_1"),
                "{s:?}"
            );
            assert_eq!(s.path, "/v1");
        }
        let log = w.keyswap.wait_log("vcrd_exact=substituted");
        assert!(log.contains("vcrd_exact=substituted"), "{log}");
        w.assert_no_secret_in_log();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn upper_case_and_trailing_dot_hosts_match() {
        let w = World::default().await;
        for host in ["API.EXAMPLE.TEST", "api.example.test."] {
            let out = w
                .curl(&w.url(host, "/"), &["-H", "x-token: ks-ph-vcrd_exact"])
                .await;
            assert_eq!(out.status, 200, "{host}: {out:?}");
        }
        for s in w.upstream.requests() {
            assert_eq!(s.header("x-token"), Some("SECRET_exact_1"), "{s:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn wildcard_covers_subdomains_but_not_the_apex() {
        let w = World::default().await;
        w.curl(
            &w.url("a.wild.example.test", "/"),
            &["-H", "x-token: ks-ph-vcrd_wild"],
        )
        .await;
        w.curl(
            &w.url("wild.example.test", "/"),
            &["-H", "x-token: ks-ph-vcrd_wild"],
        )
        .await;
        let seen = w.upstream.requests();
        assert_eq!(seen[0].header("x-token"), Some("SECRET_wild_2"));
        assert_eq!(
            seen[1].header("x-token"),
            Some("ks-ph-vcrd_wild"),
            "the apex is not in *.wild.example.test"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn other_host_gets_the_placeholder_and_the_log_says_why() {
        let w = World::default().await;
        let out = w
            .curl(
                &w.url("other.example.test", "/"),
                &["-H", "Authorization: Bearer ks-ph-vcrd_exact"],
            )
            .await;
        assert_eq!(out.status, 200, "{out:?}");
        assert_eq!(
            w.upstream.only().header("authorization"),
            Some("Bearer ks-ph-vcrd_exact")
        );
        let log = w.keyswap.wait_log("vcrd_exact=out_of_scope");
        let line = log
            .lines()
            .find(|l| l.contains("vcrd_exact=out_of_scope"))
            .expect(&log);
        assert!(line.contains("other.example.test"), "{line}");
        w.assert_no_secret_in_log();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unrestricted_credential_goes_anywhere() {
        let w = World::default().await;
        w.curl(
            &w.url("other.example.test", "/"),
            &["-H", "x-any: ks-ph-vcrd_any"],
        )
        .await;
        assert_eq!(w.upstream.only().header("x-any"), Some("SECRET_any_3"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ipv4_literal_scope_matches_only_that_address() {
        let w = World::default().await;
        let out = w
            .curl(&w.url("127.0.0.1", "/"), &["-H", "x-ip: ks-ph-vcrd_ip"])
            .await;
        assert_eq!(out.status, 200, "{out:?}");
        w.curl(
            &w.url("api.example.test", "/"),
            &["-H", "x-ip: ks-ph-vcrd_ip"],
        )
        .await;
        let seen = w.upstream.requests();
        assert_eq!(seen[0].header("x-ip"), Some("SECRET_ip_4"));
        assert_eq!(seen[1].header("x-ip"), Some("ks-ph-vcrd_ip"));
    }
}

mod locations {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn basic_auth_password_is_substituted_like_git_sends_it() {
        let w = World::default().await;
        let url = format!(
            "https://x-access-token:ks-ph-vcrd_exact@api.example.test:{}/repo.git/info/refs",
            w.upstream.port()
        );
        let out = w.curl(&url, &[]).await;
        assert_eq!(out.status, 200, "{out:?}");
        let expected =
            base64::engine::general_purpose::STANDARD.encode("x-access-token:SECRET_exact_1");
        assert_eq!(
            w.upstream.only().header("authorization"),
            Some(format!("Basic {expected}").as_str())
        );
        w.assert_no_secret_in_log();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn query_string_only_where_enabled() {
        let w = World::default().await;
        let out = w
            .curl(
                &w.url(
                    "api.example.test",
                    "/s?key=ks-ph-vcrd_query&other=ks-ph-vcrd_exact",
                ),
                &[],
            )
            .await;
        assert!(
            out.body.contains("key=ks-ph-vcrd_query") && !out.body.contains("SECRET"),
            "echoed URL is scrubbed: {}",
            out.body
        );
        assert_eq!(
            w.upstream.only().path,
            "/s?key=SECRET%2Fq%265&other=ks-ph-vcrd_exact"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_credentials_and_a_placeholder_that_prefixes_another() {
        let w = World::default().await;
        w.curl(
            &w.url("api.example.test", "/"),
            &[
                "-H",
                "x-a: ks-ph-vcrd_exact_long",
                "-H",
                "x-b: ks-ph-vcrd_exact and ks-ph-vcrd_exact_long",
            ],
        )
        .await;
        let seen = w.upstream.only();
        assert_eq!(seen.header("x-a"), Some("SECRET_long_6"));
        assert_eq!(seen.header("x-b"), Some("SECRET_exact_1 and SECRET_long_6"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn request_without_placeholders_passes_untouched() {
        let w = World::default().await;
        w.curl(
            &w.url("api.example.test", "/p?q=1"),
            &["-H", "Authorization: Bearer plain", "-H", "x-custom: v"],
        )
        .await;
        let seen = w.upstream.only();
        assert_eq!(seen.header("authorization"), Some("Bearer plain"));
        assert_eq!(seen.header("x-custom"), Some("v"));
        assert_eq!(seen.path, "/p?q=1");
    }
}

mod consistency {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn host_header_naming_another_host_is_421_and_nothing_is_forwarded() {
        let w = World::default().await;
        let out = w
            .curl(
                &w.url("api.example.test", "/"),
                &[
                    "-H",
                    "Host: other.example.test",
                    "-H",
                    "x: ks-ph-vcrd_exact",
                ],
            )
            .await;
        assert_eq!(out.status, 421, "{out:?}");
        assert_eq!(
            out.headers.get("x-keyswap-error").map(String::as_str),
            Some("host-mismatch")
        );
        assert!(out.body.contains("tunnel"), "{}", out.body);
        assert!(w.upstream.requests().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sni_naming_another_host_is_421_and_nothing_is_forwarded() {
        let w = World::default().await;
        let port = w.upstream.port();
        // CONNECT other.example.test, SNI api.example.test, Host other.example.test.
        let connect_to = format!("api.example.test:{port}:other.example.test:{port}");
        let host = format!("Host: other.example.test:{port}");
        let out = w
            .curl(
                &w.url("api.example.test", "/"),
                &[
                    "-k",
                    "--connect-to",
                    &connect_to,
                    "-H",
                    &host,
                    "-H",
                    "x: ks-ph-vcrd_any",
                ],
            )
            .await;
        assert_eq!(out.status, 421, "{out:?}");
        assert_eq!(
            out.headers.get("x-keyswap-error").map(String::as_str),
            Some("host-mismatch")
        );
        assert!(w.upstream.requests().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn host_is_pinned_and_proxy_headers_are_removed() {
        let w = World::default().await;
        w.curl(
            &w.url("api.example.test", "/"),
            &[
                "--http1.1",
                "-H",
                "Proxy-Authorization: Basic c2VjcmV0",
                "-H",
                "Connection: x-drop",
                "-H",
                "x-drop: 1",
            ],
        )
        .await;
        let seen = w.upstream.only();
        assert_eq!(
            seen.authority(),
            Some(format!("api.example.test:{}", w.upstream.port()).as_str())
        );
        assert_eq!(seen.header("proxy-authorization"), None);
        assert_eq!(seen.header("x-drop"), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn out_of_scope_block_mode_refuses_with_403() {
        let w = World::start(
            "block_private_addresses = false\nout_of_scope_placeholder = \"block\"\nmitm = \"always\"",
            VAULT,
        )
        .await;
        let out = w
            .curl(
                &w.url("other.example.test", "/"),
                &["-H", "x: ks-ph-vcrd_exact"],
            )
            .await;
        assert_eq!(out.status, 403, "{out:?}");
        assert_eq!(
            out.headers.get("x-keyswap-error").map(String::as_str),
            Some("placeholder-out-of-scope")
        );
        assert!(out.body.contains("vcrd_exact"), "{}", out.body);
        assert!(w.upstream.requests().is_empty());
        let log = w.keyswap.wait_log("vcrd_exact=out_of_scope");
        assert!(
            log.lines()
                .any(|l| l.contains("vcrd_exact=out_of_scope") && l.contains("other.example.test")),
            "{log}"
        );
    }
}

mod plain_http {
    use super::*;

    async fn start(proxy: &str) -> (TestCa, Upstream, Keyswap) {
        let ca = TestCa::new();
        let upstream = Upstream::http().await;
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                proxy,
                rest: VAULT,
                ..Setup::default()
            },
        );
        (ca, upstream, keyswap)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_secret_on_plain_http_by_default() {
        let (_ca, upstream, keyswap) = start("block_private_addresses = false").await;
        let url = format!("http://api.example.test:{}/x", upstream.port());
        let out = curl(&[
            "--proxy",
            &keyswap.proxy_url(),
            "-H",
            "x: ks-ph-vcrd_exact",
            &url,
        ])
        .await;
        assert_eq!(out.status, 200, "{out:?}");
        assert_eq!(upstream.only().header("x"), Some("ks-ph-vcrd_exact"));
        let log = keyswap.wait_log("vcrd_exact=plaintext_upstream");
        assert!(log.contains("vcrd_exact=plaintext_upstream"), "{log}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn secret_on_plain_http_when_allowed() {
        let (_ca, upstream, keyswap) =
            start("block_private_addresses = false\nsubstitute_over_plain_http = true").await;
        let url = format!("http://api.example.test:{}/x", upstream.port());
        curl(&[
            "--proxy",
            &keyswap.proxy_url(),
            "-H",
            "Host: other.example.test",
            "-H",
            "x: ks-ph-vcrd_exact",
            &url,
        ])
        .await;
        let seen = upstream.only();
        assert_eq!(seen.header("x"), Some("SECRET_exact_1"));
        assert_eq!(
            seen.authority(),
            Some(format!("api.example.test:{}", upstream.port()).as_str()),
            "Host is pinned to the URI"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn origin_form_request_to_the_proxy_is_400() {
        let (_ca, _upstream, keyswap) = start("block_private_addresses = false").await;
        let out = curl(&[&format!("http://{}/", keyswap.proxy)]).await;
        assert_eq!(out.status, 400);
        assert_eq!(
            out.headers.get("x-keyswap-error").map(String::as_str),
            Some("bad-request")
        );
    }
}

mod egress {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn private_upstreams_are_refused_by_default() {
        let w = World::start("", VAULT).await;
        let out = w
            .curl(
                &w.url("api.example.test", "/"),
                &["-H", "x: ks-ph-vcrd_exact"],
            )
            .await;
        assert_eq!(
            out.status, 0,
            "CONNECT refused: curl reports no final response"
        );
        assert!(out.stderr.contains("403"), "{out:?}");
        let http = Upstream::http().await;
        let url = format!("http://api.example.test:{}/", http.port());
        let out = curl(&["--proxy", &w.keyswap.proxy_url(), &url]).await;
        assert_eq!(out.status, 403, "{out:?}");
        assert_eq!(
            out.headers.get("x-keyswap-error").map(String::as_str),
            Some("egress-denied")
        );
        assert!(w.upstream.requests().is_empty() && http.requests().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unreachable_upstream_is_502_upstream_connect() {
        let w = World::default().await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://api.example.test:{closed}/");
        let out = curl(&["--proxy", &w.keyswap.proxy_url(), &url]).await;
        assert_eq!(out.status, 502, "{out:?}");
        assert_eq!(
            out.headers.get("x-keyswap-error").map(String::as_str),
            Some("upstream-connect")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn untrusted_upstream_certificate_is_502_upstream_tls() {
        let w = World::default().await;
        let stranger = TestCa::new();
        let rogue = Upstream::https(&stranger).await;
        let url = format!("https://api.example.test:{}/", rogue.port());
        let out = w.curl(&url, &["-H", "x: ks-ph-vcrd_exact"]).await;
        assert_eq!(out.status, 502, "{out:?}");
        assert_eq!(
            out.headers.get("x-keyswap-error").map(String::as_str),
            Some("upstream-tls")
        );
        assert!(rogue.requests().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keyswap_refuses_to_proxy_to_itself() {
        let w = World::default().await;
        let url = format!("http://{}/", w.keyswap.proxy);
        let out = curl(&["--proxy", &w.keyswap.proxy_url(), &url]).await;
        assert_eq!(out.status, 403, "{out:?}");
        let url = format!("http://{}/healthz", w.keyswap.admin);
        let out = curl(&["--proxy", &w.keyswap.proxy_url(), &url]).await;
        assert_eq!(out.status, 403, "{out:?}");
    }
}

mod mitm_auto {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn hosts_no_credential_covers_are_tunnelled_raw() {
        let w = World::start("block_private_addresses = false", VAULT).await;
        // Trust only the upstream's CA: this works only if keyswap did not intercept.
        let upstream_ca = common::write(w.keyswap.dir.path(), "only-upstream.pem", &w.ca.pem);
        let url = w.url("other.example.test", "/");
        let proxy = w.keyswap.proxy_url();
        let out = curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            upstream_ca.to_str().unwrap(),
            "-H",
            "x: ks-ph-vcrd_exact",
            &url,
        ])
        .await;
        assert_eq!(out.status, 200, "{out:?}");
        assert_eq!(w.upstream.only().header("x"), Some("ks-ph-vcrd_exact"));
        // A host in scope is intercepted: the upstream CA alone no longer verifies it.
        let url = w.url("api.example.test", "/");
        let out = curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            upstream_ca.to_str().unwrap(),
            &url,
        ])
        .await;
        assert_eq!(out.status, 0, "{out:?}");
    }
}

/// SPEC §9: over HTTP/2 the authority travels as `:authority` only (nginx answers 400 "client sent
/// duplicate host header" otherwise); over HTTP/1.1 there is exactly one `Host`.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_requests_carry_the_authority_once_per_protocol() {
    let w = World::default().await;
    let url = w.url("api.example.test", "/");
    let authority = format!("api.example.test:{}", w.upstream.port());
    // The client's own Host (even a differing one) never reaches the upstream.
    for client in [&["--http2"][..], &["--http1.1"][..]] {
        let mut args = client.to_vec();
        args.extend(["-H", "x-probe: 1"]);
        let out = w.curl(&url, &args).await;
        assert_eq!(out.status, 200, "{out:?}");
    }
    for seen in w.upstream.requests() {
        assert_eq!(seen.version, "HTTP/2.0", "the test upstream speaks h2");
        assert_eq!(
            seen.headers_named("host"),
            Vec::<&str>::new(),
            "no host field on h2"
        );
        assert_eq!(seen.header(":authority"), Some(authority.as_str()));
    }
    let http1 = Upstream::http().await;
    let out = curl(&[
        "--proxy",
        &w.keyswap.proxy_url(),
        "-H",
        "Host: evil.example",
        &format!("http://api.example.test:{}/", http1.port()),
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    let seen = http1.only();
    assert_eq!(
        seen.headers_named("host"),
        [format!("api.example.test:{}", http1.port())]
    );
}

/// A client told `https://` for the proxy URL sends a TLS handshake to the plain proxy port: the
/// log says what to change (it cannot read an HTTP answer).
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_handshake_on_the_proxy_port_is_logged_as_a_wrong_proxy_url() {
    let w = World::default().await;
    let out = curl(&[
        "--proxy",
        &format!("https://{}", w.keyswap.proxy),
        "--proxy-insecure",
        &w.url("api.example.test", "/"),
    ])
    .await;
    assert_ne!(out.status, 200);
    assert!(w.upstream.requests().is_empty());
    w.keyswap.wait_log(
        "a TLS handshake arrived on the proxy port: point the client at an http:// proxy URL",
    );
}

/// A client without keyswap's CA refuses the certificate: one warn line per host and minute says
/// to install the CA bundle (a sandbox retrying in a loop does not flood the log).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_refuses_the_certificate_gets_one_warning_naming_the_ca_bundle() {
    let w = World::default().await;
    let upstream_ca = w.keyswap.dir.path().join("upstream-ca.pem");
    for _ in 0..3 {
        let out = curl(&[
            "--proxy",
            &w.keyswap.proxy_url(),
            "--cacert",
            upstream_ca.to_str().unwrap(),
            &w.url("api.example.test", "/"),
        ])
        .await;
        assert_eq!(out.status, 0, "curl refused keyswap's certificate: {out:?}");
    }
    let log = w
        .keyswap
        .wait_log("the client refused keyswap's certificate: give the sandbox keyswap's CA bundle");
    assert_eq!(
        log.matches("give the sandbox keyswap's CA bundle").count(),
        1,
        "{log}"
    );
    assert!(w.upstream.requests().is_empty());
}

/// SPEC §9: one access line per tunnel (mode and why) and per forwarded request at info.
#[tokio::test(flavor = "multi_thread")]
async fn tunnels_and_requests_leave_one_access_line_each_at_info() {
    let w = World::default().await;
    let out = w
        .curl(
            &w.url("api.example.test", "/seen?token=ks-ph-vcrd_exact"),
            &[],
        )
        .await;
    assert_eq!(out.status, 200, "{out:?}");
    let log = w.keyswap.wait_log("status=200");
    let tunnel = log
        .lines()
        .find(|l| l.contains(" tunnel") && l.contains("host=api.example.test"))
        .unwrap_or_else(|| panic!("no tunnel line:\n{log}"));
    assert!(
        tunnel.contains("mode=\"intercepted\"") || tunnel.contains("mode=intercepted"),
        "{tunnel}"
    );
    assert!(
        tunnel.contains("a credential of the session is in scope"),
        "{tunnel}"
    );
    let forwarded = log
        .lines()
        .find(|l| l.contains("INFO") && l.contains("forwarded") && l.contains("status=200"))
        .unwrap();
    assert!(
        forwarded.contains("path=/seen") && !forwarded.contains("token="),
        "{forwarded}"
    );
    assert!(!log.contains("SECRET"), "{log}");
}
