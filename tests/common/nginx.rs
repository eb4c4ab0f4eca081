//! nginx from Debian's package as a real upstream, started on 127.0.0.1 with a leaf from the test
//! CA: one port offering HTTP/2 and HTTP/1.1 (by ALPN), one HTTP/1.1 only. Its access log records
//! what it received (port, protocol, method, path, `x-token`), so assertions read what a real server
//! got; `/` reflects the token, `/upload` takes a body, `/static/` serves a file, `/simple/` and
//! `/packages/` a private package index behind Basic authentication, `/dav/` stores `PUT` bodies
//! (WebDAV), `/ws` passes WebSocket upgrades to a backend on `ws_backend`. A third port serves two
//! names by SNI and `:authority`, and answers `421` to any other. Used by the tests and by the load
//! benchmark (`--nginx`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Keyswap, Setup, TestCa};

pub const NGINX: &str = "/usr/sbin/nginx";

/// An nginx on 127.0.0.1 (two ports: `h2` offers HTTP/2 and HTTP/1.1, `h1` HTTP/1.1 only); killed
/// on drop.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub h2: u16,
    pub h1: u16,
    /// HTTP/2 and HTTP/1.1, closing each connection (GOAWAY on HTTP/2) after 5 requests.
    pub short: u16,
    /// HTTP/2 and HTTP/1.1 with one server per name: `api.example.test` answers `api`,
    /// `other.example.test` answers `other`, any other name `421 Misdirected Request`.
    pub named: u16,
    /// Where `/ws` sends WebSocket upgrades (plain HTTP/1.1 on 127.0.0.1): the test starts it.
    pub ws_backend: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credential the nginx tests use: its secret is what nginx's Basic users file and static
/// files hold, scoped to nginx's name.
pub const VAULT: &str = r#"
[[vaults]]
id = "vlt_real"
[[vaults.credentials]]
id = "vcrd_real"
auth = { type = "environment_variable", secret_name = "T", secret_value = "SECRET_for_nginx_42", networking = { type = "limited", allowed_hosts = ["api.example.test"] }, injection_location = { header = true, body = true } }
"#;

/// nginx, and keyswap with [`VAULT`] (the credential scoped to `api.example.test`, nginx's name).
pub struct World {
    pub nginx: Nginx,
    pub keyswap: Keyswap,
    /// What curl trusts: keyswap's CA and the test CA.
    pub bundle: PathBuf,
}

impl World {
    /// curl through keyswap, trusting its CA: `--proxy` and `--cacert` before `args`.
    pub async fn curl(&self, args: &[&str]) -> super::CurlOut {
        let proxy = self.keyswap.proxy_url();
        let via = [
            "--proxy",
            proxy.as_str(),
            "--cacert",
            self.bundle.to_str().unwrap(),
        ];
        super::curl(&[&via[..], args].concat()).await
    }

    /// `None` where nginx is not installed (and not required).
    pub fn start() -> Option<World> {
        let ca = TestCa::new();
        let nginx = Nginx::start(&ca)?;
        let keyswap = keyswap(&ca);
        let bundle = keyswap.client_bundle(&ca);
        Some(World {
            nginx,
            keyswap,
            bundle,
        })
    }
}

/// keyswap with [`VAULT`], reaching upstreams on 127.0.0.1 signed by `ca`.
pub fn keyswap(ca: &TestCa) -> Keyswap {
    Keyswap::start(
        ca,
        Setup {
            proxy: "block_private_addresses = false",
            rest: VAULT,
            ..Setup::default()
        },
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// nginx's process id (one process: `master_process off`), for its CPU time in the bench.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(ca: &TestCa) -> Option<Nginx> {
        if !Path::new(NGINX).exists() {
            assert!(
                std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
                "nginx is required here but not installed (apt-get install nginx)"
            );
            eprintln!("skipped: nginx is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let (cert, key) = ca.leaf_pem(super::NAMES);
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let (h2, h1, short, named) = (free_port(), free_port(), free_port(), free_port());
        let ws_backend = free_port();
        let conf = format!(
            r#"daemon off;
master_process off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format seen '$server_port $server_protocol $request_method $request_uri token=[$http_x_token] auth=[$http_authorization] length=$request_length conn=$connection';
    access_log {d}/access.log seen;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    client_max_body_size 0;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{h2} ssl http2;
        location / {{ return 200 "token=$http_x_token protocol=$server_protocol\n"; }}
        location /upload {{ client_body_buffer_size 1m; proxy_pass http://127.0.0.1:{h1plain}/sink; }}
        location /static/ {{ root {d}; }}
        location /dav/ {{ root {d}; dav_methods PUT; create_full_put_path on; }}
        location /ws {{ proxy_pass http://127.0.0.1:{ws_backend}; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; proxy_read_timeout 30s; }}
        location /simple/ {{ root {d}/index; auth_basic "index"; auth_basic_user_file {d}/users; }}
        location /packages/ {{ root {d}/index; auth_basic "index"; auth_basic_user_file {d}/users; }}
    }}
    server {{
        listen 127.0.0.1:{short} ssl http2;
        keepalive_requests 5;
        location / {{ return 200 "short $connection_requests\n"; }}
    }}
    server {{
        listen 127.0.0.1:{h1} ssl;
        location / {{ return 200 "token=$http_x_token protocol=$server_protocol\n"; }}
        location /static/ {{ root {d}; }}
        location /upload {{ client_body_buffer_size 1m; proxy_pass http://127.0.0.1:{h1plain}/sink; }}
        location /dav/ {{ root {d}; dav_methods PUT; create_full_put_path on; }}
        location /ws {{ proxy_pass http://127.0.0.1:{ws_backend}; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; proxy_read_timeout 30s; }}
    }}
    server {{
        listen 127.0.0.1:{named} ssl http2 default_server;
        location / {{ return 421 "misdirected\n"; }}
    }}
    server {{
        listen 127.0.0.1:{named} ssl http2;
        server_name api.example.test;
        location / {{ return 200 "api\n"; }}
    }}
    server {{
        listen 127.0.0.1:{named} ssl http2;
        server_name other.example.test;
        location / {{ return 200 "other\n"; }}
    }}
    server {{
        listen 127.0.0.1:{h1plain};
        location /sink {{ return 200 "received\n"; }}
    }}
}}
"#,
            h1plain = free_port(),
        );
        std::fs::create_dir_all(dir.path().join("static")).unwrap();
        std::fs::write(dir.path().join("static/file.txt"), "static content\n").unwrap();
        // An npm registry's packument for `ksdemo` (what `npm view ksdemo` reads).
        std::fs::write(
            dir.path().join("static/ksdemo"),
            r#"{"name":"ksdemo","dist-tags":{"latest":"1.0.0"},"versions":{"1.0.0":{"name":"ksdemo","version":"1.0.0","description":"served through keyswap"}}}"#,
        )
        .unwrap();
        // A package index (PEP 503) behind Basic authentication with the real token.
        std::fs::write(
            dir.path().join("users"),
            "__token__:{PLAIN}SECRET_for_nginx_42\n",
        )
        .unwrap();
        make_index(&dir.path().join("index"));
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Nginx {
            child,
            dir,
            h2,
            h1,
            short,
            named,
            ws_backend,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", h1)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nginx)
    }

    /// nginx's root: `static/` below it is served, `dav/` receives `PUT`s.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The access-log lines for requests to `port`.
    pub fn seen_on(&self, port: u16) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|l| l.starts_with(&format!("{port} ")))
            .map(str::to_string)
            .collect()
    }
}

/// `simple/ksdemo/index.html` and the wheel it links to: a one-module package built here.
fn make_index(root: &Path) {
    std::fs::create_dir_all(root.join("simple/ksdemo")).unwrap();
    std::fs::create_dir_all(root.join("packages")).unwrap();
    let wheel = root.join("packages/ksdemo-0.1-py3-none-any.whl");
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("ksdemo/__init__.py", "VALUE = 'installed through keyswap'\n")
    z.writestr("ksdemo-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: ksdemo\nVersion: 0.1\n")
    z.writestr("ksdemo-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: keyswap-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("ksdemo-0.1.dist-info/RECORD", "")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        root.join("simple/ksdemo/index.html"),
        "<html><body><a href=\"../../packages/ksdemo-0.1-py3-none-any.whl\">ksdemo-0.1-py3-none-any.whl</a></body></html>\n",
    )
    .unwrap();
}
