//! Pooled upstream connections: hyper-util's client (keyed by scheme and authority), one per
//! connection worker and egress epoch, and beside it the HTTP/2 connections a worker's tunnels
//! share directly (`shared_h2`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::shared_h2::{H2Sender, SharedConn, SharedH2};
use super::{ConnectError, Dialer, ProxyBody, Stream};

/// hyper-util's connector interface over a [`Dialer`]: the URI's scheme picks TCP or TLS.
#[derive(Clone)]
pub struct Connector(Dialer);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.0.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::NoHost)?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let stream = if tls {
                dialer.https(host, port).await?
            } else {
                Stream::Plain(dialer.tcp(host, port).await?)
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// The pooled upstream client.
pub type UpstreamClient = Client<Connector, ProxyBody>;

/// The pooled client, renewed when the store's egress epoch moves: a pooled connection was
/// checked against the egress rules in force when it was dialled, so it must not outlive them.
///
/// One shard per connection worker and one for the main runtime: a pooled connection's task runs
/// on the thread that dialled it, so a worker's requests use connections on their own thread
/// (see `workers`).
pub struct UpstreamPool {
    dialer: Dialer,
    idle_timeout: Duration,
    shards: Box<[arc_swap::ArcSwap<Pooled>]>,
}

/// One generation of the pooled client. Requests hold it by `Arc` (one pointer in their
/// future, one count) rather than by a clone of the client (a few hundred bytes of `Arc`s).
pub struct Pooled {
    epoch: u64,
    client: UpstreamClient,
    /// HTTP/2 connections dialled under the same egress epoch, shared by tunnels.
    pub h2: SharedH2,
}

impl Pooled {
    /// The egress epoch this shard's connections were dialled under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps the shared HTTP/2 connection the caller of [`SharedH2::find`] dialled, and starts
    /// the shard's idle sweep (on the calling worker) if none runs.
    pub fn keep_h2(self: &Arc<Self>, host: &str, port: u16, sender: H2Sender) -> SharedConn {
        let (conn, start) = self.h2.put(host, port, sender);
        if start {
            let (shard, every) = (Arc::downgrade(self), self.h2.idle_timeout());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    // Ends with the shard (a new egress epoch), or when no connection is left.
                    match shard.upgrade() {
                        Some(shard) if shard.h2.sweep() => {}
                        _ => return,
                    }
                }
            });
        }
        conn
    }

    fn new(epoch: u64, dialer: &Dialer, idle_timeout: Duration) -> Self {
        Self {
            epoch,
            client: client(dialer.clone(), idle_timeout),
            h2: SharedH2::new(idle_timeout),
        }
    }
}

impl std::ops::Deref for Pooled {
    type Target = UpstreamClient;

    fn deref(&self) -> &UpstreamClient {
        &self.client
    }
}

impl UpstreamPool {
    /// A pool for `workers` connection workers (and the main runtime).
    pub fn new(dialer: Dialer, idle_timeout: Duration, workers: usize) -> Self {
        let shards = (0..=workers)
            .map(|_| arc_swap::ArcSwap::from_pointee(Pooled::new(0, &dialer, idle_timeout)))
            .collect();
        Self {
            dialer,
            idle_timeout,
            shards,
        }
    }

    /// The client for a request made under `store`, from the calling thread's shard.
    pub fn client(&self, store: &crate::store::Store) -> Arc<Pooled> {
        let last = self.shards.len() - 1;
        let shard = &self.shards[crate::workers::current().map_or(last, |i| i.min(last))];
        let current = shard.load_full();
        if current.epoch == store.egress_epoch {
            return current;
        }
        // A newer epoch replaces the pool (its idle connections close as it drops); an older
        // one, from a request still holding an old store, gets a client of its own.
        let fresh = Arc::new(Pooled::new(
            store.egress_epoch,
            &self.dialer,
            self.idle_timeout,
        ));
        if store.egress_epoch > current.epoch {
            shard.rcu(|c| {
                if c.epoch >= fresh.epoch {
                    Arc::clone(c)
                } else {
                    Arc::clone(&fresh)
                }
            });
            let now = shard.load_full();
            if now.epoch == store.egress_epoch {
                return now;
            }
        }
        fresh
    }
}

/// A pooled client over `dialer`; idle upstream connections are kept for `idle_timeout`. It
/// writes `Host` from the request URI on HTTP/1.1 only (`set_host`): HTTP/2 has `:authority`.
fn client(dialer: Dialer, idle_timeout: Duration) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .set_host(true)
        .build(Connector(dialer))
}
