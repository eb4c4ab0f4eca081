//! Accepting client connections within the connection limit, until shutdown, and serving each:
//! CONNECT goes to `connect`, absolute-form requests to `forward`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Method, Request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::idle::Activity;
use super::serve::{
    ConnectionPermit, OpenConnection, asks_to_switch, client_io, close_unless_switched, drive,
    h1_limits, rescue,
};
use super::slots::Slots;
use super::{Shared, connect, forward, transparent};

/// What a listener's clients are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Proxy clients: CONNECT and absolute-form requests (`[proxy] listen`).
    Proxy,
    /// Connections the kernel redirected (`[proxy] transparent_listen`, SPEC §12).
    Transparent,
}

/// Accepts clients until shutdown, on every connection worker: each accepts on its own copy of
/// the listening socket, so a connection starts on the thread that serves it (see `workers`).
/// Err when the socket cannot be shared with the workers; else the loops run, and the future
/// returned resolves when every one has stopped.
pub fn serve(
    listener: TcpListener,
    kind: Kind,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
) -> std::io::Result<impl Future<Output = ()>> {
    let listener = listener.into_std()?;
    let mut loops = Vec::with_capacity(shared.workers.count());
    for worker in 0..shared.workers.count() {
        let copy = listener.try_clone()?;
        let (this, connections) = (shared.clone(), connections.clone());
        loops.push(shared.workers.run_on(worker, async move {
            match TcpListener::from_std(copy) {
                Ok(listener) => accept(listener, kind, this, connections).await,
                Err(e) => warn!(error = %e, worker, "a worker cannot listen"),
            }
        }));
    }
    Ok(async move {
        for accepting in loops {
            let _ = accepting.await;
        }
    })
}

/// One worker's accept loop. A client is served only with a permit of the `max_connections`
/// semaphore (all listeners share it). Past the limit, a worker holds the one client it accepted
/// until a permit frees, and the others wait in the kernel's backlog; taking the permit before
/// accepting instead would have idle loops (one per worker and listener) hold permits no client
/// uses, and a small limit starve a listener.
async fn accept(
    listener: TcpListener,
    kind: Kind,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = permit else { return };
        let _ = stream.set_nodelay(true);
        debug!(%peer, "client connected");
        let permit = Arc::new(Slots::new(permit));
        let this = shared.clone();
        shared.workers.serve(stream, move |stream| async move {
            match kind {
                Kind::Proxy => serve_client(stream, this, permit).await,
                Kind::Transparent => {
                    transparent::serve_redirected(stream, peer, this, permit).await
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on a client connection: absolute-form requests and CONNECT.
async fn serve_client(stream: TcpStream, shared: Arc<Shared>, permit: ConnectionPermit) {
    let _open = OpenConnection::new(&shared.metrics);
    let activity = Activity::new();
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        service_fn(move |req: Request<Incoming>| {
            let (shared, permit, activity) = (shared.clone(), permit.clone(), activity.clone());
            async move {
                let _in_flight = activity.begin();
                let switch = asks_to_switch(&req);
                let result = if req.method() == Method::CONNECT {
                    connect::handle(req, shared.clone(), permit).await
                } else {
                    forward::plain(req, &shared, &permit).await
                };
                let mut response = rescue(result, &shared.metrics);
                close_unless_switched(switch, &mut response);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = http1::Builder::new();
    h1_limits(&mut builder, &shared);
    let io = client_io(stream, &shared, &activity);
    drive!(
        builder.serve_connection(io, service).with_upgrades(),
        shared,
        activity
    );
}
