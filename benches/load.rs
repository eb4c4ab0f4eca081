//! Load benchmark: the release `keyswap` binary in its own process against a local HTTPS upstream,
//! driven by a hyper load generator over keep-alive connections. Every scenario is reported with
//! its ratio to the direct run measured in the same run, because absolute numbers on a shared
//! machine mean little.
//!
//! `cargo bench --bench load -- [--connections N] [--seconds T] [--idle N]`

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "peer/floor.rs"]
mod floor;

const HOST: &str = "api.example.test";
const MIB: usize = 1 << 20;

struct Options {
    connections: usize,
    seconds: u64,
    idle: usize,
    /// `--compare mitmproxy`: the `mitmdump` to run (b) and (c) through as well.
    mitmdump: Option<String>,
    /// `--soak S`: run (c) for S seconds more, sampling keyswap's RSS every 10 s.
    soak: u64,
    /// `--only b`, `--only c`, `--only d`, `--only floor` or `--only f`: run (a) and that
    /// scenario, then stop (for profiling keyswap, or keyswap and the floor peer, or idle
    /// memory); with `--nginx`, `--only h1` or `--only h2` runs that upstream's (b) alone.
    only: Option<String>,
    /// `--nginx`: a real nginx (Debian's package) as the upstream, over HTTP/1.1 and HTTP/2.
    nginx: bool,
}

fn options() -> Options {
    let mut o = Options {
        connections: 8,
        seconds: 5,
        idle: 2000,
        mitmdump: None,
        soak: 0,
        only: None,
        nginx: false,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse().ok());
        if args[i] == "--compare" && args.get(i + 1).map(String::as_str) == Some("mitmproxy") {
            o.mitmdump.get_or_insert_with(|| "mitmdump".to_string());
            i += 2;
            continue;
        }
        if args[i] == "--nginx" {
            o.nginx = true;
            i += 1;
            continue;
        }
        if args[i] == "--only" && i + 1 < args.len() {
            o.only = Some(args[i + 1].clone());
            i += 2;
            continue;
        }
        if args[i] == "--mitmdump" && i + 1 < args.len() {
            o.mitmdump = Some(args[i + 1].clone());
            i += 2;
            continue;
        }
        match (args[i].as_str(), value) {
            ("--connections", Some(v)) => o.connections = v,
            ("--seconds", Some(v)) => o.seconds = v as u64,
            ("--idle", Some(v)) => o.idle = v,
            ("--soak", Some(v)) => o.soak = v as u64,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn main() {
    // The floor peer runs in a child process of this binary, so its CPU is measured apart.
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--floor-peer") {
        return floor::main(&args[at + 1], &args[at + 2]);
    }
    let o = options();
    std::sync::LazyLock::force(&BIG);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(o));
}

/// The upstream's TLS config (from the tests' CA, HTTP/1.1 only) and that CA's PEM.
fn upstream_tls() -> (Arc<rustls::ServerConfig>, String) {
    let ca = common::TestCa::new();
    let mut config = (*ca.server_config(&[HOST, "127.0.0.1"])).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), ca.pem)
}

fn client_tls(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(keyswap::ca::pem_to_der(ca_pem).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

static BIG: std::sync::LazyLock<Bytes> =
    std::sync::LazyLock::new(|| Bytes::from(vec![b'x'; 64 * MIB]));

/// A minimal HTTPS upstream: `/big` answers 64 MiB, everything else a short body (uploads drained).
async fn upstream(config: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: Request<Incoming>| async move {
                    let big = req.uri().path() == "/big";
                    let mut body = req.into_body();
                    while let Some(Ok(_)) = body.frame().await {}
                    let body = if big {
                        // Made once: the download measures transfer, not a 64 MiB memset.
                        BIG.clone()
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

struct Keyswap {
    child: Child,
    proxy: SocketAddr,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for Keyswap {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A command running `program`, under the command line in the environment variable `var` when
/// it is set (`valgrind --tool=callgrind`, a script): the program's path is its last word.
fn wrapped(var: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let wrapper = std::env::var(var).unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    match words.next() {
        Some(first) => {
            let mut command = Command::new(first);
            command.args(words).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// SIGTERM (a profiler wrapping the child writes its data at exit), SIGKILL if it lingers.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..600 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn start_keyswap(upstream_ca: &str) -> Keyswap {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstream-ca.pem"), upstream_ca).unwrap();
    let config = format!(
        r#"[proxy]
listen = "127.0.0.1:0"
block_private_addresses = false
[admin]
listen = "127.0.0.1:0"
[tls]
upstream_ca_files = ["upstream-ca.pem"]
[limits]
max_connections = 100000
[upstream.resolve]
"{HOST}" = "127.0.0.1"
[[vaults]]
id = "vlt_bench"
[[vaults.credentials]]
id = "vcrd_bench"
auth = {{ type = "environment_variable", secret_name = "T", secret_value = "ghp_bench_secret_value_000000000000", networking = {{ type = "limited", allowed_hosts = ["{HOST}"] }}, injection_location = {{ header = true, body = true }} }}
"#
    );
    std::fs::write(dir.path().join("k.toml"), config).unwrap();
    // keyswap refuses a config with literal secrets that group or others can read.
    std::fs::set_permissions(
        dir.path().join("k.toml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // KEYSWAP_BENCH_WRAPPER="valgrind --tool=callgrind" runs keyswap under a profiler.
    let mut child = wrapped("KEYSWAP_BENCH_WRAPPER", env!("CARGO_BIN_EXE_keyswap"))
        .args(["run", "--config"])
        .arg(dir.path().join("k.toml"))
        .env("KEYSWAP_LOG", "warn,keyswap::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let proxy = loop {
        let line = lines.next().expect("keyswap log").unwrap();
        if let Some(at) = line.find("proxy listening on ") {
            break line[at + 19..].trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap();
    Keyswap {
        child,
        proxy,
        ca_pem,
        _dir: dir,
    }
}

/// The floor peer (benches/peer/floor.rs) in a child process: its proxy address and CA.
struct Floor {
    child: Child,
    proxy: SocketAddr,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for Floor {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn start_floor(upstream_ca: &str) -> Floor {
    let dir = tempfile::tempdir().unwrap();
    let (ca_in, ca_out) = (
        dir.path().join("upstream-ca.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&ca_in, upstream_ca).unwrap();
    // KEYSWAP_BENCH_FLOOR_WRAPPER, like KEYSWAP_BENCH_WRAPPER, profiles the floor peer.
    let mut child = wrapped(
        "KEYSWAP_BENCH_FLOOR_WRAPPER",
        std::env::current_exe().unwrap(),
    )
    .arg("--floor-peer")
    .args([&ca_in, &ca_out])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let proxy = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    Floor {
        child,
        proxy,
        ca_pem: std::fs::read_to_string(&ca_out).unwrap(),
        _dir: dir,
    }
}

/// keyswap against the floor peer, each in its own process: CPU per request (µs, from
/// `/proc/<pid>/stat`) without and with one substitution, over alternating slices so drift hits
/// both alike, and new tunnels per second.
async fn compare_floor(
    keyswap: &Keyswap,
    upstream_ca: &str,
    port: u16,
    c: usize,
    t: u64,
    new_tunnels: bool,
) {
    let floor = start_floor(upstream_ca);
    let peers = [
        (
            "keyswap",
            keyswap.child.id(),
            Route::Proxy(keyswap.proxy, client_tls(&keyswap.ca_pem), HOST),
        ),
        (
            "floor peer",
            floor.child.id(),
            Route::Proxy(floor.proxy, client_tls(&floor.ca_pem), HOST),
        ),
    ];
    drive(&peers[1].2, port, c, 1, None, false).await;
    // One-second slices, alternating keyswap and the floor (ABBA, so drift weighs on both
    // alike); each round gives a ratio and the median of the rounds is reported, so a burst of
    // noise from the machine's neighbours moves it little.
    let (slice, rounds) = (1, t.max(4) as usize);
    let mut per = [[0.0f64; 2]; 2];
    let mut rps = [[0.0f64; 2]; 2];
    let mut split = [[0.0f64; 2]; 2];
    let mut ratios = [Vec::new(), Vec::new()];
    let n = rounds as f64;
    for round in 0..rounds {
        for (s, header) in [None, Some("Bearer ks-ph-vcrd_bench")]
            .into_iter()
            .enumerate()
        {
            let mut this = [0.0f64; 2];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for p in order {
                let (_, pid, route) = &peers[p];
                let (user, system) = cpu_split(&pid.to_string());
                let f = drive(route, port, c, slice, header, false).await;
                let (user2, system2) = cpu_split(&pid.to_string());
                let requests = f.requests.max(1) as f64;
                this[p] = (user2 - user + system2 - system) / requests * 1e6;
                per[p][s] += this[p] / n;
                split[p][0] += (user2 - user) / requests * 1e6 / (2.0 * n);
                split[p][1] += (system2 - system) / requests * 1e6 / (2.0 * n);
                rps[p][s] += f.rps() / n;
            }
            ratios[s].push(this[0] / this[1]);
        }
    }
    for (p, (name, ..)) in peers.iter().enumerate() {
        println!(
            "    {name:<11} CPU per request: {:>5.1} µs plain, {:>5.1} µs with a substitution (+{:.1} %); {:>6.0} / {:>6.0} req/s; user {:.1} + kernel {:.1} µs",
            per[p][0],
            per[p][1],
            (per[p][1] / per[p][0] - 1.0) * 100.0,
            rps[p][0],
            rps[p][1],
            split[p][0],
            split[p][1]
        );
    }
    let [plain, substituted] = ratios.map(median);
    println!(
        "    keyswap / floor peer, CPU per request (median of {rounds} rounds): {plain:.2} plain, {substituted:.2} with a substitution"
    );
    if !new_tunnels {
        return;
    }
    let mut tunnels = [0.0; 2];
    for (p, (_, _, route)) in peers.iter().enumerate() {
        tunnels[p] = drive(route, port, c, (t / 2).max(1), None, true)
            .await
            .rps();
    }
    println!(
        "    new CONNECT + TLS: keyswap {:.0}/s, floor peer {:.0}/s ({:.2})",
        tunnels[0],
        tunnels[1],
        tunnels[0] / tunnels[1]
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// mitmproxy with an addon doing keyswap's header replacement, for a side-by-side figure.
struct Mitmdump {
    child: Child,
    addr: SocketAddr,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for Mitmdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MITM_ADDON: &str = r#"
PLACEHOLDER = "ks-ph-vcrd_bench"
SECRET = "ghp_bench_secret_value_000000000000"

def request(flow):
    headers = flow.request.headers
    for name in list(headers.keys()):
        value = headers[name]
        if PLACEHOLDER in value:
            headers[name] = value.replace(PLACEHOLDER, SECRET)
"#;

fn start_mitmdump(program: &str, upstream_ca: &str) -> Mitmdump {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upstream-ca.pem"), upstream_ca).unwrap();
    std::fs::write(dir.path().join("swap.py"), MITM_ADDON).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
            "-q",
            "-s",
        ])
        .arg(dir.path().join("swap.py"))
        .arg("--set")
        .arg(format!("confdir={}", dir.path().display()))
        .arg("--set")
        .arg(format!(
            "ssl_verify_upstream_trusted_ca={}",
            dir.path().join("upstream-ca.pem").display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program}: {e} (pip install mitmproxy, or pass --mitmdump PATH)")
        });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mitmdump did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ca_pem = std::fs::read_to_string(dir.path().join("mitmproxy-ca-cert.pem")).unwrap();
    Mitmdump {
        child,
        addr,
        ca_pem,
        _dir: dir,
    }
}

/// A TLS connection to the upstream, directly or through a CONNECT tunnel.
async fn connect(route: &Route, port: u16) -> tokio_rustls::client::TlsStream<TcpStream> {
    let host = route.host();
    let name = ServerName::try_from(host.to_string()).unwrap();
    match route {
        Route::Direct(tls) => {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tls.connect(name, tcp).await.unwrap()
        }
        Route::Proxy(proxy, tls, _) => {
            let mut tcp = TcpStream::connect(proxy).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tcp.write_all(
                format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(tcp.read(&mut b).await.unwrap(), 1);
                head.push(b[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 200"));
            tls.connect(name, tcp).await.unwrap()
        }
    }
}

#[derive(Clone)]
enum Route {
    Direct(tokio_rustls::TlsConnector),
    /// Through a proxy, naming the upstream as this host.
    Proxy(SocketAddr, tokio_rustls::TlsConnector, &'static str),
}

impl Route {
    fn host(&self) -> &'static str {
        match self {
            Route::Direct(_) => HOST,
            Route::Proxy(_, _, host) => host,
        }
    }
}

struct Figures {
    requests: usize,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// Runs `connections` keep-alive connections for `seconds`, each sending GETs back to back.
/// With `fresh`, every request opens a new connection (CONNECT + TLS through keyswap).
async fn drive(
    route: &Route,
    port: u16,
    connections: usize,
    seconds: u64,
    header: Option<&'static str>,
    fresh: bool,
) -> Figures {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let route = route.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut sender = None;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if sender.is_none() || fresh {
                    let tls = connect(&route, port).await;
                    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    sender = Some(s);
                }
                let Some(s) = sender.as_mut() else {
                    unreachable!()
                };
                let mut req = Request::get("/").header("host", route.host());
                if let Some(h) = header {
                    req = req.header("authorization", h);
                }
                s.ready().await.unwrap();
                let resp = s
                    .send_request(req.body(Empty::<Bytes>::new()).unwrap())
                    .await
                    .unwrap();
                resp.into_body().collect().await.unwrap();
                latencies.push(t0.elapsed().as_micros() as u32);
            }
            latencies
        });
    }
    let mut latencies_us: Vec<u32> = tasks.join_all().await.into_iter().flatten().collect();
    latencies_us.sort_unstable();
    Figures {
        requests: latencies_us.len(),
        seconds: started.elapsed().as_secs_f64(),
        latencies_us,
    }
}

/// Uploads then downloads 64 MiB on one connection; MB/s each way.
async fn transfer(route: &Route, port: u16, with_placeholder: bool) -> (f64, f64) {
    let tls = connect(route, port).await;
    let (mut s, conn) =
        hyper::client::conn::http1::handshake::<_, BoxBody<Bytes, Infallible>>(TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let chunk = {
        let mut c = vec![b'a'; MIB];
        if with_placeholder {
            c[1000..1000 + 16].copy_from_slice(b"ks-ph-vcrd_bench");
        }
        Bytes::from(c)
    };
    let frames = (0..64).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
    let t0 = Instant::now();
    let req = Request::post("/upload")
        .header("host", route.host())
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let up = 64.0 * MIB as f64 / 1e6 / t0.elapsed().as_secs_f64();
    s.ready().await.unwrap();
    let t0 = Instant::now();
    let resp = s
        .send_request(
            Request::get("/big")
                .header("host", route.host())
                .body(Empty::<Bytes>::new().boxed())
                .unwrap(),
        )
        .await
        .unwrap();
    // Counted frame by frame: collecting would add a 64 MiB copy to what is measured.
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        n += frame.unwrap().data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(n, 64 * MIB);
    let down = 64.0 * MIB as f64 / 1e6 / t0.elapsed().as_secs_f64();
    (up, down)
}

/// CPU seconds (user + system) used so far by this process and by keyswap.
struct Cpu(f64, f64);

impl Cpu {
    fn sample(keyswap: u32) -> Cpu {
        Cpu(cpu_seconds("self"), cpu_seconds(&keyswap.to_string()))
    }

    /// CPU used since this sample: (this process, keyswap).
    fn since(&self, keyswap: u32) -> (f64, f64) {
        let now = Cpu::sample(keyswap);
        (now.0 - self.0, now.1 - self.1)
    }
}

/// utime + stime of `/proc/<pid>/stat`, in seconds (clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// (utime, stime) of `/proc/<pid>/stat`, in seconds: user space against the kernel's share.
fn cpu_split(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn report(name: &str, f: &Figures, direct: &Figures) {
    println!(
        "{name:<44} {:>9.0} req/s  ratio {:>5.2}  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms",
        f.rps(),
        f.rps() / direct.rps(),
        f.percentile(0.5),
        f.percentile(0.99),
        f.percentile(0.999),
    );
}

/// (f) `n` intercepted connections (CONNECT + TLS) that send nothing: keyswap's RSS each.
async fn idle_connections(
    pid: u32,
    proxied: &Route,
    port: u16,
    n: usize,
) -> Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let before = rss_kib(pid, "VmRSS:");
    let mut idle = Vec::new();
    for _ in 0..n {
        let tls = connect(proxied, port).await;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid, "VmRSS:");
    println!(
        "(f) {n} idle intercepted connections: {:.1} KiB RSS each",
        (after.saturating_sub(before)) as f64 / n as f64
    );
    idle
}

/// `--nginx`: (a) direct to nginx over HTTP/1.1, then (b) and (c) through keyswap with nginx on its
/// HTTP/1.1-only port and on its HTTP/2 port, with keyswap's CPU per request and how many upstream
/// connections nginx saw for each.
async fn run_nginx(o: &Options) {
    let ca = common::TestCa::new();
    let nginx = common::nginx::Nginx::start(&ca)
        .expect("--nginx needs /usr/sbin/nginx (apt-get install nginx)");
    let keyswap = start_keyswap(&ca.pem);
    let direct = Route::Direct(client_tls(&ca.pem));
    let proxied = Route::Proxy(keyswap.proxy, client_tls(&keyswap.ca_pem), HOST);
    let (c, t) = (o.connections, o.seconds);
    println!(
        "keyswap load benchmark, nginx upstream: {c} keep-alive client connections, {t} s per scenario"
    );
    for port in [nginx.h1, nginx.h2] {
        drive(&proxied, port, c, 1, None, false).await;
    }
    let a = drive(&direct, nginx.h1, c, t, None, false).await;
    report("(a) direct to nginx, HTTP/1.1", &a, &a);
    let pid = keyswap.child.id();
    // `--only h1|h2`: that upstream's (b) alone, for a profile of its path.
    for (upstream, port) in [("HTTP/1.1", nginx.h1), ("HTTP/2", nginx.h2)] {
        let wanted = match o.only.as_deref() {
            Some("h1") => port == nginx.h1,
            Some("h2") => port == nginx.h2,
            _ => true,
        };
        if !wanted {
            continue;
        }
        let before = nginx.seen_on(port).len();
        let (cpu, upstream_cpu) = (Cpu::sample(pid), cpu_seconds(&nginx.pid().to_string()));
        let b = drive(&proxied, port, c, t, None, false).await;
        let ks = cpu.since(pid).1 / b.requests as f64 * 1e6;
        let ng = (cpu_seconds(&nginx.pid().to_string()) - upstream_cpu) / b.requests as f64 * 1e6;
        report(&format!("(b) keyswap -> nginx {upstream}"), &b, &a);
        let cc = drive(&proxied, port, c, t, Some("Bearer ks-ph-vcrd_bench"), false).await;
        report(
            &format!("(c) keyswap -> nginx {upstream}, substitution"),
            &cc,
            &a,
        );
        println!(
            "    CPU per request (b): keyswap {ks:.1} µs, nginx {ng:.1} µs; upstream connections used: {}",
            connections_seen(&nginx, port, before)
        );
    }
    if o.only.is_some() {
        return;
    }
    // The two runs above are seconds apart, and the machine's noise moves them apart: one-second
    // slices alternating the upstreams (ABBA), and the median of the rounds' ratios.
    let rounds = t.max(4) as usize;
    let mut ratios = Vec::with_capacity(rounds);
    // Per upstream: keyswap's user and kernel time and nginx's, µs per request, mean of rounds.
    let mut cost = [[0.0f64; 3]; 2];
    let upstream_pid = nginx.pid().to_string();
    for round in 0..rounds {
        let mut rps = [0.0f64; 2];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let port = [nginx.h1, nginx.h2][i];
            let (user, system) = cpu_split(&pid.to_string());
            let upstream = cpu_seconds(&upstream_pid);
            let r = drive(&proxied, port, c, 1, None, false).await;
            let (user2, system2) = cpu_split(&pid.to_string());
            let per = 1e6 / r.requests.max(1) as f64 / rounds as f64;
            cost[i][0] += (user2 - user) * per;
            cost[i][1] += (system2 - system) * per;
            cost[i][2] += (cpu_seconds(&upstream_pid) - upstream) * per;
            rps[i] = r.rps();
        }
        ratios.push(rps[1] / rps[0]);
    }
    println!(
        "    HTTP/2 / HTTP/1.1 upstream, req/s through keyswap (median of {rounds} rounds): {:.2}",
        median(ratios)
    );
    for (name, [user, system, upstream]) in ["HTTP/1.1", "HTTP/2"].iter().zip(cost) {
        println!(
            "    {name:<8} CPU per request: keyswap user {user:.1} + kernel {system:.1} µs, nginx {upstream:.1} µs"
        );
    }
    println!("(g) keyswap and the floor peer -> nginx HTTP/1.1");
    compare_floor(&keyswap, &ca.pem, nginx.h1, c, t, true).await;
}

/// The distinct connections nginx logged requests on, for `port`, after its first `skip` lines.
fn connections_seen(nginx: &common::nginx::Nginx, port: u16, skip: usize) -> usize {
    let seen: std::collections::HashSet<String> = nginx
        .seen_on(port)
        .iter()
        .skip(skip)
        .filter_map(|l| l.rsplit("conn=").next().map(str::to_string))
        .collect();
    seen.len()
}

async fn run(o: Options) {
    if o.nginx {
        return run_nginx(&o).await;
    }
    let (server_config, upstream_ca) = upstream_tls();
    let port = upstream(server_config).await;
    let keyswap = start_keyswap(&upstream_ca);
    let direct = Route::Direct(client_tls(&upstream_ca));
    let proxied = Route::Proxy(keyswap.proxy, client_tls(&keyswap.ca_pem), HOST);
    let (c, t) = (o.connections, o.seconds);
    println!(
        "keyswap load benchmark: {c} keep-alive connections, {t} s per scenario, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm-up: certificate minted, upstream pool filled.
    drive(&proxied, port, c, 1, None, false).await;
    let pid = keyswap.child.id();
    let cpu = Cpu::sample(pid);
    let a = drive(&direct, port, c, t, None, false).await;
    let cpu_a = cpu.since(pid);
    report("(a) direct HTTPS", &a, &a);
    if o.only.as_deref() == Some("d") {
        // New tunnels alone, for a profile of their setup.
        let d = drive(&proxied, port, c, t, None, true).await;
        return report("(d) new CONNECT + TLS per request", &d, &a);
    }
    let cpu = Cpu::sample(pid);
    let b_header = (o.only.as_deref() == Some("c")).then_some("Bearer ks-ph-vcrd_bench");
    let b = drive(&proxied, port, c, t, b_header, false).await;
    let cpu_b = cpu.since(pid);
    report("(b) through keyswap, no placeholder", &b, &a);
    // Where the time goes: CPU per request of the client and upstream (this process) and of
    // keyswap. With the cores saturated, (b)/(a) cannot exceed
    // (client + upstream) / (client + upstream + keyswap).
    let per = |cpu: f64, n: &Figures| cpu / n.requests as f64 * 1e6;
    let (base, ks) = (per(cpu_a.0, &a), per(cpu_b.1, &b));
    println!(
        "    CPU per request: client+upstream {base:.1} µs (direct), keyswap {ks:.1} µs -> ceiling for (b)/(a) {:.2}",
        base / (base + ks)
    );
    if o.only.as_deref() == Some("f") {
        idle_connections(pid, &proxied, port, o.idle).await;
        return;
    }
    if o.only.as_deref() == Some("floor") {
        // Keep-alive requests only: no new tunnels to weigh on a profile.
        return compare_floor(&keyswap, &upstream_ca, port, c, t, false).await;
    }
    if o.only.is_some() {
        return;
    }
    compare_floor(&keyswap, &upstream_ca, port, c, t, true).await;
    let cc = drive(&proxied, port, c, t, Some("Bearer ks-ph-vcrd_bench"), false).await;
    report("(c) through keyswap, substitution", &cc, &a);
    // Back to back, drift between the two runs weighs on the ratio; alternating short slices of
    // (b) and (c) lets drift hit both alike.
    let slice = (t / 4).max(1);
    let (mut nb, mut sb, mut nc, mut sc) = (0, 0.0, 0, 0.0);
    for _ in 0..4 {
        let x = drive(&proxied, port, c, slice, None, false).await;
        let y = drive(
            &proxied,
            port,
            c,
            slice,
            Some("Bearer ks-ph-vcrd_bench"),
            false,
        )
        .await;
        (nb, sb, nc, sc) = (
            nb + x.requests,
            sb + x.seconds,
            nc + y.requests,
            sc + y.seconds,
        );
    }
    println!(
        "    (c)/(b) = {:.2} back to back, {:.2} over 4 alternating {slice} s slices of each",
        cc.rps() / b.rps(),
        (nc as f64 / sc) / (nb as f64 / sb)
    );
    let half = (c / 2).max(1);
    let a_half = drive(&direct, port, half, t, None, false).await;
    let b_half = drive(&proxied, port, half, t, None, false).await;
    println!(
        "    added latency at {half} connections: p50 {:+.3} ms, p99 {:+.3} ms",
        b_half.percentile(0.5) - a_half.percentile(0.5),
        b_half.percentile(0.99) - a_half.percentile(0.99)
    );
    let d = drive(&proxied, port, c, t, None, true).await;
    println!(
        "(d) new CONNECT + TLS per request               {:>9.0} tunnels/s  p50 {:.2} ms  p99 {:.2} ms",
        d.rps(),
        d.percentile(0.5),
        d.percentile(0.99)
    );
    let (up_a, down_a) = transfer(&direct, port, false).await;
    let (up_b, down_b) = transfer(&proxied, port, false).await;
    let (up_c, down_c) = transfer(&proxied, port, true).await;
    println!(
        "(e) 64 MiB direct                              up {up_a:>7.0} MB/s  down {down_a:>7.0} MB/s"
    );
    println!(
        "    64 MiB through keyswap                     up {up_b:>7.0} MB/s  down {down_b:>7.0} MB/s  (ratio {:.2} / {:.2})",
        up_b / up_a,
        down_b / down_a
    );
    println!(
        "    64 MiB through keyswap, body substitution  up {up_c:>7.0} MB/s  down {down_c:>7.0} MB/s"
    );

    let pid = keyswap.child.id();
    let idle = idle_connections(pid, &proxied, port, o.idle).await;
    println!("keyswap peak RSS: {} MiB", rss_kib(pid, "VmHWM:") / 1024);

    if o.soak > 0 {
        drop(idle);
        let mut samples = Vec::new();
        for _ in 0..o.soak.div_ceil(10) {
            drive(
                &proxied,
                port,
                c,
                10,
                Some("Bearer ks-ph-vcrd_bench"),
                false,
            )
            .await;
            samples.push(rss_kib(pid, "VmRSS:") / 1024);
        }
        let (lo, hi) = (
            samples.iter().min().unwrap_or(&0),
            samples.iter().max().unwrap_or(&0),
        );
        println!(
            "soak of (c) for {} s: keyswap RSS every 10 s {samples:?} MiB (min {lo}, max {hi})",
            o.soak
        );
    }

    if let Some(program) = &o.mitmdump {
        let mitm = start_mitmdump(program, &upstream_ca);
        let route = Route::Proxy(mitm.addr, client_tls(&mitm.ca_pem), "127.0.0.1");
        drive(&route, port, c, 1, None, false).await;
        let mb = drive(&route, port, c, t, None, false).await;
        report("(b) through mitmproxy, no placeholder", &mb, &a);
        let mc = drive(&route, port, c, t, Some("Bearer ks-ph-vcrd_bench"), false).await;
        report("(c) through mitmproxy, substitution", &mc, &a);
        println!(
            "    keyswap / mitmproxy: (b) {:.1}x, (c) {:.1}x",
            b.rps() / mb.rps(),
            cc.rps() / mc.rps()
        );
    }
}
