//! A tunnel's own way to its upstream: a connection of its own for HTTP/1.1 upstreams, the
//! worker's shared connection for HTTP/2 ones.
//!
//! Why: a tunnel's requests all go to one destination; the pool costs every request a checkout
//! (its map hashes the authority byte by byte, twice), a connect future raced against it, a
//! channel hop and a return, which a connection the tunnel holds does not.
//!
//! A tunnel learns what its upstream speaks from the pool's first answer. After an HTTP/1.1 answer
//! it dials a connection of its own (offering only HTTP/1.1) and keeps it while it is open and the
//! egress rules it was dialled under still hold. After an HTTP/2 answer it takes the worker's
//! connection to that destination from the pool's shard (`upstream::SharedH2`; the first tunnel to
//! ask dials it), so the worker's tunnels are multiplexed onto one connection; a tunnel whose
//! destination has such a connection already takes it from its first request. A request neither
//! took (closed under it, or still being dialled) goes to the pool, which sends it as it always
//! does.

use std::sync::{Mutex, PoisonError};

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use super::Shared;
use crate::destination::Destination;
use std::sync::Arc;

use crate::upstream::{Found, H2Sender, Pooled, ProxyBody, SharedConn, Stream};

/// What a tunnel knows of its upstream.
#[derive(Default)]
pub struct Sticky {
    state: Mutex<State>,
    /// And the scrubbing table for what comes back from it.
    pub scrub: crate::substitute::scrub::Memo,
}

#[derive(Default)]
enum State {
    /// No answer yet: the pool serves.
    #[default]
    Unknown,
    /// The pool serves: the tunnel's own or shared connection could not be made.
    Pooled,
    /// HTTP/1.1: the tunnel's own connection, when it is not in use, with the egress epoch it
    /// was dialled under.
    Own(Option<(SendRequest<ProxyBody>, u64)>),
    /// HTTP/2: the worker's shared connection once taken, with the egress epoch of the pool
    /// shard it came from.
    Shared(Option<(SharedConn, u64)>),
}

/// What [`Sticky::shared`] found.
enum Held {
    Sender(H2Sender),
    /// HTTP/2, and no live connection held: look for the worker's.
    Find,
    /// Nothing known yet: the worker's connection, if there is one already.
    Peek,
    /// Not HTTP/2.
    Nothing,
}

/// What [`Sticky::take`] found.
enum Slot {
    Pool,
    Dial,
    Ready(SendRequest<ProxyBody>),
}

impl Sticky {
    /// After an answer from the pool: an HTTP/1.1 upstream gets the tunnel's own connection next.
    pub fn learn(&self, version: Version) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, State::Unknown) {
            *state = match version {
                Version::HTTP_11 => State::Own(None),
                Version::HTTP_2 => State::Shared(None),
                _ => State::Pooled,
            };
        }
    }

    fn take(&self, epoch: u64) -> Slot {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            State::Unknown | State::Pooled | State::Shared(_) => Slot::Pool,
            // In use by a request still in flight (an HTTP/2 client's concurrent streams): pool.
            State::Own(slot) => match slot.take() {
                Some((sender, at)) if at == epoch && !sender.is_closed() => Slot::Ready(sender),
                // Closed, or dialled under other egress rules: a new one.
                _ => Slot::Dial,
            },
        }
    }

    fn put(&self, sender: SendRequest<ProxyBody>, epoch: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let State::Own(slot) = &mut *state {
            *slot = Some((sender, epoch));
        }
    }

    /// What the tunnel holds of a shared HTTP/2 connection for a request under `epoch`.
    fn shared(&self, epoch: u64) -> Held {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            State::Shared(Some((conn, at))) if *at == epoch && !conn.sender.is_closed() => {
                conn.used();
                Held::Sender(conn.sender.clone())
            }
            State::Shared(held) => {
                *held = None;
                Held::Find
            }
            State::Unknown => Held::Peek,
            State::Own(_) | State::Pooled => Held::Nothing,
        }
    }

    /// Holds `sender`: after an HTTP/2 answer, or before any answer when another tunnel's
    /// connection to the same destination already tells that it speaks HTTP/2.
    fn keep_shared(&self, conn: SharedConn, epoch: u64) -> H2Sender {
        let sender = conn.sender.clone();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let State::Shared(_) | State::Unknown = &*state {
            *state = State::Shared(Some((conn, epoch)));
        }
        sender
    }

    fn give_up(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::Pooled;
    }
}

/// Sends `request` (absolute-form, as the pool takes it) on the tunnel's own connection.
/// `Err(request)`, unchanged, when it is for the pool: no connection of its own (yet), or the
/// connection did not take it.
pub(super) async fn send(
    sticky: &Sticky,
    request: Request<ProxyBody>,
    dest: &Destination,
    epoch: u64,
    shared: &Shared,
) -> Result<Result<Response<Incoming>, hyper::Error>, Request<ProxyBody>> {
    let mut sender = match sticky.take(epoch) {
        Slot::Pool => return Err(request),
        Slot::Ready(sender) => sender,
        // Boxed: dialling happens once per tunnel, and its handshake state would otherwise
        // weigh on every request's future.
        Slot::Dial => match Box::pin(dial(dest, request.uri().scheme(), shared)).await {
            Some(sender) => sender,
            None => {
                sticky.give_up();
                return Err(request);
            }
        },
    };
    if sender.ready().await.is_err() {
        return Err(request);
    }
    // The pool writes origin-form and `Host` from the absolute URI; so does this.
    let (mut parts, body) = request.into_parts();
    let absolute = parts.uri.clone();
    if let Some(wire) = dest.wire(absolute.scheme().unwrap_or(&Scheme::HTTPS)) {
        parts.headers.insert(header::HOST, wire.host);
    }
    parts.uri = Uri::from(
        absolute
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    match sender
        .try_send_request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => {
            sticky.put(sender, epoch);
            Ok(Ok(response))
        }
        Err(mut e) => match e.take_message() {
            // Never written: the pool sends it, as it came.
            Some(request) => {
                debug!(host = %dest.host, "the tunnel's upstream connection closed: the pool sends the request");
                let (mut parts, body) = request.into_parts();
                parts.uri = absolute;
                parts.headers.remove(header::HOST);
                Err(Request::from_parts(parts, body))
            }
            None => Ok(Err(e.into_error())),
        },
    }
}

/// Sends `request` (absolute-form) on the worker's shared HTTP/2 connection to `dest`, from the
/// pool shard `pooled`. `Err(request)`, unchanged, when it is for the pool: the upstream is not
/// HTTP/2, its connection is being dialled by another tunnel, or it did not take the request.
pub(super) async fn send_shared(
    sticky: &Sticky,
    request: Request<ProxyBody>,
    dest: &Destination,
    pooled: &Arc<Pooled>,
    shared: &Shared,
) -> Result<Result<Response<Incoming>, hyper::Error>, Request<ProxyBody>> {
    if request.uri().scheme() != Some(&Scheme::HTTPS) {
        return Err(request);
    }
    let mut sender = match sticky.shared(pooled.epoch()) {
        Held::Sender(sender) => sender,
        Held::Nothing => return Err(request),
        Held::Peek => match pooled.h2.ready(&dest.host, dest.port) {
            Some(conn) => sticky.keep_shared(conn, pooled.epoch()),
            None => return Err(request),
        },
        Held::Find => match pooled.h2.find(&dest.host, dest.port) {
            Found::Ready(conn) => sticky.keep_shared(conn, pooled.epoch()),
            Found::Busy => return Err(request),
            Found::Dial => {
                let dialling = Dialling { pooled, dest };
                // Boxed: dialling happens once per worker and destination.
                let Some(sender) = Box::pin(dial_h2(dest, shared)).await else {
                    sticky.give_up();
                    return Err(request);
                };
                sticky.keep_shared(dialling.made(sender), pooled.epoch())
            }
        },
    };
    match sender.try_send_request(request).await {
        Ok(response) => Ok(Ok(response)),
        Err(mut e) => match e.take_message() {
            // Never sent (the connection is closing): the pool sends it.
            Some(request) => {
                debug!(host = %dest.host, "the shared HTTP/2 connection closed: the pool sends the request");
                Err(request)
            }
            None => Ok(Err(e.into_error())),
        },
    }
}

/// A dial of a shared connection under way. Unless it was [`made`](Dialling::made), it leaves the
/// slot free for the next tunnel however the dial ends, a cancelled request included.
struct Dialling<'a> {
    pooled: &'a Arc<Pooled>,
    dest: &'a Destination,
}

impl Dialling<'_> {
    fn made(self, sender: H2Sender) -> SharedConn {
        let conn = self.pooled.keep_h2(&self.dest.host, self.dest.port, sender);
        // `keep_h2` took the slot: nothing left for `drop` to free.
        std::mem::forget(self);
        conn
    }
}

impl Drop for Dialling<'_> {
    fn drop(&mut self) {
        self.pooled.h2.failed(&self.dest.host, self.dest.port);
    }
}

/// A new HTTP/2 connection to `dest`, or `None` when it cannot be made or the server chose
/// HTTP/1.1 after all.
async fn dial_h2(dest: &Destination, shared: &Shared) -> Option<H2Sender> {
    let stream = match shared.dialer.https(&dest.host, dest.port).await {
        Ok(stream) => stream,
        Err(e) => {
            debug!(host = %dest.host, error = %e, "the shared HTTP/2 connection failed: the pool serves");
            return None;
        }
    };
    if !matches!(&stream, Stream::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2")) {
        return None;
    }
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    // Boxed before it is spawned, as the HTTP/1.1 connection below.
    let conn = Box::pin(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "a shared HTTP/2 upstream connection ended with an error");
        }
    });
    Some(sender)
}

/// A new HTTP/1.1 connection to `dest` (TLS offering only `http/1.1` for `https`).
async fn dial(
    dest: &Destination,
    scheme: Option<&Scheme>,
    shared: &Shared,
) -> Option<SendRequest<ProxyBody>> {
    let https = scheme.is_none_or(|s| *s == Scheme::HTTPS);
    let stream = match shared.dialer.http1(https, &dest.host, dest.port).await {
        Ok(stream) => stream,
        Err(e) => {
            debug!(host = %dest.host, error = %e, "the tunnel's own upstream connection failed: the pool serves");
            return None;
        }
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    // Boxed before it is spawned: the connection holds its TLS session inline, and tokio would
    // copy it whole three times (see `connect::handle`); once is enough.
    let conn = Box::pin(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "the tunnel's upstream connection ended with an error");
        }
    });
    Some(sender)
}

/// The `Host` value of `dest` (for tests).
#[cfg(test)]
fn host_of(dest: &Destination) -> Option<http::HeaderValue> {
    dest.wire(&Scheme::HTTPS).map(|w| w.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_learns_once() {
        let s = Sticky::default();
        assert!(matches!(s.take(0), Slot::Pool));
        assert!(
            matches!(s.shared(0), Held::Peek),
            "unknown: a shared one if there is"
        );
        s.learn(Version::HTTP_2);
        s.learn(Version::HTTP_11);
        assert!(
            matches!(s.take(0), Slot::Pool),
            "HTTP/2 is not the tunnel's own"
        );
        assert!(
            matches!(s.shared(0), Held::Find),
            "HTTP/2 looks for the shared one"
        );
        let s = Sticky::default();
        s.learn(Version::HTTP_11);
        assert!(matches!(s.take(0), Slot::Dial));
        assert!(matches!(s.shared(0), Held::Nothing));
        assert_eq!(
            host_of(&Destination::new("api.example.test", 8443)).unwrap(),
            "api.example.test:8443"
        );
    }
}
