//! The immutable snapshot the request path reads: every environment_variable credential with its
//! compiled scope, and one multi-pattern searcher over all placeholders.
//!
//! A store is built whole from a validated [`Config`] and never mutated; a reload builds a new one
//! and swaps it in (see [`StoreHandle`]), so a request that holds an `Arc<Store>` sees one
//! generation from start to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::config::Config;
use crate::metrics::CredentialCounters;
use crate::policy::LivePolicy;
use crate::secret::Secret;
use crate::session::{self, SessionPolicy};
use crate::substitute::scrub::{Masked, Memo, ScrubTable};
use crate::substitute::stream::{Pair, StreamReplacer, Table};
use crate::substitute::{Entry, McpScope, OauthState, Placeholders, Scrub, Signing};
use crate::vault::{AWS_DUMMY_SECRET, Auth, Injection, Networking, default_placeholder};

pub use crate::substitute::BuildError;

/// A compiled, immutable view of the credentials.
#[derive(Debug)]
pub struct Store {
    pub generation: u64,
    /// Changes whenever the egress rules or `[upstream.resolve]` change: pooled upstream
    /// connections of an older epoch were checked against other rules and are not reused.
    pub egress_epoch: u64,
    /// The validated configuration this store was compiled from (the admin API and OAuth
    /// write-backs edit it; the request path reads `policy`).
    config: Arc<Config>,
    /// The settings a reload changes on the request path.
    policy: LivePolicy,
    /// Every placeholder, compiled; entries are indexed by the searcher's pattern id.
    placeholders: Placeholders,
    /// Metric handles by entry, created on first use (no label hashing per request).
    counters: Vec<CredentialCounters>,
    /// Response scrubbing tables by session (its position in `sessions`) and destination host,
    /// built on first use: most requests of a tunnel share one.
    scrub_cache: Vec<DashMap<Box<str>, Option<Arc<ScrubTable>>>>,
    /// The same tables by the credentials they mask: hosts with the same credentials in scope
    /// share one (a table of many credentials takes megabytes).
    scrub_sets: DashMap<Box<[usize]>, Arc<ScrubTable>>,
    /// Secrets that earlier generations had and this one does not (rotated, or their credential
    /// deleted): still masked where they were in scope, as an upstream may have kept them.
    retired: Vec<Retired>,
    /// The sessions (or the one implicit session).
    sessions: Vec<SessionPolicy>,
}

/// Hosts whose scrubbing table one session keeps (wildcard scopes cover unboundedly many); past
/// this a table is built for each request.
const MAX_CACHED_SCRUB_HOSTS: usize = 4096;
/// Retired secrets kept masked (see [`Store::retire_from`]).
const MAX_RETIRED: usize = 256;

/// A secret no credential has any more, masked where it was in scope until keyswap restarts.
#[derive(Debug, Clone)]
struct Retired {
    secret: Secret,
    placeholder: String,
    networking: Networking,
}

/// Distinct scrubbing tables one store keeps.
const MAX_SCRUB_SETS: usize = 256;

impl Store {
    /// Compiles the credentials of `config` into a store of the given generation.
    pub fn build(config: impl Into<Arc<Config>>, generation: u64) -> Result<Store, BuildError> {
        let config = config.into();
        let mut entries = Vec::new();
        for credential in config.credentials() {
            let entry = match &credential.auth {
                Auth::EnvironmentVariable(env) => Entry {
                    credential_id: credential.id.clone(),
                    vault_id: credential.vault_id.clone(),
                    placeholder: env.placeholder.clone(),
                    secret: env.secret.clone(),
                    networking: env.networking.clone(),
                    injection: env.injection,
                    archived: credential.archived,
                    mcp: None,
                    oauth: None,
                    masks: Vec::new(),
                    signing: None,
                },
                Auth::AwsSigv4(aws) => signing_entry(
                    credential,
                    &aws.placeholder,
                    &aws.access_key_id,
                    &aws.networking,
                    Signing::Aws(Arc::new(aws.clone())),
                    [(aws.secret_access_key.clone(), AWS_DUMMY_SECRET.to_string())]
                        .into_iter()
                        .chain(aws.session_token.clone().map(|t| {
                            (
                                t,
                                format!("{}-session-token", default_placeholder(&credential.id)),
                            )
                        }))
                        .collect(),
                ),
                Auth::HmacSignature(h) => signing_entry(
                    credential,
                    &h.placeholder,
                    &h.secret,
                    &h.networking,
                    Signing::Hmac(Arc::new(h.clone())),
                    Vec::new(),
                ),
                Auth::StaticBearer(b) => mcp_entry(credential, &b.mcp_server_url, &b.token),
                Auth::McpOauth(o) => Entry {
                    oauth: Some(OauthState {
                        expires_at: o.expires_at,
                        refreshable: o.refresh.is_some(),
                    }),
                    ..mcp_entry(credential, &o.mcp_server_url, &o.access_token)
                },
            };
            entries.push(entry);
        }
        let sessions = SessionPolicy::compile(&config, &entries);
        let scrub_cache = sessions.iter().map(|_| DashMap::new()).collect();
        let counters = entries
            .iter()
            .map(|_| CredentialCounters::default())
            .collect();
        let placeholders = Placeholders::compile(entries)?;
        Ok(Store {
            generation,
            egress_epoch: 0,
            policy: LivePolicy::of(&config),
            config,
            placeholders,
            counters,
            scrub_cache,
            scrub_sets: DashMap::new(),
            retired: Vec::new(),
            sessions,
        })
    }

    /// Every placeholder, compiled: what the substitution functions take.
    pub fn placeholders(&self) -> &Placeholders {
        &self.placeholders
    }

    /// The placeholder → secret table for request bodies (pattern id = entry index).
    pub fn body_table(&self) -> Option<&Arc<Table>> {
        self.placeholders.body_table()
    }

    /// Entries whose `injection_location.body` is on.
    pub fn body_entries(&self) -> &[usize] {
        self.placeholders.body_entries()
    }

    /// The metric handles of entry `index`.
    pub fn counters(&self, index: usize) -> &CredentialCounters {
        &self.counters[index]
    }

    /// The scrubber for what `session` receives from `host`: every secret in scope there (the
    /// cached table, or one built for this request when it also has rewritten values to mask),
    /// masked as the credentials this request used where several share a spelling.
    /// `memo`: the tunnel's, when the request came through one (its session and host are fixed).
    pub fn scrubber(
        &self,
        scrub: Scrub,
        session: &SessionPolicy,
        host: &str,
        memo: Option<&Memo>,
    ) -> Option<StreamReplacer> {
        let (entries, extra) = scrub.into_parts();
        if extra.is_empty() {
            let table = match memo {
                Some(memo) => memo.get_or(self.generation, || self.scrub_table(session, host)),
                None => self.scrub_table(session, host),
            }?;
            return Some(table.scrubber(&entries));
        }
        let table = self.build_scrub_table(session, host, extra)?;
        Some(table.scrubber(&entries))
    }

    /// The table that scrubs what `session` receives from `host` (SPEC §8): the secret of every
    /// credential in scope there, archived or not, whether or not this request used it — a secret
    /// stored by one request comes back in the answer to another. The session's own credentials
    /// come first (their placeholder wins a secret shared with another session's credential).
    /// `None` when no credential is in scope on `host`.
    pub fn scrub_table(&self, session: &SessionPolicy, host: &str) -> Option<Arc<ScrubTable>> {
        let slot = self
            .sessions
            .iter()
            .position(|s| std::ptr::eq(s, session))
            .and_then(|i| self.scrub_cache.get(i));
        if let Some(table) = slot.and_then(|cache| cache.get(host)) {
            return table.clone();
        }
        let order = self.scrub_order(session, host);
        let table = match self.scrub_sets.get(order.as_slice()) {
            Some(table) => Some(table.clone()),
            None => {
                let table = self.compile_scrub(&order, Vec::new()).map(Arc::new);
                if let Some(table) = &table
                    && self.scrub_sets.len() < MAX_SCRUB_SETS
                {
                    self.scrub_sets.insert(order.into(), table.clone());
                }
                table
            }
        };
        if let Some(cache) = slot
            && cache.len() < MAX_CACHED_SCRUB_HOSTS
        {
            cache.insert(host.into(), table.clone());
        }
        table
    }

    /// A scrubbing table as [`Store::scrub_table`], with `extra` exact pairs first (built for one
    /// request: the values keyswap rewrote in it).
    pub fn build_scrub_table(
        &self,
        session: &SessionPolicy,
        host: &str,
        extra: Vec<Pair>,
    ) -> Option<ScrubTable> {
        self.compile_scrub(&self.scrub_order(session, host), extra)
    }

    /// The entries whose secrets are masked in what `session` receives from `host`, its own first,
    /// then retired secrets (numbered after the entries).
    fn scrub_order(&self, session: &SessionPolicy, host: &str) -> Vec<usize> {
        let in_scope = self
            .entries()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.networking.allows(host));
        let (own, others): (Vec<_>, Vec<_>) = in_scope.partition(|(_, e)| session.may_use(e));
        let retired = self
            .retired
            .iter()
            .enumerate()
            .filter(|(_, r)| r.networking.allows(host))
            .map(|(i, _)| self.entries().len() + i);
        own.into_iter()
            .chain(others)
            .map(|(i, _)| i)
            .chain(retired)
            .collect()
    }

    fn compile_scrub(&self, order: &[usize], extra: Vec<Pair>) -> Option<ScrubTable> {
        let masked = order.iter().flat_map(|&entry| {
            let pairs: Vec<(&Secret, &str)> = match self.entries().get(entry) {
                Some(e) => e.masked().collect(),
                None => self
                    .retired
                    .get(entry - self.entries().len())
                    .map(|r| (&r.secret, r.placeholder.as_str()))
                    .into_iter()
                    .collect(),
            };
            pairs.into_iter().map(move |(secret, placeholder)| Masked {
                entry,
                secret: secret.expose(),
                placeholder: placeholder.as_bytes(),
            })
        });
        ScrubTable::build(masked, extra)
    }

    /// Keeps masking what `old` could mask and this store cannot: the secrets of rotated or
    /// deleted credentials (the newest [`MAX_RETIRED`]).
    fn retire_from(&mut self, old: &Store) {
        let kept = |o: &Entry, secret: &Secret| {
            self.entries().iter().any(|e| {
                e.credential_id == o.credential_id
                    && e.masked().any(|(s, _)| s.expose() == secret.expose())
            })
        };
        let gone = old.entries().iter().flat_map(|o| {
            o.masked()
                .filter(|(s, _)| !kept(o, s))
                .map(|(s, m)| (s.clone(), m.to_string(), o.networking.clone()))
                .collect::<Vec<_>>()
        });
        let mut retired: Vec<Retired> = gone
            .map(|(secret, placeholder, networking)| Retired {
                secret,
                placeholder,
                networking,
            })
            .chain(old.retired.iter().cloned())
            .filter(|r| {
                !self
                    .entries()
                    .iter()
                    .flat_map(Entry::masked)
                    .any(|(s, _)| s.expose() == r.secret.expose())
            })
            .collect();
        retired.truncate(MAX_RETIRED);
        self.retired = retired;
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The settings the request path reads: what a reload changes (see [`LivePolicy`]).
    pub fn policy(&self) -> &LivePolicy {
        &self.policy
    }

    pub fn searcher(&self) -> Option<&crate::substitute::placeholders::Searcher> {
        self.placeholders.searcher()
    }

    pub fn entry(&self, index: usize) -> &Entry {
        self.placeholders.entry(index)
    }

    pub fn entries(&self) -> &[Entry] {
        self.placeholders.entries()
    }

    /// The session `Proxy-Authorization` proves, or `None` (answer 407).
    pub fn authenticate(&self, header: Option<&http::HeaderValue>) -> Option<&SessionPolicy> {
        session::authenticate(&self.sessions, header)
    }

    /// The session a transparent client's address picks, or `None` (refused).
    pub fn session_by_source(&self, ip: std::net::IpAddr) -> Option<&SessionPolicy> {
        session::by_source(&self.sessions, ip)
    }

    /// A session by id: a tunnel keeps its session id and finds it again in each request's store.
    pub fn session(&self, id: &str) -> Option<&SessionPolicy> {
        self.sessions.iter().find(|s| s.id == id)
    }
}

/// An MCP credential as an entry: its placeholder (`ks-ph-` + id) and token, scoped to the host,
/// port and path prefix of `mcp_server_url`, in headers only.
fn mcp_entry(credential: &crate::vault::Credential, url: &str, token: &Secret) -> Entry {
    let uri: http::Uri = url.parse().unwrap_or_default();
    let host = crate::scope::normalize_host(uri.host().unwrap_or_default());
    Entry {
        credential_id: credential.id.clone(),
        vault_id: credential.vault_id.clone(),
        placeholder: crate::vault::default_placeholder(&credential.id),
        secret: token.clone(),
        networking: Networking::Limited {
            allowed_hosts: vec![host.clone()],
            patterns: vec![crate::scope::HostPattern::Exact(host)],
        },
        injection: Injection {
            header: true,
            body: false,
            query: false,
        },
        archived: credential.archived,
        mcp: Some(McpScope {
            port: uri.port_u16().unwrap_or(443),
            path_prefix: uri.path().to_string(),
        }),
        oauth: None,
        masks: Vec::new(),
        signing: None,
    }
}

/// A credential that signs (SPEC §11) as an entry: its placeholder is found like any other (for
/// the log and the out-of-scope rule) but never swapped (`injection` all off), and its secrets
/// are masked in answers where it is in scope.
fn signing_entry(
    credential: &crate::vault::Credential,
    placeholder: &str,
    secret: &Secret,
    networking: &Networking,
    signing: Signing,
    masks: Vec<(Secret, String)>,
) -> Entry {
    Entry {
        credential_id: credential.id.clone(),
        vault_id: credential.vault_id.clone(),
        placeholder: placeholder.to_string(),
        secret: secret.clone(),
        networking: networking.clone(),
        injection: Injection {
            header: false,
            body: false,
            query: false,
        },
        archived: credential.archived,
        mcp: None,
        oauth: None,
        masks,
        signing: Some(signing),
    }
}

/// A change made to every configuration before it is compiled: what the process that serves it
/// overrides in the file's settings (`keyswap exec` binds its command's address to its session).
pub type Adjust = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// The live store: readers load it without waiting, a reload swaps in a whole new one.
pub struct StoreHandle {
    current: ArcSwap<Store>,
    next_generation: AtomicU64,
    adjust: Option<Adjust>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("current", &self.current)
            .field("next_generation", &self.next_generation)
            .field("adjust", &self.adjust.is_some())
            .finish()
    }
}

impl StoreHandle {
    pub fn new(store: Store) -> Self {
        let next = store.generation + 1;
        Self {
            current: ArcSwap::from_pointee(store),
            next_generation: AtomicU64::new(next),
            adjust: None,
        }
    }

    /// Applies `adjust` to every configuration [`StoreHandle::replace`] puts in force (the first
    /// store's is the caller's to adjust).
    #[must_use]
    pub fn with_adjust(mut self, adjust: Option<Adjust>) -> Self {
        self.adjust = adjust;
        self
    }

    /// The store in force now; hold it for the whole request.
    pub fn load(&self) -> Arc<Store> {
        self.current.load_full()
    }

    /// Builds a store from `config` with the next generation number and puts it in force.
    pub fn replace(&self, config: impl Into<Arc<Config>>) -> Result<u64, BuildError> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut config: Arc<Config> = config.into();
        if let Some(adjust) = &self.adjust {
            let mut adjusted = Arc::unwrap_or_clone(config);
            adjust(&mut adjusted);
            config = Arc::new(adjusted);
        }
        let mut store = Store::build(config, generation)?;
        let old = self.current.load();
        store.retire_from(&old);
        store.egress_epoch = if old.policy.egress == store.policy.egress {
            old.egress_epoch
        } else {
            old.egress_epoch + 1
        };
        self.current.store(Arc::new(store));
        Ok(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn store(text: &str) -> Store {
        Store::build(Config::from_toml(text, "t", Path::new("")).unwrap(), 1).unwrap()
    }

    const TWO: &str = r#"
[[vaults]]
id = "vlt_a"
[[vaults.credentials]]
id = "vcrd_a"
auth = { type = "environment_variable", secret_name = "A", secret_value = "sa", networking = { type = "limited", allowed_hosts = ["api.example.com", "*.example.org"] } }
[[vaults.credentials]]
id = "vcrd_b"
archived_at = "2026-01-01T00:00:00Z"
auth = { type = "environment_variable", secret_name = "B", secret_value = "sb", networking = { type = "unrestricted" } }
"#;

    #[test]
    fn could_apply_to_follows_live_scopes() {
        let s = store(TWO);
        let s = s.session(session::IMPLICIT).unwrap();
        assert!(s.could_apply_to("api.example.com"));
        assert!(s.could_apply_to("x.example.org"));
        assert!(s.could_apply_to("x.y.example.org"));
        assert!(!s.could_apply_to("example.org"));
        // vcrd_b is unrestricted but archived, so it opens nothing.
        assert!(!s.could_apply_to("other.test"));
    }

    #[test]
    fn empty_store_has_no_searcher() {
        let s = store("");
        assert!(s.searcher().is_none());
        assert!(
            !s.session(session::IMPLICIT)
                .unwrap()
                .could_apply_to("a.com")
        );
    }

    #[test]
    fn handle_swaps_whole_generations() {
        let config = Config::from_toml(TWO, "t", Path::new("")).unwrap();
        let handle = StoreHandle::new(Store::build(config, 1).unwrap());
        let before = handle.load();
        assert_eq!(handle.replace(Config::embedded_defaults()).unwrap(), 2);
        assert_eq!(before.entries().len(), 2, "a held store never changes");
        assert_eq!(handle.load().generation, 2);
        assert!(handle.load().entries().is_empty());
    }
}
