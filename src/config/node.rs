//! The node's own settings: listeners, the CA and `upstream_ca_files`, upstream resolution and
//! limits. Everything here is per replica; none of it is a secret.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use crate::scope::normalize_host;
use crate::vault;

use super::{
    AdminSettings, Limits, ProxySettings, StoreSettings, UpstreamSettings, Validator, raw,
};

impl Validator<'_> {
    pub(super) fn store(&mut self, raw: raw::RawStore) -> StoreSettings {
        if *raw.poll_interval_secs.get_ref() == 0 {
            self.error(
                raw.poll_interval_secs.span(),
                "`poll_interval_secs` must be at least 1",
            );
        }
        for (key, name) in [("url_env", &raw.url_env), ("key_env", &raw.key_env)] {
            if name.is_empty() || name.contains('=') {
                self.error(
                    0..0,
                    format!("[store] `{key}` must name an environment variable"),
                );
            }
        }
        StoreSettings {
            backend: raw.backend,
            url_env: raw.url_env,
            key_env: raw.key_env,
            poll_interval: Duration::from_secs((*raw.poll_interval_secs.get_ref()).max(1)),
        }
    }

    /// An `upstream_ca_files` entry, opened now (SPEC §9): a missing or certificate-less file is
    /// an error at its position, not a failure when keyswap starts or a reload half-applies.
    pub(super) fn ca_file(&mut self, p: &Spanned<String>) -> PathBuf {
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

    pub(super) fn socket_addr(&mut self, s: &Spanned<String>) -> Option<SocketAddr> {
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

    pub(super) fn proxy(&mut self, raw: raw::RawProxy) -> ProxySettings {
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
        let transparent_listen = raw
            .transparent_listen
            .as_ref()
            .and_then(|l| self.socket_addr(l));
        if let (Some(t), Some(span)) = (transparent_listen, raw.transparent_listen.as_ref()) {
            if t == listen && t.port() != 0 {
                self.error(
                    span.span(),
                    "transparent_listen must differ from [proxy] listen",
                );
            }
            if !cfg!(target_os = "linux") {
                self.error(
                    span.span(),
                    "transparent_listen needs Linux (SO_ORIGINAL_DST)",
                );
            }
        }
        ProxySettings {
            listen,
            transparent_listen,
            block_private_addresses: raw.block_private_addresses,
            allow_private_cidrs: cidrs,
            substitute_over_plain_http: raw.substitute_over_plain_http,
            mitm: raw.mitm,
            out_of_scope_placeholder: raw.out_of_scope_placeholder,
        }
    }

    pub(super) fn admin(&mut self, raw: raw::RawAdmin) -> AdminSettings {
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

    pub(super) fn upstream(&mut self, raw: raw::RawUpstream) -> UpstreamSettings {
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

    pub(super) fn limits(&mut self, raw: raw::RawLimits) -> Limits {
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
}
