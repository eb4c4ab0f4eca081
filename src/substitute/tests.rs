//! The substitution functions driven from values built in place: no TOML, no store, no session.

use super::*;
use crate::scope::HostPattern;
use crate::secret::Secret;
use crate::vault::{Injection, Networking};

/// An environment_variable credential's entry, as the store compiles it.
pub(crate) fn entry(id: &str, secret: &str, hosts: &[&str]) -> Entry {
    let networking = if hosts.is_empty() {
        Networking::Unrestricted
    } else {
        Networking::Limited {
            allowed_hosts: hosts.iter().map(ToString::to_string).collect(),
            patterns: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
        }
    };
    Entry {
        credential_id: id.into(),
        vault_id: "vlt_a".into(),
        placeholder: format!("ks-ph-{id}"),
        secret: Secret::new(secret),
        networking,
        injection: Injection::default(),
        archived: false,
        mcp: None,
        oauth: None,
        masks: Vec::new(),
        signing: None,
    }
}

/// The credentials the tests share: scoped, one whose placeholder extends another's, one for
/// queries only, one archived.
fn store() -> Placeholders {
    Placeholders::compile(vec![
        entry("vcrd_gh", "ghp_REAL", &["api.github.com", "*.example.com"]),
        Entry {
            placeholder: "ks-ph-vcrd_gh_long".into(),
            ..entry("vcrd_ghlong", "LONGREAL", &[])
        },
        Entry {
            injection: Injection {
                header: false,
                query: true,
                body: false,
            },
            ..entry("vcrd_q", "a&b=c d", &[])
        },
        Entry {
            archived: true,
            ..entry("vcrd_old", "OLDREAL", &[])
        },
    ])
    .unwrap()
}

/// Every vault: the implicit session.
static ALL: std::sync::LazyLock<VaultFilter> = std::sync::LazyLock::new(VaultFilter::all);

fn target(host: &str) -> Target<'_> {
    Target {
        host,
        port: 443,
        path: "/",
        secrets_allowed: true,
        vaults: &ALL,
    }
}

fn one_header(
    store: &Placeholders,
    target: Target<'_>,
    name: &'static str,
    value: &str,
) -> (String, Report) {
    let mut map = HeaderMap::new();
    map.insert(name, HeaderValue::from_str(value).unwrap());
    let mut report = Report::default();
    headers(store, target, &mut map, &mut report);
    (map[name].to_str().unwrap().to_string(), report)
}

fn outcome_names(store: &Placeholders, report: &Report) -> String {
    report.display(store.entries()).to_string()
}

mod headers {
    use super::*;

    #[test]
    fn in_scope_placeholder_is_replaced_and_marked_sensitive() {
        let s = store();
        let mut map = HeaderMap::new();
        map.insert(
            "authorization",
            HeaderValue::from_static("Bearer ks-ph-vcrd_gh"),
        );
        let mut report = Report::default();
        super::headers(&s, target("api.github.com"), &mut map, &mut report);
        assert_eq!(map["authorization"], "Bearer ghp_REAL");
        assert!(map["authorization"].is_sensitive());
        assert_eq!(outcome_names(&s, &report), "vcrd_gh=substituted");
    }

    #[test]
    fn out_of_scope_placeholder_is_left_alone_and_reported() {
        let s = store();
        let (v, report) = one_header(&s, target("evil.test"), "x-token", "ks-ph-vcrd_gh");
        assert_eq!(v, "ks-ph-vcrd_gh");
        assert!(report.any(Outcome::OutOfScope));
        let (v, _) = one_header(&s, target("example.com"), "x-token", "ks-ph-vcrd_gh");
        assert_eq!(v, "ks-ph-vcrd_gh", "a wildcard never covers the apex");
    }

    #[test]
    fn wildcard_subdomain_is_in_scope() {
        let (v, _) = one_header(
            &store(),
            target("a.b.example.com"),
            "x-token",
            "pre ks-ph-vcrd_gh post",
        );
        assert_eq!(v, "pre ghp_REAL post");
    }

    #[test]
    fn a_placeholder_that_prefixes_another_never_cuts_the_longer_one() {
        let s = store();
        let (v, report) = one_header(
            &s,
            target("api.github.com"),
            "x",
            "ks-ph-vcrd_gh_long,ks-ph-vcrd_gh",
        );
        assert_eq!(v, "LONGREAL,ghp_REAL");
        assert_eq!(
            outcome_names(&s, &report),
            "vcrd_ghlong=substituted vcrd_gh=substituted"
        );
    }

    #[test]
    fn archived_and_disabled_locations_are_not_substituted() {
        let s = store();
        let (v, report) = one_header(
            &s,
            target("api.github.com"),
            "x",
            "ks-ph-vcrd_old ks-ph-vcrd_q",
        );
        assert_eq!(v, "ks-ph-vcrd_old ks-ph-vcrd_q");
        assert_eq!(
            outcome_names(&s, &report),
            "vcrd_old=archived vcrd_q=location_disabled"
        );
    }

    #[test]
    fn plaintext_upstream_gets_no_secret() {
        let s = store();
        let t = Target {
            secrets_allowed: false,
            ..target("api.github.com")
        };
        let (v, report) = one_header(&s, t, "authorization", "Bearer ks-ph-vcrd_gh");
        assert_eq!(v, "Bearer ks-ph-vcrd_gh");
        assert!(report.any(Outcome::PlaintextUpstream));
    }

    #[test]
    fn no_placeholder_leaves_everything_untouched() {
        let (v, report) = one_header(
            &store(),
            target("api.github.com"),
            "authorization",
            "Bearer ghp_other",
        );
        assert_eq!(v, "Bearer ghp_other");
        assert!(report.is_empty());
    }

    #[test]
    fn basic_auth_password_is_decoded_substituted_and_reencoded() {
        let s = store();
        let sent = format!("Basic {}", BASE64.encode("x-access-token:ks-ph-vcrd_gh"));
        let (v, report) = one_header(&s, target("api.github.com"), "authorization", &sent);
        assert_eq!(
            v,
            format!("Basic {}", BASE64.encode("x-access-token:ghp_REAL"))
        );
        assert!(report.any(Outcome::Substituted));
        let (v, _) = one_header(&s, target("other.test"), "authorization", &sent);
        assert_eq!(v, sent);
    }

    #[test]
    fn basic_auth_user_is_substituted_too_and_scheme_is_case_insensitive() {
        let sent = format!("basic {}", BASE64.encode("ks-ph-vcrd_gh:x"));
        let (v, _) = one_header(&store(), target("api.github.com"), "authorization", &sent);
        assert_eq!(v, format!("Basic {}", BASE64.encode("ghp_REAL:x")));
    }
}

mod query {
    use super::*;

    fn run(uri: &str, host: &str) -> (Option<String>, Report) {
        let s = store();
        let mut report = Report::default();
        let out = super::query(&s, target(host), &uri.parse().unwrap(), &mut report)
            .map(|u| u.to_string());
        (out, report)
    }

    #[test]
    fn enabled_credential_is_substituted_and_percent_encoded() {
        let (uri, _) = run("https://api.test/p/a?k=ks-ph-vcrd_q&x=1", "api.test");
        assert_eq!(uri.unwrap(), "https://api.test/p/a?k=a%26b%3Dc%20d&x=1");
    }

    #[test]
    fn query_is_off_by_default() {
        let (uri, report) = run("https://api.github.com/?t=ks-ph-vcrd_gh", "api.github.com");
        assert_eq!(uri, None);
        assert!(report.any(Outcome::LocationDisabled));
    }

    #[test]
    fn no_query_or_no_placeholder_gives_none() {
        assert!(run("https://api.test/p", "api.test").0.is_none());
        assert!(run("https://api.test/p?a=b", "api.test").0.is_none());
    }
}

mod sessions {
    use super::*;

    #[test]
    fn a_session_substitutes_only_its_own_vaults() {
        let s = Placeholders::compile(vec![
            entry("vcrd_a", "A_REAL", &[]),
            Entry {
                vault_id: "vlt_b".into(),
                ..entry("vcrd_b", "B_REAL", &[])
            },
        ])
        .unwrap();
        let vaults = VaultFilter::only(["vlt_a".to_string()]);
        let t = Target {
            vaults: &vaults,
            ..target("any.test")
        };
        let (v, report) = one_header(&s, t, "x", "ks-ph-vcrd_a ks-ph-vcrd_b");
        assert_eq!(v, "A_REAL ks-ph-vcrd_b");
        assert_eq!(
            outcome_names(&s, &report),
            "vcrd_a=substituted",
            "another session's placeholder is plain text"
        );
    }
}

#[test]
fn percent_encoding_keeps_url_safe_bytes() {
    let mut out = Vec::new();
    push_percent_encoded(&mut out, b"aZ9-._~/+\xff");
    assert_eq!(out, b"aZ9-._~%2F%2B%FF");
}
