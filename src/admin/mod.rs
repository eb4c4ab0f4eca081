//! The admin listener: the vault API of SPEC §6 (`/v1/vaults…`, authenticated), `/healthz` and
//! `/ca.pem` (open).

mod api;
pub(crate) mod document;
mod error;
pub(crate) mod objects;
mod params;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::ca::CertificateAuthority;
use crate::live::Live;
use crate::secret::Secret;
use api::Api;
use error::ApiError;

/// Largest request body the vault API reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// What the admin endpoints read.
pub struct AdminState {
    pub live: Arc<Live>,
    pub refresher: Arc<crate::oauth::Refresher>,
    pub ca: Arc<CertificateAuthority>,
    /// What `GET /metrics` encodes: the registry the proxy counts in.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub shutdown: watch::Receiver<bool>,
    /// The API key, from `[admin] api_key_env`; without it the vault API answers 401.
    pub api_key: Option<Secret>,
    /// The name of that variable, for the advice in a 401.
    pub api_key_env: String,
}

/// Serves admin connections until shutdown.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    if state.api_key.is_none() {
        info!(
            "the vault API answers 401: export {}=<key> before `keyswap run` to enable it",
            state.api_key_env
        );
    }
    let api = Arc::new(Api {
        live: state.live.clone(),
        refresher: state.refresher.clone(),
        started: OffsetDateTime::now_utc(),
    });
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
        let (state, api) = (state.clone(), api.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (state, api) = (state.clone(), api.clone());
                async move { Ok::<_, Infallible>(route(req, &state, &api).await) }
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

async fn route(req: Request<Incoming>, state: &AdminState, api: &Api) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => healthz(state),
        (&Method::GET, "/metrics") => metrics(state),
        (&Method::GET, "/ca.pem") => respond(
            StatusCode::OK,
            "application/x-pem-file",
            state.ca.cert_pem().to_string(),
        ),
        _ => {
            let Some(rest) = path.strip_prefix("/v1/vaults") else {
                return ApiError::not_found("endpoint", &path).to_response();
            };
            let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            match vault_api(req, &segments, state, api).await {
                Ok((status, body)) => respond(status, "application/json", body.to_string()),
                Err(e) => e.to_response(),
            }
        }
    }
}

async fn vault_api(
    req: Request<Incoming>,
    segments: &[&str],
    state: &AdminState,
    api: &Api,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    authenticate(&req, state.api_key.as_ref(), &state.api_key_env)?;
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(ApiError::too_large());
        }
        Err(_) => return Err(ApiError::invalid("cannot read the request body")),
    };
    api.route(&parts.method, segments, parts.uri.query(), &body)
        .await
}

/// `x-api-key: <key>` or `Authorization: Bearer <key>`, compared in constant time.
fn authenticate(
    req: &Request<Incoming>,
    key: Option<&Secret>,
    variable: &str,
) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Err(ApiError::unauthorized(&format!(
            "keyswap has no admin API key: export {variable}=<key> (the variable [admin] api_key_env names) before `keyswap run`, then send it as x-api-key"
        )));
    };
    let headers = req.headers();
    let offered = headers
        .get("x-api-key")
        .map(HeaderValue::as_bytes)
        .or_else(|| {
            let auth = headers.get(AUTHORIZATION)?.as_bytes();
            auth.get(..7)
                .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
                .map(|_| &auth[7..])
        });
    match offered {
        Some(offered) if key.matches(offered) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid API key")),
        None => Err(ApiError::unauthorized(
            "send the API key in x-api-key or Authorization: Bearer",
        )),
    }
}

/// Prometheus text; the gauges that mirror other state are read at scrape time.
fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let m = &state.metrics;
    let (hits, minted) = state.ca.stats();
    let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.store_generation
        .set(as_gauge(state.live.store().load().generation));
    m.certificate_cache_hits.set(as_gauge(hits));
    m.certificates_minted.set(as_gauge(minted));
    m.certificate_cache_size
        .set(i64::try_from(state.ca.cached()).unwrap_or(i64::MAX));
    if let Some(sync) = state.live.sync_status() {
        m.store_sync_age.set(sync.age);
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        m.encode(),
    )
}

fn healthz(state: &AdminState) -> Response<Full<Bytes>> {
    let generation = state.live.store().load().generation;
    let reload = state.live.status();
    let sync = state.live.sync_status();
    let store_ok = sync.is_none_or(|s| s.ok);
    let mut body = serde_json::json!({
        "status": if reload.ok && store_ok { "ok" } else { "degraded" },
        "store_generation": generation,
        "last_reload": {
            "ok": reload.ok,
            "at": crate::vault::timestamp(reload.at),
            "trigger": reload.trigger,
            "errors": reload.errors,
        },
    });
    // SPEC §10: with the database backend, whether this replica is in sync, and since when.
    if let Some(sync) = sync {
        body["store"] = (if sync.ok { "ok" } else { "degraded" }).into();
        body["store_sync_age_seconds"] = sync.age.into();
        body["store_revision"] = sync.revision.into();
    }
    respond(StatusCode::OK, "application/json", body.to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
