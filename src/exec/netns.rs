//! The namespace of one `keyswap exec`: made with iproute2 and nftables (the tools an operator
//! would use and can read back), removed when dropped.
//!
//! Layout: a veth pair from the host (`host_ip`) into the namespace (`client_ip`), the default
//! route through it; in the host, one nftables table that redirects the namespace's TCP to the
//! transparent listener and its DNS to keyswap's responder, and drops everything else it sends
//! (other UDP, ICMP, anything for the host itself or for forwarding). IPv6 is off inside.
//! Addresses: a /30 of 100.127.0.0/16 (the top of the shared address space, not routed on the
//! Internet), chosen from the process id.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("keyswap exec needs `{0}` ({1}); install it")]
    Missing(&'static str, &'static str),
    #[error("keyswap exec needs root or CAP_NET_ADMIN to make a network namespace: {0}")]
    NotPermitted(String),
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One namespace and everything made for it.
pub struct Netns {
    pub name: String,
    pub host_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
    host_link: String,
    etc: PathBuf,
}

impl Netns {
    pub fn create() -> Result<Netns, NetnsError> {
        for (tool, package) in [
            ("ip", "iproute2"),
            ("nft", "nftables"),
            ("setpriv", "util-linux"),
        ] {
            let found = Command::new(tool)
                .arg(if tool == "ip" { "-V" } else { "--version" })
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Err(NetnsError::Missing(tool, package));
            }
        }
        let pid = std::process::id();
        let name = format!("ksx{pid}");
        // A /30 per process: 100.127.<hi>.<lo*4>.
        let slot = pid % 16384;
        let (hi, lo) = (
            u8::try_from(slot / 64).unwrap_or(0),
            u8::try_from(slot % 64).unwrap_or(0) * 4,
        );
        let net = Netns {
            host_ip: Ipv4Addr::new(100, 127, hi, lo + 1),
            client_ip: Ipv4Addr::new(100, 127, hi, lo + 2),
            host_link: format!("{name}h"),
            etc: PathBuf::from("/etc/netns").join(&name),
            name,
        };
        if let Err(e) = ip(&["netns", "add", &net.name]) {
            return Err(match e {
                NetnsError::Failed { stderr, .. }
                    if stderr.contains("ermission") || stderr.contains("not permitted") =>
                {
                    NetnsError::NotPermitted(stderr)
                }
                other => other,
            });
        }
        // From here on, `drop` removes what was made.
        let inner = format!("{}p", net.name);
        let host = format!("{}/30", net.host_ip);
        let client = format!("{}/30", net.client_ip);
        let gateway = net.host_ip.to_string();
        ip(&[
            "link",
            "add",
            &net.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &net.name])?;
        ip(&["addr", "add", &host, "dev", &net.host_link])?;
        ip(&["link", "set", &net.host_link, "up"])?;
        let n = |args: &[&str]| {
            let mut all = vec!["-n", net.name.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        n(&["addr", "add", &client, "dev", &inner])?;
        n(&["link", "set", &inner, "up"])?;
        n(&["link", "set", "lo", "up"])?;
        n(&["route", "add", "default", "via", &gateway])?;
        // No IPv6 inside: every way out is the IPv4 veth.
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])
            .output();
        Ok(net)
    }

    /// The rules: the namespace's TCP to `transparent_port`, its DNS to `dns_port`, the rest
    /// dropped; and its resolver pointed at keyswap.
    pub fn confine(&self, transparent_port: u16, dns_port: u16) -> Result<(), NetnsError> {
        let table = self.name.clone();
        let link = &self.host_link;
        let rules = format!(
            "table inet {table} {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{link}\" meta nfproto ipv4 meta l4proto tcp redirect to :{transparent_port}
    iifname \"{link}\" meta nfproto ipv4 udp dport 53 redirect to :{dns_port}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{link}\" meta l4proto tcp th dport {transparent_port} accept
    iifname \"{link}\" udp dport {dns_port} accept
    iifname \"{link}\" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{link}\" drop
  }}
}}
"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetnsError::Failed {
                command: "nft -f -".into(),
                stderr: e.to_string(),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(rules.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| NetnsError::Failed {
            command: "nft -f -".into(),
            stderr: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(NetnsError::Failed {
                command: "nft -f -".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        // `ip netns exec` mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf.
        std::fs::create_dir_all(&self.etc).map_err(|source| NetnsError::Write {
            path: self.etc.clone(),
            source,
        })?;
        let resolv = self.etc.join("resolv.conf");
        std::fs::write(&resolv, format!("nameserver {}\n", self.host_ip)).map_err(|source| {
            NetnsError::Write {
                path: resolv,
                source,
            }
        })?;
        Ok(())
    }

    /// `ip netns exec <name> setpriv … COMMAND…`: COMMAND with no capability it could use to
    /// leave the namespace (`setns` needs CAP_SYS_ADMIN) or read keyswap's memory and environment
    /// (CAP_SYS_PTRACE), none to regain (`no_new_privs`: setuid programs stay unprivileged), as
    /// `user` (uid, gid) when given.
    pub fn command(
        &self,
        command: &[OsString],
        user: Option<(u32, u32)>,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&self.name).args([
            "setpriv",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
        ]);
        if let Some((uid, gid)) = user {
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups");
        }
        cmd.arg("--").args(command);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // SECURITY: the veth first. A process the command left running keeps the namespace (and
        // so its end of the veth) alive after `ip netns del`; were the table removed while the
        // link is up, that process would reach every port of the host, and beyond it by
        // forwarding, until the link went. Deleting one end of a veth deletes both.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(Stdio::null())
            .status();
        // The table is named after the namespace; deleting a missing one fails harmlessly.
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.name])
            .stderr(Stdio::null())
            .status();
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            debug!(namespace = %self.name, error = %e, "cannot remove the namespace");
        }
        let _ = std::fs::remove_dir_all(&self.etc);
        debug!(namespace = %self.name, "namespace removed");
    }
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError::Failed {
            command: format!("ip {}", args.join(" ")),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetnsError::Failed {
        command: format!("ip {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}
