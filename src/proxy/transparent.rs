//! The transparent listener (SPEC §12): connections the kernel redirected to keyswap (nftables or
//! iptables `REDIRECT`/`DNAT`), from clients that ignore proxy settings.
//!
//! There is no CONNECT line to say where a connection goes, so the destination is bound from two
//! facts that must agree: the name the client asked for (TLS SNI, or `Host` on plain HTTP) and the
//! address it dialled (`SO_ORIGINAL_DST`). SECURITY: the name alone is a header the client
//! controls; the address alone names no credential scope. A name that does not resolve to the
//! address dialled is the classic hole of this design ("the host checked is not the host dialled"),
//! so such a connection is closed and nothing is forwarded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::Shared;
use super::connect::{self, Bound};
use super::rewind::Rewind;
use super::serve::ConnectionPermit;
use crate::config::MitmMode;
use crate::destination::Destination;
use crate::metrics::ModeLabel;
use crate::scope::normalize_host;

/// How long a redirected client may take to send its ClientHello or request head.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// The most read before the name is known (a ClientHello or a request head).
const MAX_SNIFF: usize = 64 * 1024;

/// What the client's first bytes said.
enum Opening {
    Tls(Option<String>),
    Http(Option<String>),
    Other,
}

/// Serves one redirected connection: binds its destination, then intercepts or relays as a
/// CONNECT tunnel to that destination would.
pub(super) async fn serve_redirected(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: ConnectionPermit,
) {
    let original = match original_destination(&client) {
        Ok(addr) => addr,
        Err(e) => {
            return warn!(%peer, error = %e, "transparent: no original destination (is the connection redirected?)");
        }
    };
    // A connection made straight to the transparent port was not redirected: nowhere to go.
    if client.local_addr().is_ok_and(|local| local == original) {
        return info!(%peer, "transparent: connection not redirected by the kernel: closed");
    }
    let store = shared.store.load();
    let Some(session) = store.session_by_source(peer.ip()) else {
        return info!(%peer, %original, "transparent: no session claims this client address (source_cidrs): closed");
    };
    if let Err(e) = permit.admit(&session.id, &shared.session_slots) {
        return info!(%peer, session = %session.id, error = e.code(), "transparent: refused");
    }
    let session_id: Arc<str> = Arc::from(session.id.as_str());
    let (buffered, opening) =
        match tokio::time::timeout(FIRST_BYTES_TIMEOUT, sniff(&mut client)).await {
            Ok(Ok(sniffed)) => sniffed,
            Ok(Err(e)) => return debug!(%peer, error = %e, "transparent: read failed"),
            Err(_) => return debug!(%peer, "transparent: no ClientHello or request head in time"),
        };
    let (name, scheme) = match opening {
        Opening::Tls(Some(name)) => (name, http::uri::Scheme::HTTPS),
        Opening::Http(Some(name)) => (name, http::uri::Scheme::HTTP),
        Opening::Tls(None) => {
            return info!(%peer, %original, "transparent: TLS without SNI: closed");
        }
        Opening::Http(None) => {
            return info!(%peer, %original, "transparent: HTTP without Host: closed");
        }
        Opening::Other => {
            return info!(%peer, %original, "transparent: neither TLS nor HTTP: closed");
        }
    };
    let host = normalize_host(&name);
    if !session.reaches(&host) {
        return info!(session = %session_id, host = %host, "transparent: outside the session's network policy (egress-denied): closed");
    }
    // The binding rule: the name must resolve (`[upstream.resolve]` first, egress rules applied) to
    // the address the client dialled; under `keyswap exec`, be the name its DNS answer gave that
    // address.
    let allocated = shared
        .allocations
        .as_ref()
        .map(|a| a.name_of(original.ip()));
    match shared.dialer.permitted_addrs(&host, original.port()).await {
        Ok(_)
            if allocated
                .as_ref()
                .is_some_and(|name| name.as_deref() == Some(host.as_str())) => {}
        Ok(addrs)
            if allocated.is_none() && addrs.iter().any(|a| same_ip(a.ip(), original.ip())) => {}
        Ok(_) => {
            return info!(session = %session_id, host = %host, %original, code = "host-mismatch", "transparent: the name does not resolve to the address dialled: closed");
        }
        Err(e) => {
            let err = crate::error::ProxyError::from(e);
            return info!(session = %session_id, host = %host, %original, code = err.code(), "transparent: refused");
        }
    }
    let dest = Destination::new(&host, original.port());
    let (intercept, why) = if store.policy().mitm == MitmMode::Always {
        (true, "mitm = \"always\"")
    } else if session.could_apply_to(&host) {
        (true, "a credential of the session is in scope")
    } else {
        (
            false,
            "no credential of the session is in scope (mitm = \"auto\")",
        )
    };
    drop(store);
    let mode = if intercept { "intercepted" } else { "raw" };
    shared
        .metrics
        .tunnels
        .get_or_create(&ModeLabel {
            mode: format!("transparent-{mode}"),
        })
        .inc();
    info!(session = %session_id, host = %dest.host, port = dest.port, %original, mode, why, "transparent connection");
    let _permit = permit;
    let client = Rewind::new(buffered, client);
    if !intercept {
        // Relayed to the address the client dialled (checked above against the name); under
        // `keyswap exec` that address is keyswap's own, so the name is dialled.
        let upstream = if shared.allocations.is_some() {
            shared
                .dialer
                .tcp(&dest.host, dest.port)
                .await
                .map_err(|e| e.to_string())
        } else {
            let connect = TcpStream::connect(original);
            match tokio::time::timeout(shared.limits.upstream_connect_timeout, connect).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("connect timed out".to_string()),
            }
        };
        match upstream {
            Ok(upstream) => {
                let idle = shared.limits.idle_timeout;
                Box::pin(connect::relay(client, upstream, &dest, idle)).await;
            }
            Err(e) => debug!(host = %dest.host, error = %e, "transparent relay could not connect"),
        }
        return;
    }
    // Boxed where they start, as for a CONNECT tunnel: this connection's spawned future stays
    // small, so tokio's copies of it are.
    if scheme == http::uri::Scheme::HTTPS {
        Box::pin(connect::intercept_tls(client, dest, session_id, shared)).await;
    } else {
        let bound = Bound {
            dest,
            scheme,
            session: session_id,
            sni: None,
            sticky: Default::default(),
        };
        Box::pin(connect::serve_bound(client, bound, false, shared)).await;
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Reads the client's first bytes until they name a host: a whole ClientHello (its SNI) or a
/// whole request head (its `Host`). Returns the bytes read, to be replayed.
async fn sniff(client: &mut TcpStream) -> std::io::Result<(Bytes, Opening)> {
    let mut buf = BytesMut::with_capacity(2048);
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        let before = buf.len();
        if client.read_buf(&mut buf).await? == 0 || buf.len() > MAX_SNIFF {
            return Ok((buf.freeze(), Opening::Other));
        }
        match buf.first() {
            Some(0x16) => {
                let mut fresh = &buf[before..];
                if acceptor.read_tls(&mut fresh).is_err() {
                    return Ok((buf.freeze(), Opening::Tls(None)));
                }
                match acceptor.accept() {
                    Ok(Some(accepted)) => {
                        let sni = accepted.client_hello().server_name().map(str::to_string);
                        return Ok((buf.freeze(), Opening::Tls(sni)));
                    }
                    Ok(None) => {}
                    Err(_) => return Ok((buf.freeze(), Opening::Tls(None))),
                }
            }
            Some(b) if b.is_ascii_uppercase() => {
                if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                    let host = host_header(&buf[..end]);
                    return Ok((buf.freeze(), Opening::Http(host)));
                }
            }
            _ => return Ok((buf.freeze(), Opening::Other)),
        }
    }
}

/// The host of the `Host` header of a request head (without its port).
fn host_header(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim())
    })?;
    let authority: http::uri::Authority = value.parse().ok()?;
    Some(
        authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// The address the client dialled before the kernel redirected it (`SO_ORIGINAL_DST`, or
/// `IP6T_SO_ORIGINAL_DST` for IPv6).
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    use std::os::fd::AsFd as _;
    let fd = stream.as_fd();
    // A dual-stack listener sees IPv4 clients as v4-mapped IPv6: their redirection is IPv4's.
    if stream.local_addr()?.ip().to_canonical().is_ipv4() {
        rustix::net::sockopt::ip_original_dst(fd).map(SocketAddr::V4)
    } else {
        rustix::net::sockopt::ipv6_original_dst(fd).map(SocketAddr::V6)
    }
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_names_the_host_without_its_port() {
        assert_eq!(
            host_header(b"GET / HTTP/1.1\r\nHost: api.example.test:8080\r\nA: b").as_deref(),
            Some("api.example.test")
        );
        assert_eq!(
            host_header(b"GET / HTTP/1.1\r\nhOST:  [::1]:80").as_deref(),
            Some("::1")
        );
        assert_eq!(host_header(b"GET / HTTP/1.1\r\nX-Host: a"), None);
        assert_eq!(host_header(b"GET / HTTP/1.1\r\nHost: bad host"), None);
    }
}
