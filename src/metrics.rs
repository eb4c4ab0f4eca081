//! Prometheus metrics for `GET /metrics`. Labels carry credential ids, outcomes and error codes:
//! never a secret, a placeholder value or a host a client chose.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::substitute::Location;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    pub credential_id: String,
    pub location: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabel {
    pub credential_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: String,
}

/// One credential's counters, looked up in their families on first use and then incremented
/// directly: the request path neither allocates label strings nor hashes them.
#[derive(Debug, Default)]
pub struct CredentialCounters {
    /// By location: header, query, body.
    substituted: [OnceLock<Counter>; 3],
    out_of_scope: OnceLock<Counter>,
}

impl CredentialCounters {
    pub fn substituted(
        &self,
        metrics: &Metrics,
        credential_id: &str,
        location: Location,
    ) -> &Counter {
        let slot = match location {
            Location::Header => 0,
            Location::Query => 1,
            Location::Body => 2,
        };
        self.substituted[slot].get_or_init(|| {
            let labels = CredentialLabels {
                credential_id: credential_id.to_string(),
                location: location.as_str().to_string(),
            };
            metrics.substitutions.get_or_create(&labels).clone()
        })
    }

    pub fn out_of_scope(&self, metrics: &Metrics, credential_id: &str) -> &Counter {
        self.out_of_scope.get_or_init(|| {
            let label = CredentialLabel {
                credential_id: credential_id.to_string(),
            };
            metrics.out_of_scope.get_or_create(&label).clone()
        })
    }
}

/// Every metric keyswap keeps, in one registry. `server::run` makes one and hands it to the proxy,
/// the admin API, the reloader and the OAuth refresher: no global, so each test process's
/// keyswap (and each unit test) counts on its own.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by outcome (`forwarded`, or the `x-keyswap-error` code).
    pub requests: Family<OutcomeLabel, Counter>,
    /// `requests{outcome="forwarded"}`, the outcome of almost every request: looked up once.
    forwarded: Counter,
    pub substitutions: Family<CredentialLabels, Counter>,
    pub out_of_scope: Family<CredentialLabel, Counter>,
    /// Seconds from sending a request upstream to its response head.
    pub upstream_latency: Histogram,
    pub open_connections: Gauge,
    /// CONNECT tunnels by `intercepted` or `raw`.
    pub tunnels: Family<ModeLabel, Counter>,
    pub reloads: Family<OutcomeLabel, Counter>,
    pub store_generation: Gauge,
    pub certificate_cache_hits: Gauge,
    pub certificates_minted: Gauge,
    pub certificate_cache_size: Gauge,
    /// OAuth token refreshes, by result.
    pub oauth_refreshes: Family<OutcomeLabel, Counter>,
    /// The database backend: the last change applied, seconds since the last contact, failures.
    pub store_revision: Gauge,
    pub store_sync_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub store_errors: Family<OpLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyswap");
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            forwarded: Counter::default(),
            substitutions: Family::default(),
            out_of_scope: Family::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            open_connections: Gauge::default(),
            tunnels: Family::default(),
            reloads: Family::default(),
            store_generation: Gauge::default(),
            certificate_cache_hits: Gauge::default(),
            certificates_minted: Gauge::default(),
            certificate_cache_size: Gauge::default(),
            oauth_refreshes: Family::default(),
            store_revision: Gauge::default(),
            store_sync_age: Gauge::default(),
            store_errors: Family::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by outcome",
            m.requests.clone(),
        );
        registry.register(
            "substitutions",
            "Placeholders replaced, by credential and location",
            m.substitutions.clone(),
        );
        registry.register(
            "out_of_scope_placeholders",
            "Placeholders seen outside their scope",
            m.out_of_scope.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time to the upstream's response head",
            m.upstream_latency.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            m.open_connections.clone(),
        );
        registry.register(
            "tunnels",
            "CONNECT tunnels, intercepted or relayed raw",
            m.tunnels.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        registry.register(
            "store_generation",
            "Generation of the store in force",
            m.store_generation.clone(),
        );
        registry.register(
            "certificate_cache_hits",
            "Leaf certificates served from the cache",
            m.certificate_cache_hits.clone(),
        );
        registry.register(
            "certificates_minted",
            "Leaf certificates minted",
            m.certificates_minted.clone(),
        );
        registry.register(
            "certificate_cache_size",
            "Hosts with a cached leaf certificate",
            m.certificate_cache_size.clone(),
        );
        registry.register(
            "oauth_refreshes",
            "OAuth access token refreshes, by result",
            m.oauth_refreshes.clone(),
        );
        registry.register(
            "store_revision",
            "The last database change applied (database backend)",
            m.store_revision.clone(),
        );
        registry.register(
            "store_sync_age_seconds",
            "Seconds since the database last answered (database backend)",
            m.store_sync_age.clone(),
        );
        registry.register(
            "store_errors",
            "Database operations that failed, by operation",
            m.store_errors.clone(),
        );
        let forwarded = m
            .requests
            .get_or_create(&OutcomeLabel {
                outcome: "forwarded".into(),
            })
            .clone();
        Metrics {
            registry,
            forwarded,
            ..m
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// A request forwarded and answered by its upstream.
    pub fn forwarded(&self) {
        self.forwarded.inc();
    }

    /// A request refused, by its `x-keyswap-error` code.
    pub fn refused(&self, code: &str) {
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: code.to_string(),
            })
            .inc();
    }
}
