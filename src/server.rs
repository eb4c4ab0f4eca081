//! `keyswap run`: bind both listeners, build the store, CA and upstream client, serve until a
//! signal, then drain connections for up to the grace period.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::admin::{self, AdminState};
use crate::ca::{CaError, CertificateAuthority};
use crate::config::Config;
use crate::dbstore::Database;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::oauth::Refresher;
use crate::proxy::{self, Shared};
use crate::secret::Secret;
use crate::store::{BuildError, Store, StoreHandle};
use crate::upstream::{Dialer, UpstreamPool, UpstreamSetupError};
use crate::watch as file_watch;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    #[error(transparent)]
    Store(#[from] BuildError),
    #[error("cannot install signal handlers: {0}")]
    Signal(std::io::Error),
    #[error("cannot start the connection workers: {0}")]
    Workers(std::io::Error),
    #[error(transparent)]
    Database(#[from] crate::dbstore::DbError),
    #[error(transparent)]
    Stored(#[from] crate::dbstore::MergeError),
}

/// Runs keyswap with `config` until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    serve(config, Options::default(), wait_for_signal()).await
}

/// Where a started keyswap listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub proxy: SocketAddr,
    pub transparent: Option<SocketAddr>,
}

/// What `keyswap exec` adds to a server.
#[derive(Default)]
pub struct Options {
    /// The names its DNS responder gave addresses: the transparent listener's binding.
    pub allocations: Option<Arc<crate::dns::Allocations>>,
    /// Told the addresses once everything listens.
    pub ready: Option<tokio::sync::oneshot::Sender<Listening>>,
    /// Applied to every configuration a reload or an admin write puts in force (the one given to
    /// [`serve`] is already adjusted).
    pub adjust: Option<crate::store::Adjust>,
}

/// Runs keyswap with `config` until `stop` completes, then drains connections.
pub async fn serve(
    config: Config,
    options: Options,
    stop: impl std::future::Future<Output = Result<(), RunError>>,
) -> Result<(), RunError> {
    // With the database backend the vaults come from there, validated with the file's settings.
    let (config, database) = with_database(config).await?;
    let proxy_listener = bind(config.proxy.listen).await?;
    let admin_listener = bind(config.admin.listen).await?;
    let transparent_listener = match config.proxy.transparent_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let transparent_addr = transparent_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok());
    let proxy_addr = proxy_listener
        .local_addr()
        .map_err(|source| RunError::Bind {
            addr: config.proxy.listen,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| RunError::Bind {
            addr: config.admin.listen,
            source,
        })?;

    let ca = Arc::new(CertificateAuthority::load_or_create(
        &config.tls.ca_cert,
        &config.tls.ca_key,
    )?);
    // The bundle sandboxes trust (`keyswap env` points at it), kept beside the CA.
    if let Err(e) = crate::sandbox::write_bundle(&config, ca.cert_path()) {
        tracing::warn!(error = %e, "cannot write the CA bundle");
    }
    let path = config
        .source
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    let text = config
        .source
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(Zeroizing::new);
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(
        StoreHandle::new(Store::build(config.clone(), 1)?).with_adjust(options.adjust.clone()),
    );
    let mut live = Live::new(
        path,
        store.clone(),
        text.as_ref().map(|t| t.as_str()),
        metrics.clone(),
    );
    if let Some((database, revision, vaults)) = database.clone() {
        live = live.with_database(database, revision, vaults);
    }
    let live = Arc::new(live);
    let own = [Some(proxy_addr), Some(admin_addr), transparent_addr];
    let dialer = Dialer::new(&config, store.clone(), own.into_iter().flatten().collect())?;
    let (workers, _stop_workers) = crate::workers::Workers::start(crate::workers::default_count())
        .map_err(RunError::Workers)?;
    let client = Arc::new(UpstreamPool::new(
        dialer.clone(),
        config.limits.idle_timeout,
        workers.count(),
    ));
    let refresher = Arc::new(Refresher::new(
        live.clone(),
        client.clone(),
        config.limits.upstream_response_timeout,
        metrics.clone(),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));

    let shared = Arc::new(Shared {
        limits: config.limits.clone(),
        store: store.clone(),
        ca: ca.clone(),
        dialer,
        client,
        refresher: refresher.clone(),
        buffered: crate::proxy::Budget::new(config.limits.max_buffered_body_bytes),
        session_slots: crate::proxy::SessionSlots::new(config.limits.max_connections_per_session),
        metrics: metrics.clone(),
        shutdown: shutdown_rx.clone(),
        allocations: options.allocations,
        workers,
    });
    let _watcher = file_watch::spawn(live.clone(), shutdown_rx.clone());
    if let Some((database, ..)) = database {
        tokio::spawn(crate::dbstore::sync::follow(
            live.clone(),
            database,
            config.store.poll_interval,
            shutdown_rx.clone(),
        ));
    }
    let api_key = std::env::var(&config.admin.api_key_env)
        .ok()
        .filter(|k| !k.is_empty())
        .map(Secret::new);
    let admin_state = Arc::new(AdminState {
        live,
        refresher,
        ca: ca.clone(),
        metrics,
        shutdown: shutdown_rx,
        api_key,
        api_key_env: config.admin.api_key_env.clone(),
    });
    info!(ca = %crate::ca::normalised(ca.cert_path()).display(), credentials = shared.store.load().entries().len(), "keyswap ready");
    info!("proxy listening on {proxy_addr}");
    info!("admin listening on {admin_addr}");

    let mut accepting = Vec::with_capacity(2);
    if let (Some(listener), Some(addr)) = (transparent_listener, transparent_addr) {
        info!("transparent listening on {addr}");
        let loops = proxy::serve(
            listener,
            proxy::Kind::Transparent,
            shared.clone(),
            connections.clone(),
        )
        .map_err(|source| RunError::Bind { addr, source })?;
        accepting.push(loops);
    }
    let loops = proxy::serve(
        proxy_listener,
        proxy::Kind::Proxy,
        shared,
        connections.clone(),
    )
    .map_err(|source| RunError::Bind {
        addr: proxy_addr,
        source,
    })?;
    accepting.push(loops);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state));

    if let Some(ready) = options.ready {
        let _ = ready.send(Listening {
            proxy: proxy_addr,
            transparent: transparent_addr,
        });
    }
    stop.await?;
    info!(
        grace_secs = config.limits.shutdown_grace.as_secs(),
        "shutting down: draining connections"
    );
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::Instant::now() + config.limits.shutdown_grace;
    for loops in accepting {
        let _ = tokio::time::timeout_at(deadline, loops).await;
    }
    let _ = admin_task.await;
    // Every open connection holds a permit; all permits back means all connections are done.
    let all = u32::try_from(config.limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout_at(deadline, connections.acquire_many(all)).await {
        Ok(_) => info!("all connections drained"),
        Err(_) => warn!("grace period over; closing the remaining connections"),
    }
    Ok(())
}

/// The database of `[store] backend = "postgres"`, migrated, and the config with its vaults; the
/// config as it is with the file backend.
async fn with_database(config: Config) -> Result<(Config, Option<FromDatabase>), RunError> {
    if config.store.backend != crate::config::Backend::Postgres {
        return Ok((config, None));
    }
    let database = Arc::new(Database::from_settings(&config.store, &config)?);
    database.migrate().await?;
    let (merged, revision, vaults) = crate::dbstore::merged_config(&database, &config).await?;
    info!(
        revision,
        vaults = merged.vaults.len(),
        "vaults loaded from the database"
    );
    Ok((merged, Some((database, revision, vaults))))
}

/// The database, the revision loaded at start and its `[[vaults]]` text.
type FromDatabase = (Arc<Database>, i64, Zeroizing<String>);

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

async fn wait_for_signal() -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    Ok(())
}
