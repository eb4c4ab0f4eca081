//! `keyswap env`: the shell lines that point a sandbox at keyswap. Placeholders only, never a secret.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::vault::Auth;

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
    #[error("cannot write the CA bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `export` lines for a sandbox of `session` (or of the implicit session).
/// `ca_cert` is keyswap's CA certificate file; a bundle with the system roots is written beside it,
/// because with `mitm = "auto"` some tunnels are not intercepted and show the real certificates.
pub fn exports(config: &Config, session: Option<&str>, ca_cert: &Path) -> Result<String, EnvError> {
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
    let proxy_url = format!("http://{userinfo}{}", reachable(config.proxy.listen));
    let bundle = write_bundle(config, ca_cert)?;
    let mut out = String::new();
    let mut export = |name: &str, value: &str| {
        let _ = writeln!(out, "export {name}={}", shell_quote(value));
    };
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        export(name, &proxy_url);
    }
    export("NO_PROXY", "localhost,127.0.0.1,::1");
    export("no_proxy", "localhost,127.0.0.1,::1");
    let bundle = bundle.display().to_string();
    for name in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        export(name, &bundle);
    }
    export("NODE_EXTRA_CA_CERTS", &ca_cert.display().to_string());
    for credential in config.credentials().filter(|c| !c.archived) {
        let in_session = session.is_none_or(|s| s.vault_ids.contains(&credential.vault_id));
        if let (true, Auth::EnvironmentVariable(env)) = (in_session, &credential.auth) {
            export(&env.secret_name, &env.placeholder);
        }
    }
    Ok(out)
}

/// A listen address as a client reaches it: an unspecified address means this host.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// Writes `ca-bundle.pem` beside the CA: keyswap's CA, the operator's upstream CAs, the system roots.
fn write_bundle(config: &Config, ca_cert: &Path) -> Result<PathBuf, EnvError> {
    let path = ca_cert.with_file_name("ca-bundle.pem");
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
    std::fs::write(&path, pem).map_err(err)?;
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

    #[test]
    fn exports_proxy_ca_and_placeholders_but_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = r#"
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
        let config = Config::from_toml(text, "t", dir.path()).unwrap();
        let out = exports(&config, None, &ca).unwrap();
        assert!(
            out.contains("export HTTPS_PROXY='http://127.0.0.1:9999'\n"),
            "{out}"
        );
        assert!(out.contains("export https_proxy='http://127.0.0.1:9999'\n"));
        assert!(out.contains("export GITHUB_TOKEN='ks-ph-vcrd_a'\n"));
        assert!(out.contains(&format!("export NODE_EXTRA_CA_CERTS='{}'\n", ca.display())));
        assert!(out.contains("SSL_CERT_FILE='") && out.contains("ca-bundle.pem'"));
        assert!(!out.contains("REAL"), "{out}");
        assert!(
            !out.contains("OLD="),
            "archived credentials are not exported"
        );
        assert!(matches!(
            exports(&config, Some("nope"), &ca),
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
