//! Serving HTTP on one client stream, plain or inside a tunnel: hyper's HTTP/1 (behind the
//! framing check) or HTTP/2 builders with keyswap's limits, graceful shutdown and the idle
//! timeout, and the rule that a request which asked to switch protocols and was not switched
//! ends its connection.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::debug;

use super::Shared;
use super::framing::Mode;
use super::idle::{Activity, Tracked};
use super::rewind::Rewind;
use super::slots::Slots;
use super::strict::Strict;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::upstream::ProxyBody;

/// hyper's default cap on request header fields.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
/// HTTP/2 streams one client connection may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 250;
/// Streams a client may reset before they are answered (rapid-reset flood protection).
const H2_MAX_PENDING_RESETS: usize = 50;

/// The connection slots a client holds for as long as its connection (or its tunnel) lives.
pub(super) type ConnectionPermit = Arc<Slots>;

/// The I/O stack a plain client connection is served on. Built by [`client_io`] and taken apart by
/// [`client_stream`] after a CONNECT: both here, so they cannot disagree.
type ClientIo = TokioIo<Tracked<Strict<TcpStream>>>;

/// A client's TCP stream made ready for hyper: the framing check, then activity tracking.
pub(super) fn client_io(stream: TcpStream, shared: &Shared, activity: &Arc<Activity>) -> ClientIo {
    let stream = Strict::new(
        stream,
        Mode::Listener,
        &shared.limits,
        shared.metrics.clone(),
    );
    TokioIo::new(Tracked::new(stream, activity.clone()))
}

/// The client's TCP stream back from a CONNECT's upgrade, with every byte read past the CONNECT
/// head (what hyper buffered, then what the framing check still held); `None` if the upgrade is
/// not a client connection.
pub(super) fn client_stream(upgraded: hyper::upgrade::Upgraded) -> Option<(Bytes, TcpStream)> {
    let parts = upgraded.downcast::<ClientIo>().ok()?;
    let (stream, unread) = parts.io.into_inner().inner.into_parts();
    let read = if unread.is_empty() {
        parts.read_buf
    } else {
        let mut all = bytes::BytesMut::from(parts.read_buf.as_ref());
        all.extend_from_slice(&unread);
        all.freeze()
    };
    Some((read, stream))
}

/// The edge of every request served on a client connection (SPEC §5's errors): stages return
/// `Result`, and only here a refusal becomes its answer and is counted. keyswap's own 429
/// too-many-connections also ends the connection, so its process-wide slot comes back at once
/// (an upstream's 429 is an answer like any other and keeps it).
pub(super) fn rescue(
    result: Result<Response<ProxyBody>, ProxyError>,
    metrics: &Metrics,
) -> Response<ProxyBody> {
    let e = match result {
        Ok(response) => return response,
        Err(e) => e,
    };
    metrics.refused(e.code());
    let mut response = e.to_response();
    if matches!(e, ProxyError::TooManyConnections { .. }) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Drives a hyper connection until it ends, shutdown begins (then it is closed gracefully), or
/// it has been idle with nothing in flight for the idle timeout.
macro_rules! drive {
    ($conn:expr, $shared:expr, $activity:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let mut shutdown = $shared.shutdown.clone();
        // Biased: the connection is polled first on every wake (no random pick per poll), and
        // the two watchers only when it is pending.
        tokio::select! {
            biased;
            result = conn.as_mut() => $crate::proxy::serve::log_end(result),
            _ = shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                $crate::proxy::serve::log_end(conn.await);
            }
            _ = $activity.expired($shared.limits.idle_timeout) => {
                ::tracing::debug!("closing an idle client connection");
                conn.as_mut().graceful_shutdown();
                $crate::proxy::serve::log_end(conn.await);
            }
        }
    }};
}
pub(super) use drive;

/// Whether a request asks to leave HTTP/1 (CONNECT, or any `Upgrade` header): the framing check
/// stops looking at the bytes after such a head, and hyper keeps an upgrade pending for it.
pub(super) fn asks_to_switch(req: &Request<Incoming>) -> Option<Switch> {
    if req.method() == Method::CONNECT {
        Some(Switch::Connect)
    } else if req.headers().contains_key(http::header::UPGRADE) {
        Some(Switch::Upgrade)
    } else {
        None
    }
}

#[derive(Clone, Copy)]
pub(super) enum Switch {
    /// Switched by a 2xx answer.
    Connect,
    /// Switched by a 101 answer.
    Upgrade,
}

/// SECURITY: a request that asked to switch protocols and was not switched (any answer but 2xx to
/// CONNECT or 101 to an upgrade) ends its connection. Otherwise the bytes after it would reach
/// hyper without the framing check (which stepped aside for the expected new protocol), and
/// hyper would hand the socket to its pending upgrade instead of letting a later refusal be
/// written.
pub(super) fn close_unless_switched(switch: Option<Switch>, response: &mut Response<ProxyBody>) {
    let status = response.status();
    let switched = match switch {
        None => return,
        Some(Switch::Connect) => status.is_success(),
        Some(Switch::Upgrade) => status == http::StatusCode::SWITCHING_PROTOCOLS,
    };
    if !switched {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// Serves the HTTP inside a tunnel (HTTP/2 when ALPN chose it), each request through `handler`.
pub(super) async fn serve_inner<I, F, Fut>(io: I, h2: bool, shared: Arc<Shared>, handler: F)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'static,
{
    let activity = Activity::new();
    // An idle tunnel holds only its TLS state until the client speaks: hyper's connection and
    // its read buffer (8 KiB) are made at the first byte.
    let Some(io) = first_byte(io, &shared, &activity).await else {
        return;
    };
    let service = {
        let (activity, shared) = (activity.clone(), shared.clone());
        service_fn(move |req: Request<Incoming>| {
            // The handler is called inside the future, not here: its future (a few KiB) is then
            // made in place instead of being moved through hyper's dispatch by value.
            let (handler, activity, metrics) =
                (handler.clone(), activity.clone(), shared.metrics.clone());
            async move {
                let _in_flight = activity.begin();
                // HTTP/2 has no Connection header and no upgrades: only HTTP/1 needs closing.
                let switch = if h2 { None } else { asks_to_switch(&req) };
                let mut response = rescue(handler(req).await, &metrics);
                close_unless_switched(switch, &mut response);
                Ok::<_, Infallible>(response)
            }
        })
    };
    if h2 {
        let io = TokioIo::new(Tracked::new(io, activity.clone()));
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_header_list_size(
                u32::try_from(shared.limits.max_header_bytes).unwrap_or(u32::MAX),
            );
        drive!(builder.serve_connection(io, service), shared, activity);
    } else {
        let io = Strict::new(io, Mode::Tunnel, &shared.limits, shared.metrics.clone());
        let io = TokioIo::new(Tracked::new(io, activity.clone()));
        let mut builder = http1::Builder::new();
        h1_limits(&mut builder, &shared);
        drive!(
            builder.serve_connection(io, service).with_upgrades(),
            shared,
            activity
        );
    }
}

/// The stream with its first byte put back, once the client has sent one; `None` when it ends
/// first, the idle timeout passes, or shutdown begins.
async fn first_byte<I>(mut io: I, shared: &Shared, activity: &Activity) -> Option<Rewind<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut byte = [0u8; 1];
    let mut shutdown = shared.shutdown.clone();
    let read = tokio::select! {
        read = io.read(&mut byte) => read,
        _ = shutdown.changed() => return None,
        _ = activity.expired(shared.limits.idle_timeout) => {
            debug!("closing an idle client connection");
            return None;
        }
    };
    match read {
        Ok(1) => Some(Rewind::new(Bytes::copy_from_slice(&byte), io)),
        _ => {
            let _ = io.shutdown().await;
            None
        }
    }
}

/// Counts a client connection in the open-connections gauge while it lives.
pub(super) struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    pub(super) fn new(metrics: &Metrics) -> Self {
        let gauge = metrics.open_connections.clone();
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// hyper's own limits stay as a backstop behind `Strict`, which enforces `[limits]` first (with
/// `x-keyswap-error`) and runs the header deadline itself, so hyper sets no timer per request.
pub(super) fn h1_limits(builder: &mut http1::Builder, shared: &Shared) {
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    // Setting max_headers makes hyper zero a header array per request; its default is 100.
    if shared.limits.max_headers > HYPER_DEFAULT_MAX_HEADERS {
        builder.max_headers(shared.limits.max_headers);
    }
    builder
        .max_header_size(shared.limits.max_header_bytes)
        .keep_alive(true)
        // A refused request ends the stream hyper reads (see `strict`); the answers to the
        // requests before it must still be written, so end-of-stream must not abort them.
        .half_close(true);
}

pub(super) fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        debug!(error = %e, "client connection ended with an error");
    }
}
