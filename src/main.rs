//! The `keyswap` command: parse the CLI, start tracing, validate the config, run.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use keyswap::ca::CertificateAuthority;
use keyswap::config::{self, Config};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "keyswap",
    version,
    about = "An egress proxy that swaps placeholders for real secrets, by host"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the proxy and the admin API.
    Run(ConfigArg),
    /// Validate the configuration and print a summary.
    Check(ConfigArg),
    /// Create the CA if missing and print its certificate's path.
    Ca(ConfigArg),
    /// Print the environment a sandbox needs (placeholders, proxy and CA variables; never a
    /// secret). An operator command: it reads the config, which a sandbox must never see.
    Env {
        #[command(flatten)]
        config: ConfigArg,
        /// The session to print for (default: the implicit session).
        #[arg(long)]
        session: Option<String>,
        /// How the sandbox reaches keyswap [default: from [proxy] listen]
        #[arg(long, value_name = "URL")]
        proxy_url: Option<String>,
        /// Where the sandbox finds ca-bundle.pem (ca-bundle.p12 beside it) [default: its path here]
        #[arg(long, value_name = "PATH")]
        ca_path: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = keyswap::sandbox::Format::Sh)]
        format: keyswap::sandbox::Format,
    },
    /// Run COMMAND in a network namespace whose only way out is keyswap (Linux, root or
    /// CAP_NET_ADMIN): TCP goes through keyswap, DNS is answered by keyswap, the rest is dropped.
    /// COMMAND gets the `keyswap env` variables; its exit status is keyswap exec's.
    Exec {
        #[command(flatten)]
        config: ConfigArg,
        /// The session the command's traffic belongs to (default: the implicit session).
        #[arg(long)]
        session: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// The PostgreSQL store of `[store] backend = "postgres"` (several replicas).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(clap::Subcommand)]
enum StoreCommand {
    /// Create or upgrade the schema (also done by `run`, under a lock).
    Migrate(ConfigArg),
    /// Copy the vaults and credentials of a file-backed config into the database (ids kept;
    /// existing vaults replaced; idempotent).
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The file-backed config whose [[vaults]] to import.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Print the stored vaults and credentials as TOML, without any secret value.
    Export(ConfigArg),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML configuration [default: config/keyswap.toml, or the embedded defaults if it is absent]
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `keyswap exec` shares its terminal with the command it runs: only warnings by default.
    let quiet = matches!(cli.command, Command::Exec { .. });
    init_tracing(cli.log_format, if quiet { "warn" } else { "info" });
    match cli.command {
        Command::Run(arg) => run(arg),
        Command::Check(arg) => check(arg),
        Command::Ca(arg) => ca(arg),
        Command::Env {
            config,
            session,
            proxy_url,
            ca_path,
            format,
        } => {
            let reach = keyswap::sandbox::Reach { proxy_url, ca_path };
            env(config, session.as_deref(), &reach, format)
        }
        Command::Store(command) => store(command),
        Command::Exec {
            config,
            session,
            command,
        } => exec(config, session, command),
    }
}

fn exec(arg: ConfigArg, session: Option<String>, command: Vec<std::ffi::OsString>) -> ExitCode {
    let (config, runtime) = match serving(&arg) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    match runtime.block_on(keyswap::exec::exec(config, session, command)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            error!("{e}");
            ExitCode::from(125)
        }
    }
}

fn store(command: StoreCommand) -> ExitCode {
    use keyswap::dbstore::commands;
    let arg = match &command {
        StoreCommand::Migrate(arg) | StoreCommand::Export(arg) => arg,
        StoreCommand::Import { config, .. } => config,
    };
    let config = match load(arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let done = runtime.block_on(async {
        match &command {
            StoreCommand::Migrate(_) => commands::migrate(&config)
                .await
                .map(|()| "the database schema is up to date".to_string()),
            StoreCommand::Export(_) => commands::export(&config).await,
            StoreCommand::Import { from, .. } => commands::import(&config, from)
                .await
                .map(|n| format!("imported {n} vault(s) from {}", from.display())),
        }
    });
    match done {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyswap: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            None
        }
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let mut filter =
        EnvFilter::try_from_env("KEYSWAP_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    // SECURITY: libraries that log what peers send, whatever KEYSWAP_LOG asks for: h2 prints
    // frames at debug (an upstream's GOAWAY debug data, which may reflect a secret), and notify
    // logs every file event at trace (a log file next to the config would feed itself).
    for cap in ["h2=info", "notify=info"] {
        if let Ok(directive) = cap.parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Colours only for a person at a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Loads the config: an explicit `--config` must exist; the default path falls back to the
/// embedded defaults when absent. Errors are printed as `file:line:column: message`.
fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    let (path, explicit) = match &arg.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(config::DEFAULT_PATH), false),
    };
    if !explicit && !path.exists() {
        info!(path = %path.display(), "no configuration file; running on the embedded defaults");
        return Ok(Config::embedded_defaults());
    }
    Config::load(&path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        ExitCode::FAILURE
    })
}

/// The secret-bearing files group or others can read, as `file:line:column: message` lines with
/// the `chmod` to run (SPEC §8). The config file's line points at its first literal secret.
fn exposed_files(config: &Config) -> Vec<String> {
    config
        .exposed_files()
        .into_iter()
        .map(|e| match &config.literal_secret {
            Some(at) if config.source.as_deref() == Some(e.path.as_path()) => format!(
                "{}:{}:{}: `{}` is given literally here, and {e}; or give secrets with `_env` / `_file` keys",
                e.path.display(),
                at.line,
                at.column,
                at.key
            ),
            _ => format!("{}:1:1: {e}", e.path.display()),
        })
        .collect()
}

/// The config and a runtime for a command that serves (`run`, `exec`).
fn serving(arg: &ConfigArg) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    let config = load(arg)?;
    // SECURITY: refused before anything binds or reads the CA key.
    let exposed = exposed_files(&config);
    if !exposed.is_empty() {
        for problem in exposed {
            error!("{problem}");
        }
        return Err(ExitCode::FAILURE);
    }
    let runtime = runtime().ok_or(ExitCode::FAILURE)?;
    Ok((config, runtime))
}

fn run(arg: ConfigArg) -> ExitCode {
    let (config, runtime) = match serving(&arg) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    match runtime.block_on(keyswap::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check(arg: ConfigArg) -> ExitCode {
    let config = match load(&arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // `check` reports what `run` would refuse, so an operator finds it before a deploy.
    let exposed = exposed_files(&config);
    if !exposed.is_empty() {
        for problem in exposed {
            eprintln!("{problem}");
        }
        return ExitCode::FAILURE;
    }
    let source = config
        .source
        .as_deref()
        .map_or("embedded defaults".into(), |p| p.display().to_string());
    // The CA files are opened as `run` would: half of a CA, an unreadable or invalid one fails
    // here, not at the deploy.
    let ca = match keyswap::ca::existing(&config.tls.ca_cert, &config.tls.ca_key) {
        Ok(Some(_)) => format!(
            "{} (and its key)",
            keyswap::ca::normalised(&config.tls.ca_cert).display()
        ),
        Ok(None) => format!(
            "none yet: `keyswap ca` or `run` creates {}",
            keyswap::ca::normalised(&config.tls.ca_cert).display()
        ),
        Err(e) => {
            eprintln!("{source}: [tls] ca_cert / ca_key: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The three types of the vault API always; keyswap's signing types when present.
    let mut counts: Vec<(&str, usize)> = ["environment_variable", "static_bearer", "mcp_oauth"]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    for c in config.credentials() {
        let kind = c.auth.type_name();
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    println!("{source}: ok");
    println!("vaults: {}", config.vaults.len());
    let split: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!(
        "credentials: {} ({})",
        counts.iter().map(|(_, n)| n).sum::<usize>(),
        split.join(", ")
    );
    println!("sessions: {}", config.sessions.len());
    println!("CA: {ca}");
    ExitCode::SUCCESS
}

fn ca_for(config: &Config) -> Result<CertificateAuthority, ExitCode> {
    CertificateAuthority::load_or_create(&config.tls.ca_cert, &config.tls.ca_key).map_err(|e| {
        eprintln!("keyswap: {e}");
        ExitCode::FAILURE
    })
}

fn ca(arg: ConfigArg) -> ExitCode {
    let config = match load(&arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let ca = match ca_for(&config) {
        Ok(ca) => ca,
        Err(code) => return code,
    };
    // The bundle a sandbox trusts is written beside the CA.
    if let Err(e) = keyswap::sandbox::write_bundle(&config, ca.cert_path()) {
        eprintln!("keyswap: {e}");
        return ExitCode::FAILURE;
    }
    println!("{}", keyswap::ca::normalised(ca.cert_path()).display());
    ExitCode::SUCCESS
}

fn env(
    arg: ConfigArg,
    session: Option<&str>,
    reach: &keyswap::sandbox::Reach,
    format: keyswap::sandbox::Format,
) -> ExitCode {
    let config = match load(&arg) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // With the database backend the credentials (and their placeholders) are stored there.
    let config = if config.store.backend == keyswap::config::Backend::Postgres {
        let Some(runtime) = runtime() else {
            return ExitCode::FAILURE;
        };
        match runtime.block_on(keyswap::dbstore::commands::with_stored_vaults(config)) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("keyswap: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        config
    };
    // Never creates a CA: a sandbox configured for a CA that `run` would create differently
    // would trust nothing.
    let ca_cert = keyswap::ca::normalised(&config.tls.ca_cert);
    match keyswap::sandbox::variables(&config, session, &ca_cert, reach) {
        Ok(vars) => {
            print!("{}", keyswap::sandbox::render(&vars, format));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyswap: {e}");
            ExitCode::FAILURE
        }
    }
}
