//! Linux network namespaces made by a test and removed when it ends (SPEC §12 tests): a client
//! namespace whose traffic reaches the host only through a veth, and an upstream namespace behind
//! another veth. Addresses are in 10.213.N.0/24, which exists only on these veths; nothing leaves
//! the machine. Requires root, `ip` (iproute2) and `nft` (nftables).

use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

/// One lab: `client` → (veth, host side `host_ip`) → keyswap on the host → (veth) → `upstream`.
pub struct Lab {
    pub id: String,
    pub client_ns: String,
    pub upstream_ns: String,
    /// The host's address on the client's veth (where redirected connections arrive).
    pub host_ip: String,
    pub client_ip: String,
    /// The upstream namespace's address.
    pub upstream_ip: String,
    /// The host's and the upstream's IPv6 addresses (ULA fd00:213::/32, on these veths only).
    pub host_ip6: String,
    pub upstream_ip6: String,
    table: Option<String>,
}

static NEXT: AtomicU8 = AtomicU8::new(0);

/// Whether namespaces can be made here (root, ip, nft); with KEYSWAP_EXTERNAL_TOOLS=required
/// their absence fails the test.
pub fn available() -> bool {
    let ok = rustix_is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
        && Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("KEYSWAP_EXTERNAL_TOOLS").as_deref() != Ok("required"),
            "root, ip and nft are required here"
        );
        eprintln!("skipped: network namespaces need root, ip and nft");
    }
    ok
}

/// Whether this machine has IPv6 (the lab's IPv6 addresses and test need it).
pub fn ipv6() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|v| v.trim() == "0")
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
    })
}

/// Runs a command, failing the test on error.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    pub fn new() -> Lab {
        let n = (std::process::id() % 200 + u32::from(NEXT.fetch_add(1, Ordering::Relaxed))) % 250;
        let id = format!("ks{}x{n}", std::process::id() % 10000);
        let net = format!("10.213.{n}");
        let lab = Lab {
            client_ns: format!("{id}c"),
            upstream_ns: format!("{id}u"),
            host_ip: format!("{net}.1"),
            client_ip: format!("{net}.2"),
            upstream_ip: format!("{net}.6"),
            host_ip6: format!("fd00:213:{n}::1"),
            upstream_ip6: format!("fd00:213:{n}:1::6"),
            id,
            table: None,
        };
        let (c, u) = (&lab.client_ns, &lab.upstream_ns);
        let (hc, cc, hu, uu) = (
            format!("{}h", lab.client_ns),
            format!("{}p", lab.client_ns),
            format!("{}h", lab.upstream_ns),
            format!("{}p", lab.upstream_ns),
        );
        run(&["ip", "netns", "add", c]);
        run(&["ip", "netns", "add", u]);
        for (ns, host_end, ns_end, host_addr, ns_addr, host6, ns6) in [
            (
                c,
                &hc,
                &cc,
                format!("{net}.1/30"),
                format!("{net}.2/30"),
                format!("fd00:213:{n}::1/64"),
                format!("fd00:213:{n}::2/64"),
            ),
            (
                u,
                &hu,
                &uu,
                format!("{net}.5/30"),
                format!("{net}.6/30"),
                format!("fd00:213:{n}:1::5/64"),
                format!("fd00:213:{n}:1::6/64"),
            ),
        ] {
            run(&[
                "ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end,
            ]);
            run(&["ip", "link", "set", ns_end, "netns", ns]);
            run(&["ip", "addr", "add", &host_addr, "dev", host_end]);
            run(&["ip", "link", "set", host_end, "up"]);
            run(&["ip", "-n", ns, "addr", "add", &ns_addr, "dev", ns_end]);
            run(&["ip", "-n", ns, "link", "set", ns_end, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let gateway = host_addr.split('/').next().unwrap_or_default().to_string();
            run(&["ip", "-n", ns, "route", "add", "default", "via", &gateway]);
            // IPv6 where the machine has it (`nodad`: usable at once).
            if ipv6() {
                run(&["ip", "-6", "addr", "add", &host6, "dev", host_end, "nodad"]);
                run(&[
                    "ip", "-n", ns, "-6", "addr", "add", &ns6, "dev", ns_end, "nodad",
                ]);
                let gateway6 = host6.split('/').next().unwrap_or_default().to_string();
                run(&[
                    "ip", "-n", ns, "-6", "route", "add", "default", "via", &gateway6,
                ]);
            }
        }
        lab
    }

    /// Redirects every TCP connection from the client namespace to `port` on the host's veth
    /// address (nftables `redirect`, as an operator would write it).
    pub fn redirect_tcp_to(&mut self, port: u16) {
        let table = format!("{}t", self.id);
        let rules = format!(
            "table inet {table} {{\n chain pre {{\n  type nat hook prerouting priority dstnat; policy accept;\n  iifname \"{}h\" meta l4proto tcp redirect to :{port}\n }}\n}}\n",
            self.client_ns
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft rules");
        self.table = Some(table);
    }

    /// `ip netns exec <ns> args…` as a command to finish and run.
    pub fn exec(ns: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(args)
            .kill_on_drop(true);
        cmd
    }
}

/// Namespaces, links, nftables tables and `/etc/netns` entries whose name contains `id`: what a
/// test checks is gone after it.
pub fn traces(id: &str) -> Vec<String> {
    let listed = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut found: Vec<String> = [
        listed(&["ip", "netns", "list"]),
        listed(&["ip", "-o", "link"]),
        listed(&["nft", "list", "tables"]),
    ]
    .iter()
    .flat_map(|s| s.lines())
    .filter(|l| l.contains(id))
    .map(String::from)
    .collect();
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        found.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(id)),
        );
    }
    found
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(table) = &self.table {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", table])
                .output();
        }
        for ns in [&self.client_ns, &self.upstream_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        // Deleting a namespace deletes its veth ends, and with them the host's.
        for host_end in [
            format!("{}h", self.client_ns),
            format!("{}h", self.upstream_ns),
        ] {
            let _ = Command::new("ip").args(["link", "del", &host_end]).output();
        }
    }
}
