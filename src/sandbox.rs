//! `keyswap env`: the shell lines that point a sandbox at keyswap. Placeholders only, never a secret.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::vault::{AWS_DUMMY_SECRET, Auth};

/// Where Debian, Fedora/RHEL, Alpine and SUSE keep the system's web roots.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("no session has id `{0}`")]
    UnknownSession(String),
    #[error("this configuration has sessions: choose one with --session ID")]
    SessionRequired,
    #[error(
        "session `{0}` has no proxy_token_env: it is reached from its source_cidrs, never through HTTP_PROXY, so there is no proxy URL to print"
    )]
    NoProxyToken(String),
    #[error(
        "[proxy] listen is {0}, which a sandbox cannot dial: say how the sandbox reaches keyswap with --proxy-url http://HOST:PORT"
    )]
    WildcardListen(SocketAddr),
    #[error(
        "--proxy-url {0} is not an http:// URL with a host and port (e.g. http://keyswap.internal:8080)"
    )]
    BadProxyUrl(String),
    #[error("no CA yet at {0}: run `keyswap ca` first (keyswap env never creates one)")]
    NoCa(PathBuf),
    #[error("cannot write the CA bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How `keyswap env` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `export NAME='value'` lines for a POSIX shell.
    #[default]
    Sh,
    /// `NAME=value` lines, unquoted (`docker run --env-file`).
    Dotenv,
    /// One JSON object of strings.
    Json,
}

/// Where the sandbox finds keyswap and its CA (they may differ from this host's view).
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// How the sandbox dials keyswap; default: `[proxy] listen`.
    pub proxy_url: Option<String>,
    /// Where the sandbox finds `ca-bundle.pem`; default: its path on this host.
    pub ca_path: Option<PathBuf>,
}

/// The variables for a sandbox of `session` (or of the implicit session), in order.
/// `ca_cert` is keyswap's CA certificate on this host; it must exist (run `keyswap ca` first).
pub fn variables(
    config: &Config,
    session: Option<&str>,
    ca_cert: &Path,
    reach: &Reach,
) -> Result<Vec<(String, String)>, EnvError> {
    let session = match session {
        Some(id) => Some(
            config
                .sessions
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| EnvError::UnknownSession(id.to_string()))?,
        ),
        // With sessions configured, a sandbox without credentials would only ever get 407.
        None if !config.sessions.is_empty() => return Err(EnvError::SessionRequired),
        None => None,
    };
    let userinfo = match session {
        Some(s) => match &s.proxy_token {
            Some(token) => format!("{}:{}@", s.id, percent_encode(token.expose())),
            // A proxy URL naming only the id would get 407 on every request: proxy
            // authentication never selects a session without a token.
            None => return Err(EnvError::NoProxyToken(s.id.clone())),
        },
        None => String::new(),
    };
    let (host, port) = match &reach.proxy_url {
        Some(url) => proxy_host_port(url)?,
        None if config.proxy.listen.ip().is_unspecified() => {
            return Err(EnvError::WildcardListen(config.proxy.listen));
        }
        None => {
            let listen = config.proxy.listen;
            let host = match listen.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            };
            (host, listen.port())
        }
    };
    if !ca_cert.exists() {
        return Err(EnvError::NoCa(ca_cert.to_path_buf()));
    }
    let here = bundle_path(ca_cert);
    if !here.exists() {
        write_bundle(config, ca_cert)?;
    }
    let bundle = reach.ca_path.clone().unwrap_or(here);
    let store = bundle.with_extension("p12").display().to_string();
    let bundle = bundle.display().to_string();
    let proxy_url = format!("http://{userinfo}{host}:{port}");
    let no_proxy = "localhost,127.0.0.1,::1";

    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| out.push((name.to_string(), value.to_string()));
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        set(name, &proxy_url);
    }
    set("NO_PROXY", no_proxy);
    set("no_proxy", no_proxy);
    // Node 20+ reads the proxy variables only when asked to (undici's EnvHttpProxyAgent).
    set("NODE_USE_ENV_PROXY", "1");
    set("NPM_CONFIG_PROXY", &proxy_url);
    set("NPM_CONFIG_HTTPS_PROXY", &proxy_url);
    // Every CA variable points at the bundle: keyswap's CA, upstream_ca_files and the system
    // roots (with mitm = "auto", tunnels no credential covers show the real certificates).
    for name in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "NPM_CONFIG_CAFILE",
        "PIP_CERT",
        "AWS_CA_BUNDLE",
        "CARGO_HTTP_CAINFO",
        "DENO_CERT",
        "NIX_SSL_CERT_FILE",
        "HTTPLIB2_CA_CERTS",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    ] {
        set(name, &bundle);
    }
    let java_host = host.trim_start_matches('[').trim_end_matches(']');
    set(
        "JAVA_TOOL_OPTIONS",
        &format!(
            "-Dhttp.proxyHost={java_host} -Dhttp.proxyPort={port} -Dhttps.proxyHost={java_host} -Dhttps.proxyPort={port} -Dhttp.nonProxyHosts=localhost|127.0.0.1|[::1] -Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword=changeit"
        ),
    );
    let mut aws: Vec<(&str, &str)> = Vec::new();
    for credential in config.credentials().filter(|c| !c.archived) {
        if !session.is_none_or(|s| s.vault_ids.contains(&credential.vault_id)) {
            continue;
        }
        match &credential.auth {
            Auth::EnvironmentVariable(env) => set(&env.secret_name, &env.placeholder),
            Auth::HmacSignature(h) => set(&h.secret_name, &h.placeholder),
            Auth::AwsSigv4(a) => aws.push((&credential.id, &a.placeholder)),
            Auth::StaticBearer(_) | Auth::McpOauth(_) => {}
        }
    }
    // SPEC §11: the SDK signs with the first key by id and the fixed dummy secret; keyswap signs
    // again. Other keys of the session work on the wire too: they are listed for the user.
    aws.sort();
    if let Some(((_, first), others)) = aws.split_first() {
        set("AWS_ACCESS_KEY_ID", first);
        set("AWS_SECRET_ACCESS_KEY", AWS_DUMMY_SECRET);
        if !others.is_empty() {
            let list: Vec<String> = others.iter().map(|(id, p)| format!("{id}={p}")).collect();
            set(
                COMMENT,
                &format!("other aws_sigv4 access key ids: {}", list.join(" ")),
            );
        }
    }
    Ok(out)
}

/// The name of a pair [`render`] writes as a comment line (and leaves out of JSON).
const COMMENT: &str = "#";

/// The variables printed in `format`.
pub fn render(variables: &[(String, String)], format: Format) -> String {
    match format {
        Format::Sh => variables
            .iter()
            .map(|(k, v)| match k.as_str() {
                COMMENT => format!("# {v}\n"),
                _ => format!("export {k}={}\n", shell_quote(v)),
            })
            .collect(),
        Format::Dotenv => variables
            .iter()
            .map(|(k, v)| match k.as_str() {
                COMMENT => format!("# {v}\n"),
                _ => format!("{k}={v}\n"),
            })
            .collect(),
        Format::Json => {
            let object: serde_json::Map<String, serde_json::Value> = variables
                .iter()
                .filter(|(k, _)| k != COMMENT)
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            format!("{}\n", serde_json::Value::Object(object))
        }
    }
}

/// The `export` lines for a sandbox (this host's paths and listen address).
pub fn exports(config: &Config, session: Option<&str>, ca_cert: &Path) -> Result<String, EnvError> {
    let vars = variables(config, session, ca_cert, &Reach::default())?;
    Ok(render(&vars, Format::Sh))
}

/// Host and port of an `http://` proxy URL (userinfo, if any, is replaced by the session's).
fn proxy_host_port(url: &str) -> Result<(String, u16), EnvError> {
    let bad = || EnvError::BadProxyUrl(url.to_string());
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    let host = authority.host().to_string();
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, authority.port_u16().unwrap_or(80)))
}

/// `ca-bundle.pem` beside the CA certificate.
pub fn bundle_path(ca_cert: &Path) -> PathBuf {
    ca_cert.with_file_name("ca-bundle.pem")
}

/// Writes `ca-bundle.pem` beside the CA: keyswap's CA, the operator's upstream CAs, the system
/// roots; and `ca-bundle.p12`, the same as a PKCS#12 trust store (password `changeit`) for Java.
/// Called when the CA is created or loaded (`keyswap ca`, `keyswap run`).
pub fn write_bundle(config: &Config, ca_cert: &Path) -> Result<PathBuf, EnvError> {
    let path = bundle_path(ca_cert);
    let err = |source| EnvError::Bundle {
        path: path.clone(),
        source,
    };
    let mut pem = std::fs::read_to_string(ca_cert).map_err(err)?;
    let extra = config.tls.upstream_ca_files.iter().map(PathBuf::as_path);
    let system = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.exists());
    for file in extra.chain(system) {
        if let Ok(text) = std::fs::read_to_string(file) {
            if !pem.ends_with('\n') {
                pem.push('\n');
            }
            pem.push_str(&text);
        }
    }
    std::fs::write(&path, &pem).map_err(err)?;
    // The same certificates as a PKCS#12 trust store, for Java.
    let p12 = path.with_extension("p12");
    let store =
        crate::truststore::pkcs12(&crate::truststore::pem_certificates(&pem)).map_err(|_| {
            EnvError::Bundle {
                path: p12.clone(),
                source: std::io::Error::other("cannot draw a random salt"),
            }
        })?;
    std::fs::write(&p12, store).map_err(|source| EnvError::Bundle {
        path: p12.clone(),
        source,
    })?;
    Ok(path)
}

/// Percent-encodes everything outside the unreserved URL set, for the userinfo of a proxy URL.
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if crate::vault::is_url_safe(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Single-quotes a value for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[proxy]
listen = "0.0.0.0:9999"
[[vaults]]
id = "vlt_a"
[[vaults.credentials]]
id = "vcrd_a"
auth = { type = "environment_variable", secret_name = "GITHUB_TOKEN", secret_value = "ghp_REAL", networking = { type = "unrestricted" } }
[[vaults.credentials]]
id = "vcrd_b"
archived_at = "2026-01-01T00:00:00Z"
auth = { type = "environment_variable", secret_name = "OLD", secret_value = "old_REAL", networking = { type = "unrestricted" } }
"#;

    fn setup() -> (tempfile::TempDir, Config, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let config = Config::from_toml(TEXT, "t", dir.path()).unwrap();
        (dir, config, ca)
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_sandbox_gets_proxy_ca_and_placeholders_but_no_secret_and_no_host_path() {
        let (_dir, config, ca) = setup();
        let reach = Reach {
            proxy_url: Some("http://keyswap.internal:3128".into()),
            ca_path: Some("/certs/ca-bundle.pem".into()),
        };
        let vars = variables(&config, None, &ca, &reach).unwrap();
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "NPM_CONFIG_PROXY",
        ] {
            assert_eq!(
                get(&vars, name),
                Some("http://keyswap.internal:3128"),
                "{name}"
            );
        }
        for name in [
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "PIP_CERT",
            "AWS_CA_BUNDLE",
            "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        ] {
            assert_eq!(get(&vars, name), Some("/certs/ca-bundle.pem"), "{name}");
        }
        assert_eq!(get(&vars, "NODE_USE_ENV_PROXY"), Some("1"));
        let java = get(&vars, "JAVA_TOOL_OPTIONS").unwrap();
        assert!(
            java.contains("-Dhttps.proxyHost=keyswap.internal -Dhttps.proxyPort=3128"),
            "{java}"
        );
        assert!(
            java.contains("-Djavax.net.ssl.trustStore=/certs/ca-bundle.p12"),
            "{java}"
        );
        assert_eq!(get(&vars, "GITHUB_TOKEN"), Some("ks-ph-vcrd_a"));
        assert_eq!(
            get(&vars, "OLD"),
            None,
            "archived credentials are not exported"
        );
        let all = render(&vars, Format::Sh);
        assert!(!all.contains("REAL"), "{all}");
        assert!(
            !all.contains(&ca.parent().unwrap().display().to_string()),
            "no host path: {all}"
        );
        assert!(!all.contains("9999"), "no host port: {all}");
    }

    #[test]
    fn formats_are_shell_dotenv_and_json() {
        let vars = vec![
            ("A".to_string(), "it's".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        assert_eq!(
            render(&vars, Format::Sh),
            "export A='it'\\''s'\nexport B='x y'\n"
        );
        assert_eq!(render(&vars, Format::Dotenv), "A=it's\nB=x y\n");
        let json: serde_json::Value = serde_json::from_str(&render(&vars, Format::Json)).unwrap();
        assert_eq!(json, serde_json::json!({"A": "it's", "B": "x y"}));
    }

    #[test]
    fn bad_input_says_what_to_do() {
        let (dir, config, ca) = setup();
        let err = variables(&config, None, &ca, &Reach::default()).unwrap_err();
        assert!(err.to_string().contains("--proxy-url"), "{err}");
        let reach = Reach {
            proxy_url: Some("https://x:1".into()),
            ca_path: None,
        };
        assert!(matches!(
            variables(&config, None, &ca, &reach),
            Err(EnvError::BadProxyUrl(_))
        ));
        let reach = Reach {
            proxy_url: Some("http://x:1".into()),
            ca_path: None,
        };
        let missing = dir.path().join("none.pem");
        let err = variables(&config, None, &missing, &reach).unwrap_err();
        assert!(err.to_string().contains("keyswap ca"), "{err}");
        assert!(!missing.exists(), "no CA was created");
        assert!(matches!(
            variables(&config, Some("nope"), &ca, &reach),
            Err(EnvError::UnknownSession(_))
        ));
    }

    #[test]
    fn tokens_are_percent_encoded_in_the_proxy_url() {
        assert_eq!(percent_encode(b"a/b@c:d"), "a%2Fb%40c%3Ad");
        assert_eq!(percent_encode(b"plain-token_1.x~"), "plain-token_1.x~");
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn a_session_without_a_token_gets_no_proxy_url() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[vaults]]\nid = \"vlt_a\"\n[[sessions]]\nid = \"sesn_net\"\nsource_cidrs = [\"10.200.0.2/32\"]\n";
        let config = Config::from_toml(text, "t", dir.path()).unwrap();
        let e = exports(&config, Some("sesn_net"), &dir.path().join("ca.pem")).unwrap_err();
        assert!(
            matches!(e, EnvError::NoProxyToken(ref id) if id == "sesn_net"),
            "{e}"
        );
    }
}
