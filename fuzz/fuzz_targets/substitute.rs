//! Header, Basic-auth and query substitution. Invariant (the security property): a secret never
//! appears in what keyswap would send to a host outside its credential's scope, or over plain
//! HTTP, whatever the request looks like. In scope, nothing panics.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Uri};
use keyswap::scope::HostPattern;
use keyswap::secret::Secret;
use keyswap::substitute::{self, Entry, McpScope, Placeholders, Report, Target, VaultFilter};
use keyswap::vault::{Injection, Networking};
use libfuzzer_sys::fuzz_target;

/// The two credentials' secrets and the hosts each may reach.
const SECRETS: &[(&str, &[&str])] = &[
    (
        "SECRETvalue42",
        &["api.github.com", "raw.githubusercontent.com"],
    ),
    ("BEARERvalue77", &["mcp.example.com"]),
];
/// The compiled credentials, built in place (no TOML): an environment_variable credential for
/// headers and queries, and a static_bearer MCP credential.
static PLACEHOLDERS: LazyLock<Placeholders> = LazyLock::new(|| {
    let limited = |hosts: &[&str]| Networking::Limited {
        allowed_hosts: hosts.iter().map(ToString::to_string).collect(),
        patterns: hosts
            .iter()
            .map(|h| HostPattern::parse(h).expect("pattern"))
            .collect(),
    };
    let entry = |id: &str, secret: &str, networking, mcp: Option<McpScope>| Entry {
        credential_id: id.into(),
        vault_id: "vlt_f".into(),
        placeholder: format!("ks-ph-{id}"),
        secret: Secret::new(secret),
        networking,
        injection: Injection {
            header: true,
            query: mcp.is_none(),
            body: false,
        },
        archived: false,
        mcp,
        oauth: None,
        masks: Vec::new(),
        signing: None,
    };
    Placeholders::compile(vec![
        entry(
            "vcrd_gh",
            "SECRETvalue42",
            limited(&["api.github.com", "*.githubusercontent.com"]),
            None,
        ),
        entry(
            "vcrd_b",
            "BEARERvalue77",
            limited(&["mcp.example.com"]),
            Some(McpScope {
                port: 443,
                path_prefix: "/mcp".into(),
            }),
        ),
    ])
    .expect("builds")
});

static ALL: LazyLock<VaultFilter> = LazyLock::new(VaultFilter::all);

const HOSTS: &[&str] = &[
    "api.github.com",
    "evil.com",
    "api.github.com.evil.com",
    "githubusercontent.com",
    "raw.githubusercontent.com",
    "mcp.example.com",
];

/// Pieces the fuzzer can splice in by index (byte 0xFE then an index byte), so that inputs reach
/// the interesting paths without guessing the placeholder.
const PIECES: &[&str] = &[
    "ks-ph-vcrd_gh",
    "ks-ph-vcrd_b",
    "Basic ",
    "Bearer ",
    "%",
    "x:",
    "ks-ph-",
];

fn expand(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2);
    let mut bytes = data.iter();
    while let Some(&b) = bytes.next() {
        match (b, bytes.as_slice().first()) {
            (0xFE, Some(&i)) => {
                bytes.next();
                out.extend_from_slice(PIECES[usize::from(i) % PIECES.len()].as_bytes());
            }
            // 0xFD: base64 of the rest, as a Basic credential carries it.
            (0xFD, _) => {
                let rest = expand(bytes.as_slice());
                out.extend(
                    base64::engine::general_purpose::STANDARD
                        .encode(rest)
                        .bytes(),
                );
                break;
            }
            _ => out.push(b),
        }
    }
    out
}

/// Whether `secret` is in `bytes`: raw, percent-encoded, or inside a base64 word (Basic auth).
fn leaks(bytes: &[u8], secret: &str) -> bool {
    let contains = |b: &[u8]| b.windows(secret.len()).any(|w| w == secret.as_bytes());
    contains(bytes)
        || String::from_utf8_lossy(bytes)
            .replace('%', "")
            .contains(secret)
        || bytes.split(|&b| b == b' ').any(|w| {
            base64::engine::general_purpose::STANDARD
                .decode(w)
                .is_ok_and(|d| contains(&d))
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let host = HOSTS[usize::from(selector) % HOSTS.len()];
    let secrets_allowed = selector & 0x80 == 0;
    let value = expand(rest);
    if SECRETS.iter().any(|(s, _)| leaks(&value, s)) {
        return; // the client sent a secret itself: nothing to learn
    }
    let store = &*PLACEHOLDERS;
    let target = Target {
        host,
        port: 443,
        path: "/mcp",
        secrets_allowed,
        vaults: &ALL,
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        headers.insert("authorization", v.clone());
        headers.insert("x-token", v);
    }
    let mut report = Report::default();
    substitute::headers(store, target, &mut headers, &mut report);
    substitute::bearer(store, target, &mut headers, &mut report);
    let uri = Uri::builder()
        .scheme("https")
        .authority(host)
        .path_and_query(format!("/p?{}", String::from_utf8_lossy(&value)))
        .build()
        .ok();
    let query = uri.and_then(|u| substitute::query(store, target, &u, &mut report));

    for (secret, scope) in SECRETS {
        if secrets_allowed && scope.contains(&host) {
            continue;
        }
        for v in headers.values() {
            assert!(
                !leaks(v.as_bytes(), secret),
                "{secret} sent to {host} in a header"
            );
        }
        if let Some(q) = &query {
            assert!(
                !leaks(q.to_string().as_bytes(), secret),
                "{secret} sent to {host} in the query"
            );
        }
    }
});
