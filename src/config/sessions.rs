//! `[[sessions]]`: who a client is (proxy token or source addresses) and what it may use.

use std::collections::HashSet;

use ipnet::IpNet;
use toml::Spanned;

use crate::secret::Secret;
use crate::vault::{Networking, Vault};

use super::{Session, Validator, raw};

impl Validator<'_> {
    /// CIDR ranges, each reported at its own entry when malformed.
    pub(super) fn source_cidrs(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Vec<IpNet> {
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

    pub(super) fn sessions(
        &mut self,
        raws: Vec<Spanned<raw::RawSession>>,
        vaults: &[Vault],
        check_vault_ids: bool,
    ) -> Vec<Session> {
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
            for v in raw.vault_ids.iter().filter(|_| check_vault_ids) {
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

/// A session id travels as the user of `Proxy-Authorization: Basic`, so it cannot hold `:`.
fn is_valid_session_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
