use super::*;
use crate::vault::{Auth, Injection};

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, "k.toml", Path::new("/etc/keyswap"))
}

fn errors(text: &str) -> Vec<String> {
    parse(text)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const GOOD: &str = r#"
[proxy]
listen = "127.0.0.1:9000"
allow_private_cidrs = ["10.1.2.3/24"]

[upstream.resolve]
"API.example.test" = "127.0.0.1"

[[vaults]]
id = "vlt_one"
display_name = "One"
metadata = { team = "infra" }

[[vaults.credentials]]
id = "vcrd_gh"
auth.type = "environment_variable"
auth.secret_name = "GITHUB_TOKEN"
auth.secret_value = "ghp_real"
auth.networking = { type = "limited", allowed_hosts = ["api.github.com", "*.githubusercontent.com"] }

[[vaults.credentials]]
id = "vcrd_any"
auth.type = "environment_variable"
auth.secret_name = "ANY"
auth.secret_value = "anyreal"
auth.placeholder = "my-placeholder"
auth.networking = { type = "unrestricted" }
auth.injection_location = { header = false, query = true }
"#;

/// A one-credential config whose `auth` lines are `auth`.
fn with_auth(auth: &str) -> String {
    format!(
        "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"T\"\nauth.secret_value = \"s3cret\"\n{auth}\n"
    )
}

#[test]
fn empty_text_gives_the_spec_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8081");
    assert!(c.proxy.block_private_addresses);
    assert!(!c.proxy.substitute_over_plain_http);
    assert_eq!(c.proxy.mitm, MitmMode::Auto);
    assert_eq!(c.admin.api_key_env, "KEYSWAP_ADMIN_KEY");
    assert_eq!(c.limits.max_header_bytes, 65536);
    assert_eq!(c.limits.upstream_response_timeout, Duration::from_secs(300));
    assert!(c.vaults.is_empty());
}

#[test]
fn a_full_config_is_read() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.proxy.listen.port(), 9000);
    assert_eq!(c.proxy.allow_private_cidrs[0].to_string(), "10.1.2.0/24");
    assert_eq!(
        c.upstream.resolve["api.example.test"].to_string(),
        "127.0.0.1"
    );
    assert_eq!(c.tls.ca_cert, Path::new("/etc/keyswap/certs/ca.pem"));
    let creds: Vec<_> = c.credentials().collect();
    assert_eq!(creds.len(), 2);
    let Auth::EnvironmentVariable(gh) = &creds[0].auth else {
        panic!()
    };
    assert_eq!(gh.placeholder, "ks-ph-vcrd_gh");
    assert_eq!(gh.secret.expose(), b"ghp_real");
    assert!(gh.networking.allows("raw.githubusercontent.com"));
    assert!(!gh.networking.allows("githubusercontent.com"));
    assert_eq!(
        gh.injection,
        Injection {
            header: true,
            body: false,
            query: false
        }
    );
    let Auth::EnvironmentVariable(any) = &creds[1].auth else {
        panic!()
    };
    assert_eq!(any.placeholder, "my-placeholder");
    assert_eq!(
        any.injection,
        Injection {
            header: false,
            body: false,
            query: true
        }
    );
}

#[test]
fn unknown_key_is_an_error_with_its_position() {
    let e = errors("[proxy]\nlisten = \"127.0.0.1:1\"\nsubstitute_over_plain_htp = true\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("k.toml:3:1: "), "{e:?}");
    assert!(e[0].contains("substitute_over_plain_htp"), "{e:?}");
}

#[test]
fn unknown_key_inside_auth_is_an_error() {
    let e = errors(&with_auth(
        "auth.networking = { type = \"unrestricted\" }\nauth.secret_nmae = \"X\"",
    ));
    assert!(e[0].contains("secret_nmae"), "{e:?}");
}

#[test]
fn bad_allowed_hosts_are_each_reported_at_their_entry() {
    let e = errors(&with_auth(
        "auth.networking = { type = \"limited\", allowed_hosts = [\"api.example.com:443\", \"https://x.com\", \"::1\", \"a.com/p\"] }",
    ));
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e[0].starts_with("k.toml:8:56: ") && e[0].contains("port"),
        "{e:?}"
    );
    assert!(e[1].contains("URL"), "{e:?}");
    assert!(e[2].contains("IPv6"), "{e:?}");
    assert!(e[3].contains("path"), "{e:?}");
}

#[test]
fn more_than_sixteen_hosts_is_an_error() {
    let hosts: Vec<String> = (0..17).map(|i| format!("\"h{i}.example.com\"")).collect();
    let e = errors(&with_auth(&format!(
        "auth.networking = {{ type = \"limited\", allowed_hosts = [{}] }}",
        hosts.join(", ")
    )));
    assert!(e.iter().any(|e| e.contains("at most 16")), "{e:?}");
    assert!(e[0].starts_with("k.toml:8:"), "{e:?}");
}

#[test]
fn duplicate_placeholder_is_an_error() {
    let text = format!(
        "{}[[vaults.credentials]]\nid = \"vcrd_b\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"U\"\nauth.secret_value = \"x\"\nauth.placeholder = \"ks-ph-vcrd_a\"\nauth.networking = {{ type = \"unrestricted\" }}\n",
        with_auth("auth.networking = { type = \"unrestricted\" }")
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("k.toml:14:20: ") && e[0].contains("already used"),
        "{e:?}"
    );
}

#[test]
fn bad_secret_name_and_placeholder_are_errors() {
    let e = errors(
        "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"1BAD\"\nauth.secret_value = \"v\"\nauth.networking = { type = \"unrestricted\" }\n",
    );
    assert!(
        e[0].starts_with("k.toml:6:") && e[0].contains("secret_name"),
        "{e:?}"
    );
    let e = errors(&with_auth(
        "auth.networking = { type = \"unrestricted\" }\nauth.placeholder = \"no spaces allowed\"",
    ));
    assert!(
        e[0].starts_with("k.toml:9:") && e[0].contains("placeholder"),
        "{e:?}"
    );
}

#[test]
fn secret_from_env_and_file_without_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tok"), "from-file\n").unwrap();
    let text = "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"A\"\nauth.secret_value_env = \"PATH\"\nauth.networking = { type = \"unrestricted\" }\n[[vaults.credentials]]\nid = \"vcrd_b\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"B\"\nauth.secret_value_file = \"tok\"\nauth.networking = { type = \"unrestricted\" }\n";
    let c = Config::from_toml(text, "k.toml", dir.path()).unwrap();
    let values: Vec<_> = c
        .credentials()
        .map(|c| match &c.auth {
            Auth::EnvironmentVariable(e) => e.secret.expose().to_vec(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(values[0], std::env::var("PATH").unwrap().into_bytes());
    assert_eq!(values[1], b"from-file");
}

#[test]
fn missing_env_var_and_two_sources_are_errors() {
    let e = errors(&with_auth(
        "auth.networking = { type = \"unrestricted\" }\nauth.secret_value_env = \"X\"",
    ));
    assert!(e[0].contains("exactly one"), "{e:?}");
    let e = errors(
        "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth.type = \"environment_variable\"\nauth.secret_name = \"A\"\nauth.secret_value_env = \"KEYSWAP_SURELY_UNSET_VAR\"\nauth.networking = { type = \"unrestricted\" }\n",
    );
    assert!(
        e[0].starts_with("k.toml:7:") && e[0].contains("not set"),
        "{e:?}"
    );
}

#[test]
fn errors_never_contain_the_secret() {
    let text = with_auth(
        "auth.networking = { type = \"limited\", allowed_hosts = [\"bad host\"] }\nauth.token = \"x\"",
    );
    for e in errors(&text) {
        assert!(!e.contains("s3cret"), "{e}");
    }
}

#[test]
fn fields_of_another_type_are_errors() {
    let e = errors(&with_auth(
        "auth.networking = { type = \"unrestricted\" }\nauth.mcp_server_url = \"https://x\"",
    ));
    assert!(e[0].contains("does not belong"), "{e:?}");
}

#[test]
fn static_bearer_and_oauth_are_read() {
    let text = "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth = { type = \"static_bearer\", mcp_server_url = \"https://mcp.example.com/mcp\", token = \"t\" }\n[[vaults.credentials]]\nid = \"vcrd_b\"\nauth = { type = \"mcp_oauth\", mcp_server_url = \"https://mcp.example.com/\", access_token = \"a\", expires_at = \"2030-01-01T00:00:00Z\", refresh = { client_id = \"c\", refresh_token = \"r\", token_endpoint = \"https://auth.example.com/token\", token_endpoint_auth = { type = \"client_secret_post\", client_secret = \"cs\" } } }\n";
    let c = parse(text).unwrap();
    let kinds: Vec<_> = c.credentials().map(|c| c.auth.type_name()).collect();
    assert_eq!(kinds, ["static_bearer", "mcp_oauth"]);
}

#[test]
fn line_column_counts_characters() {
    assert_eq!(line_column("ab\ncdé f", 0), (1, 1));
    assert_eq!(line_column("ab\ncdé f", 3), (2, 1));
    assert_eq!(line_column("ab\ncdé f", 7), (2, 4));
}

#[test]
fn oauth_expiry_and_token_endpoint_are_checked() {
    let auth = |expires: &str, endpoint: &str| {
        format!(
            "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\nauth = {{ type = \"mcp_oauth\", mcp_server_url = \"https://mcp.example.com/\", access_token = \"a\", expires_at = \"{expires}\", refresh = {{ client_id = \"c\", refresh_token = \"r\", token_endpoint = \"{endpoint}\" }} }}\n"
        )
    };
    assert!(
        parse(&auth(
            "2030-01-01T00:00:00Z",
            "https://auth.example.com/token"
        ))
        .is_ok()
    );
    let e = errors(&auth("tomorrow", "https://auth.example.com/token"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("k.toml:") && e[0].contains("`tomorrow` is not an RFC 3339 time"),
        "{e:?}"
    );
    let e = errors(&auth(
        "2030-01-01T00:00:00Z",
        "http://auth.example.com/token",
    ));
    assert!(
        e[0].contains("token_endpoint must be an https:// URL"),
        "{e:?}"
    );
    // A local authorization server may speak plain HTTP on loopback.
    for local in [
        "http://127.0.0.1:9000/token",
        "http://[::1]:9000/t",
        "http://localhost/t",
    ] {
        assert!(
            parse(&auth("2030-01-01T00:00:00Z", local)).is_ok(),
            "{local}"
        );
    }
}

mod sessions {
    use super::*;

    const VAULT: &str = "[[vaults]]\nid = \"vlt_a\"\n";

    #[test]
    fn a_session_with_neither_token_nor_source_cidrs_is_an_error_naming_both_keys() {
        let e = errors(&format!(
            "{VAULT}[[sessions]]\nid = \"sesn_open\"\nvault_ids = [\"vlt_a\"]\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("k.toml:3:1: "), "{e:?}");
        assert!(
            e[0].contains("proxy_token_env") && e[0].contains("source_cidrs"),
            "{e:?}"
        );
    }

    #[test]
    fn a_session_with_only_source_cidrs_is_read_and_has_no_token() {
        let c = parse(&format!(
            "{VAULT}[[sessions]]\nid = \"sesn_t\"\nvault_ids = [\"vlt_a\"]\nsource_cidrs = [\"10.200.0.2/32\", \"fd00::1/128\", \"10.1.2.3/24\"]\n"
        ))
        .unwrap();
        let s = &c.sessions[0];
        assert!(s.proxy_token.is_none());
        let cidrs: Vec<_> = s.source_cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(cidrs, ["10.200.0.2/32", "fd00::1/128", "10.1.2.0/24"]);
    }

    #[test]
    fn bad_or_empty_source_cidrs_are_errors() {
        let e = errors(&format!(
            "{VAULT}[[sessions]]\nid = \"sesn_t\"\nsource_cidrs = [\"10.0.0.1/40\", \"nope\"]\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("k.toml:5:17: "), "{e:?}");
        assert!(e[1].starts_with("k.toml:5:32: "), "{e:?}");
        let e = errors(&format!(
            "{VAULT}[[sessions]]\nid = \"sesn_t\"\nsource_cidrs = []\n"
        ));
        assert!(
            e.len() == 1 && e[0].contains("proxy_token_env") && e[0].contains("source_cidrs"),
            "{e:?}"
        );
    }
}

/// SPEC §8: configuration errors name the key and the position, never the value of a
/// secret-bearing key, nor a value put in an `_env`/`_file` key (it may be a pasted token).
mod diagnostics {
    use super::*;

    const HEAD: &str = "[[vaults]]\nid = \"vlt_a\"\n[[vaults.credentials]]\nid = \"vcrd_a\"\n";
    const ENV_VAR: &str = "auth.type = \"environment_variable\"\nauth.secret_name = \"T\"\nauth.networking = { type = \"unrestricted\" }\n";
    const BEARER: &str =
        "auth.type = \"static_bearer\"\nauth.mcp_server_url = \"https://mcp.example.com/\"\n";
    const OAUTH: &str = "auth.type = \"mcp_oauth\"\nauth.mcp_server_url = \"https://mcp.example.com/\"\nauth.access_token = \"a\"\n";

    /// (config text, what must never appear, the key the message must name)
    fn cases() -> Vec<(String, &'static str, &'static str)> {
        vec![
            (
                format!("{HEAD}{ENV_VAR}auth.secret_value = 31415926\n"),
                "31415926",
                "secret_value",
            ),
            (
                format!("{HEAD}{ENV_VAR}auth.secret_value = 0x1DF5E76\n"),
                "31415926",
                "secret_value",
            ),
            (
                format!("{HEAD}{ENV_VAR}auth.secret_value = 27182.818\n"),
                "27182.818",
                "secret_value",
            ),
            (
                format!("{HEAD}{ENV_VAR}auth.secret_value_env = \"ghp_ZQXenvSECRET\"\n"),
                "ZQXenvSECRET",
                "secret_value_env",
            ),
            (
                format!("{HEAD}{ENV_VAR}auth.secret_value_file = \"ghp_ZQXfileSECRET\"\n"),
                "ZQXfileSECRET",
                "secret_value_file",
            ),
            (
                format!("{HEAD}{ENV_VAR}auth.secret_value_env = 31415926\n"),
                "31415926",
                "secret_value_env",
            ),
            (
                format!("{HEAD}{BEARER}auth.token = 31415926\n"),
                "31415926",
                "token",
            ),
            (
                format!("{HEAD}{BEARER}auth.token_env = \"ghp_ZQXtokSECRET\"\n"),
                "ZQXtokSECRET",
                "token_env",
            ),
            (
                format!(
                    "{HEAD}auth = {{ type = \"static_bearer\", mcp_server_url = \"https://m.example.com/\", token = 31415926 }}\n"
                ),
                "31415926",
                "token",
            ),
            (
                format!(
                    "{HEAD}{OAUTH}auth.refresh = {{ client_id = \"c\", token_endpoint = \"https://a.example.com/t\", refresh_token = 31415926 }}\n"
                ),
                "31415926",
                "refresh_token",
            ),
            (
                format!(
                    "{HEAD}{OAUTH}auth.refresh = {{ client_id = \"c\", token_endpoint = \"https://a.example.com/t\", refresh_token_env = \"ghp_ZQXrefSECRET\" }}\n"
                ),
                "ZQXrefSECRET",
                "refresh_token_env",
            ),
            (
                format!(
                    "{HEAD}{OAUTH}auth.refresh = {{ client_id = \"c\", token_endpoint = \"https://a.example.com/t\", refresh_token = \"r\", token_endpoint_auth = {{ type = \"client_secret_post\", client_secret_env = \"ghp_ZQXcsSECRET\" }} }}\n"
                ),
                "ZQXcsSECRET",
                "client_secret_env",
            ),
            (
                format!(
                    "{HEAD}{OAUTH}auth.refresh = {{ client_id = \"c\", token_endpoint = \"https://a.example.com/t\", refresh_token = \"r\", token_endpoint_auth = {{ type = \"client_secret_post\", client_secret = 31415926 }} }}\n"
                ),
                "31415926",
                "client_secret",
            ),
            (
                "[[sessions]]\nid = \"sesn_a\"\nproxy_token_env = \"ghp_ZQXsessSECRET\"\n"
                    .to_string(),
                "ZQXsessSECRET",
                "proxy_token_env",
            ),
            (
                "[admin]\napi_key_env = 31415926\n".to_string(),
                "31415926",
                "api_key_env",
            ),
        ]
    }

    #[test]
    fn errors_name_the_key_but_never_repeat_a_secret_or_env_or_file_value() {
        for (text, secret, key) in cases() {
            let e = Config::from_toml(&text, "k.toml", Path::new("/nonexistent")).unwrap_err();
            let shown = e.to_string();
            assert!(shown.starts_with("k.toml:"), "{shown}");
            if !secret.is_empty() {
                assert!(
                    !shown.contains(secret),
                    "{secret} repeated in: {shown}\n{text}"
                );
            }
            assert!(
                shown.contains(&format!("`{key}`")),
                "{key} not named in: {shown}\n{text}"
            );
        }
    }

    #[test]
    fn serde_values_are_masked_but_field_names_kept() {
        assert_eq!(
            without_values("invalid type: integer `31415926`, expected a string"),
            "invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            without_values("invalid type: string \"ghp_\\\"x\", expected struct R"),
            "invalid type: string \"…\", expected struct R"
        );
        assert_eq!(
            without_values("unknown field `x`, expected one of `a`, `b`"),
            "unknown field `x`, expected one of `a`, `b`"
        );
    }
}

#[test]
fn a_placeholder_that_is_or_holds_a_secret_is_an_error_that_names_no_value() {
    let cred = |id: &str, secret: &str, placeholder: &str| {
        format!(
            "[[vaults.credentials]]\nid = \"{id}\"\nauth = {{ type = \"environment_variable\", secret_name = \"T\", secret_value = \"{secret}\", placeholder = \"{placeholder}\", networking = {{ type = \"unrestricted\" }} }}\n"
        )
    };
    for (creds, owner) in [
        (
            cred("vcrd_a", "ghp_EQUALS_SECRET", "ghp_EQUALS_SECRET"),
            "vcrd_a",
        ),
        (
            format!(
                "{}{}",
                cred("vcrd_a", "other-secret-1", "ks-ph-a-prefix-sk_live_ABCDEF"),
                cred("vcrd_b", "sk_live_ABCDEF", "ks-ph-b-placeholder")
            ),
            "vcrd_b",
        ),
    ] {
        let e = errors(&format!("[[vaults]]\nid = \"vlt_a\"\n{creds}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains(&format!("the secret of credential `{owner}`")),
            "{e:?}"
        );
        assert!(
            !e[0].contains("SECRET") && !e[0].contains("sk_live"),
            "{e:?}"
        );
    }
    // A short secret inside an ordinary placeholder is a coincidence, not a leak.
    assert!(
        parse(&format!(
            "[[vaults]]\nid = \"vlt_a\"\n{}",
            cred("vcrd_a", "ph", "ks-ph-a-placeholder")
        ))
        .is_ok()
    );
}

#[test]
fn upstream_ca_files_are_opened_and_a_bad_one_is_reported_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.pem"),
        "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let text = "[tls]\nupstream_ca_files = [\"ok.pem\", \"missing.pem\", \"empty.pem\"]\n";
    let e: Vec<String> = Config::from_toml(text, "k.toml", dir.path())
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("k.toml:2:32: ")
            && e[0].contains("cannot read")
            && e[0].contains("missing.pem"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("k.toml:2:47: ") && e[1].contains("no PEM certificate"),
        "{e:?}"
    );
    let good = "[tls]\nupstream_ca_files = [\"ok.pem\"]\n";
    assert!(Config::from_toml(good, "k.toml", dir.path()).is_ok());
}
