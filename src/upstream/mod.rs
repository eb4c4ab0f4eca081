//! The upstream leg: resolve (honouring `[upstream.resolve]`), check the resolved address against the
//! egress policy, dial exactly that address, and verify TLS for the destination host. Connections
//! are pooled in `pool`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::connect::{Connected, Connection};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

mod pool;
mod shared_h2;

pub use pool::{Pooled, UpstreamClient, UpstreamPool};
pub use shared_h2::{Found, H2Sender, SharedConn, SharedH2};

use crate::config::Config;
use crate::egress;
use crate::store::{Store, StoreHandle};

/// Errors of bodies flowing through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both legs.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Why an upstream connection could not be made. Each maps to one client answer (see `error`).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {source}")]
    Dns { host: String, source: io::Error },
    #[error("{host} resolves only to addresses that egress rules refuse ({addr})")]
    Denied { host: String, addr: IpAddr },
    #[error("{host} is keyswap's own listener")]
    Loop { host: String },
    #[error("cannot connect to {host}: {source}")]
    Connect { host: String, source: io::Error },
    #[error("TLS with {host} failed: {source}")]
    Tls { host: String, source: io::Error },
    #[error("connecting to {host} timed out")]
    Timeout { host: String },
    #[error("upstream URI has no host")]
    NoHost,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("cannot read upstream CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Resolves, checks and dials upstream addresses; the only way keyswap opens an outbound socket.
#[derive(Clone)]
pub struct Dialer {
    inner: Arc<DialerInner>,
}

struct DialerInner {
    /// The live store: egress rules and `[upstream.resolve]` are read from it at every dial, so a
    /// reload that tightens them applies to the next connection.
    store: Arc<StoreHandle>,
    connect_timeout: Duration,
    /// keyswap's own listening addresses: dialling one would loop.
    own: Vec<SocketAddr>,
    tls: TlsConnector,
    tls_h1: TlsConnector,
}

impl Dialer {
    pub fn new(
        config: &Config,
        store: Arc<StoreHandle>,
        own: Vec<SocketAddr>,
    ) -> Result<Self, UpstreamSetupError> {
        let tls_config = client_tls_config(&config.tls.upstream_ca_files)?;
        // Upgrades (WebSocket) need HTTP/1.1 upstream; they get a connector that offers only it.
        let mut h1_config = tls_config.clone();
        h1_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = TlsConnector::from(Arc::new(tls_config));
        let tls_h1 = TlsConnector::from(Arc::new(h1_config));
        Ok(Self {
            inner: Arc::new(DialerInner {
                store,
                connect_timeout: config.limits.upstream_connect_timeout,
                own,
                tls,
                tls_h1,
            }),
        })
    }

    /// The addresses `host` resolves to that egress rules permit. Err when none is permitted.
    pub async fn permitted_addrs(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        let store = self.inner.store.load();
        let rules = &store.policy().egress;
        let all = self.resolve(&store, host, port).await?;
        let mut permitted = Vec::with_capacity(all.len());
        let mut refused = None;
        for addr in all {
            if self.is_own(addr) {
                return Err(ConnectError::Loop {
                    host: host.to_string(),
                });
            }
            if egress::permits(
                rules.block_private_addresses,
                &rules.allow_private_cidrs,
                addr.ip(),
            ) {
                permitted.push(addr);
            } else {
                refused.get_or_insert(addr.ip());
            }
        }
        match (permitted.is_empty(), refused) {
            (true, Some(addr)) => {
                // The operator's log keeps the address; the client's answer never does (the
                // sandbox would learn how internal names resolve).
                tracing::info!(host, %addr, "egress refused: the host resolves only to non-public addresses");
                Err(ConnectError::Denied {
                    host: host.to_string(),
                    addr,
                })
            }
            (true, None) => Err(ConnectError::Dns {
                host: host.to_string(),
                source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            }),
            (false, _) => Ok(permitted),
        }
    }

    async fn resolve(
        &self,
        store: &Store,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Some(ip) = store.policy().egress.resolve.get(host) {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = tokio::net::lookup_host((host, port));
        match tokio::time::timeout(self.inner.connect_timeout, lookup).await {
            Ok(Ok(addrs)) => Ok(addrs.collect()),
            Ok(Err(source)) => Err(ConnectError::Dns {
                host: host.to_string(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                host: host.to_string(),
            }),
        }
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        self.inner.own.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip()
                    || (own.ip().is_unspecified()
                        && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
                    || (addr.ip().to_canonical().is_loopback() && own.ip().is_loopback())
                    || addr.ip().is_unspecified())
        })
    }

    /// A TCP connection to `host:port`, dialled to an address that was checked (no second lookup).
    pub async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addrs = self.permitted_addrs(host, port).await?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => {
                    last = Some(ConnectError::Connect {
                        host: host.to_string(),
                        source: e,
                    })
                }
                Err(_) => {
                    last = Some(ConnectError::Timeout {
                        host: host.to_string(),
                    })
                }
            }
        }
        Err(last.unwrap_or(ConnectError::Timeout {
            host: host.to_string(),
        }))
    }

    /// A connection for an HTTP/1.1 upgrade (WebSocket): TLS offering only `http/1.1`, or TCP.
    pub async fn http1(&self, tls: bool, host: &str, port: u16) -> Result<Stream, ConnectError> {
        Ok(if tls {
            Stream::Tls(Box::new(
                self.tls_with(&self.inner.tls_h1, host, port).await?,
            ))
        } else {
            Stream::Plain(self.tcp(host, port).await?)
        })
    }

    /// TCP then TLS to `host`, verified for it, offering `h2` and `http/1.1`.
    pub async fn https(&self, host: &str, port: u16) -> Result<Stream, ConnectError> {
        Ok(Stream::Tls(Box::new(
            self.tls_with(&self.inner.tls, host, port).await?,
        )))
    }

    async fn tls_with(
        &self,
        connector: &TlsConnector,
        host: &str,
        port: u16,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let tcp = self.tcp(host, port).await?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| ConnectError::Tls {
            host: host.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let handshake = connector.connect(name, tcp);
        match tokio::time::timeout(self.inner.connect_timeout, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(ConnectError::Tls {
                host: host.to_string(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                host: host.to_string(),
            }),
        }
    }
}

/// The built-in web roots plus the operator's `upstream_ca_files`; certificates are always verified.
pub(crate) fn client_tls_config(
    ca_files: &[std::path::PathBuf],
) -> Result<ClientConfig, UpstreamSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for path in ca_files {
        let err = |message: String| UpstreamSetupError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no certificates in file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| err(e.to_string()))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A TCP or TLS upstream connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(_) => Connected::new(),
            Stream::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            Stream::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Finds the [`ConnectError`] behind an upstream client error, if the failure was in connecting.
pub fn connect_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ConnectError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
