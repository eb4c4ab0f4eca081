//! MCP credentials in the request path: `Authorization: Bearer <token>` on the credential's URL
//! prefix only, when the request has no Authorization or carries the placeholder.

use crate::common;

use common::{Keyswap, Setup, TestCa, Upstream, curl};

struct World {
    ca: TestCa,
    upstream: Upstream,
    keyswap: Keyswap,
}

impl World {
    async fn start() -> World {
        let ca = TestCa::new();
        let upstream = Upstream::https(&ca).await;
        let port = upstream.port();
        let rest = format!(
            r#"
[[vaults]]
id = "vlt_mcp"
[[vaults.credentials]]
id = "vcrd_mcp"
auth = {{ type = "static_bearer", mcp_server_url = "https://api.example.test:{port}/mcp", token = "SECRET_bearer" }}
[[vaults.credentials]]
id = "vcrd_oauth"
auth = {{ type = "mcp_oauth", mcp_server_url = "https://api.example.test:{port}/oauth/mcp", access_token = "SECRET_access" }}
"#
        );
        let keyswap = Keyswap::start(
            &ca,
            Setup {
                rest: &rest,
                ..Setup::default()
            },
        );
        World {
            ca,
            upstream,
            keyswap,
        }
    }

    /// What the upstream received as Authorization for `path` on `host`, and what the client saw echoed.
    async fn authorization(
        &self,
        host: &str,
        path: &str,
        sent: Option<&str>,
    ) -> (Option<String>, Option<String>) {
        let bundle = self.keyswap.client_bundle(&self.ca);
        let url = format!("https://{host}:{}{path}", self.upstream.port());
        let proxy = self.keyswap.proxy_url();
        let header = sent.map(|s| format!("Authorization: {s}"));
        // As sent: curl would resolve dot-segments itself.
        let mut args = vec![
            "--path-as-is",
            "--proxy",
            proxy.as_str(),
            "--cacert",
            bundle.to_str().unwrap(),
        ];
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        args.push(&url);
        let before = self.upstream.requests().len();
        let out = curl(&args).await;
        assert_eq!(out.status, 200, "{out:?}");
        let seen = self.upstream.requests()[before]
            .header("authorization")
            .map(str::to_string);
        (seen, out.headers.get("x-echo-authorization").cloned())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_is_set_on_the_mcp_url_prefix_only() {
    let w = World::start().await;
    for path in ["/mcp", "/mcp/tools/list"] {
        let (seen, echoed) = w.authorization("api.example.test", path, None).await;
        assert_eq!(seen.as_deref(), Some("Bearer SECRET_bearer"), "{path}");
        assert_eq!(
            echoed.as_deref(),
            Some("Bearer ks-ph-vcrd_mcp"),
            "the echo is scrubbed"
        );
    }
    for (host, path) in [
        ("api.example.test", "/mcpx"),
        ("api.example.test", "/other"),
        ("other.example.test", "/mcp"),
    ] {
        assert_eq!(
            w.authorization(host, path, None).await.0,
            None,
            "{host}{path}"
        );
    }
    assert!(!w.keyswap.log().contains("SECRET"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_placeholder_is_replaced_and_other_credentials_are_left_alone() {
    let w = World::start().await;
    let (seen, _) = w
        .authorization("api.example.test", "/mcp", Some("Bearer ks-ph-vcrd_mcp"))
        .await;
    assert_eq!(seen.as_deref(), Some("Bearer SECRET_bearer"));
    let (seen, _) = w
        .authorization("api.example.test", "/mcp", Some("Bearer mine"))
        .await;
    assert_eq!(seen.as_deref(), Some("Bearer mine"));
    // The longest prefix wins: /oauth/mcp belongs to the OAuth credential.
    let (seen, _) = w
        .authorization("api.example.test", "/oauth/mcp/x", None)
        .await;
    assert_eq!(seen.as_deref(), Some("Bearer SECRET_access"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_that_leaves_the_prefix_gets_no_token_however_it_is_spelled() {
    let w = World::start().await;
    for path in [
        "/mcp/../admin",
        "/mcp/./../admin",
        "/mcp/%2e%2e/admin",
        "/mcp/%2E%2E/admin",
        "/mcp/.%2e/admin",
        "/mcp%2f..%2fadmin",
        "/mcp/%2e%2e%2fadmin",
        "/mcp/%252e%252e/admin",
        "/mcp/..;/admin",
        "/mcp/a/../../admin",
        "/mcp/..%5cadmin",
    ] {
        let (seen, _) = w.authorization("api.example.test", path, None).await;
        assert_eq!(seen, None, "{path} left /mcp but received the token");
    }
    // Inside the prefix, however spelled, the token is still set.
    for path in [
        "/mcp/a/../b",
        "/mcp/./tools",
        "/x/../mcp/tools",
        "/mcp/a%2fb",
    ] {
        let (seen, _) = w.authorization("api.example.test", path, None).await;
        assert_eq!(seen.as_deref(), Some("Bearer SECRET_bearer"), "{path}");
    }
}
