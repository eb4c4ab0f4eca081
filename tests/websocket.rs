//! WebSocket through the MITM: the handshake is substituted, messages flow both ways, and the
//! server's frames come back scrubbed.

mod common;

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
