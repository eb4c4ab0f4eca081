//! `keyswap exec [--session ID] -- COMMAND` (SPEC §12): COMMAND runs in a fresh network namespace
//! whose only way out is this keyswap. Every TCP connection is redirected to a transparent
//! listener served here, DNS is answered by keyswap's own responder (`dns`), everything else is
//! dropped; COMMAND gets the `keyswap env` variables (no proxy variables: it needs none). The
//! namespace, its veth, its nftables table and its resolv.conf are removed on every way out,
//! SIGINT and SIGTERM included; COMMAND's exit status is returned.

mod netns;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tracing::info;

use crate::config::Config;
use crate::dns::{self, Allocations};
use crate::secret::Secret;
use crate::server::{self, Options, RunError};

pub use netns::NetnsError;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("keyswap exec needs Linux (network namespaces and nftables)")]
    NotLinux,
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("session `{0}` is not in the configuration")]
    UnknownSession(String),
    #[error("the configuration has [[sessions]]: choose one with --session")]
    SessionRequired,
    #[error("cannot start keyswap for the command: {0}")]
    Run(#[from] RunError),
    #[error("keyswap stopped before it was ready")]
    NotReady,
    #[error("cannot listen for DNS on {addr}: {source}")]
    Dns {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Env(#[from] crate::sandbox::EnvError),
    #[error("cannot start {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

/// Runs `command` in its own namespace behind keyswap; its exit status (128 + signal number
/// when it was ended by a signal, as shells report it).
pub async fn exec(
    config: Config,
    session: Option<String>,
    command: Vec<OsString>,
) -> Result<i32, ExecError> {
    if !cfg!(target_os = "linux") {
        return Err(ExecError::NotLinux);
    }
    let started = Instant::now();
    // SECURITY: the command shares keyswap's uid when run by root; a non-dumpable process's memory
    // and /proc/<pid>/environ are then closed to it (it has no CAP_SYS_PTRACE, see `command`).
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let net = netns::Netns::create()?;
    let config = for_exec(config, session.as_deref(), &net)?;
    let allocations = Arc::new(Allocations::default());
    let dns_addr = SocketAddr::new(IpAddr::V4(net.host_ip), 0);
    let dns_socket = UdpSocket::bind(dns_addr)
        .await
        .map_err(|source| ExecError::Dns {
            addr: dns_addr,
            source,
        })?;
    let dns_port = dns_socket.local_addr().map_or(0, |a| a.port());
    let dns_task = tokio::spawn(dns::serve(dns_socket, allocations.clone()));

    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // SECURITY: a reload (SIGHUP, an edit of the file, an admin write) compiles the file's
    // sessions again; without this the command's address would lose the session `--session`
    // chose, and could be claimed by another session's `source_cidrs`.
    let client = net.client_ip;
    let chosen = session.clone();
    let adjust: crate::store::Adjust = Arc::new(move |config: &mut Config| {
        if bind_session(config, chosen.as_deref(), client).is_err() {
            // The session chosen is gone: no session claims the command any more (refused).
            let ip = IpAddr::V4(client);
            for s in &mut config.sessions {
                let before = s.source_cidrs.len();
                s.source_cidrs.retain(|net| !net.contains(&ip));
                if before > 0 && s.source_cidrs.is_empty() {
                    // Never left without any: a lone session with none claims every address.
                    s.source_cidrs.push(ipnet::IpNet::from(IpAddr::V4(
                        std::net::Ipv4Addr::BROADCAST,
                    )));
                }
            }
        }
    });
    let options = Options {
        allocations: Some(allocations),
        ready: Some(ready_tx),
        adjust: Some(adjust),
    };
    let server = tokio::spawn(server::serve(config.clone(), options, async move {
        let _ = stop_rx.await;
        Ok(())
    }));
    let listening = match ready_rx.await {
        Ok(listening) => listening,
        Err(_) => {
            return Err(match server.await {
                Ok(Err(e)) => ExecError::Run(e),
                _ => ExecError::NotReady,
            });
        }
    };
    let transparent_port = listening.transparent.map_or(0, |a| a.port());
    net.confine(transparent_port, dns_port)?;
    let variables = sandbox_variables(&config, session.as_deref())?;
    let ready_ms = started.elapsed().as_millis();
    info!(namespace = %net.name, ready_ms, "keyswap exec: the namespace is ready");

    let inherited = inherited_environment(&config);
    let status = run_command(&net, &command, &inherited, &variables).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    dns_task.abort();
    drop(net);
    status
}

/// The config keyswap serves the command with: its own listeners on free ports (a `keyswap run`
/// may hold the configured ones), the transparent listener on the namespace's veth, and the
/// session picked by the command's address.
fn for_exec(
    mut config: Config,
    session: Option<&str>,
    net: &netns::Netns,
) -> Result<Config, ExecError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    config.proxy.listen = loopback;
    config.admin.listen = loopback;
    config.proxy.transparent_listen = Some(SocketAddr::new(IpAddr::V4(net.host_ip), 0));
    bind_session(&mut config, session, net.client_ip)?;
    Ok(config)
}

/// The session picked by the command's address: the one chosen, and no other.
fn bind_session(
    config: &mut Config,
    session: Option<&str>,
    client: std::net::Ipv4Addr,
) -> Result<(), ExecError> {
    let client = ipnet::IpNet::from(IpAddr::V4(client));
    match session {
        Some(id) => {
            let Some(chosen) = config.sessions.iter_mut().find(|s| s.id == id) else {
                return Err(ExecError::UnknownSession(id.to_string()));
            };
            chosen.source_cidrs = vec![client];
            for other in config.sessions.iter_mut().filter(|s| s.id != id) {
                other
                    .source_cidrs
                    .retain(|net| !net.contains(&client.addr()));
            }
        }
        None if !config.sessions.is_empty() => return Err(ExecError::SessionRequired),
        None => {}
    }
    Ok(())
}

/// `keyswap env`'s variables for the session, without the proxy variables (the namespace needs
/// none: every connection comes to keyswap anyway).
fn sandbox_variables(
    config: &Config,
    session: Option<&str>,
) -> Result<Vec<(String, String)>, ExecError> {
    // A session reached by address has no token, which only the proxy URL would carry.
    let mut config = config.clone();
    for s in &mut config.sessions {
        s.proxy_token.get_or_insert_with(|| Secret::new("unused"));
    }
    let reach = crate::sandbox::Reach::default();
    let variables = crate::sandbox::variables(&config, session, &config.tls.ca_cert, &reach)?;
    Ok(variables
        .into_iter()
        .filter(|(k, _)| !is_proxy_variable(k))
        .map(|(k, v)| match k.as_str() {
            // Java: the trust store only, no proxy.
            "JAVA_TOOL_OPTIONS" => {
                let kept: Vec<&str> = v
                    .split(' ')
                    .filter(|o| o.starts_with("-Djavax.net.ssl."))
                    .collect();
                (k, kept.join(" "))
            }
            _ => (k, v),
        })
        .collect())
}

/// keyswap exec's own environment as the command may have it. SECURITY: without the variables
/// the configuration read secrets from (`…_env` keys: an AWS session token in AWS_SESSION_TOKEN,
/// which `keyswap env` does not replace, a token under another name than its `secret_name`), nor
/// any other that holds a secret of the configuration, nor the admin API key; and without proxy
/// variables, which would send the command to a proxy it cannot reach.
fn inherited_environment(config: &Config) -> Vec<(OsString, OsString)> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut secrets: Vec<&[u8]> = Vec::new();
    for credential in config.credentials() {
        secrets.extend(credential.auth.secrets().into_iter().map(Secret::expose));
    }
    secrets.extend(
        config
            .sessions
            .iter()
            .filter_map(|s| s.proxy_token.as_ref())
            .map(Secret::expose),
    );
    secrets.retain(|s| !s.is_empty());
    std::env::vars_os()
        .filter(|(k, v)| {
            let name = k.to_string_lossy();
            !is_proxy_variable(&name)
                && name != config.admin.api_key_env
                && !secrets
                    .iter()
                    .any(|s| memchr::memmem::find(v.as_bytes(), s).is_some())
        })
        .collect()
}

fn is_proxy_variable(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with("_proxy") || lower == "node_use_env_proxy" || lower == "npm_config_https_proxy"
}

/// Runs the command inside the namespace until it exits, or until keyswap exec is told to stop
/// (SIGINT, SIGTERM), which is passed on to it.
async fn run_command(
    net: &netns::Netns,
    command: &[OsString],
    inherited: &[(OsString, OsString)],
    variables: &[(String, String)],
) -> Result<i32, ExecError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut child = net
        .command(command, invoking_user())
        // Not the whole environment: a Command inherits every variable unless cleared.
        .env_clear()
        .envs(inherited.iter().map(|(k, v)| (k, v)))
        .envs(variables.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            command: command
                .first()
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source,
        })?;
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let forwarded = tokio::select! {
        status = child.wait() => return Ok(exit_code(status)),
        _ = term.recv() => rustix::process::Signal::TERM,
        _ = int.recv() => rustix::process::Signal::INT,
    };
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(i32::try_from(p).ok()?))
    {
        let _ = rustix::process::kill_process(pid, forwarded);
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    match status {
        Ok(status) => Ok(exit_code(status)),
        Err(_) => {
            let _ = child.kill().await;
            Ok(128 + forwarded.as_raw())
        }
    }
}

/// The user who ran `sudo keyswap exec` (`SUDO_UID`, `SUDO_GID`): the command runs as them, not
/// as root. Without sudo the command keeps keyswap's user, with every capability dropped.
fn invoking_user() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let id = |name: &str| std::env::var(name).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?)).filter(|(uid, _)| *uid != 0)
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(1),
        Err(_) => 1,
    }
}
