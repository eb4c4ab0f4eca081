//! Pooled upstream connections: hyper-util's client (keyed by scheme and authority), one per
//! connection worker and egress epoch, and beside it the HTTP/2 connections a worker's tunnels
//! share directly.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

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

/// The HTTP/2 connections of one shard, by destination, that tunnels send on directly once they
/// learnt their upstream speaks HTTP/2 (`proxy::sticky`). Why: hyper-util's pool costs each
/// request a checkout (the authority hashed, a connect future raced against it, its futures
/// moved), and all of a tunnel's requests go to one destination anyway. One connection per
/// destination and worker: while it is being dialled, other tunnels use the pool.
pub struct SharedH2 {
    idle_timeout: Duration,
    conns: Mutex<HashMap<Box<str>, Ports>>,
}

/// A host's connections, by port (a handful at most).
type Ports = Vec<(u16, Conn)>;

enum Conn {
    Dialling,
    /// The connection, and when a tunnel last took it: one no tunnel took for the idle timeout
    /// is let go (it closes when the tunnels still holding it end).
    Ready(H2Sender, std::time::Instant),
}

/// A shared HTTP/2 connection's sending half.
pub type H2Sender = hyper::client::conn::http2::SendRequest<ProxyBody>;

/// What [`SharedH2::find`] found.
pub enum Found {
    Ready(H2Sender),
    /// None: the caller dials, and reports with [`SharedH2::put`] or [`SharedH2::failed`].
    Dial,
    /// Another tunnel is dialling it.
    Busy,
}

impl SharedH2 {
    fn new(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// The live connection to `host:port`, or who dials it.
    pub fn find(&self, host: &str, port: u16) -> Found {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        let idle = self.idle_timeout;
        // Closed and idle connections go first: this runs once per tunnel, not per request.
        conns.retain(|_, ports| {
            ports.retain(|(_, conn)| match conn {
                Conn::Dialling => true,
                Conn::Ready(sender, last) => !sender.is_closed() && now - *last < idle,
            });
            !ports.is_empty()
        });
        let ports = match conns.get_mut(host) {
            Some(ports) => ports,
            None => conns.entry(host.into()).or_default(),
        };
        match ports.iter_mut().find(|(p, _)| *p == port) {
            Some((_, Conn::Ready(sender, last))) => {
                *last = now;
                Found::Ready(sender.clone())
            }
            Some((_, Conn::Dialling)) => Found::Busy,
            None => {
                ports.push((port, Conn::Dialling));
                Found::Dial
            }
        }
    }

    /// The live connection to `host:port`, if there is one; nobody is asked to dial.
    pub fn ready(&self, host: &str, port: u16) -> Option<H2Sender> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, conn) = conns.get_mut(host)?.iter_mut().find(|(p, _)| *p == port)?;
        match conn {
            Conn::Ready(sender, last) if !sender.is_closed() => {
                *last = std::time::Instant::now();
                Some(sender.clone())
            }
            _ => None,
        }
    }

    /// The connection the caller of [`find`](Self::find) dialled.
    pub fn put(&self, host: &str, port: u16, sender: H2Sender) {
        self.set(host, port, Some(sender));
    }

    /// The dial [`find`](Self::find) asked for failed: the next tunnel tries again.
    pub fn failed(&self, host: &str, port: u16) {
        self.set(host, port, None);
    }

    fn set(&self, host: &str, port: u16, sender: Option<H2Sender>) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ports) = conns.get_mut(host) else {
            return;
        };
        ports.retain(|(p, _)| *p != port);
        if let Some(sender) = sender {
            ports.push((port, Conn::Ready(sender, std::time::Instant::now())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tunnel_dials_a_shared_connection_and_the_next_tries_again_after_a_failure() {
        let h2 = SharedH2::new(Duration::from_secs(60));
        assert!(matches!(h2.find("api.example.test", 443), Found::Dial));
        assert!(matches!(h2.find("api.example.test", 443), Found::Busy));
        // Another port or host is another connection.
        assert!(matches!(h2.find("api.example.test", 8443), Found::Dial));
        assert!(matches!(h2.find("other.example.test", 443), Found::Dial));
        h2.failed("api.example.test", 443);
        assert!(matches!(h2.find("api.example.test", 443), Found::Dial));
    }
}
