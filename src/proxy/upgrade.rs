//! HTTP/1.1 upgrades (WebSocket and others) through keyswap: the handshake is substituted like any
//! request, then bytes are relayed both ways. When the handshake carried a secret, frames from the
//! server are scrubbed (secret → placeholder) one WebSocket frame at a time.

use bytes::{Buf as _, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tracing::debug;

use super::hygiene::remove_hop_by_hop;
use super::{Shared, bodies};
use crate::destination::Destination;
use crate::error::ProxyError;
use crate::substitute::stream::StreamReplacer;
use crate::upstream::{BoxError, ProxyBody};

/// A frame larger than this cannot be scrubbed in memory: the connection is closed instead of
/// letting an unread payload through.
const MAX_SCRUBBED_FRAME: u64 = 16 << 20;

/// Waits for both sides to switch protocols, then relays until either closes. With a scrubber,
/// what the server sends is scrubbed: frame by frame for WebSocket, as a byte stream otherwise.
pub async fn relay(
    client: OnUpgrade,
    upstream: OnUpgrade,
    host: String,
    scrubber: Option<StreamReplacer>,
    websocket: bool,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => return debug!(%host, error = %e, "upgrade did not complete"),
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    let result = match scrubber {
        None => tokio::io::copy_bidirectional(&mut client, &mut upstream)
            .await
            .map(|_| ()),
        Some(scrubber) => {
            let (mut client_read, mut client_write) = tokio::io::split(client);
            let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
            let up = async {
                tokio::io::copy(&mut client_read, &mut upstream_write).await?;
                upstream_write.shutdown().await
            };
            let down = async {
                if websocket {
                    scrub_frames(&mut upstream_read, &mut client_write, scrubber).await
                } else {
                    scrub_stream(&mut upstream_read, &mut client_write, scrubber).await
                }
            };
            tokio::try_join!(up, down).map(|_| ())
        }
    };
    if let Err(e) = result {
        debug!(%host, error = %e, "upgraded connection ended with an error");
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` + `Upgrade`).
/// `h2c` is never forwarded: it would let the client speak HTTP/2 past keyswap's checks.
pub(super) fn upgrade_protocol(headers: &HeaderMap, version: Version) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: most requests have none, and one lookup settles them.
    let protocol = headers.get(header::UPGRADE)?;
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (asks && !protocol.as_bytes().eq_ignore_ascii_case(b"h2c")).then(|| protocol.clone())
}

pub(super) fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// An upgrade gets its own HTTP/1.1 connection (never pooled: it becomes the tunnel).
pub(super) async fn exchange_upgrade(
    request: Request<ProxyBody>,
    dest: &Destination,
    scheme: &Scheme,
    shared: &Shared,
) -> Result<Response<Incoming>, ProxyError> {
    let stream = shared
        .dialer
        .http1(*scheme == Scheme::HTTPS, &dest.host, dest.port)
        .await?;
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
    let (mut sender, conn) = handshake.await.map_err(|_| ProxyError::UpstreamConnect {
        host: dest.host.clone(),
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upgrade connection ended with an error");
        }
    });
    let timeout = shared.limits.upstream_response_timeout;
    match tokio::time::timeout(timeout, sender.send_request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(ProxyError::from_upstream(&dest.host, &e)),
        Err(_) => Err(ProxyError::UpstreamTimeout {
            host: dest.host.clone(),
        }),
    }
}

/// The upstream agreed to switch protocols: relay the two upgraded connections (scrubbing the
/// server's frames when the handshake carried a secret) and tell the client.
pub(super) fn switch_protocols(
    mut response: Response<Incoming>,
    client: OnUpgrade,
    protocol: HeaderValue,
    mut scrubber: Option<StreamReplacer>,
    dest: &Destination,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut response);
    let (mut parts, body) = response.into_parts();
    // SECURITY: what the server will send is what its 101 agreed to, not what the client asked
    // for: a server that switches to WebSocket sends frames, whatever the request said, and
    // frames must be scrubbed frame by frame (a secret cut across frames, or masked, would pass a
    // byte-stream scrubber).
    let agreed = parts.headers.get(header::UPGRADE).cloned();
    let websocket = agreed
        .as_ref()
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if let Some(scrubber) = scrubber.as_mut() {
        // An echoed Sec-WebSocket-Protocol token must not come back as the secret.
        bodies::scrub_head(scrubber, &mut parts);
        // SECURITY: keyswap took the client's extension offer away, so a server that still
        // agrees to one (permessage-deflate) would send frames the scrubber cannot read; the
        // client must not be told to expect them (and such frames end the relay, below).
        parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    tokio::spawn(relay(
        client,
        upstream,
        dest.host.clone(),
        scrubber,
        websocket,
    ));
    remove_hop_by_hop(&mut parts.headers);
    set_upgrade(&mut parts.headers, agreed.unwrap_or(protocol));
    Response::from_parts(parts, body.map_err(BoxError::from).boxed())
}

/// Copies a byte stream, scrubbed across reads.
async fn scrub_stream<R, W>(
    from: &mut R,
    to: &mut W,
    mut scrubber: StreamReplacer,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while from.read_buf(&mut buf).await? > 0 {
        to.write_all(&scrubber.push(buf.split().freeze())).await?;
        to.flush().await?;
    }
    to.write_all(&scrubber.finish()).await?;
    to.shutdown().await
}

/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Copies WebSocket frames from `from` to `to`, scrubbing every payload. A masked frame (which a
/// server must not send) is unmasked first; a frame cut short by the end of the stream is dropped.
async fn scrub_frames<R, W>(
    from: &mut R,
    to: &mut W,
    mut scrubber: StreamReplacer,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        while let Some(frame) = next_frame(&buf)? {
            let total = frame.header_len + frame.payload_len;
            let mut payload = buf[frame.header_len..total].to_vec();
            if frame.masked {
                let key = &buf[frame.header_len - 4..frame.header_len];
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= key[i % 4]);
            }
            let fin = buf[0] & 0x80 != 0;
            let payload = scrub_payload(&mut scrubber, frame.opcode, fin, payload);
            to.write_all(&frame_header(buf[0], payload.len())).await?;
            to.write_all(&payload).await?;
            buf.advance(total);
        }
        to.flush().await?;
        if from.read_buf(&mut buf).await? == 0 {
            return to.shutdown().await;
        }
    }
}

/// The scrubbed payload. Data frames of one message are scrubbed as one stream, so a secret cut
/// across fragments is still found (the tail that may start one is carried to the next fragment,
/// and flushed at the final one). Control frames, which may come between fragments, are scrubbed
/// on their own and stay within their 125-byte limit (a close frame keeps its status code and loses
/// a reason that would not fit).
fn scrub_payload(
    scrubber: &mut StreamReplacer,
    opcode: u8,
    fin: bool,
    payload: Vec<u8>,
) -> Vec<u8> {
    if opcode < 8 {
        let mut out = scrubber.push(payload.into()).to_vec();
        if fin {
            out.extend_from_slice(&scrubber.finish());
        }
        return out;
    }
    let scrubbed = scrubber
        .replace_once(&payload)
        .map_or(payload, |b| b.to_vec());
    match opcode {
        8..=15 if scrubbed.len() > MAX_CONTROL_PAYLOAD => {
            if opcode == 8 {
                scrubbed[..2.min(scrubbed.len())].to_vec()
            } else {
                Vec::new()
            }
        }
        _ => scrubbed,
    }
}

struct Frame {
    header_len: usize,
    payload_len: usize,
    opcode: u8,
    masked: bool,
}

/// The next complete frame at the start of `buf`, if all of it has arrived.
fn next_frame(buf: &[u8]) -> std::io::Result<Option<Frame>> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    // SECURITY: a reserved bit means an extension transformed the payload (RSV1: compressed);
    // none was agreed on this relay, and a payload the scrubber cannot read must not pass.
    if first & 0x70 != 0 {
        return Err(std::io::Error::other(
            "WebSocket frame with reserved bits set (an extension keyswap did not agree to)",
        ));
    }
    let masked = second & 0x80 != 0;
    let (len, mut header_len) = match second & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap_or_default()),
            10,
        ),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if masked {
        header_len += 4;
    }
    if len > MAX_SCRUBBED_FRAME {
        return Err(std::io::Error::other("WebSocket frame too large to scrub"));
    }
    let payload_len = usize::try_from(len).map_err(std::io::Error::other)?;
    Ok((buf.len() >= header_len + payload_len).then_some(Frame {
        header_len,
        payload_len,
        opcode: first & 0x0f,
        masked,
    }))
}

/// An unmasked frame header with the first byte (FIN, RSV, opcode) kept and a new length.
fn frame_header(first: u8, len: usize) -> Vec<u8> {
    let mut header = vec![first];
    match len {
        0..=125 => header.push(len as u8),
        126..=0xffff => {
            header.push(126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(127);
            header.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = frame_header(0x80 | opcode, payload.len());
        f.extend_from_slice(payload);
        f
    }

    async fn scrub(input: Vec<u8>) -> Vec<u8> {
        let pairs = vec![(
            Zeroizing::new(b"SECRET".to_vec()),
            Zeroizing::new(b"ks-ph-vcrd_x".to_vec()),
        )];
        let scrubber = StreamReplacer::from_pairs(pairs).unwrap();
        let mut out = Vec::new();
        scrub_frames(&mut &input[..], &mut out, scrubber)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn text_and_binary_frames_are_scrubbed_and_reframed() {
        let mut input = frame(1, b"token=SECRET");
        input.extend(frame(2, &[b'x'; 200]));
        input.extend(frame(9, b"SECRET"));
        input.extend(frame(8, b"\x03\xe8bad token SECRET"));
        let mut expected = frame(1, b"token=ks-ph-vcrd_x");
        expected.extend(frame(2, &[b'x'; 200]));
        expected.extend(frame(9, b"ks-ph-vcrd_x"));
        expected.extend(frame(8, b"\x03\xe8bad token ks-ph-vcrd_x"));
        assert_eq!(scrub(input).await, expected);
    }

    #[tokio::test]
    async fn a_compressed_frame_ends_the_relay_unread() {
        let mut input = frame(0x01, b"before");
        // RSV1 + text: permessage-deflate, which no one agreed to.
        input.extend_from_slice(&frame(0x41, b"SECRET-compressed"));
        let scrubber = StreamReplacer::from_pairs(vec![(
            Zeroizing::new(b"SECRET".to_vec()),
            Zeroizing::new(b"ks-ph-vcrd_x".to_vec()),
        )])
        .unwrap();
        let mut out = Vec::new();
        let ended = scrub_frames(&mut &input[..], &mut out, scrubber).await;
        assert!(ended.is_err());
        assert_eq!(out, frame(0x01, b"before"));
    }

    #[tokio::test]
    async fn masked_frames_are_unmasked_and_a_cut_frame_is_dropped() {
        let key = [1u8, 2, 3, 4];
        let payload: Vec<u8> = b"SECRET!"
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        let mut input = vec![0x81, 0x80 | 7];
        input.extend_from_slice(&key);
        input.extend(payload);
        let mut cut = frame(1, b"SECRET and more");
        cut.truncate(8);
        input.extend(cut);
        assert_eq!(scrub(input).await, frame(1, b"ks-ph-vcrd_x!"));
    }

    #[tokio::test]
    async fn a_secret_cut_across_fragments_is_scrubbed() {
        // "SEC" | ping | "RET!" as a fragmented text message with a ping in between.
        let mut input = frame_header(0x01, 3);
        input.extend_from_slice(b"SEC");
        input.extend_from_slice(&frame(0x9, b"SECRET ping"));
        input.extend_from_slice(&frame_header(0x80, 4));
        input.extend_from_slice(b"RET!");
        let out = scrub(input).await;
        assert!(!out.windows(6).any(|w| w == b"SECRET"), "{out:?}");
        // The fragments still form one message: first not final, then continuation with FIN.
        let mut expected = frame_header(0x01, 0);
        expected.extend_from_slice(&frame(0x9, b"ks-ph-vcrd_x ping"));
        expected.extend_from_slice(&frame(0x0, b"ks-ph-vcrd_x!"));
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn long_payload_lengths_are_rewritten() {
        let mut payload = vec![b'a'; 70_000];
        payload[..6].copy_from_slice(b"SECRET");
        let out = scrub(frame(2, &payload)).await;
        assert_eq!(out[1], 127);
        assert_eq!(&out[10..22], b"ks-ph-vcrd_x");
        assert_eq!(out.len(), 10 + 70_000 + 6);
    }
}
