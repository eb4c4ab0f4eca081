//! Limits and shutdown: oversized headers, slow clients, draining on SIGTERM, and tunnels that do
//! not carry TLS (raw relays, server-speaks-first protocols).

use crate::common;

use std::time::{Duration, Instant};

use common::{Keyswap, Setup, TestCa, Upstream, curl};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// keyswap with `mitm = "always"`: every tunnel is intercepted (or, when it is not TLS, sniffed).
fn intercepting_everything(ca: &TestCa) -> Keyswap {
    Keyswap::start(
        ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            ..Setup::default()
        },
    )
}

/// Reads until EOF or `limit`; returns what arrived and whether the peer closed.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, tcp.read_to_end(&mut out))
        .await
        .is_ok();
    (out, closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_over_the_limit_get_431() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(&ca, Setup::default());
    let url = format!("http://api.example.test:{}/", upstream.port());
    let big = format!("x-big: {}", "a".repeat(65 * 1024));
    let out = curl(&["--proxy", &keyswap.proxy_url(), "-H", &big, &url]).await;
    assert_eq!(out.status, 431, "{out:?}");
    let many: Vec<String> = (0..101).map(|i| format!("x-h{i}: v")).collect();
    let mut args = vec!["--proxy".to_string(), keyswap.proxy_url()];
    for h in &many {
        args.extend(["-H".to_string(), h.clone()]);
    }
    args.push(url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&args).await.status, 431);
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_loris_client_is_cut_off_at_the_header_timeout() {
    let ca = TestCa::new();
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: "[limits]\nheader_read_timeout_secs = 1\n",
            ..Setup::default()
        },
    );
    let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
    let started = Instant::now();
    tcp.write_all(b"GET http://api.example.test/ HTTP/1.1\r\n")
        .await
        .unwrap();
    // Dribble a header byte every 200 ms: never completing the head.
    let dribble = async {
        for _ in 0..50 {
            if tcp.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), dribble)
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(1)).await;
    assert!(closed, "the connection must be closed");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "cut off near the 1 s timeout, not after the whole dribble"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let mut keyswap = Keyswap::start(&ca, Setup::default());
    let url = format!("http://api.example.test:{}/slow", upstream.port());
    let proxy = keyswap.proxy_url();
    let request = tokio::spawn(async move { curl(&["--proxy", &proxy, &url]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(keyswap.pid().to_string())
        .status();
    let out = request.await.unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    let status = keyswap
        .wait(Duration::from_secs(10))
        .expect("keyswap exits after draining");
    assert!(status.success(), "{status:?}\n{}", keyswap.log());
    assert!(
        keyswap.log().contains("all connections drained"),
        "{}",
        keyswap.log()
    );
}

/// A TCP service on 127.0.0.1 that first sends `banner` (if any), then echoes.
async fn tcp_service(banner: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(banner).await;
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

async fn connect_through(keyswap: &Keyswap, port: u16) -> TcpStream {
    let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
    let connect = format!(
        "CONNECT api.example.test:{port} HTTP/1.1\r\nHost: api.example.test:{port}\r\n\r\n"
    );
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_that_is_neither_tls_nor_http_is_relayed_raw() {
    let ca = TestCa::new();
    let port = tcp_service(b"").await;
    // mitm = "always" would intercept TLS; a binary protocol must still pass.
    let keyswap = intercepting_everything(&ca);
    let mut tcp = connect_through(&keyswap, port).await;
    tcp.write_all(b"\x00\x01binary echo\xff").await.unwrap();
    let mut echo = [0u8; 14];
    tcp.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"\x00\x01binary echo\xff");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_speaks_first_protocol_gets_its_banner_through() {
    let ca = TestCa::new();
    let port = tcp_service(b"SSH-2.0-test\r\n").await;
    let keyswap = intercepting_everything(&ca);
    let mut tcp = connect_through(&keyswap, port).await;
    let mut banner = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-test\r\n");
    tcp.write_all(b"client says hi").await.unwrap();
    let mut echo = [0u8; 14];
    tcp.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"client says hi");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_client_connections_are_closed_but_not_while_a_request_is_in_flight() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: "[limits]\nidle_timeout_secs = 1\nheader_read_timeout_secs = 30\n",
            ..Setup::default()
        },
    );
    let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
    // A request that takes a second upstream: no bytes move meanwhile, but it is in flight.
    let request = format!(
        "GET http://api.example.test:{0}/slow HTTP/1.1\r\nHost: api.example.test:{0}\r\n\r\n",
        upstream.port()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_makes_further_clients_wait_until_one_leaves() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: "[limits]\nmax_connections = 2\n",
            ..Setup::default()
        },
    );
    // Two clients hold both permits (connected, silent).
    let first = TcpStream::connect(keyswap.proxy).await.unwrap();
    let _second = TcpStream::connect(keyswap.proxy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third connects (the kernel's backlog accepts it) but is not served yet.
    let mut third = TcpStream::connect(keyswap.proxy).await.unwrap();
    let request = format!(
        "GET http://api.example.test:{0}/third HTTP/1.1\r\nHost: api.example.test:{0}\r\nConnection: close\r\n\r\n",
        upstream.port()
    );
    third.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read_exact(&mut head)).await;
    assert!(early.is_err(), "served beyond max_connections");
    assert!(upstream.requests().is_empty());
    // One leaves: the waiting client is accepted and served.
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut head))
        .await
        .expect("served once a permit is free")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(upstream.only().path, "/third");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_limited_to_250_concurrent_streams() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    // `mitm = auto` intercepts only hosts a credential could apply to: use `always`.
    let keyswap = intercepting_everything(&ca);
    let ca_pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let tls = common::tunnel(
        keyswap.proxy,
        &ca_pem,
        "api.example.test",
        upstream.port(),
        b"h2",
    )
    .await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // The server's SETTINGS arrive with the handshake; give them a moment to be applied.
    for _ in 0..50 {
        if client.current_max_send_streams() != usize::MAX {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        client = client.ready().await.unwrap();
    }
    assert_eq!(client.current_max_send_streams(), 250);
}

/// Rapid reset (CVE-2023-44487): a client that opens and cancels streams faster than they are
/// served is cut off with GOAWAY, and keyswap keeps serving everyone else.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_reset_flood_is_cut_off() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = intercepting_everything(&ca);
    let ca_pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let port = upstream.port();
    let tls = common::tunnel(keyswap.proxy, &ca_pem, "api.example.test", port, b"h2").await;
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let flood = async {
        for _ in 0..2000 {
            let Ok(ready) = client.clone().ready().await else {
                return;
            };
            client = ready;
            let request = http::Request::get(format!("https://api.example.test:{port}/slow"))
                .body(())
                .unwrap();
            let Ok((_, mut stream)) = client.send_request(request, false) else {
                return;
            };
            stream.send_reset(h2::Reason::CANCEL);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), flood)
        .await
        .expect("the flood was neither served nor stopped");
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the flooding connection was not closed")
        .unwrap();
    let err = ended.expect_err("the flooding connection must end with an error");
    // keyswap sends GOAWAY ENHANCE_YOUR_CALM and closes; a client still writing its flood may
    // hit the closed socket (broken pipe, reset) before it reads the GOAWAY.
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err}"
    );
    // Everyone else is still served.
    let url = format!("http://api.example.test:{}/", Upstream::http().await.port());
    assert_eq!(
        curl(&["--proxy", &keyswap.proxy_url(), &url]).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_raw_relay_is_closed_after_the_idle_timeout() {
    let ca = TestCa::new();
    let port = tcp_service(b"").await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            rest: "[limits]\nidle_timeout_secs = 1\n",
            ..Setup::default()
        },
    );
    let mut tcp = connect_through(&keyswap, port).await;
    // Bytes moving keep it open past the timeout…
    let mut started = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        tcp.write_all(b"\x00ping").await.unwrap();
        let mut echo = [0u8; 5];
        tcp.read_exact(&mut echo).await.unwrap();
        started = Instant::now();
    }
    // …silence closes it.
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(8)).await;
    assert!(closed, "an idle raw relay holds its slots forever");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_session_cannot_take_the_connections_of_another() {
    let ca = TestCa::new();
    let upstream = Upstream::http().await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            rest: r#"
[limits]
max_connections_per_session = 3
max_connections = 8

[[sessions]]
id = "sesn_greedy"
vault_ids = []
proxy_token_env = "GREEDY_TOKEN"

[[sessions]]
id = "sesn_polite"
vault_ids = []
proxy_token_env = "POLITE_TOKEN"
"#,
            env: &[("GREEDY_TOKEN", "g-token"), ("POLITE_TOKEN", "p-token")],
            ..Setup::default()
        },
    );
    use base64::Engine as _;
    let auth = |user: &str| base64::engine::general_purpose::STANDARD.encode(user.as_bytes());
    let request = |path: &str, user: &str| {
        format!(
            "GET http://api.example.test:{0}{path} HTTP/1.1\r\nHost: api.example.test:{0}\r\nProxy-Authorization: Basic {1}\r\n\r\n",
            upstream.port(),
            auth(user)
        )
    };
    // The greedy session holds its three connections (kept alive after one request each)…
    let mut held = Vec::new();
    for i in 0..3 {
        let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
        tcp.write_all(request(&format!("/g{i}"), "sesn_greedy:g-token").as_bytes())
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(tcp);
    }
    // …a fourth is refused at once, and closed…
    let mut fourth = TcpStream::connect(keyswap.proxy).await.unwrap();
    fourth
        .write_all(request("/g3", "sesn_greedy:g-token").as_bytes())
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut fourth, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.contains("x-keyswap-error: too-many-connections"),
        "{answer}"
    );
    assert!(answer.contains("max_connections_per_session"), "{answer}");
    assert!(closed);
    // …while another session is served.
    let mut polite = TcpStream::connect(keyswap.proxy).await.unwrap();
    polite
        .write_all(request("/p", "sesn_polite:p-token").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    polite.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // A greedy connection that leaves gives its slot back.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = curl(&[
        "--proxy",
        &format!("http://sesn_greedy:g-token@{}", keyswap.proxy),
        &format!("http://api.example.test:{}/again", upstream.port()),
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert!(!upstream.requests().iter().any(|r| r.path == "/g3"));
}

/// SPEC §8: an HTTP/2 request body slower than 500 bytes/s (after the header timeout) is cut off,
/// for a streamed body and for one keyswap holds whole, while the connection's other streams go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_http2_request_body_is_cut_off_and_the_connection_lives_on() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            rest: "[limits]\nheader_read_timeout_secs = 1\n",
            ..Setup::default()
        },
    );
    let ca_pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let port = upstream.port();
    let tls = common::tunnel(keyswap.proxy, &ca_pem, "api.example.test", port, b"h2").await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let url = format!("https://api.example.test:{port}/upload");
    // Announced at 100 bytes (held whole) and unannounced (streamed): 10 bytes, then silence.
    for length in [Some(100), None] {
        let mut client = client.clone().ready().await.unwrap();
        let mut request = http::Request::post(&url);
        if let Some(n) = length {
            request = request.header("content-length", n);
        }
        let (response, mut body) = client
            .send_request(request.body(()).unwrap(), false)
            .unwrap();
        body.send_data(bytes::Bytes::from_static(b"0123456789"), false)
            .unwrap();
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("the slow body was not cut off");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(900),
            "{length:?}: {elapsed:?}"
        );
        match ended {
            Ok(answer) => assert_eq!(answer.status(), 408, "{length:?}"),
            Err(e) => assert!(e.is_reset(), "{length:?}: {e}"),
        }
    }
    // Another stream on the same connection is served.
    let mut client = client.ready().await.unwrap();
    let get = http::Request::get(format!("https://api.example.test:{port}/after"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(get, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// An upstream's own `429` (rate limiting, as APIs do) passes through and the client's keep-alive
/// connection stays open: only keyswap's `429 too-many-connections` closes it.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstreams_429_keeps_the_client_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let answer = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n";
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let ca = TestCa::new();
    let keyswap = Keyswap::start(&ca, Setup::default());
    let mut tcp = TcpStream::connect(keyswap.proxy).await.unwrap();
    let request = format!(
        "GET http://api.example.test:{port}/limited HTTP/1.1\r\nHost: api.example.test:{port}\r\n\r\n"
    );
    for _ in 0..2 {
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(
                tcp.read(&mut byte).await.unwrap(),
                1,
                "the connection was closed"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 429"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert!(!head.contains("x-keyswap-error"), "{head}");
    }
}

/// An intercepted tunnel gets its HTTP machinery only once the client speaks (idle tunnels stay
/// small): one silent after the handshake is still closed by the idle timeout, and one that
/// speaks late is served as any other.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_intercepted_tunnel_is_closed_at_the_idle_timeout_and_a_late_one_served() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            rest: "[limits]\nidle_timeout_secs = 1\n",
            ..Setup::default()
        },
    );
    let ca_pem = std::fs::read_to_string(keyswap.ca_path()).unwrap();
    let port = upstream.port();
    let open = || {
        common::tunnel(
            keyswap.proxy,
            &ca_pem,
            "api.example.test",
            port,
            b"http/1.1",
        )
    };
    let (mut silent, mut late) = (open().await, open().await);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let request =
        format!("GET /late HTTP/1.1\r\nHost: api.example.test:{port}\r\nConnection: close\r\n\r\n");
    late.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), late.read_to_end(&mut answer))
        .await
        .expect("the late request is answered")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.only().path, "/late");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a silent tunnel is never closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the idle timeout: {:?}",
        started.elapsed()
    );
}

/// Established TCP connections on this machine whose remote end is 127.0.0.1:`port` (IPv4
/// loopback: keyswap's upstream connections to a test upstream), from `/proc/net/tcp`.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// The upstream connections a tunnel to an HTTP/2 upstream used — the pool's and the worker's
/// shared one — are closed after the idle timeout once no request uses them.
#[tokio::test(flavor = "multi_thread")]
async fn idle_upstream_connections_shared_or_pooled_are_closed_after_the_idle_timeout() {
    let ca = TestCa::new();
    let upstream = Upstream::https(&ca).await;
    let keyswap = Keyswap::start(
        &ca,
        Setup {
            proxy: "block_private_addresses = false\nmitm = \"always\"",
            rest: "[limits]\nidle_timeout_secs = 1\n",
            ..Setup::default()
        },
    );
    let port = upstream.port();
    let mut sender = common::tunnel_client(&keyswap, "api.example.test", port).await;
    // The first request on the pool, the next ones on the worker's shared connection.
    for _ in 0..3 {
        sender.ready().await.unwrap();
        let get = hyper::Request::get("/")
            .header("host", format!("api.example.test:{port}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        assert_eq!(sender.send_request(get).await.unwrap().status(), 200);
    }
    assert!(upstream.requests().iter().all(|r| r.version == "HTTP/2.0"));
    assert!(established_to(port) >= 1);
    drop(sender);
    let t0 = Instant::now();
    while established_to(port) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "{} upstream connections still open",
            established_to(port)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
