//! A tunnel's own upstream connection, for HTTP/1.1 upstreams.
//!
//! Why: a tunnel's requests all go to one destination, and on HTTP/1.1 one at a time; the shared
//! pool costs every request a checkout (its map hashes the authority byte by byte, twice), a
//! channel hop and a return, which a connection kept by the tunnel does not. HTTP/2 upstreams stay
//! on the shared pool, where the tunnels' requests are multiplexed onto few connections.
//!
//! A tunnel learns what its upstream speaks from the pool's first answer. After an HTTP/1.1 answer
//! it dials a connection of its own (offering only HTTP/1.1) and keeps it while it is open and the
//! egress rules it was dialled under still hold. A request the connection did not take (closed
//! under it) goes to the pool, which sends it as it always does.

use std::sync::{Mutex, PoisonError};

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::Shared;
use crate::destination::Destination;
use crate::upstream::ProxyBody;

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
    /// HTTP/2 (or the tunnel's own connection could not be made): the pool serves.
    Pooled,
    /// HTTP/1.1: the tunnel's own connection, when it is not in use, with the egress epoch it
    /// was dialled under.
    Own(Option<(SendRequest<ProxyBody>, u64)>),
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
            *state = if version == Version::HTTP_11 {
                State::Own(None)
            } else {
                State::Pooled
            };
        }
    }

    fn take(&self, epoch: u64) -> Slot {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            State::Unknown | State::Pooled => Slot::Pool,
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
        s.learn(Version::HTTP_2);
        s.learn(Version::HTTP_11);
        assert!(matches!(s.take(0), Slot::Pool), "HTTP/2 stays on the pool");
        let s = Sticky::default();
        s.learn(Version::HTTP_11);
        assert!(matches!(s.take(0), Slot::Dial));
        assert_eq!(
            host_of(&Destination::new("api.example.test", 8443)).unwrap(),
            "api.example.test:8443"
        );
    }
}
