//! A real PostgreSQL (Debian's package, installed by `.ci/run`) for one test: its own cluster in a
//! temp dir (`initdb`), started on a free 127.0.0.1 port as the `postgres` OS user when the test
//! runs as root (PostgreSQL refuses root), so the test can stop it, kill it and start it again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nginx::free_port;

pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Serving TLS only (`hostssl`), with a leaf from the test CA for 127.0.0.1.
    tls: bool,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The newest installed server's `bin` folder.
fn bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// The `postgres` user's uid and gid.
fn postgres_user() -> (u32, u32) {
    // SAFETY: a NUL-terminated name; the returned record is read before any other call.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "no `postgres` user (apt-get install postgresql)"
        );
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

/// `program`, run as the `postgres` user when the test runs as root (the process itself, so a
/// signal to it reaches the server).
fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new(program);
    if is_root() {
        use std::os::unix::process::CommandExt as _;
        let (uid, gid) = postgres_user();
        c.uid(uid).gid(gid);
    }
    c
}

impl Postgres {
    /// A fresh cluster, started; `None` where PostgreSQL is not installed (and not required).
    pub fn start() -> Option<Postgres> {
        Self::start_with(None)
    }

    /// A cluster that accepts TLS connections only, its certificate signed by `ca`.
    pub fn start_tls(ca: &super::TestCa) -> Option<Postgres> {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&super::TestCa>) -> Option<Postgres> {
        let Some(bin) = bin() else {
            assert!(
                std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
                "PostgreSQL is required here but not installed (apt-get install postgresql)"
            );
            eprintln!("skipped: PostgreSQL is not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = dir.path().join("data");
        if let Some(ca) = ca {
            let (cert, key) = ca.leaf_pem(&["127.0.0.1"]);
            std::fs::write(data.join("server.crt"), cert).unwrap();
            std::fs::write(data.join("server.key"), key).unwrap();
            // Only TLS connections over TCP (the socket in the folder stays for psql/pg_dump).
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            if is_root() {
                let (uid, gid) = postgres_user();
                for f in ["server.crt", "server.key", "pg_hba.conf"] {
                    std::os::unix::fs::chown(data.join(f), Some(uid), Some(gid)).unwrap();
                }
            }
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        let mut pg = Postgres {
            child: None,
            dir,
            bin,
            port: free_port(),
            tls: ca.is_some(),
        };
        pg.start_again();
        Some(pg)
    }

    /// Starts the server (after `stop`/`kill`) and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(if self.tls {
                &["-c", "ssl=on"][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (as a crash or a network cut would look to keyswap).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: as a crash or a cut network looks to keyswap.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        let mode = if self.tls { "require" } else { "disable" };
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}",
            self.port
        )
    }

    /// `psql -At -c sql` against the cluster: its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-At", "-c", sql, "postgres"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Everything in the database, as `pg_dump` writes it.
    pub fn dump(&self) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("postgres")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
