//! WebSocket through the MITM: the handshake is substituted, messages flow both ways, and the
//! server's frames come back scrubbed.

use crate::common;

use std::sync::{Arc, Mutex};

use common::{Keyswap, Setup, TestCa};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

const VAULT: &str = r#"
[[vaults]]
id = "vlt_ws"
[[vaults.credentials]]
id = "vcrd_ws"
auth = { type = "environment_variable", secret_name = "WS", secret_value = "SECRET_ws", networking = { type = "limited", allowed_hosts = ["api.example.test"] } }
"#;

/// A TLS WebSocket echo server that records the handshake's Authorization header and greets the
/// client with it (as a careless server might).
async fn ws_upstream(ca: &TestCa) -> (u16, Arc<Mutex<Option<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["api.example.test"]));
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        // tungstenite's callback signature fixes the error type.
        #[expect(clippy::result_large_err, reason = "the error type is tungstenite's")]
        let callback = |req: &Request, mut resp: Response| {
            // Accept the token-carrying subprotocol by echoing it, as servers do.
            if let Some(p) = req.headers().get("sec-websocket-protocol") {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", p.clone());
            }
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            *record.lock().unwrap() = auth;
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tls, callback)
            .await
            .unwrap();
        let greeting = format!("hello, {}", seen_value(&record));
        ws.send(Message::text(greeting)).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await.unwrap();
            }
        }
    });
    (port, seen)
}

fn seen_value(record: &Mutex<Option<String>>) -> String {
    record.lock().unwrap().clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_handshake_is_substituted_and_server_frames_are_scrubbed() {
    let ca = TestCa::new();
    let (port, seen) = ws_upstream(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: VAULT,
            ..Setup::default()
        },
    );
    let pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let tls = common::tunnel(keyswap.proxy, &pem, "api.example.test", port, b"http/1.1").await;
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://api.example.test:{port}/socket"),
    )
    .unwrap();
    let mut request = request;
    request
        .headers_mut()
        .insert("authorization", "Bearer ks-ph-vcrd_ws".parse().unwrap());
    // A token in the subprotocol: the server echoes it in the 101, which must come back scrubbed
    // (tungstenite also refuses a 101 whose subprotocol differs from the one it asked for).
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "ks-ph-vcrd_ws".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "ks-ph-vcrd_ws"
    );
    assert_eq!(
        seen_value(&seen),
        "Bearer SECRET_ws",
        "the upstream's handshake carried the secret"
    );

    let greeting = ws.next().await.unwrap().unwrap();
    assert_eq!(
        greeting.to_text().unwrap(),
        "hello, Bearer ks-ph-vcrd_ws",
        "scrubbed on the way back"
    );
    ws.send(Message::text("ping ks-ph-vcrd_ws")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.to_text().unwrap(), "ping ks-ph-vcrd_ws");
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.into_data().len(), 100_000);
    ws.close(None).await.unwrap();
    assert!(!keyswap.log().contains("SECRET"));
}

/// A server that answers any upgrade with a WebSocket 101 and then sends the handshake's
/// `x-token` back as one text message cut in two frames, whatever protocol the client asked for.
async fn switching_upstream(ca: &TestCa) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["api.example.test"]));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let token = head
            .lines()
            .find_map(|l| l.strip_prefix("x-token: "))
            .unwrap_or_default()
            .to_string();
        let (first, second) = token.split_at(token.len() / 2);
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
        out.extend_from_slice(&[0x01, first.len() as u8]);
        out.extend_from_slice(first.as_bytes());
        out.extend_from_slice(&[0x80, second.len() as u8]);
        out.extend_from_slice(second.as_bytes());
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_are_scrubbed_when_the_server_switches_to_websocket_whatever_the_client_asked() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = TestCa::new();
    let port = switching_upstream(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: VAULT,
            ..Setup::default()
        },
    );
    let pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let mut tls = common::tunnel(keyswap.proxy, &pem, "api.example.test", port, b"http/1.1").await;
    // Not a WebSocket request: a byte-stream scrubber would be chosen from it.
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: api.example.test:{port}\r\nConnection: Upgrade\r\nUpgrade: custom-proto\r\nx-token: ks-ph-vcrd_ws\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("vcrd_ws") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tls.read(&mut buf))
            .await
            .expect("the frames arrive")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let frames = &got[text.find("\r\n\r\n").unwrap() + 4..];
    // The message, reassembled from the frames' payloads (unmasked, short frames).
    let (mut message, mut rest) = (Vec::new(), frames);
    while rest.len() >= 2 && rest.len() >= 2 + usize::from(rest[1] & 0x7f) {
        let len = usize::from(rest[1] & 0x7f);
        message.extend_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    assert_eq!(String::from_utf8_lossy(&message), "ks-ph-vcrd_ws");
    assert!(!text.contains("SECRET"), "{text}");
}
