//! The TOML configuration (SPEC §4): parsed with serde, then validated into typed settings.
//!
//! Every problem is reported as `file:line:column: message`. Unknown keys are errors, because a typo
//! must never silently drop a scope. [`Config::from_toml`] is the testable core; [`Config::load`]
//! adds the file system.
//!
//! One `Validator` walks the raw document; its methods live with their concern: `node` (listeners,
//! CA files, upstream, limits), `credentials` (vaults, ids, placeholders, scope), `auth` (the auth
//! types and secret sources), `oauth`, `sessions`, and `diagnostics` (positions, masked messages).

mod auth;
mod credentials;
mod diagnostics;
mod node;
mod oauth;
mod raw;
mod sessions;
mod signing;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::vault::{Credential, Networking, Vault};

pub use diagnostics::without_values;
use diagnostics::{key_of_value_at, line_column};
pub use raw::{Backend, MitmMode, OutOfScope};

/// The default config path of `keyswap run`, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/keyswap.toml";

/// The longest secret accepted: every request that receives it scans responses for it.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// Metadata limits shared with the admin API.
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY: usize = 64;
pub const MAX_METADATA_VALUE: usize = 512;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` for the embedded defaults.
    pub source: Option<PathBuf>,
    pub proxy: ProxySettings,
    pub admin: AdminSettings,
    pub tls: TlsSettings,
    pub upstream: UpstreamSettings,
    pub limits: Limits,
    pub store: StoreSettings,
    pub vaults: Vec<Vault>,
    pub sessions: Vec<Session>,
    /// Where the first secret given literally (not by `_env` / `_file`) is: such a file must be
    /// private to keyswap's user (see [`Config::exposed_files`]).
    pub literal_secret: Option<Position>,
}

/// A key and its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub key: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// Accepts connections the kernel redirected (SPEC §12; Linux).
    pub transparent_listen: Option<SocketAddr>,
    pub block_private_addresses: bool,
    pub allow_private_cidrs: Vec<IpNet>,
    pub substitute_over_plain_http: bool,
    pub mitm: MitmMode,
    pub out_of_scope_placeholder: OutOfScope,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub api_key_env: String,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub upstream_ca_files: Vec<PathBuf>,
}

/// `[store]`: where vaults and credentials live (SPEC §10). The URL and key are read from the
/// variables named here when keyswap starts, never from the file.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub backend: Backend,
    pub url_env: String,
    pub key_env: String,
    /// The safety poll beside LISTEN/NOTIFY.
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct UpstreamSettings {
    /// Static DNS overrides, keyed by normalised host.
    pub resolve: HashMap<String, IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Open client connections one session may hold (SPEC §8): one sandbox never starves another.
    pub max_connections_per_session: usize,
    /// Request bodies held whole in memory (substituted whole, kept for an OAuth replay), all
    /// requests together; past it a body is streamed instead.
    pub max_buffered_body_bytes: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// One sandbox's identity at the proxy (SPEC §1).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub vault_ids: Vec<String>,
    /// The token clients present as the password of `Proxy-Authorization: Basic`. A session
    /// without one is reached only by its `source_cidrs`, never by proxy authentication.
    pub proxy_token: Option<Secret>,
    /// The client addresses that pick this session on the transparent listener (SPEC §12; the
    /// listener itself is not built yet). Empty when the session is reached by its token.
    pub source_cidrs: Vec<IpNet>,
    pub network: Networking,
}

/// One problem in a configuration file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: name.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read: {e}"),
            }])
        })?;
        // SECURITY: the text may hold literal secrets; wipe it once parsed.
        let text = Zeroizing::new(text);
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut config = Config::from_toml(&text, &name, &base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The embedded defaults: no credentials, default listeners, `certs/` in the working directory.
    pub fn embedded_defaults() -> Config {
        match Config::from_toml("", "<embedded defaults>", Path::new("")) {
            Ok(config) => config,
            Err(e) => unreachable!("the embedded defaults are valid: {e}"),
        }
    }

    /// Parses and validates TOML text. `file` names it in errors; relative paths resolve against `base`.
    pub fn from_toml(text: &str, file: &str, base: &Path) -> Result<Config, ConfigErrors> {
        Self::parse(text, file, base, false)
    }

    /// The file's settings with the vaults the database holds (`[[vaults]]` text rendered from
    /// its rows, see `dbstore`): validated together, as sessions name those vaults.
    pub fn with_vaults(
        file_text: &str,
        vaults_text: &str,
        file: &str,
        base: &Path,
    ) -> Result<Config, ConfigErrors> {
        let mut text = Zeroizing::new(String::with_capacity(
            file_text.len() + vaults_text.len() + 1,
        ));
        text.push_str(file_text);
        text.push('\n');
        text.push_str(vaults_text);
        Self::parse(&text, file, base, true)
    }

    fn parse(
        text: &str,
        file: &str,
        base: &Path,
        vaults_from_database: bool,
    ) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            text,
            file,
            base,
            errors: Vec::new(),
            literal_secret: None,
            vaults_from_database,
        };
        let raw: raw::RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                // SECURITY: the message may quote the value (see `without_values`); the key it
                // belongs to is named instead, so the operator still knows what to fix.
                let mut message = without_values(e.message().trim_end());
                if let Some(key) = key_of_value_at(text, span.start) {
                    message = format!("`{key}`: {message}");
                }
                v.error(span, message);
                return Err(ConfigErrors(v.errors));
            }
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            v.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(v.errors))
        }
    }

    /// The secret-bearing files that group or others can read (SPEC §8): the CA key, and this
    /// config file when it holds literal secrets. Each is refused at start with its `chmod`.
    pub fn exposed_files(&self) -> Vec<crate::files::NotPrivate> {
        let mut exposed = Vec::new();
        if let (Some(source), Some(_)) = (&self.source, &self.literal_secret)
            && let Err(e) = crate::files::ensure_private("the configuration file", source)
        {
            exposed.push(e);
        }
        if let Err(e) = crate::files::ensure_private("the CA key", &self.tls.ca_key) {
            exposed.push(e);
        }
        exposed
    }

    /// Every credential of every vault.
    pub fn credentials(&self) -> impl Iterator<Item = &Credential> {
        self.vaults.iter().flat_map(|v| v.credentials.iter())
    }
}

/// Turns the raw, spanned document into a [`Config`], collecting every error on the way.
struct Validator<'a> {
    text: &'a str,
    file: &'a str,
    base: &'a Path,
    errors: Vec<ConfigError>,
    literal_secret: Option<Position>,
    /// The `[[vaults]]` in the text were rendered from the database (see [`Config::with_vaults`]).
    vaults_from_database: bool,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    fn path(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    fn config(&mut self, raw: raw::RawConfig) -> Config {
        let proxy = self.proxy(raw.proxy);
        let admin = self.admin(raw.admin);
        if admin.listen == proxy.listen && proxy.listen.port() != 0 {
            self.error(0..0, "[admin] listen and [proxy] listen must differ");
        }
        let tls = TlsSettings {
            ca_cert: self.path(&raw.tls.ca_cert),
            ca_key: self.path(&raw.tls.ca_key),
            upstream_ca_files: raw
                .tls
                .upstream_ca_files
                .iter()
                .map(|p| self.ca_file(p))
                .collect(),
        };
        let upstream = self.upstream(raw.upstream);
        let limits = self.limits(raw.limits);
        let store = self.store(raw.store);
        // SECURITY/consistency: one source of truth. With the database backend, vaults in the file
        // would be a second copy that the replicas do not share.
        let in_database = store.backend == Backend::Postgres;
        if in_database
            && !self.vaults_from_database
            && let Some(first) = raw.vaults.first()
        {
            self.error(
                first.span(),
                "with [store] backend = \"postgres\" the vaults live in the database: remove [[vaults]] from this file (`keyswap store import --from FILE` copies them in)",
            );
        }
        let vaults = self.vaults(raw.vaults);
        // The file alone names vaults that are in the database: they are checked once merged.
        let check_vault_ids = !in_database || self.vaults_from_database;
        let sessions = self.sessions(raw.sessions, &vaults, check_vault_ids);
        Config {
            source: None,
            proxy,
            admin,
            tls,
            upstream,
            limits,
            store,
            vaults,
            sessions,
            literal_secret: self.literal_secret.take(),
        }
    }
}

/// `prefix` followed by 1–64 letters, digits or `_`.
fn is_valid_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn strip_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests;
