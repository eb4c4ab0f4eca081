//! The floor peer (issue 16): the least a MITM proxy built on hyper + rustls + rcgen must do, to
//! measure keyswap's CPU per request against. It accepts CONNECT, terminates TLS with a leaf it
//! mints for the CONNECT host (cached), forwards each request on one upstream connection per
//! tunnel, and swaps a placeholder in `Authorization` for the secret. Nothing else: no scope or
//! session check, no scrubbing, no framing check, no limits, no logging, no metrics.
//!
//! Built only by the load benchmark, which runs it in a child process of its own binary
//! (`load --floor-peer UPSTREAM_CA_FILE OUT_CA_FILE`), so its CPU is measured apart.

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Body = BoxBody<Bytes, hyper::Error>;

const PLACEHOLDER: &str = "ks-ph-vcrd_bench";
const SECRET: &str = "ghp_bench_secret_value_000000000000";

struct Peer {
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
    leaves: DashMap<String, Arc<rustls::ServerConfig>>,
    upstream: tokio_rustls::TlsConnector,
}

impl Peer {
    fn leaf(&self, host: &str) -> Arc<rustls::ServerConfig> {
        if let Some(config) = self.leaves.get(host) {
            return config.clone();
        }
        let params = CertificateParams::new(vec![host.to_string()]).unwrap();
        let cert = params.signed_by(&self.leaf_key, &self.issuer).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(self.leaf_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        let config = Arc::new(config);
        self.leaves.insert(host.to_string(), config.clone());
        config
    }
}

/// Runs the floor peer until killed: prints `floor peer listening on ADDR` once ready.
pub fn main(upstream_ca: &str, out_ca: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "floor peer CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(out_ca, ca.pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(keyswap::ca::pem_to_der(&std::fs::read_to_string(upstream_ca).unwrap()).unwrap())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let peer = Arc::new(Peer {
            issuer: Issuer::new(params, key),
            leaf_key: KeyPair::generate().unwrap(),
            leaves: DashMap::new(),
            upstream: tokio_rustls::TlsConnector::from(Arc::new(client)),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("floor peer listening on {}", listener.local_addr().unwrap());
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let peer = peer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| connect(peer.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

/// CONNECT host:port → 200, then the tunnel is served (TLS terminated) on its own task.
async fn connect(peer: Arc<Peer>, req: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let empty = || {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed()
    };
    let Some(authority) = req
        .uri()
        .authority()
        .cloned()
        .filter(|_| req.method() == Method::CONNECT)
    else {
        let mut refused = Response::new(empty());
        *refused.status_mut() = http::StatusCode::BAD_REQUEST;
        return Ok(refused);
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let host = authority.host().to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(peer.leaf(&host));
        let Ok(tls) = acceptor.accept(TokioIo::new(upgraded)).await else {
            return;
        };
        let upstream: Arc<Mutex<Option<SendRequest<Body>>>> = Arc::default();
        let port = authority.port_u16().unwrap_or(443);
        let service =
            service_fn(move |req| forward(peer.clone(), upstream.clone(), host.clone(), port, req));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .await;
    });
    Ok(Response::new(empty()))
}

/// One request: the placeholder swapped, sent on the tunnel's upstream connection (made on first
/// use), the answer streamed back as it came.
async fn forward(
    peer: Arc<Peer>,
    upstream: Arc<Mutex<Option<SendRequest<Body>>>>,
    host: String,
    port: u16,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    if let Some(value) = req.headers().get(http::header::AUTHORIZATION)
        && let Ok(text) = value.to_str()
        && text.contains(PLACEHOLDER)
    {
        let swapped = text.replace(PLACEHOLDER, SECRET);
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, swapped.parse().unwrap());
    }
    let mut sender = upstream.lock().await;
    if sender.is_none() {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap();
        let tls = peer.upstream.connect(name, tcp).await.unwrap();
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let Some(s) = sender.as_mut() else {
        unreachable!()
    };
    let (parts, body) = req.into_parts();
    let response = s
        .send_request(Request::from_parts(parts, body.boxed()))
        .await?;
    Ok(response.map(|body| body.boxed()))
}
