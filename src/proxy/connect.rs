//! CONNECT: check the destination, answer 200, then either relay raw bytes or terminate TLS with a
//! certificate for the CONNECT host and serve the HTTP inside, bound to that destination.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::PROXY_AUTHORIZATION;
use http::uri::Scheme;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, info, warn};

use super::idle::{Activity, Tracked};
use super::rewind::Rewind;
use super::serve::{ConnectionPermit, client_stream, serve_inner};
use super::{Shared, forward};
use crate::config::MitmMode;
use crate::destination::Destination;
use crate::error::{EgressRule, ProxyError};
use crate::metrics::ModeLabel;
use crate::scope::normalize_host;
use crate::upstream::ProxyBody;

/// How long to wait for the client's first bytes in a tunnel. A client that says nothing is
/// taken to speak a server-speaks-first protocol (SSH, SMTP) and is relayed raw.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client may take over its TLS handshake with keyswap.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Answers a CONNECT request; the tunnel itself runs in a task once hyper hands over the socket.
pub(super) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    permit: ConnectionPermit,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(dest) = req
        .uri()
        .authority()
        .and_then(|a| Destination::from_authority(a, 443))
    else {
        return Err(ProxyError::BadRequest("CONNECT needs a host:port target"));
    };
    let store = shared.store.load();
    let Some(session) = store.authenticate(req.headers().get(PROXY_AUTHORIZATION)) else {
        info!(host = %dest.host, "407: no valid Proxy-Authorization for any session");
        return Err(ProxyError::ProxyAuthRequired);
    };
    permit.admit(&session.id, &shared.session_slots)?;
    // SECURITY: the session's network policy is checked before any TLS or upstream connection.
    if !session.reaches(&dest.host) {
        info!(session = %session.id, host = %dest.host, "CONNECT outside the session's network policy");
        return Err(ProxyError::EgressDenied {
            host: dest.host,
            rule: EgressRule::SessionNetwork {
                session: session.id.clone(),
            },
        });
    }
    let session_id: Arc<str> = Arc::from(session.id.as_str());
    let (intercept, why) = if store.policy().mitm == MitmMode::Always {
        (true, "mitm = \"always\"")
    } else if session.could_apply_to(&dest.host) {
        (true, "a credential of the session is in scope")
    } else {
        (
            false,
            "no credential of the session is in scope (mitm = \"auto\")",
        )
    };
    drop(store);
    // Check (and for a raw relay, dial) before saying 200, so a refusal is a clear HTTP answer.
    let upstream = if intercept {
        shared
            .dialer
            .permitted_addrs(&dest.host, dest.port)
            .await
            .map(|_| None)
    } else {
        shared.dialer.tcp(&dest.host, dest.port).await.map(Some)
    };
    let upstream = match upstream {
        Ok(upstream) => {
            let mode = if upstream.is_some() {
                "raw"
            } else {
                "intercepted"
            };
            shared
                .metrics
                .tunnels
                .get_or_create(&ModeLabel {
                    mode: mode.to_string(),
                })
                .inc();
            info!(session = %session_id, host = %dest.host, port = dest.port, mode, why, "tunnel");
            upstream
        }
        Err(e) => {
            let err = ProxyError::from(e);
            info!(host = %dest.host, port = dest.port, error = err.code(), "CONNECT refused");
            return Err(err);
        }
    };
    // The tunnel's futures are boxed where they start: tokio copies a spawned future whole (into
    // its task, and its stage again at the end), and a tunnel's, holding a TLS session and an
    // HTTP connection inline, weighs kilobytes; boxed, they are made in place once.
    tokio::spawn(async move {
        let _permit = permit;
        let client = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => return debug!(error = %e, "CONNECT upgrade failed"),
        };
        let Some(client) = client_stream(client) else {
            return warn!("CONNECT upgrade is not a TCP stream");
        };
        match upstream {
            Some(upstream) => {
                let idle = shared.limits.idle_timeout;
                Box::pin(relay(
                    Rewind::new(client.0, client.1),
                    upstream,
                    &dest,
                    idle,
                ))
                .await;
            }
            None => Box::pin(tunnel(client.0, client.1, dest, session_id, shared)).await,
        }
    });
    let mut response = Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// Sniffs the tunnel's first byte: TLS is intercepted, plain HTTP is served, anything else relayed.
async fn tunnel(
    buffered: Bytes,
    client: TcpStream,
    dest: Destination,
    session: Arc<str>,
    shared: Arc<Shared>,
) {
    let first = match buffered.first() {
        Some(&b) => Some(b),
        None => {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(FIRST_BYTE_TIMEOUT, client.peek(&mut byte)).await {
                Ok(Ok(1)) => Some(byte[0]),
                Ok(_) => return, // closed
                Err(_) => None,  // silent client: server speaks first
            }
        }
    };
    let client = Rewind::new(buffered, client);
    match first {
        Some(TLS_HANDSHAKE_RECORD) => intercept_tls(client, dest, session, shared).await,
        Some(b) if b.is_ascii_uppercase() => {
            serve_bound(
                client,
                Bound {
                    dest,
                    scheme: Scheme::HTTP,
                    session,
                    sni: None,
                    sticky: Default::default(),
                },
                false,
                shared,
            )
            .await;
        }
        _ => match shared.dialer.tcp(&dest.host, dest.port).await {
            Ok(upstream) => relay(client, upstream, &dest, shared.limits.idle_timeout).await,
            Err(e) => debug!(host = %dest.host, error = %e, "raw relay could not connect"),
        },
    }
}

/// Terminates the client's TLS with a leaf for the CONNECT host and serves the HTTP inside.
pub(super) async fn intercept_tls(
    client: Rewind<TcpStream>,
    dest: Destination,
    session: Arc<str>,
    shared: Arc<Shared>,
) {
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
    let start = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => return debug!(host = %dest.host, error = %e, "client hello failed"),
        Err(_) => return debug!(host = %dest.host, "client hello timed out"),
    };
    // SECURITY: an SNI naming another host (domain fronting) gets the CONNECT host's certificate
    // and a 421 for every request; nothing is forwarded.
    let sni_mismatch = start
        .client_hello()
        .server_name()
        .map(normalize_host)
        .filter(|sni| *sni != dest.host);
    let config = match shared.ca.server_config(&dest.host).await {
        Ok(config) => config,
        Err(e) => return warn!(host = %dest.host, error = %e, "cannot mint a certificate"),
    };
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) if refused_our_certificate(&e) => return warn_untrusted(&dest.host),
        Ok(Err(e)) => return debug!(host = %dest.host, error = %e, "client TLS handshake failed"),
        Err(_) => return debug!(host = %dest.host, "client TLS handshake timed out"),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let sni = sni_mismatch.map(Arc::from);
    serve_bound(
        tls,
        Bound {
            dest,
            scheme: Scheme::HTTPS,
            session,
            sni,
            sticky: Default::default(),
        },
        h2,
        shared,
    )
    .await;
}

/// Whether the client ended the handshake because it does not trust keyswap's certificate.
fn refused_our_certificate(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let alert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        });
    matches!(
        alert,
        Some(A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::CertificateExpired)
    )
}

/// A client that refuses keyswap's certificate has not installed the CA bundle: said at warn,
/// at most once a minute per host (a misconfigured sandbox retries in a loop).
fn warn_untrusted(host: &str) {
    static LAST: std::sync::LazyLock<dashmap::DashMap<String, std::time::Instant>> =
        std::sync::LazyLock::new(dashmap::DashMap::new);
    let now = std::time::Instant::now();
    if LAST
        .get(host)
        .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(60))
    {
        return debug!(host, "the client refused keyswap's certificate");
    }
    if LAST.len() > 10_000 {
        LAST.clear();
    }
    LAST.insert(host.to_string(), now);
    warn!(
        host,
        "the client refused keyswap's certificate: give the sandbox keyswap's CA bundle (keyswap env sets SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, JAVA_TOOL_OPTIONS… to ca-bundle.pem / ca-bundle.p12)"
    );
}

/// What every request inside one tunnel is bound to.
pub(super) struct Bound {
    pub dest: Destination,
    pub scheme: Scheme,
    pub session: Arc<str>,
    /// A TLS SNI that named another host: every request gets 421.
    pub sni: Option<Arc<str>>,
    /// The tunnel's own upstream connection (HTTP/1.1 upstreams).
    pub sticky: super::sticky::Sticky,
}

/// Serves HTTP inside a tunnel; every request is checked against, and sent to, the bound destination.
pub(super) async fn serve_bound<I>(io: I, bound: Bound, h2: bool, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let bound = Arc::new(bound);
    let handler = {
        let shared = shared.clone();
        move |req: Request<Incoming>| {
            let (shared, bound) = (shared.clone(), bound.clone());
            async move {
                if let Some(sni) = &bound.sni {
                    let err = ProxyError::HostMismatch {
                        expected: bound.dest.to_string(),
                        got: format!("TLS SNI {sni}"),
                    };
                    info!(host = %bound.dest.host, "SNI does not match the CONNECT host");
                    return Err(err);
                }
                forward::in_tunnel(
                    req,
                    &bound.dest,
                    bound.scheme.clone(),
                    &bound.session,
                    &bound.sticky,
                    &shared,
                )
                .await
            }
        }
    };
    serve_inner(io, h2, shared, handler).await;
}

/// Copies bytes both ways without looking at them, until either side closes or no byte has
/// moved either way for `idle` (SPEC §8: an idle relay must not hold its connection slots forever).
pub(super) async fn relay<C>(client: C, upstream: TcpStream, dest: &Destination, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = Tracked::new(client, activity.clone());
    let mut upstream = Tracked::new(upstream, activity.clone());
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
            Ok((up, down)) => debug!(host = %dest.host, up, down, "raw tunnel closed"),
            Err(e) => debug!(host = %dest.host, error = %e, "raw tunnel ended with an error"),
        },
        _ = activity.expired(idle) => debug!(host = %dest.host, "raw tunnel idle: closed"),
    }
}
