//! The admin listener: `/healthz` and `/ca.pem` (the vault API lands here next).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::ca::CertificateAuthority;
use crate::live::Live;

/// What the admin endpoints read.
pub struct AdminState {
    pub live: Arc<Live>,
    pub ca: Arc<CertificateAuthority>,
    pub shutdown: watch::Receiver<bool>,
}

/// Serves admin connections until shutdown.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let mut shutdown = state.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn route(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            let generation = state.live.store().load().generation;
            let reload = state.live.status();
            let at = reload
                .at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let body = serde_json::json!({
                "status": if reload.ok { "ok" } else { "degraded" },
                "store_generation": generation,
                "last_reload": { "ok": reload.ok, "at": at, "trigger": reload.trigger, "errors": reload.errors },
            });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        (&Method::GET, "/ca.pem") => respond(
            StatusCode::OK,
            "application/x-pem-file",
            state.ca.cert_pem().to_string(),
        ),
        _ => {
            let body = serde_json::json!({
                "type": "error",
                "error": { "type": "not_found_error", "message": "no such endpoint" }
            });
            respond(StatusCode::NOT_FOUND, "application/json", body.to_string())
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
