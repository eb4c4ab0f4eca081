//! Vaults and their credentials: ids, placeholders, times, metadata and the networking scope.
//! The kinds of auth and where secrets come from are in `auth`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::Spanned;

use crate::scope::{HostPattern, MAX_ALLOWED_HOSTS};
use crate::secret::Secret;
use crate::vault::{Credential, Metadata, Networking, Times, Vault};

use super::{
    MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE, Validator, is_valid_id, raw,
};

impl Validator<'_> {
    pub(super) fn vaults(&mut self, raws: Vec<Spanned<raw::RawVault>>) -> Vec<Vault> {
        let mut vault_ids = HashSet::new();
        let mut credential_ids = HashSet::new();
        let mut placeholders: HashMap<String, ()> = HashMap::new();
        // (credential id, placeholder, its span) and each credential's secret, checked at the end.
        let mut given: Vec<(String, String, Range<usize>)> = Vec::new();
        let mut secrets: Vec<(String, Secret)> = Vec::new();
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
                let placeholder = auth.placeholder(&cid);
                given.push((
                    cid.clone(),
                    placeholder.clone(),
                    placeholder_span.clone().unwrap_or_else(|| c_span.clone()),
                ));
                secrets.extend(auth.secrets().into_iter().map(|s| (cid.clone(), s.clone())));
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
    pub(super) fn placeholders_hold_no_secret(
        &mut self,
        given: &[(String, String, Range<usize>)],
        secrets: &[(String, Secret)],
    ) {
        for (cid, placeholder, span) in given {
            let holder = secrets.iter().find(|(_, s)| {
                let s = s.expose();
                !s.is_empty()
                    && (s == placeholder.as_bytes()
                        || (s.len() >= 8
                            && placeholder.as_bytes().windows(s.len()).any(|w| w == s)))
            });
            if let Some((owner, _)) = holder {
                self.error(
                    span.clone(),
                    format!(
                        "the placeholder of credential `{cid}` contains the secret of credential `{owner}`; placeholders are given to sandboxes: choose another placeholder"
                    ),
                );
            }
        }
    }

    pub(super) fn times(
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

    pub(super) fn timestamp(&mut self, t: Spanned<String>) -> Option<OffsetDateTime> {
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

    pub(super) fn display_name(&mut self, d: Spanned<String>) -> String {
        let n = d.get_ref().chars().count();
        if !(1..=255).contains(&n) {
            self.error(d.span(), "display_name must be 1 to 255 characters");
        }
        d.into_inner()
    }

    pub(super) fn metadata(&mut self, raw: Option<Spanned<BTreeMap<String, String>>>) -> Metadata {
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

    pub(super) fn networking(&mut self, raw: Spanned<raw::RawNetworking>) -> Option<Networking> {
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

    pub(super) fn allowed_hosts(
        &mut self,
        hosts: Spanned<Vec<Spanned<String>>>,
    ) -> Option<Networking> {
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
}
