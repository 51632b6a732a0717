//! `sdm-server`: the sdm control plane and gateway in one process.
//!
//! Exit codes: 0 after a clean stop, 1 when the server fails, 2 for a usage error.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use sdm_proto::error::one_line;
use sdm_server::config;
use sdm_server::control::sessions::DEFAULT_MAX_SESSIONS_PER_ACCOUNT;
use sdm_server::diag::{self, DiagArgs, Metrics, Probes};
use sdm_server::remote::{AuditArgs, parse_duration};
use sdm_server::{
    DEFAULT_API_CONNECTIONS_PER_SOURCE, LEASE_TTL_RANGE, RunningServer, Server, SessionPolicy,
};

#[derive(Parser)]
#[command(
    name = "sdm-server",
    version,
    about = "The sdm control plane and gateway: service accounts, grants, leases, tunnels."
)]
struct Cli {
    /// Log filter, e.g. `info` or `sdm_server=debug` (overrides RUST_LOG; default: info).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    /// Log lines as text, or as one JSON object per event (for log shippers).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SDM_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Read flags from this TOML file too: a table per subcommand ([serve], [gateway], …) of
    /// long flag names, `log` and `log-format` at the top. A flag on the command line or its
    /// environment variable wins over the file.
    #[arg(long, global = true, value_name = "FILE", env = "SDM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane and one gateway on an embedded SQLite database (or on PostgreSQL
    /// with --database-url).
    Serve(ServeArgs),
    /// Copy an installation's state from its SQLite database into an empty PostgreSQL database.
    Migrate(MigrateArgs),
    /// Run a standalone gateway with no database, attached to one or more control planes.
    Gateway(sdm_server::remote::GatewayArgs),
    /// Copy a SQLite installation's database to a new file, consistently, while it serves.
    Backup(BackupArgs),
    /// Check a configuration file without starting anything.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask a diagnostics listener (--diag-listen) whether its process is ready: exit 0 on a 200,
    /// else 1 with the answer. For a container's health check.
    Probe(ProbeArgs),
}

#[derive(Args)]
struct ProbeArgs {
    /// HOST:PORT (probes /readyz) or http://HOST:PORT/PATH (e.g. /livez).
    #[arg(value_name = "TARGET")]
    target: String,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check every table and key of --config FILE: exit 0 and list the tables, or name what is
    /// wrong and exit 2.
    Check,
}

#[derive(Args)]
struct BackupArgs {
    /// The installation's data directory (holding sdm.db).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The backup file to create (mode 0600); an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Directory for keys and the database (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Keep the state in PostgreSQL (postgres://user:password@host:port/dbname) instead of
    /// DIR/sdm.db; keys still come from DIR. Add ?sslmode=verify-full&sslrootcert=CA.pem to have
    /// the database's certificate checked. Prefer the environment variable: a command line is
    /// visible to other users.
    #[arg(
        long,
        value_name = "URL",
        env = "SDM_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Address of the HTTPS API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Address of the gateway.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8444")]
    gateway_listen: SocketAddr,
    /// URL clients reach the API at (https://host:port), when it differs from --listen.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Address clients reach the gateway at (host:port), when it differs from --gateway-listen.
    #[arg(long, value_name = "HOST:PORT")]
    gateway_public_addr: Option<String>,
    /// Also write the first admin token to this new file (mode 0600) when it is created.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Write the first admin token only to --admin-token-file, not to stdout: for a service
    /// whose stdout is kept as a log (a container, the journal).
    #[arg(long, requires = "admin_token_file")]
    admin_token_file_only: bool,
    /// Lease lifetime: seconds, or a number with s, m or h (2 s to 24 h).
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl, default_value = "300")]
    lease_ttl: Duration,
    /// Name this process's gateway registers under; give each control plane sharing one
    /// database its own.
    #[arg(long, value_name = "NAME", default_value = "embedded")]
    gateway_name: String,
    /// What to do when the audit trail cannot be written.
    #[command(flatten)]
    audit: AuditArgs,
    /// At SIGTERM, how long the gateway's open connections may run on before they are closed
    /// with the protocol's message (seconds, or a number with s, m or h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10")]
    drain_timeout: Duration,
    /// Most connections one client address (an IPv6 /64) may hold on the API at once; raise it
    /// when many clients reach the API through one address (NAT, a proxy).
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_API_CONNECTIONS_PER_SOURCE,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000)
    )]
    api_connections_per_source: usize,
    /// Most open sessions per account; a login beyond it ends the account's oldest sessions.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = DEFAULT_MAX_SESSIONS_PER_ACCOUNT
    )]
    max_sessions_per_account: u32,
    /// End a session in which no lease was asked for this long and no connection is open
    /// (seconds, or a number with s, m, h or d; at least the lease lifetime).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    session_idle_timeout: Duration,
    /// End every session this long after its login (at least the lease lifetime).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    session_max_age: Duration,
    /// Remove ended sessions this long after their end.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    session_retention: Duration,
    /// Sign a web console session out after this long without a page load.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30m")]
    console_idle_timeout: Duration,
    /// Sign a web console session out this long after its sign-in, however busy.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "12h")]
    console_max_age: Duration,
    /// Remove audit records of connections that ended this long ago, with their queries (e.g.
    /// 90d; default: keep the whole trail). Open connections' records are always kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_retention)]
    audit_retention: Option<Duration>,
    /// The diagnostics listener.
    #[command(flatten)]
    diag: DiagArgs,
}

#[derive(Args)]
struct MigrateArgs {
    /// The SQLite database: sqlite:PATH, PATH being sdm.db or the data directory holding it.
    #[arg(long, value_name = "sqlite:PATH")]
    from: String,
    /// The PostgreSQL database (postgres://user:password@host:port/dbname).
    #[arg(
        long,
        value_name = "URL",
        env = "SDM_DATABASE_URL",
        hide_env_values = true
    )]
    to: String,
    /// Replace what the PostgreSQL database holds instead of refusing a non-empty one.
    #[arg(long)]
    force: bool,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text).map_err(|e| e.to_string())?;
    let (min, max) = LEASE_TTL_RANGE;
    if ttl < min || ttl > max {
        return Err(format!(
            "{} s is out of range ({} s to {} s)",
            ttl.as_secs(),
            min.as_secs(),
            max.as_secs()
        ));
    }
    Ok(ttl)
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    let retention = parse_duration(text).map_err(|e| e.to_string())?;
    if retention.is_zero() {
        // Zero would empty the trail of everything that ended; leave the flag out to keep it.
        return Err("the audit retention must be at least 1 s".into());
    }
    Ok(retention)
}

/// The command line's definition, every flag also read from its environment variable.
fn command() -> clap::Command {
    config::with_env_vars(Cli::command())
}

fn main() -> ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let file = config::config_path(&argv, "SDM_CONFIG");
    let checking = config::is_check(&command(), &argv);
    if let (Some(path), false) = (&file, checking) {
        match config::apply(&command(), argv, path) {
            Ok(with_file) => argv = with_file,
            Err(e) => {
                eprintln!("sdm-server: error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let parsed = command()
        .try_get_matches_from(argv)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // A value the file gave is named with its file and table, as `config check` does.
            if let (Some(path), false) = (&file, checking)
                && let Err(in_file) = config::check(&command(), path)
            {
                eprintln!("sdm-server: error: {in_file}");
                return ExitCode::from(2);
            }
            // Help and version exit 0; usage errors exit 2.
            e.exit()
        }
    };
    let filter = match &cli.log {
        Some(f) => tracing_subscriber::EnvFilter::try_new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .or_else(|_| tracing_subscriber::EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sdm-server: invalid log filter: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields beside the message at the top level, as log shippers index them.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdm-server: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Both servers hold a descriptor per API connection and two per gateway connection.
    if matches!(cli.command, Command::Serve(_) | Command::Gateway(_)) {
        sdm_server::raise_open_file_limit();
    }
    let log_format = cli.log_format;
    let outcome = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Migrate(args) => runtime.block_on(migrate(args)),
        Command::Gateway(args) => runtime.block_on(gateway(args)),
        Command::Backup(args) => backup(&args),
        Command::Config(ConfigCommand::Check) => return check_config(cli.config.as_deref()),
        Command::Probe(args) => return probe(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            match log_format {
                LogFormat::Text => eprintln!("sdm-server: error: {message}"),
                // Whoever reads a JSON log reads the reason it stopped there too.
                LogFormat::Json => tracing::error!(error = %message, "sdm-server stopped"),
            }
            ExitCode::from(1)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let mut signals = Signals::install()?;
    // Refuse early, before creating anything, when a fresh installation could not write its
    // token where asked.
    if let Some(path) = &args.admin_token_file {
        // With PostgreSQL, whether the installation is new is known only once connected.
        let fresh = args.database_url.is_none() && !args.data_dir.join("sdm.db").exists();
        if fresh && path.exists() {
            return Err(format!(
                "--admin-token-file {} already exists; remove it or choose another path",
                path.display()
            ));
        }
    }
    let diag = start_diag(&args.diag, "keys: not loaded yet (the server is starting)").await?;
    let mut builder = Server::builder()
        .data_dir(&args.data_dir)
        .listen(args.listen)
        .gateway_listen(args.gateway_listen)
        .lease_ttl(args.lease_ttl)
        .gateway_name(args.gateway_name.clone())
        .audit_policy(args.audit.policy())
        .gateway_drain(args.drain_timeout)
        .api_connections_per_source(args.api_connections_per_source)
        .audit_retention(args.audit_retention)
        .session_policy(SessionPolicy {
            max_per_account: args.max_sessions_per_account,
            idle_timeout: args.session_idle_timeout,
            max_age: args.session_max_age,
            retention: args.session_retention,
            console_idle_timeout: args.console_idle_timeout,
            console_max_age: args.console_max_age,
        });
    if let Some(url) = &args.public_url {
        builder = builder.public_url(url.clone());
    }
    if let Some(url) = &args.database_url {
        builder = builder.database_url(url);
    }
    if let Some(addr) = &args.gateway_public_addr {
        builder = builder.gateway_public_addr(addr.clone());
    }
    if let Some(diag) = &diag {
        builder = builder.metrics(&diag.metrics);
    }
    let server = builder.start().await.map_err(|e| one_line(&e))?;
    if let Some(diag) = &diag {
        diag.probes.running(server.readiness());
    }
    let fingerprint: String = server
        .ca_fingerprint()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tracing::info!(ca_fingerprint = %fingerprint, "clients pin this CA (tokens carry it)");
    if let Some(token) = server.admin_token() {
        // --admin-token-file-only requires --admin-token-file.
        let file_only = args.admin_token_file_only;
        // A warning, so that it shows at the default filter and in either log format.
        if file_only {
            tracing::warn!(
                "the first admin account's token is in the file only; it will not be shown \
                 again, so store it now (e.g. SDM_ADMIN_TOKEN in a secret store) and delete the \
                 file"
            );
        } else {
            tracing::warn!(
                "the first admin account's token is printed on stdout; it will not be shown \
                 again, so store it now (e.g. SDM_ADMIN_TOKEN in a secret store)"
            );
        }
        let written = args
            .admin_token_file
            .as_deref()
            .map(|path| write_token_file(path, token));
        // A file that could not be written must not lose the only admin token: it is then
        // printed even with --admin-token-file-only, and the error says so.
        let failed = matches!(written, Some(Err(_)));
        if !file_only || failed {
            println!("{token}");
            let _ = std::io::stdout().flush();
        }
        if let Some(Err(e)) = written {
            server.shutdown().await;
            return Err(e);
        }
    }
    signals.recv().await;
    if let Some(diag) = &diag {
        diag.probes.stopping();
    }
    server_shutdown(server).await;
    Ok(())
}

async fn gateway(args: sdm_server::remote::GatewayArgs) -> Result<(), String> {
    use sdm_server::remote::StandaloneGateway;
    let mut signals = Signals::install()?;
    let diag_args = args.diag.clone();
    let mut config = args.into_config()?;
    let diag = start_diag(
        &diag_args,
        "registration: not registered with a control plane yet (the gateway is starting)",
    )
    .await?;
    if let Some(diag) = &diag {
        config = config.metrics(&diag.metrics);
    }
    let gateway = tokio::select! {
        started = StandaloneGateway::start(config) => started.map_err(|e| one_line(&e))?,
        () = signals.recv() => return Ok(()),
    };
    if let Some(diag) = &diag {
        diag.probes.running(gateway.readiness());
    }
    signals.recv().await;
    if let Some(diag) = &diag {
        diag.probes.stopping();
    }
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}

/// A running diagnostics listener; stopped when dropped.
struct Diag {
    metrics: Arc<Metrics>,
    probes: Arc<Probes>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Diag {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds and serves the diagnostics listener if asked; `/readyz` fails with `starting` until
/// the server runs.
async fn start_diag(args: &DiagArgs, starting: &str) -> Result<Option<Diag>, String> {
    let Some(addr) = args.diag_listen else {
        return Ok(None);
    };
    let listener = diag::bind(addr, args.diag_allow_remote)
        .await
        .map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let probes = Probes::new(metrics.registry(), starting);
    let task = diag::serve(listener, probes.clone());
    Ok(Some(Diag {
        metrics,
        probes,
        task,
    }))
}

async fn migrate(args: MigrateArgs) -> Result<(), String> {
    let migration = sdm_server::migrate::Migration::parse(&args.from, &args.to, args.force)
        .map_err(|e| one_line(&e))?;
    let started = std::time::Instant::now();
    let counts = migration.run().await.map_err(|e| one_line(&e))?;
    println!(
        "copied {counts} from {} to {} in {:.1} s",
        migration.source().display(),
        migration.target(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "sdm-server: next, start the control plane on PostgreSQL with the same keys: \
         sdm-server serve --data-dir DIR --database-url URL (DIR holding this installation's \
         ca.pem, ca.key, lease.key, ssh_ca.key and secret.key, or SDM_SECRET_KEY set)"
    );
    Ok(())
}

/// How long a probe waits for the listener, connecting and answering each.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn probe(args: &ProbeArgs) -> ExitCode {
    match sdm_diag::probe(&args.target, PROBE_TIMEOUT) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e @ sdm_diag::ProbeError::BadUrl(_)) => {
            eprintln!("sdm-server: error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("sdm-server: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn check_config(file: Option<&Path>) -> ExitCode {
    let Some(file) = file else {
        eprintln!("sdm-server: error: name the file: sdm-server config check --config FILE");
        return ExitCode::from(2);
    };
    match config::check(&command(), file) {
        Ok(tables) => {
            let tables: Vec<String> = tables.iter().map(|t| format!("[{t}]")).collect();
            println!("{}: ok ({})", file.display(), tables.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sdm-server: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn backup(args: &BackupArgs) -> Result<(), String> {
    use sdm_server::control::store::sqlite::{FILE, backup::backup};
    let started = std::time::Instant::now();
    let report = backup(&args.data_dir.join(FILE), &args.to).map_err(|e| one_line(&e))?;
    println!(
        "backed up {} accounts, {} resources and {} audited connections to {} ({} bytes) in {:.1} s",
        report.accounts,
        report.resources,
        report.audit_records,
        args.to.display(),
        report.bytes,
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "sdm-server: the backup holds no keys; keep ca.pem, ca.key, lease.key, ssh_ca.key and \
         secret.key (or SDM_SECRET_KEY) backed up apart, or the backup cannot be used"
    );
    Ok(())
}

async fn server_shutdown(server: RunningServer) {
    tracing::info!("shutting down");
    server.shutdown().await;
}

fn write_token_file(path: &Path, token: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| {
        format!(
            "cannot write the admin token to {}: {e} (the token was printed on stdout)",
            path.display()
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    tracing::info!(path = %path.display(), "wrote the admin token");
    Ok(())
}

/// SIGTERM and SIGINT, listened for from before the server starts so that a signal during
/// start-up stops it cleanly too.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())
                .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?,
            interrupt: signal(SignalKind::interrupt())
                .map_err(|e| format!("cannot listen for SIGINT: {e}"))?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_ttl("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_ttl("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "abc", "5d", "1", "25h", "-5"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
