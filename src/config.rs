//! The TOML configuration (SPEC §4): parsed with serde, then validated into typed settings.
//!
//! Every problem is reported as `file:line:column: message`. Unknown keys are errors, because a typo
//! must never silently drop a scope. [`Config::from_toml`] is the testable core; [`Config::load`]
//! adds the file system.

mod raw;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::scope::{HostPattern, MAX_ALLOWED_HOSTS, normalize_host};
use crate::secret::Secret;
use crate::vault::{
    self, Auth, BearerAuth, Credential, EnvVarAuth, Injection, Metadata, Networking, OauthAuth,
    OauthRefresh, Times, TokenEndpointAuth, Vault,
};

pub use raw::{MitmMode, OutOfScope};

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
        let mut v = Validator {
            text,
            file,
            base,
            errors: Vec::new(),
            literal_secret: None,
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

    /// An `upstream_ca_files` entry, opened now (SPEC §9): a missing or certificate-less file is
    /// an error at its position, not a failure when keyswap starts or a reload half-applies.
    fn ca_file(&mut self, p: &Spanned<String>) -> PathBuf {
        let path = self.path(p.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => self.error(
                p.span(),
                format!(
                    "upstream_ca_files: {} holds no PEM certificate; give the CA's certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            ),
            Err(e) => self.error(
                p.span(),
                format!(
                    "upstream_ca_files: cannot read {} ({e}); fix the path (relative paths start at the config file's folder)",
                    path.display()
                ),
            ),
        }
        path
    }

    fn socket_addr(&mut self, s: &Spanned<String>) -> Option<SocketAddr> {
        match s.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    s.span(),
                    format!("`{}` is not an address like `127.0.0.1:8080`", s.get_ref()),
                );
                None
            }
        }
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
        let vaults = self.vaults(raw.vaults);
        let sessions = self.sessions(raw.sessions, &vaults);
        Config {
            source: None,
            proxy,
            admin,
            tls,
            upstream,
            limits,
            vaults,
            sessions,
            literal_secret: self.literal_secret.take(),
        }
    }

    fn proxy(&mut self, raw: raw::RawProxy) -> ProxySettings {
        let listen = raw
            .listen
            .as_ref()
            .and_then(|l| self.socket_addr(l))
            .unwrap_or(raw::DEFAULT_PROXY_LISTEN);
        let mut cidrs = Vec::new();
        for c in &raw.allow_private_cidrs {
            match c.get_ref().parse::<IpNet>() {
                Ok(net) => cidrs.push(net.trunc()),
                Err(_) => self.error(
                    c.span(),
                    format!("`{}` is not a CIDR range like `10.1.2.0/24`", c.get_ref()),
                ),
            }
        }
        ProxySettings {
            listen,
            block_private_addresses: raw.block_private_addresses,
            allow_private_cidrs: cidrs,
            substitute_over_plain_http: raw.substitute_over_plain_http,
            mitm: raw.mitm,
            out_of_scope_placeholder: raw.out_of_scope_placeholder,
        }
    }

    fn admin(&mut self, raw: raw::RawAdmin) -> AdminSettings {
        let listen = raw
            .listen
            .as_ref()
            .and_then(|l| self.socket_addr(l))
            .unwrap_or(raw::DEFAULT_ADMIN_LISTEN);
        if !vault::is_valid_secret_name(raw.api_key_env.get_ref()) {
            self.error(
                raw.api_key_env.span(),
                "api_key_env must be an environment variable name",
            );
        }
        AdminSettings {
            listen,
            api_key_env: raw.api_key_env.into_inner(),
        }
    }

    fn upstream(&mut self, raw: raw::RawUpstream) -> UpstreamSettings {
        let mut resolve = HashMap::new();
        for (host, ip) in raw.resolve {
            match ip.get_ref().parse::<IpAddr>() {
                Ok(addr) => {
                    resolve.insert(normalize_host(&host), addr);
                }
                Err(_) => self.error(
                    ip.span(),
                    format!("`{}` is not an IP address", ip.get_ref()),
                ),
            }
        }
        UpstreamSettings { resolve }
    }

    fn limits(&mut self, raw: raw::RawLimits) -> Limits {
        let secs = Duration::from_secs;
        Limits {
            max_header_bytes: raw.max_header_bytes,
            max_headers: raw.max_headers,
            header_read_timeout: secs(raw.header_read_timeout_secs),
            idle_timeout: secs(raw.idle_timeout_secs),
            max_connections: raw.max_connections.max(1),
            max_connections_per_session: raw.max_connections_per_session.max(1),
            max_buffered_body_bytes: raw.max_buffered_body_bytes,
            upstream_connect_timeout: secs(raw.upstream_connect_timeout_secs),
            upstream_response_timeout: secs(raw.upstream_response_timeout_secs),
            shutdown_grace: secs(raw.shutdown_grace_secs),
        }
    }

    fn vaults(&mut self, raws: Vec<Spanned<raw::RawVault>>) -> Vec<Vault> {
        let mut vault_ids = HashSet::new();
        let mut credential_ids = HashSet::new();
        let mut placeholders: HashMap<String, ()> = HashMap::new();
        // (credential id, placeholder, its span) and each credential's secret, checked at the end.
        let mut given: Vec<(String, String, Range<usize>)> = Vec::new();
        let mut secrets: Vec<Secret> = Vec::new();
        let mut vaults = Vec::new();
        for raw in raws {
            let raw = raw.into_inner();
            let id = raw.id.get_ref().clone();
            if !is_valid_id(&id, "vlt_") {
                self.error(
                    raw.id.span(),
                    format!("vault id `{id}` must be `vlt_` followed by letters, digits or `_`"),
                );
            } else if !vault_ids.insert(id.clone()) {
                self.error(raw.id.span(), format!("vault id `{id}` is used twice"));
            }
            let display_name = raw.display_name.map(|d| self.display_name(d));
            let metadata = self.metadata(raw.metadata);
            let times = self.times(raw.created_at, raw.updated_at, raw.archived_at);
            let mut credentials = Vec::new();
            for c in raw.credentials {
                let c_span = c.span();
                let c = c.into_inner();
                let cid = c.id.get_ref().clone();
                if !is_valid_id(&cid, "vcrd_") {
                    self.error(c.id.span(), format!("credential id `{cid}` must be `vcrd_` followed by letters, digits or `_`"));
                } else if !credential_ids.insert(cid.clone()) {
                    self.error(c.id.span(), format!("credential id `{cid}` is used twice"));
                }
                let display_name = c.display_name.map(|d| self.display_name(d));
                let metadata = self.metadata(c.metadata);
                let c_times = self.times(c.created_at, c.updated_at, c.archived_at);
                let placeholder_span = c.auth.get_ref().placeholder.as_ref().map(Spanned::span);
                let Some(auth) = self.auth(&cid, c.auth, c_span.clone()) else {
                    continue;
                };
                // MCP credentials answer to `ks-ph-` + id; every placeholder must be unique.
                let placeholder = match &auth {
                    Auth::EnvironmentVariable(env) => env.placeholder.clone(),
                    _ => vault::default_placeholder(&cid),
                };
                given.push((
                    cid.clone(),
                    placeholder.clone(),
                    placeholder_span.clone().unwrap_or_else(|| c_span.clone()),
                ));
                secrets.push(match &auth {
                    Auth::EnvironmentVariable(env) => env.secret.clone(),
                    Auth::StaticBearer(b) => b.token.clone(),
                    Auth::McpOauth(o) => o.access_token.clone(),
                });
                if placeholders.insert(placeholder.clone(), ()).is_some() {
                    let span = placeholder_span.unwrap_or_else(|| c_span.clone());
                    self.error(
                        span,
                        format!(
                            "placeholder `{placeholder}` is already used by another credential"
                        ),
                    );
                }
                credentials.push(Credential {
                    id: cid,
                    vault_id: id.clone(),
                    display_name,
                    metadata,
                    times: c_times,
                    archived: c_times.archived_at.is_some() || times.archived_at.is_some(),
                    auth,
                });
            }
            vaults.push(Vault {
                id,
                display_name,
                metadata,
                times,
                credentials,
            });
        }
        self.placeholders_hold_no_secret(&given, &secrets);
        vaults
    }

    /// SECURITY: a placeholder is handed to the sandbox (`keyswap env`); one that is a secret, or
    /// holds one, would give the secret away. Only the credential ids are named, never a value.
    fn placeholders_hold_no_secret(
        &mut self,
        given: &[(String, String, Range<usize>)],
        secrets: &[Secret],
    ) {
        for (cid, placeholder, span) in given {
            let holder = secrets.iter().position(|s| {
                let s = s.expose();
                !s.is_empty()
                    && (s == placeholder.as_bytes()
                        || (s.len() >= 8
                            && placeholder.as_bytes().windows(s.len()).any(|w| w == s)))
            });
            if let Some(i) = holder {
                let owner = &given[i].0;
                self.error(
                    span.clone(),
                    format!(
                        "the placeholder of credential `{cid}` contains the secret of credential `{owner}`; placeholders are given to sandboxes: choose another placeholder"
                    ),
                );
            }
        }
    }

    fn times(
        &mut self,
        created: Option<Spanned<String>>,
        updated: Option<Spanned<String>>,
        archived: Option<Spanned<String>>,
    ) -> Times {
        Times {
            created_at: created.and_then(|t| self.timestamp(t)),
            updated_at: updated.and_then(|t| self.timestamp(t)),
            archived_at: archived.and_then(|t| self.timestamp(t)),
        }
    }

    fn timestamp(&mut self, t: Spanned<String>) -> Option<OffsetDateTime> {
        match OffsetDateTime::parse(t.get_ref(), &Rfc3339) {
            Ok(time) => Some(time),
            Err(_) => {
                self.error(
                    t.span(),
                    format!(
                        "`{}` is not an RFC 3339 time like 2026-01-31T12:00:00Z",
                        t.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn display_name(&mut self, d: Spanned<String>) -> String {
        let n = d.get_ref().chars().count();
        if !(1..=255).contains(&n) {
            self.error(d.span(), "display_name must be 1 to 255 characters");
        }
        d.into_inner()
    }

    fn metadata(&mut self, raw: Option<Spanned<BTreeMap<String, String>>>) -> Metadata {
        let Some(raw) = raw else {
            return Metadata::new();
        };
        let span = raw.span();
        let map = raw.into_inner();
        if map.len() > MAX_METADATA_PAIRS {
            self.error(
                span.clone(),
                format!("metadata holds at most {MAX_METADATA_PAIRS} pairs"),
            );
        }
        for (k, v) in &map {
            if k.chars().count() > MAX_METADATA_KEY || k.is_empty() {
                self.error(
                    span.clone(),
                    format!("metadata key `{k}` must be 1 to {MAX_METADATA_KEY} characters"),
                );
            }
            if v.chars().count() > MAX_METADATA_VALUE {
                self.error(
                    span.clone(),
                    format!(
                        "metadata value of `{k}` is longer than {MAX_METADATA_VALUE} characters"
                    ),
                );
            }
        }
        map
    }

    fn auth(
        &mut self,
        credential_id: &str,
        raw: Spanned<raw::RawAuth>,
        outer: Range<usize>,
    ) -> Option<Auth> {
        let span = raw.span();
        let raw = raw.into_inner();
        let Some(kind) = raw.r#type.as_ref() else {
            self.error(outer, "credential is missing `auth.type`");
            return None;
        };
        let kind_span = kind.span();
        let allowed: &[&str] = match kind.get_ref().as_str() {
            "environment_variable" => &[
                "secret_name",
                "secret_value",
                "secret_value_env",
                "secret_value_file",
                "networking",
                "injection_location",
                "placeholder",
            ],
            "static_bearer" => &["mcp_server_url", "token", "token_env", "token_file"],
            "mcp_oauth" => &[
                "mcp_server_url",
                "access_token",
                "access_token_env",
                "access_token_file",
                "expires_at",
                "refresh",
            ],
            other => {
                self.error(kind_span, format!("unknown auth.type `{other}`: use environment_variable, static_bearer or mcp_oauth"));
                return None;
            }
        };
        for (key, key_span) in raw.present_keys() {
            if !allowed.contains(&key) {
                self.error(
                    key_span,
                    format!(
                        "`{key}` does not belong to a `{}` credential",
                        kind.get_ref()
                    ),
                );
            }
        }
        match kind.get_ref().as_str() {
            "environment_variable" => self
                .env_var_auth(credential_id, raw, span)
                .map(Auth::EnvironmentVariable),
            "static_bearer" => {
                let mcp_server_url = self.mcp_url(raw.mcp_server_url, span.clone())?;
                let token =
                    self.secret_source("token", raw.token, raw.token_env, raw.token_file, span)?;
                Some(Auth::StaticBearer(BearerAuth {
                    mcp_server_url,
                    token,
                }))
            }
            _ => {
                let mcp_server_url = self.mcp_url(raw.mcp_server_url, span.clone())?;
                let access_token = self.secret_source(
                    "access_token",
                    raw.access_token,
                    raw.access_token_env,
                    raw.access_token_file,
                    span,
                )?;
                let refresh = match raw.refresh {
                    Some(r) => Some(self.refresh(r)?),
                    None => None,
                };
                Some(Auth::McpOauth(OauthAuth {
                    mcp_server_url,
                    access_token,
                    expires_at: raw.expires_at.and_then(|t| self.timestamp(t)),
                    refresh,
                }))
            }
        }
    }

    fn env_var_auth(
        &mut self,
        credential_id: &str,
        raw: raw::RawAuth,
        span: Range<usize>,
    ) -> Option<EnvVarAuth> {
        let secret_name = match raw.secret_name {
            Some(name) if vault::is_valid_secret_name(name.get_ref()) => name.into_inner(),
            Some(name) => {
                self.error(
                    name.span(),
                    format!(
                        "secret_name `{}` must match ^[A-Za-z_][A-Za-z0-9_]*$",
                        name.get_ref()
                    ),
                );
                return None;
            }
            None => {
                self.error(
                    span,
                    "environment_variable credential is missing `auth.secret_name`",
                );
                return None;
            }
        };
        let secret = self.secret_source(
            "secret_value",
            raw.secret_value,
            raw.secret_value_env,
            raw.secret_value_file,
            span.clone(),
        );
        let networking = match raw.networking {
            Some(n) => self.networking(n),
            None => {
                self.error(
                    span,
                    "environment_variable credential is missing `auth.networking`",
                );
                None
            }
        };
        let injection = match raw.injection_location {
            Some(i) => {
                let s = i.span();
                let i = i.into_inner();
                let injection = Injection {
                    header: i.header.unwrap_or(true),
                    body: i.body.unwrap_or(false),
                    query: i.query.unwrap_or(false),
                };
                if !(injection.header || injection.body || injection.query) {
                    self.error(
                        s,
                        "injection_location must keep at least one of header, body, query true",
                    );
                }
                injection
            }
            None => Injection::default(),
        };
        let placeholder = match raw.placeholder {
            Some(p) if vault::is_valid_placeholder(p.get_ref()) => p.into_inner(),
            Some(p) => {
                self.error(
                    p.span(),
                    "placeholder must be 8 to 256 characters from [A-Za-z0-9._~-]",
                );
                return None;
            }
            None => vault::default_placeholder(credential_id),
        };
        Some(EnvVarAuth {
            secret_name,
            secret: secret?,
            networking: networking?,
            injection,
            placeholder,
        })
    }

    fn networking(&mut self, raw: Spanned<raw::RawNetworking>) -> Option<Networking> {
        let span = raw.span();
        let raw = raw.into_inner();
        match (raw.r#type.get_ref().as_str(), raw.allowed_hosts) {
            ("unrestricted", None) => Some(Networking::Unrestricted),
            ("unrestricted", Some(h)) => {
                self.error(
                    h.span(),
                    "allowed_hosts only goes with networking type \"limited\"",
                );
                None
            }
            ("limited", Some(hosts)) => self.allowed_hosts(hosts),
            ("limited", None) => {
                self.error(span, "networking type \"limited\" needs `allowed_hosts`");
                None
            }
            (other, _) => {
                self.error(
                    raw.r#type.span(),
                    format!(
                        "unknown networking type `{other}`: use \"unrestricted\" or \"limited\""
                    ),
                );
                None
            }
        }
    }

    fn allowed_hosts(&mut self, hosts: Spanned<Vec<Spanned<String>>>) -> Option<Networking> {
        let before = self.errors.len();
        if hosts.get_ref().len() > MAX_ALLOWED_HOSTS {
            self.error(
                hosts.span(),
                format!(
                    "allowed_hosts holds at most {MAX_ALLOWED_HOSTS} entries, found {}",
                    hosts.get_ref().len()
                ),
            );
        }
        if hosts.get_ref().is_empty() {
            self.error(hosts.span(), "allowed_hosts must name at least one host");
        }
        let mut allowed_hosts = Vec::new();
        let mut patterns = Vec::new();
        for h in hosts.into_inner() {
            match HostPattern::parse(h.get_ref()) {
                Ok(p) => {
                    patterns.push(p);
                    allowed_hosts.push(h.into_inner());
                }
                Err(e) => self.error(h.span(), e.to_string()),
            }
        }
        (self.errors.len() == before).then_some(Networking::Limited {
            allowed_hosts,
            patterns,
        })
    }

    /// Exactly one of a literal value, an environment variable or a file.
    fn secret_source(
        &mut self,
        what: &str,
        literal: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
        file: Option<Spanned<String>>,
        span: Range<usize>,
    ) -> Option<Secret> {
        let count = literal.is_some() as u8 + env.is_some() as u8 + file.is_some() as u8;
        if count != 1 {
            self.error(
                span,
                format!("give exactly one of `{what}`, `{what}_env`, `{what}_file`"),
            );
            return None;
        }
        let (value, span) = if let Some(l) = literal {
            let span = l.span();
            if self.literal_secret.is_none() {
                let (line, column) = line_column(self.text, span.start);
                self.literal_secret = Some(Position {
                    key: what.to_string(),
                    line,
                    column,
                });
            }
            (l.into_inner(), span)
        } else if let Some(e) = env {
            // SECURITY: the variable's name is not repeated in errors: a token pasted into
            // `…_env` by mistake would otherwise land in logs and on `/healthz`.
            match std::env::var(e.get_ref()) {
                Ok(v) => (v, e.span()),
                Err(_) => {
                    self.error(
                        e.span(),
                        format!("`{what}_env`: the environment variable it names is not set"),
                    );
                    return None;
                }
            }
        } else {
            let f = file?;
            let path = self.path(f.get_ref());
            match std::fs::read_to_string(&path) {
                // A file written by `echo` ends in a newline that is not part of the secret.
                Ok(v) => (strip_one_newline(v), f.span()),
                // SECURITY: nor is the path (same reason); the I/O error's text carries no path.
                Err(e) => {
                    self.error(
                        f.span(),
                        format!("`{what}_file`: cannot read the file it names: {e}"),
                    );
                    return None;
                }
            }
        };
        let value = Zeroizing::new(value);
        if value.len() > MAX_SECRET_BYTES {
            self.error(
                span.clone(),
                format!("`{what}` is longer than {MAX_SECRET_BYTES} bytes"),
            );
            return None;
        }
        if value.is_empty() {
            self.error(span, format!("`{what}` is empty"));
            return None;
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            self.error(span, format!("`{what}` contains control characters (CR, LF, NUL…), which no HTTP header can carry"));
            return None;
        }
        Some(Secret::new(value.as_bytes()))
    }

    fn mcp_url(&mut self, url: Option<Spanned<String>>, span: Range<usize>) -> Option<String> {
        let Some(url) = url else {
            self.error(span, "credential is missing `auth.mcp_server_url`");
            return None;
        };
        self.https_url("mcp_server_url", url)
    }

    /// MCP servers and token endpoints receive tokens: only over TLS.
    fn https_url(&mut self, key: &str, url: Spanned<String>) -> Option<String> {
        match url.get_ref().parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {
                Some(url.into_inner())
            }
            _ => {
                self.error(url.span(), format!("{key} must be an https:// URL"));
                None
            }
        }
    }

    /// `https://`, or `http://` on this machine's loopback (a local authorization server, as
    /// RFC 8252 allows for loopback redirects): refresh tokens never cross a network in clear.
    fn token_endpoint(&mut self, url: Spanned<String>) -> Option<String> {
        let loopback_http = url.get_ref().parse::<http::Uri>().is_ok_and(|u| {
            u.scheme_str() == Some("http")
                && u.host().is_some_and(|h| {
                    let h = h.trim_start_matches('[').trim_end_matches(']');
                    h.eq_ignore_ascii_case("localhost")
                        || h.parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                })
        });
        if loopback_http {
            return Some(url.into_inner());
        }
        match url.get_ref().parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {
                Some(url.into_inner())
            }
            _ => {
                self.error(
                    url.span(),
                    "token_endpoint must be an https:// URL (or http:// on 127.0.0.1, [::1] or localhost)",
                );
                None
            }
        }
    }

    fn refresh(&mut self, raw: Spanned<raw::RawRefresh>) -> Option<OauthRefresh> {
        let span = raw.span();
        let raw = raw.into_inner();
        let refresh_token = self.secret_source(
            "refresh_token",
            raw.refresh_token,
            raw.refresh_token_env,
            None,
            span.clone(),
        );
        let token_endpoint_auth = match raw.token_endpoint_auth {
            None => TokenEndpointAuth::None,
            Some(a) => self.token_endpoint_auth(a)?,
        };
        let token_endpoint = self.token_endpoint(raw.token_endpoint);
        Some(OauthRefresh {
            client_id: raw.client_id.into_inner(),
            refresh_token: refresh_token?,
            token_endpoint: token_endpoint?,
            token_endpoint_auth,
            scope: raw.scope,
            resource: raw.resource,
        })
    }

    fn token_endpoint_auth(
        &mut self,
        raw: Spanned<raw::RawTokenEndpointAuth>,
    ) -> Option<TokenEndpointAuth> {
        let span = raw.span();
        let raw = raw.into_inner();
        let kind = raw.r#type.get_ref().as_str();
        if kind == "none" {
            return Some(TokenEndpointAuth::None);
        }
        if !matches!(kind, "client_secret_basic" | "client_secret_post") {
            self.error(raw.r#type.span(), format!("unknown token_endpoint_auth type `{kind}`: use none, client_secret_basic or client_secret_post"));
            return None;
        }
        let secret = self.secret_source(
            "client_secret",
            raw.client_secret,
            raw.client_secret_env,
            None,
            span,
        )?;
        Some(if kind == "client_secret_basic" {
            TokenEndpointAuth::ClientSecretBasic(secret)
        } else {
            TokenEndpointAuth::ClientSecretPost(secret)
        })
    }

    /// CIDR ranges, each reported at its own entry when malformed.
    fn source_cidrs(&mut self, raw: Option<&Spanned<Vec<Spanned<String>>>>) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for c in raw.map(Spanned::get_ref).into_iter().flatten() {
            match c.get_ref().parse::<IpNet>() {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => self.error(
                    c.span(),
                    format!("`{}` is not a CIDR range like `10.200.0.2/32`", c.get_ref()),
                ),
            }
        }
        nets
    }

    fn sessions(&mut self, raws: Vec<Spanned<raw::RawSession>>, vaults: &[Vault]) -> Vec<Session> {
        let mut ids = HashSet::new();
        let mut sessions = Vec::new();
        for raw in raws {
            let span = raw.span();
            let raw = raw.into_inner();
            if !ids.insert(raw.id.get_ref().clone()) {
                self.error(
                    raw.id.span(),
                    format!("session id `{}` is used twice", raw.id.get_ref()),
                );
            }
            if !is_valid_session_id(raw.id.get_ref()) {
                self.error(
                    raw.id.span(),
                    "session id must be 1 to 64 letters, digits, `_` or `-`",
                );
            }
            let proxy_token =
                raw.proxy_token_env
                    .as_ref()
                    .and_then(|var| match std::env::var(var.get_ref()) {
                        Ok(token) if !token.is_empty() => Some(Secret::new(token)),
                        // SECURITY: the name is not repeated (it may be a pasted token).
                        _ => {
                            self.error(
                                var.span(),
                                "`proxy_token_env`: the environment variable it names is not set or empty",
                            );
                            None
                        }
                    });
            let source_cidrs = self.source_cidrs(raw.source_cidrs.as_ref());
            // SECURITY: a session id is no secret. A session that no token protects must be
            // reachable some other way (its client addresses), or anyone naming it would get it.
            let has_cidrs = raw
                .source_cidrs
                .as_ref()
                .is_some_and(|c| !c.get_ref().is_empty());
            if raw.proxy_token_env.is_none() && !has_cidrs {
                self.error(
                    span,
                    format!(
                        "session `{}` needs `proxy_token_env` or `source_cidrs`: a session id is not a secret, so one without a token must be bound to client addresses",
                        raw.id.get_ref()
                    ),
                );
            }
            for v in &raw.vault_ids {
                if !vaults.iter().any(|vault| &vault.id == v.get_ref()) {
                    self.error(v.span(), format!("no vault has id `{}`", v.get_ref()));
                }
            }
            let network = match raw.network {
                Some(n) => self.networking(n),
                None => Some(Networking::Unrestricted),
            };
            sessions.push(Session {
                id: raw.id.into_inner(),
                vault_ids: raw.vault_ids.into_iter().map(Spanned::into_inner).collect(),
                proxy_token,
                source_cidrs,
                network: network.unwrap_or(Networking::Unrestricted),
            });
        }
        sessions
    }
}

/// SECURITY: serde's messages quote the value they could not use (`invalid type: integer
/// `12345678``, `invalid type: string "…"`), and that value may be a secret typed without quotes
/// or put under the wrong key. Quoted strings, and the value after `invalid type:` / `invalid
/// value:`, are masked; key names (`unknown field `x``, `missing field `x``) stay.
pub fn without_values(message: &str) -> String {
    const MARKERS: [&str; 2] = ["invalid type: ", "invalid value: "];
    let message = mask_quoted(message);
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some((at, len)) = MARKERS
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
        .min()
    {
        let (before, tail) = rest.split_at(at + len);
        out.push_str(before);
        let end = tail.find(", expected").unwrap_or(tail.len());
        out.push_str(&mask_backticked(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `"…"` for every double-quoted string (escapes inside it respected).
fn mask_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let (mut quoted, mut escaped) = (false, false);
    for c in message.chars() {
        if quoted {
            match (c, escaped) {
                (_, true) => escaped = false,
                ('\\', false) => escaped = true,
                ('"', false) => {
                    quoted = false;
                    out.push('"');
                }
                _ => {}
            }
        } else {
            out.push(c);
            if c == '"' {
                quoted = true;
                out.push('…');
            }
        }
    }
    out
}

/// `` `…` `` for every backticked span.
fn mask_backticked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '`' {
            inside = !inside;
            out.push('`');
            if inside {
                out.push('…');
            }
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The key whose value starts at byte `offset` of `text` (`key = value`, also inside an inline
/// table), or `None` when the offset is not right after a `=`: TOML puts a value on the line of
/// its key, so only that line is looked at. The last segment of a dotted key, unquoted.
fn key_of_value_at(text: &str, offset: usize) -> Option<&str> {
    let line = text.get(..offset)?.rsplit('\n').next()?;
    let before_value = line.trim_end();
    let before_eq = before_value.strip_suffix('=')?.trim_end();
    let start = before_eq
        .rfind(|c: char| c.is_whitespace() || matches!(c, '{' | ',' | '.'))
        .map_or(0, |i| i + 1);
    let key = before_eq[start..].trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()).then_some(key)
}

/// A session id travels as the user of `Proxy-Authorization: Basic`, so it cannot hold `:`.
fn is_valid_session_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests;
