//! The HTTP/2 connections of one pool shard, by destination, that tunnels send on directly once
//! they know their upstream speaks HTTP/2 (`proxy::sticky`).
//!
//! Why: hyper-util's pool costs each request a checkout (the authority hashed, a connect future
//! raced against it, its futures moved), and all of a tunnel's requests go to one destination
//! anyway. One connection per destination and worker; while it is being dialled, other tunnels
//! use the pool. A connection no request used between two sweeps (an idle timeout apart) is let
//! go, as the pool lets its idle connections go: it closes when the tunnels still holding it end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::ProxyBody;

/// A shared HTTP/2 connection's sending half.
pub type H2Sender = hyper::client::conn::http2::SendRequest<ProxyBody>;

pub struct SharedH2 {
    idle_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    hosts: HashMap<Box<str>, Ports>,
    /// Whether a sweep runs (`Pooled::keep_h2` starts one with the first connection).
    sweeping: bool,
}

/// A host's connections, by port (a handful at most).
type Ports = Vec<(u16, Conn)>;

enum Conn {
    Dialling,
    /// The connection, and its use count at the last sweep.
    Ready(SharedConn, u64),
}

/// A shared connection as a tunnel holds it: the sending half, and the count of its uses the
/// idle sweep reads (one relaxed increment per request, on the worker's own thread).
#[derive(Clone)]
pub struct SharedConn {
    pub sender: H2Sender,
    uses: Arc<AtomicU64>,
}

impl SharedConn {
    /// Counts a request (or a tunnel taking it).
    pub fn used(&self) {
        self.uses.fetch_add(1, Ordering::Relaxed);
    }

    fn uses(&self) -> u64 {
        self.uses.load(Ordering::Relaxed)
    }
}

/// What [`SharedH2::find`] found.
pub enum Found {
    Ready(SharedConn),
    /// None: the caller dials, and reports with `Pooled::keep_h2` or [`SharedH2::failed`].
    Dial,
    /// Another tunnel is dialling it.
    Busy,
}

impl SharedH2 {
    pub(super) fn new(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            state: Mutex::new(State::default()),
        }
    }

    pub(super) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connection to `host:port`, or who dials it.
    pub fn find(&self, host: &str, port: u16) -> Found {
        let mut state = self.state();
        let ports = match state.hosts.get_mut(host) {
            Some(ports) => ports,
            None => state.hosts.entry(host.into()).or_default(),
        };
        ports.retain(|(_, conn)| !matches!(conn, Conn::Ready(c, _) if c.sender.is_closed()));
        match ports.iter().find(|(p, _)| *p == port) {
            Some((_, Conn::Ready(conn, _))) => {
                conn.used();
                Found::Ready(conn.clone())
            }
            Some((_, Conn::Dialling)) => Found::Busy,
            None => {
                ports.push((port, Conn::Dialling));
                Found::Dial
            }
        }
    }

    /// The live connection to `host:port`, if there is one; nobody is asked to dial.
    pub fn ready(&self, host: &str, port: u16) -> Option<SharedConn> {
        let state = self.state();
        let (_, conn) = state.hosts.get(host)?.iter().find(|(p, _)| *p == port)?;
        match conn {
            Conn::Ready(conn, _) if !conn.sender.is_closed() => {
                conn.used();
                Some(conn.clone())
            }
            _ => None,
        }
    }

    /// Keeps the connection the caller of [`find`](Self::find) dialled; true when no sweep runs
    /// yet and the caller must start one.
    pub(super) fn put(&self, host: &str, port: u16, sender: H2Sender) -> (SharedConn, bool) {
        let conn = SharedConn {
            sender,
            uses: Arc::new(AtomicU64::new(1)),
        };
        let mut state = self.state();
        let start = !std::mem::replace(&mut state.sweeping, true);
        let ports = state.hosts.entry(host.into()).or_default();
        ports.retain(|(p, _)| *p != port);
        ports.push((port, Conn::Ready(conn.clone(), 0)));
        (conn, start)
    }

    /// The dial [`find`](Self::find) asked for failed: the next tunnel tries again.
    pub fn failed(&self, host: &str, port: u16) {
        let mut state = self.state();
        if let Some(ports) = state.hosts.get_mut(host) {
            ports.retain(|(p, _)| *p != port);
        }
    }

    /// Lets go of the connections closed, or unused since the last sweep. False, and no sweep
    /// running any more, when none is left.
    pub(super) fn sweep(&self) -> bool {
        let mut state = self.state();
        state.hosts.retain(|_, ports| {
            ports.retain_mut(|(_, conn)| match conn {
                Conn::Dialling => true,
                Conn::Ready(conn, seen) => {
                    let uses = conn.uses();
                    let keep = uses != *seen && !conn.sender.is_closed();
                    *seen = uses;
                    keep
                }
            });
            !ports.is_empty()
        });
        state.sweeping = !state.hosts.is_empty();
        state.sweeping
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
        // A sweep keeps a dial under way (and so keeps running).
        assert!(h2.sweep());
        assert!(matches!(h2.find("other.example.test", 443), Found::Busy));
    }
}
