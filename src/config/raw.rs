//! The configuration file as serde sees it: every key optional where the spec gives a default,
//! spans kept where validation needs to point at a value, unknown keys refused.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

pub const DEFAULT_PROXY_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub vaults: Vec<Spanned<RawVault>>,
    #[serde(default)]
    pub sessions: Vec<Spanned<RawSession>>,
}

/// Where vaults and credentials live (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In this file (`[[vaults]]`), written back by the admin API.
    #[default]
    File,
    /// In PostgreSQL, shared by every replica.
    Postgres,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub backend: Backend,
    pub url_env: String,
    pub key_env: String,
    pub poll_interval_secs: Spanned<u64>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: Backend::File,
            url_env: "KEYSWAP_DATABASE_URL".into(),
            key_env: "KEYSWAP_STORE_KEY".into(),
            poll_interval_secs: Spanned::new(0..0, 5),
        }
    }
}

/// Whether TLS tunnels are intercepted when no credential could apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MitmMode {
    /// Intercept only tunnels to hosts some credential of the session is scoped to.
    #[default]
    Auto,
    /// Intercept every TLS tunnel.
    Always,
}

/// What to do with a placeholder seen on a host outside its credential's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfScope {
    /// Forward it unchanged (it is not a secret), log and count it.
    #[default]
    Forward,
    /// Refuse the request with `403 placeholder-out-of-scope`.
    Block,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    pub listen: Option<Spanned<String>>,
    pub transparent_listen: Option<Spanned<String>>,
    pub block_private_addresses: bool,
    pub allow_private_cidrs: Vec<Spanned<String>>,
    pub substitute_over_plain_http: bool,
    pub mitm: MitmMode,
    pub out_of_scope_placeholder: OutOfScope,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            listen: None,
            transparent_listen: None,
            block_private_addresses: true,
            allow_private_cidrs: Vec::new(),
            substitute_over_plain_http: false,
            mitm: MitmMode::Auto,
            out_of_scope_placeholder: OutOfScope::Forward,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub api_key_env: Spanned<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: None,
            api_key_env: Spanned::new(0..0, "KEYSWAP_ADMIN_KEY".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub ca_cert: String,
    pub ca_key: String,
    pub upstream_ca_files: Vec<Spanned<String>>,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            ca_cert: "certs/ca.pem".into(),
            ca_key: "certs/ca-key.pem".into(),
            upstream_ca_files: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub resolve: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_session: usize,
    pub max_buffered_body_bytes: usize,
    pub upstream_connect_timeout_secs: u64,
    pub upstream_response_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 65536,
            max_headers: 100,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 90,
            max_connections: 10000,
            max_connections_per_session: 1024,
            max_buffered_body_bytes: 64 << 20,
            upstream_connect_timeout_secs: 10,
            upstream_response_timeout_secs: 300,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    pub id: Spanned<String>,
    pub display_name: Option<Spanned<String>>,
    pub metadata: Option<Spanned<BTreeMap<String, String>>>,
    pub created_at: Option<Spanned<String>>,
    pub updated_at: Option<Spanned<String>>,
    /// Archived vaults keep their credentials, none of which is substituted.
    pub archived_at: Option<Spanned<String>>,
    #[serde(default)]
    pub credentials: Vec<Spanned<RawCredential>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub id: Spanned<String>,
    pub display_name: Option<Spanned<String>>,
    pub metadata: Option<Spanned<BTreeMap<String, String>>>,
    pub created_at: Option<Spanned<String>>,
    pub updated_at: Option<Spanned<String>>,
    /// Archived credentials stay in the file but are never substituted.
    pub archived_at: Option<Spanned<String>>,
    pub auth: Spanned<RawAuth>,
}

/// Every key of every `auth.type`; which ones belong to which type is checked after parsing, because
/// spans do not survive serde's internally tagged enums.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub r#type: Option<Spanned<String>>,
    pub secret_name: Option<Spanned<String>>,
    pub secret_value: Option<Spanned<String>>,
    pub secret_value_env: Option<Spanned<String>>,
    pub secret_value_file: Option<Spanned<String>>,
    pub networking: Option<Spanned<RawNetworking>>,
    pub injection_location: Option<Spanned<RawInjection>>,
    pub placeholder: Option<Spanned<String>>,
    pub mcp_server_url: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub token_env: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub access_token: Option<Spanned<String>>,
    pub access_token_env: Option<Spanned<String>>,
    pub access_token_file: Option<Spanned<String>>,
    pub expires_at: Option<Spanned<String>>,
    pub refresh: Option<Spanned<RawRefresh>>,
    pub access_key_id: Option<Spanned<String>>,
    pub access_key_id_env: Option<Spanned<String>>,
    pub access_key_id_file: Option<Spanned<String>>,
    pub secret_access_key: Option<Spanned<String>>,
    pub secret_access_key_env: Option<Spanned<String>>,
    pub secret_access_key_file: Option<Spanned<String>>,
    pub session_token: Option<Spanned<String>>,
    pub session_token_env: Option<Spanned<String>>,
    pub session_token_file: Option<Spanned<String>>,
    pub regions: Option<Spanned<Vec<Spanned<String>>>>,
    pub services: Option<Spanned<Vec<Spanned<String>>>>,
    pub algorithm: Option<Spanned<String>>,
    pub encoding: Option<Spanned<String>>,
    pub message: Option<Spanned<String>>,
    pub signature_header: Option<Spanned<String>>,
    pub timestamp_header: Option<Spanned<String>>,
}

impl RawAuth {
    /// The keys present (besides `type`), with their spans, for the per-type check.
    pub fn present_keys(&self) -> Vec<(&'static str, Range<usize>)> {
        fn s<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("secret_name", s(&self.secret_name)),
            ("secret_value", s(&self.secret_value)),
            ("secret_value_env", s(&self.secret_value_env)),
            ("secret_value_file", s(&self.secret_value_file)),
            ("networking", s(&self.networking)),
            ("injection_location", s(&self.injection_location)),
            ("placeholder", s(&self.placeholder)),
            ("mcp_server_url", s(&self.mcp_server_url)),
            ("token", s(&self.token)),
            ("token_env", s(&self.token_env)),
            ("token_file", s(&self.token_file)),
            ("access_token", s(&self.access_token)),
            ("access_token_env", s(&self.access_token_env)),
            ("access_token_file", s(&self.access_token_file)),
            ("expires_at", s(&self.expires_at)),
            ("refresh", s(&self.refresh)),
            ("access_key_id", s(&self.access_key_id)),
            ("access_key_id_env", s(&self.access_key_id_env)),
            ("access_key_id_file", s(&self.access_key_id_file)),
            ("secret_access_key", s(&self.secret_access_key)),
            ("secret_access_key_env", s(&self.secret_access_key_env)),
            ("secret_access_key_file", s(&self.secret_access_key_file)),
            ("session_token", s(&self.session_token)),
            ("session_token_env", s(&self.session_token_env)),
            ("session_token_file", s(&self.session_token_file)),
            ("regions", s(&self.regions)),
            ("services", s(&self.services)),
            ("algorithm", s(&self.algorithm)),
            ("encoding", s(&self.encoding)),
            ("message", s(&self.message)),
            ("signature_header", s(&self.signature_header)),
            ("timestamp_header", s(&self.timestamp_header)),
        ]
        .into_iter()
        .filter_map(|(k, span)| span.map(|span| (k, span)))
        .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetworking {
    pub r#type: Spanned<String>,
    pub allowed_hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInjection {
    pub header: Option<bool>,
    pub body: Option<bool>,
    pub query: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    pub client_id: Spanned<String>,
    pub refresh_token: Option<Spanned<String>>,
    pub refresh_token_env: Option<Spanned<String>>,
    pub token_endpoint: Spanned<String>,
    pub token_endpoint_auth: Option<Spanned<RawTokenEndpointAuth>>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// `{ type = "none" | "client_secret_basic" | "client_secret_post", client_secret = "…" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenEndpointAuth {
    pub r#type: Spanned<String>,
    pub client_secret: Option<Spanned<String>>,
    pub client_secret_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub id: Spanned<String>,
    #[serde(default)]
    pub vault_ids: Vec<Spanned<String>>,
    pub proxy_token_env: Option<Spanned<String>>,
    /// Client addresses that pick this session on the transparent listener (SPEC §12).
    pub source_cidrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub network: Option<Spanned<RawNetworking>>,
}
