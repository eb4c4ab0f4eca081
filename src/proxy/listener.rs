//! Accepting client connections within the connection limit, until shutdown, and serving each:
//! CONNECT goes to `connect`, absolute-form requests to `forward`.

use std::convert::Infallible;
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

/// Accepts clients until shutdown. A connection is accepted only when a permit of the
/// `max_connections` semaphore is free (both listeners share it), so excess clients wait in the
/// kernel's backlog.
pub async fn serve(
    listener: TcpListener,
    kind: Kind,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = permit else { return };
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
        let _ = stream.set_nodelay(true);
        debug!(%peer, "client connected");
        // The socket goes to a worker, whose own reactor must watch it: handed over plain and
        // registered there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "cannot hand a connection to a worker");
                continue;
            }
        };
        let permit = Arc::new(Slots::new(permit));
        let this = shared.clone();
        shared.workers.spawn(async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => return warn!(error = %e, "a worker cannot take a connection"),
            };
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
