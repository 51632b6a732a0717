//! The command line: every command, option and help text.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// The exit codes, for `sdm --help` (the README has the same table).
pub const EXIT_CODES: &str = "\
Exit codes:
   0  success
   1  internal error
   2  usage: wrong command line, or SDM_HOME unusable
   3  not logged in (no agent, or no session): run `sdm login`
   4  not authenticated: no token, or token invalid, revoked or expired, account suspended
   5  forbidden (e.g. a service token on `sdm admin`)
   6  not found: no granted resource or open tunnel matches
   7  ambiguous: the name matches several resources (listed)
   8  the sdm API could not be reached
   9  no gateway could be reached
  10  the gateway could not reach the resource
  11  the local port is in use
  12  timed out
  13  the session or tunnel was closed meanwhile
  14  invalid argument, refused by the server or the agent
  15  not supported by this server (an older sdm-server)
  16  the agent could not be started or reached, or answered unexpectedly";

/// Reach databases and servers with a service account token.
///
/// `sdm login` starts a local agent that holds the session and its tunnels; `status`,
/// `connect`, `disconnect` and `logout` talk to it.
#[derive(Debug, Parser)]
#[command(
    name = "sdm",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// The agent's directory (socket, pid file, log). Default: ~/.sdm
    #[arg(long, global = true, env = "SDM_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in with a token and start the agent if none runs (returns once it is ready).
    ///
    /// The token comes from --token, else SDM_ADMIN_TOKEN, else SDM_SERVICE_TOKEN; it is
    /// passed to the agent over its socket and kept in memory only, so it can be dropped from
    /// the environment afterwards. Logging in again replaces the session (its tunnels close).
    /// When the organisation's auto-connect setting is on, the login then connects every
    /// granted resource that has a fixed port, on that port (`connected (auto)` in status);
    /// one that cannot be connected is reported without failing the login.
    Login(LoginArgs),
    /// End the session, close every tunnel and stop the agent.
    Logout,
    /// Show every granted resource and whether a tunnel to it is open.
    Status(JsonArg),
    /// Open a tunnel to a resource (exact name, else a unique substring), or to all of them.
    ///
    /// The tunnel listens on 127.0.0.1: on PORT if given, else on the port the admin fixed for
    /// the resource, else on a free port. Only the OS user running the agent may connect to it
    /// (others are refused) unless --allow-other-users is given. It lives in the agent until
    /// `sdm disconnect` or `sdm logout`.
    #[command(group(ArgGroup::new("target").required(true).args(["name", "all"])))]
    Connect(ConnectArgs),
    /// Close the tunnel to a resource, or every tunnel.
    #[command(group(ArgGroup::new("target").required(true).args(["name", "all"])))]
    Disconnect(DisconnectArgs),
    /// Exit 0 when the agent runs and is logged in; print details.
    Ready(JsonArg),
    /// Ask an agent's diagnostics listener (sdm listen --diag-listen) whether it is ready: exit
    /// 0 on a 200, else 16 with the failing checks. For a container's health check.
    Probe(ProbeArgs),
    /// Run the agent: in the foreground, or with --daemon in the background.
    ///
    /// With a token (--token, SDM_ADMIN_TOKEN or SDM_SERVICE_TOKEN) it logs in at once;
    /// otherwise it waits for `sdm login`. SIGTERM, SIGINT and SIGHUP stop it cleanly.
    Listen(ListenArgs),
    /// Run a command with tunnels open for exactly its life: sdm run NAME [NAME…] [--] COMMAND
    /// [ARGS…].
    ///
    /// Without `--`, the first word names the one resource and the rest is the command. The
    /// tunnels come from the agent when it runs logged in (those opened for the command are
    /// closed after it; open ones stay), else from a login of this process with the token in
    /// SDM_ADMIN_TOKEN or SDM_SERVICE_TOKEN; only this OS user may use them. The command gets
    /// SDM_<NAME>_HOST, _PORT and _ADDR per resource (name in capitals, other characters as _),
    /// PGHOST, PGPORT and PGSSLMODE=disable when exactly one resource is postgres, and {host},
    /// {port}, {addr} of the first resource in its arguments. Signals (INT, TERM, HUP, QUIT,
    /// USR1, USR2) are passed on; sdm run exits with the command's status (128 + N when signal N
    /// ended it; 127 when it is not found). An unknown or ambiguous resource fails before the
    /// command starts, with the usual exit code.
    Run(RunArgs),
    /// Run the agent as a systemd service that logs in at every start (as root).
    ///
    /// The token comes from SDM_SERVICE_TOKEN (or SDM_ADMIN_TOKEN) in the environment of the
    /// install, e.g. `sudo SDM_SERVICE_TOKEN=… sdm install`, and is written to /etc/sdm/sdm.env
    /// (root's, 0600); without one, an existing /etc/sdm/sdm.env is kept. The unit
    /// /etc/systemd/system/sdm.service runs `sdm listen` as --user (default: the user who ran
    /// sudo), whose `sdm status` then shows its tunnels. Auto-connect applies at each login.
    Install(InstallArgs),
    /// Stop and remove the service `sdm install` made, and its token file (as root).
    Uninstall(UninstallArgs),
    /// Print an OpenSSH `Host` block for each granted ssh resource that has a local port.
    ///
    /// Each block (`Host sdm-NAME`) points ssh at the resource's tunnel on 127.0.0.1 and pins
    /// the host key every gateway presents for it: the keys are written to known_hosts in the
    /// agent's directory (SDM_HOME), which the blocks name. Append the output to
    /// ~/.ssh/config, connect the resources (`sdm connect NAME`, or auto-connect), then `ssh
    /// sdm-NAME`. The gateway logs in to the server itself: no key or password of the server
    /// is needed here.
    SshConfig,
    /// Open a shell, or run COMMAND, on an ssh resource: sdm ssh NAME [COMMAND [ARGS…]].
    ///
    /// Connects the resource (as `sdm connect NAME` does, on a TCP port) unless it is
    /// connected, then runs the system's `ssh` against its tunnel with the gateway's host key
    /// pinned, passing COMMAND through. Exits with ssh's status.
    Ssh(SshArgs),
    /// Manage accounts, resources and grants (needs an admin token).
    Admin(Box<AdminArgs>),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// HOST:PORT (probes /readyz) or http://HOST:PORT/PATH (e.g. /livez).
    #[arg(value_name = "TARGET")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The token (prefer the environment: a command line is visible to other users).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Let every OS user on this machine use the tunnels this login opens (auto-connect).
    /// By default a tunnel serves only the user running the agent; unsafe on a shared host.
    #[arg(long)]
    pub allow_other_users: bool,
    /// Session-wide: `sdm connect` opens private Unix sockets instead of TCP ports unless it
    /// is given --tcp or a PORT (auto-connect keeps its fixed TCP ports).
    #[arg(long)]
    pub unix_socket: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Resource name or a unique part of it.
    pub name: Option<String>,
    /// Local port to listen on.
    #[arg(value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "all")]
    pub port: Option<u16>,
    /// Connect every granted resource not connected yet.
    #[arg(long)]
    pub all: bool,
    /// Let every OS user on this machine use the tunnel (the default: only the user running
    /// the agent; others are refused). Unsafe on a shared host: anyone there reaches the
    /// resource as this account.
    #[arg(long, conflicts_with = "same_user_only")]
    pub allow_other_users: bool,
    /// Only the OS user running the agent may use the tunnel; others are refused (the
    /// default, spelled out).
    #[arg(long)]
    pub same_user_only: bool,
    /// Listen on a Unix socket in a new private directory (mode 0700, removed with the
    /// tunnel; a postgres socket is named .s.PGSQL.5432 for libpq) instead of a TCP port.
    #[arg(long, conflicts_with_all = ["port", "tcp"])]
    pub unix_socket: bool,
    /// Listen on a TCP port even when `sdm login --unix-socket` made sockets the default.
    #[arg(long)]
    pub tcp: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// NAME [NAME…] [--] COMMAND [ARGS…]
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "NAME… [--] COMMAND"
    )]
    pub words: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Resource name or a unique part of it.
    pub name: String,
    /// The command to run on the server (default: a login shell), and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Resource name or a unique part of it.
    pub name: Option<String>,
    /// Close every tunnel.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Start the agent in the background and return once it is ready.
    #[arg(long)]
    pub daemon: bool,
    /// Log in with this token at start (prefer the environment).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Let every OS user on this machine use the tunnels this login opens (auto-connect).
    /// By default a tunnel serves only the user running the agent; unsafe on a shared host.
    #[arg(long)]
    pub allow_other_users: bool,
    /// Session-wide: tunnels listen on private Unix sockets unless a connect asks for TCP
    /// (as `sdm login --unix-socket`).
    #[arg(long)]
    pub unix_socket: bool,
    /// The log's lines as text, or as one JSON object per event (for log shippers). An agent
    /// that `sdm login` starts takes it from SDM_LOG_FORMAT.
    #[arg(long, value_enum, env = "SDM_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /livez, /readyz and /metrics over plain HTTP on this address (off by default).
    /// It has no authentication: keep it on loopback. An agent that `sdm login` starts takes
    /// it from SDM_DIAG_LISTEN.
    #[arg(long, value_name = "ADDR", env = "SDM_DIAG_LISTEN")]
    pub diag_listen: Option<SocketAddr>,
    /// Allow --diag-listen on an address other than loopback (127.0.0.0/8, ::1).
    #[arg(long, requires = "diag_listen")]
    pub diag_allow_remote: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The user the agent runs as (default: SUDO_USER, else root).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Write the unit and the token file under DIR (an image being built) instead of /, and
    /// run no systemctl.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Remove them from under DIR (as `install --root`) instead of /.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin token (default: SDM_ADMIN_TOKEN; prefer the environment).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Service accounts (and admins): create, list, suspend, unsuspend, delete, rotate.
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Datasources (databases).
    #[command(subcommand)]
    Datasources(DatasourcesCommand),
    /// Servers reached over SSH or raw TCP.
    #[command(subcommand)]
    Servers(ServersCommand),
    /// sdm's SSH certificate authority, which ssh servers may trust to let gateways log in.
    #[command(subcommand)]
    SshCa(SshCaCommand),
    /// Every resource: list or delete.
    #[command(subcommand)]
    Resources(ResourcesCommand),
    /// Grant a resource to an account.
    Grant(GrantArgs),
    /// Remove a grant.
    Revoke(GrantArgs),
    /// Standalone gateways (`sdm-server gateway`): create (prints its token once), list, delete.
    #[command(subcommand)]
    Gateways(GatewaysCommand),
    /// Organisation settings: show them, or turn auto-connect on login on or off.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// The connection audit trail.
    Audit(AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Create a service account; its token is printed once, alone on stdout.
    Create {
        /// Account name: 1 to 64 letters, digits, '.', '_' or '-'.
        name: String,
        /// Create an admin instead: its token runs `sdm admin` and signs in to the web console.
        #[arg(long)]
        admin: bool,
    },
    /// List every account; service accounts are marked `service`.
    List,
    /// Refuse the account's logins and connections until unsuspended.
    Suspend {
        /// Account name or id.
        name: String,
    },
    /// Let a suspended account in again.
    Unsuspend {
        /// Account name or id.
        name: String,
    },
    /// Delete the account with its tokens and grants.
    Delete {
        /// Account name or id.
        name: String,
    },
    /// Revoke the account's tokens and print a new one, once, alone on stdout.
    Rotate {
        /// Account name or id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasourcesCommand {
    /// Add a datasource.
    Add(DatasourceAddArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasourceKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("secret").required(true).args(["password", "password_stdin"])))]
pub struct DatasourceAddArgs {
    /// What it speaks.
    #[arg(value_enum)]
    pub kind: DatasourceKind,
    /// Resource name: 1 to 64 letters, digits, '.', '_' or '-'.
    pub name: String,
    /// Host name or IP address the gateway connects to.
    #[arg(long)]
    pub hostname: String,
    /// Port the gateway connects to.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Database name: the one clients get when they name none.
    #[arg(long)]
    pub database: String,
    /// Other databases clients may name, separated by commas (default: only --database; a
    /// client naming another is refused).
    #[arg(long, value_name = "DB,...", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// Let replication connections through (pg_basebackup, logical replication). They read
    /// every database of the server, whatever --database says. PostgreSQL only.
    #[arg(long)]
    pub allow_replication: bool,
    /// User the gateway logs in as.
    #[arg(long)]
    pub username: String,
    /// Password (stored encrypted; prefer --password-stdin: a command line is visible to
    /// other users).
    #[arg(long)]
    pub password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// TLS between the gateway and the database: disable (the default), require (encrypted,
    /// any certificate) or verify-full (the certificate must chain to --upstream-ca and name
    /// --hostname).
    #[arg(long, value_name = "MODE", value_parser = parse_tls_mode)]
    pub upstream_tls: Option<sdm_core::admin::TlsMode>,
    /// The CA certificate(s) (PEM file) that sign the database's certificate, for verify-full.
    #[arg(long, value_name = "PATH")]
    pub upstream_ca: Option<PathBuf>,
    #[command(flatten)]
    pub common: ResourceOptions,
}

/// `disable`, `require` or `verify-full`.
pub fn parse_tls_mode(text: &str) -> Result<sdm_core::admin::TlsMode, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a TLS mode: disable, require or verify-full"))
}

#[derive(Debug, Subcommand)]
pub enum ServersCommand {
    /// Add a server.
    Add(ServerAddArgs),
    /// Change how the gateway logs in to an ssh server, or forget its host key.
    Update(ServerUpdateArgs),
}

#[derive(Debug, Subcommand)]
pub enum SshCaCommand {
    /// Print the CA's public key line, for the `TrustedUserCAKeys` file of sshd_config.
    PublicKey,
}

/// How the gateway logs in to an ssh server.
#[derive(Debug, Args)]
pub struct SshLoginArgs {
    /// The OpenSSH private key (unencrypted) the gateway logs in with; stored encrypted, never
    /// shown again.
    #[arg(long, value_name = "PATH", conflicts_with = "certificate_authority")]
    pub key_file: Option<PathBuf>,
    /// Log in with a certificate from sdm's SSH CA, made for each connection and valid while
    /// its lease is; the server must trust the CA (`sdm admin ssh-ca public-key`).
    #[arg(long)]
    pub certificate_authority: bool,
    /// The server's host key line (`ssh-ed25519 AAAA…`, e.g. its
    /// /etc/ssh/ssh_host_ed25519_key.pub). Default: the key the first connection sees is
    /// recorded, and any other is refused afterwards.
    #[arg(long, value_name = "LINE")]
    pub host_key: Option<String>,
    /// Record what terminal sessions (those with a pty) show, as asciicast v2, in the audit
    /// trail; `sdm admin audit replay ID` plays them back. `--record-sessions=false` stops.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub record_sessions: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// An SSH server.
    Ssh,
    /// Any TCP service, passed through untouched.
    Tcp,
}

#[derive(Debug, Args)]
pub struct ServerAddArgs {
    /// What it speaks.
    #[arg(value_enum)]
    pub kind: ServerKind,
    /// Resource name: 1 to 64 letters, digits, '.', '_' or '-'.
    pub name: String,
    /// Host name or IP address the gateway connects to.
    #[arg(long)]
    pub hostname: String,
    /// Port the gateway connects to.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// ssh: the user the gateway logs in as.
    #[arg(long)]
    pub username: Option<String>,
    #[command(flatten)]
    pub ssh: SshLoginArgs,
    #[command(flatten)]
    pub common: ResourceOptions,
}

#[derive(Debug, Args)]
pub struct ServerUpdateArgs {
    /// Resource name or id.
    pub name: String,
    /// The user the gateway logs in as.
    #[arg(long)]
    pub username: Option<String>,
    #[command(flatten)]
    pub ssh: SshLoginArgs,
    /// Forget the server's recorded host key: the next connection records the key it sees
    /// (after the server was reinstalled).
    #[arg(long, conflicts_with = "host_key")]
    pub forget_host_key: bool,
}

#[derive(Debug, Args)]
pub struct ResourceOptions {
    /// A fixed local port for every client's tunnel.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port_override: Option<u16>,
    /// Tags: key=value pairs separated by commas.
    #[arg(long, value_name = "K=V,...", value_parser = parse_tags)]
    pub tags: Option<BTreeMap<String, String>>,
    /// One tag, taken whole: its value may hold commas (`--tag sdm.gateway=eu,us` pins the
    /// resource to gateways tagged eu or us). Repeat it for several.
    #[arg(long, value_name = "K=V", value_parser = parse_tag)]
    pub tag: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum ResourcesCommand {
    /// List every resource.
    List,
    /// Change a resource: what PostgreSQL clients may ask for through it, its local port.
    Update {
        /// Resource name or id.
        name: String,
        /// Databases clients may name besides the stored one, separated by commas; an empty
        /// value leaves only the stored one.
        #[arg(long, value_name = "DB,...", value_delimiter = ',')]
        databases: Option<Vec<String>>,
        /// Let replication connections through, or refuse them.
        #[arg(long, value_enum, value_name = "on|off")]
        replication: Option<OnOff>,
        /// Give it this local port (refused when another resource holds it); an assigned
        /// port given here becomes explicit and is never moved.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        port_override: Option<u16>,
        /// Take its explicit local port away (with port overrides on, it is assigned one from
        /// the range instead).
        #[arg(long, conflicts_with = "port_override")]
        clear_port_override: bool,
    },
    /// Delete a resource and its grants.
    Delete {
        /// Resource name or id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewaysCommand {
    /// Create a gateway identity; its token (for `sdm-server gateway`) is printed once, alone
    /// on stdout.
    Create {
        /// Gateway name: 1 to 64 letters, digits, '.', '_' or '-'.
        name: String,
        /// Tags it may serve under (resources pinned with `sdm.gateway`), separated by
        /// commas: key=value, or a bare key (`edge`), as `sdm-server gateway --tags` takes them.
        #[arg(long, value_name = "K[=V],...", value_parser = parse_gateway_tags)]
        tags: Option<BTreeMap<String, String>>,
    },
    /// List gateways: address, tags, last heartbeat, whether clients are offered it.
    List,
    /// Delete a gateway: its token is refused at once and clients are no longer offered it.
    Delete {
        /// Gateway name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Account name or id.
    pub account: String,
    /// Resource name or id.
    pub resource: String,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the organisation settings.
    Show,
    /// Port overrides: a local port for every resource, and connecting them all at login.
    ///
    /// With --assign-ports on, every resource gets a unique local port from --range when it is
    /// created, and every existing resource without one gets one now; `sdm status` shows it
    /// for every granted resource. Ports given with --port-override are kept and never shared:
    /// a resource asking for a port another holds is refused. A new --range moves only the
    /// assigned ports outside it; --regenerate assigns them all again, lowest first in name
    /// order. --assign-ports off takes back the assigned ports. A range with too few free
    /// ports is refused and nothing changes.
    ///
    /// With --auto-connect on, `sdm login` (the agent) connects every resource granted to the
    /// account that has a local port, on that port; resources without one are left for
    /// `sdm connect`. Agents read the setting when they log in.
    #[command(group(
        ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["auto_connect", "assign_ports", "range", "regenerate"])
    ))]
    PortOverrides {
        /// Turn automatic connection on login on or off.
        #[arg(long, value_enum)]
        auto_connect: Option<OnOff>,
        /// Give every resource a unique local port from the range (on), or take back the
        /// ports given so (off).
        #[arg(long, value_enum)]
        assign_ports: Option<OnOff>,
        /// The ports to assign from, FIRST-LAST within 1-65535 (default 20000-29999).
        #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
        range: Option<sdm_core::admin::PortRange>,
        /// Assign every assigned port again, lowest first in resource name order (explicit
        /// --port-override ports stay).
        #[arg(long)]
        regenerate: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    /// What to do with one connection's record; without one, list records.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only this account's connections (name or id).
    #[arg(long)]
    pub account: Option<String>,
    /// Only connections to this resource (name or id).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only connections started since then: Unix seconds, or an age such as 90s, 30m, 2h, 7d.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<Since>,
    /// At most this many records (1 to 1000; the server's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// The page older than this cursor (printed after a full page).
    #[arg(long, value_name = "CURSOR")]
    pub before: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Play back a recorded terminal session (ssh resources recording them) as it was shown,
    /// with its timing, escape sequences included.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The connection's audit record id (from `sdm admin audit`).
    pub id: String,
    /// Which of the connection's terminal sessions (its SSH channel); default: the first.
    #[arg(long)]
    pub channel: Option<u32>,
    /// Play this many times faster (0.5 plays at half speed).
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Pauses longer than this many seconds are shortened to it.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_speed)]
    pub idle_limit: f64,
    /// Print the asciicast v2 file instead (for `asciinema play` or another player).
    #[arg(long)]
    pub cast: bool,
}

/// A positive, finite number.
fn parse_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("{text:?} is not a number above 0")),
    }
}

/// `--since`: a point in time, or an age relative to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Unix seconds.
    At(i64),
    /// Seconds before now.
    Ago(i64),
}

impl Since {
    /// Unix seconds, given the time now.
    pub fn at(self, now: i64) -> i64 {
        match self {
            Since::At(t) => t,
            Since::Ago(secs) => now.saturating_sub(secs),
        }
    }
}

/// `1767225600` → at that time; `90s`, `30m`, `2h`, `7d` → that long ago.
pub fn parse_since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is neither Unix seconds nor an age such as 30m, 2h or 7d");
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Since::At).map_err(|_| bad());
    }
    let age = sdm_core::duration::parse(text).map_err(|_| bad())?;
    Ok(Since::Ago(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)))
}

/// `20000-29999` → that range of local ports.
pub fn parse_port_range(text: &str) -> Result<sdm_core::admin::PortRange, String> {
    text.parse()
}

/// `k=v,k2=v2` → a map; keys must be non-empty and unique.
pub fn parse_tags(text: &str) -> Result<BTreeMap<String, String>, sdm_core::tags::TagError> {
    sdm_core::tags::parse(text, sdm_core::tags::TagForm::Pairs)
}

/// `k=v`, taken whole (the value may hold commas).
pub fn parse_tag(text: &str) -> Result<(String, String), sdm_core::tags::TagError> {
    sdm_core::tags::parse_one(text, sdm_core::tags::TagForm::Pairs)
}

/// A gateway's tags: `k=v` or a bare `k`, separated by commas.
pub fn parse_gateway_tags(
    text: &str,
) -> Result<BTreeMap<String, String>, sdm_core::tags::TagError> {
    sdm_core::tags::parse(text, sdm_core::tags::TagForm::PairsOrNames)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tags_parse_and_bad_ones_are_refused() {
        let t = parse_tags("env=prod, team=data,,").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["env"], "prod");
        assert_eq!(parse_tags("a=").unwrap()["a"], "");
        assert!(parse_tags("novalue").is_err());
        assert!(parse_tags("=x").is_err());
        assert!(parse_tags("a=1,a=2").is_err());
    }

    #[test]
    fn since_is_a_time_or_an_age() {
        assert_eq!(parse_since("1767225600"), Ok(Since::At(1_767_225_600)));
        assert_eq!(parse_since("90s"), Ok(Since::Ago(90)));
        assert_eq!(parse_since("2h"), Ok(Since::Ago(7200)));
        assert_eq!(
            parse_since("7d").unwrap().at(1_000_000),
            1_000_000 - 604_800
        );
        for bad in ["", "h", "2w", "-5", "1.5h", "2hh"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connect_needs_a_name_or_all_but_not_both_with_a_port() {
        assert!(Cli::try_parse_from(["sdm", "connect"]).is_err());
        assert!(Cli::try_parse_from(["sdm", "connect", "pg", "5432"]).is_ok());
        assert!(Cli::try_parse_from(["sdm", "connect", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["sdm", "connect", "pg", "--all"]).is_err());
        assert!(Cli::try_parse_from(["sdm", "connect", "pg", "0"]).is_err());
        assert!(Cli::try_parse_from(["sdm", "disconnect"]).is_err());
    }

    #[test]
    fn ssh_commands_parse() {
        let parse = |words: &[&str]| Cli::try_parse_from(words.iter().copied());
        let Command::Ssh(args) = parse(&["sdm", "ssh", "web", "uname", "-a"])
            .unwrap()
            .command
        else {
            panic!("not sdm ssh");
        };
        assert_eq!(
            (args.name.as_str(), args.command),
            ("web", vec!["uname".into(), "-a".into()])
        );
        let Command::Ssh(args) = parse(&["sdm", "ssh", "web"]).unwrap().command else {
            panic!("not sdm ssh");
        };
        assert!(args.command.is_empty());
        assert!(parse(&["sdm", "ssh"]).is_err());
        assert!(matches!(
            parse(&["sdm", "ssh-config"]).unwrap().command,
            Command::SshConfig
        ));
        let admin = |words: &[&str]| {
            let mut all = vec!["sdm", "admin"];
            all.extend_from_slice(words);
            parse(&all).map(|cli| match cli.command {
                Command::Admin(args) => args.command,
                other => panic!("not admin: {other:?}"),
            })
        };
        assert!(matches!(
            admin(&["ssh-ca", "public-key"]).unwrap(),
            AdminCommand::SshCa(SshCaCommand::PublicKey)
        ));
        let add = [
            "servers",
            "add",
            "ssh",
            "web",
            "--hostname",
            "h",
            "--port",
            "22",
        ];
        let with = |extra: &[&str]| {
            let mut all = add.to_vec();
            all.extend_from_slice(extra);
            admin(&all)
        };
        let AdminCommand::Servers(ServersCommand::Add(a)) = with(&[
            "--username",
            "deploy",
            "--certificate-authority",
            "--host-key",
            "ssh-ed25519 AAAA",
            "--port-override",
            "20022",
        ])
        .unwrap() else {
            panic!("not servers add");
        };
        assert_eq!(a.kind, ServerKind::Ssh);
        assert_eq!(a.username.as_deref(), Some("deploy"));
        assert!(a.ssh.certificate_authority && a.ssh.key_file.is_none());
        assert_eq!(a.ssh.host_key.as_deref(), Some("ssh-ed25519 AAAA"));
        assert_eq!(a.common.port_override, Some(20022));
        // A key and the CA are one or the other.
        assert!(with(&["--key-file", "k", "--certificate-authority"]).is_err());
        let AdminCommand::Servers(ServersCommand::Update(u)) =
            admin(&["servers", "update", "web", "--forget-host-key"]).unwrap()
        else {
            panic!("not servers update");
        };
        assert!(u.forget_host_key);
        assert!(
            admin(&[
                "servers",
                "update",
                "web",
                "--forget-host-key",
                "--host-key",
                "x"
            ])
            .is_err()
        );
    }
}
