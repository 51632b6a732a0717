//! `sdm run NAME [NAME…] [--] COMMAND [ARGS…]`: tunnels for exactly the life of one command.
//!
//! The tunnels come from the running agent when it is logged in (those `run` opened are closed
//! afterwards, those already open stay), else from a session of this process logged in with the
//! token in the environment. Every tunnel serves only this OS user. The command gets
//! `SDM_<NAME>_HOST`/`_PORT`/`_ADDR` for every resource, `PGHOST`/`PGPORT`/`PGSSLMODE` when
//! exactly one is a postgres resource, and `{host}`/`{port}`/`{addr}` of the first one in its
//! arguments. Its exit status is `sdm run`'s.

use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus};

use sdm_core::{ConnectOptions, ResourceKind, Tunnel, blocking};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::RunArgs;
use crate::client::{AgentClient, SLOW};
use crate::exit::{CliError, Exit};
use crate::home::Home;
use crate::protocol::{Reply, Request};

use super::unexpected;

/// Exit status when the command cannot be found (as shells do).
const NOT_FOUND: u8 = 127;
/// Exit status when the command exists but cannot be run (as shells do).
const CANNOT_RUN: u8 = 126;

/// Where one tunnel listens, as the command sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// The resource's name.
    resource: String,
    kind: ResourceKind,
    /// An IP address, or a Unix socket's directory (libpq's convention).
    host: String,
    /// The TCP port, or the number in a `.s.PGSQL.PORT` socket's name; `None` for another
    /// socket.
    port: Option<u16>,
    /// `host:port`, or the socket's path.
    addr: String,
}

impl Endpoint {
    /// From where a tunnel listens: `127.0.0.1:5432`, `[::1]:5432` or a socket path.
    fn new(resource: &str, kind: ResourceKind, local_address: &str) -> Endpoint {
        let (host, port) = match local_address.parse::<std::net::SocketAddr>() {
            Ok(a) => (a.ip().to_string(), Some(a.port())),
            Err(_) => {
                let path = Path::new(local_address);
                let dir = path.parent().map(|d| d.display().to_string());
                let port = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(".s.PGSQL."))
                    .and_then(|p| p.parse().ok());
                (dir.unwrap_or_default(), port)
            }
        };
        Endpoint {
            resource: resource.to_owned(),
            kind,
            host,
            port,
            addr: local_address.to_owned(),
        }
    }

    fn port_text(&self) -> String {
        self.port.map(|p| p.to_string()).unwrap_or_default()
    }
}

/// The tunnels of one run, and how to let go of them.
enum Tunnels {
    /// Opened in this process; they close when dropped.
    Own(blocking::Session, Vec<Tunnel>),
    /// The agent's: the names of those this run opened, to disconnect afterwards.
    Agent(AgentClient, Vec<String>),
}

impl Tunnels {
    /// Closes what this run opened. Failures are reported on stderr: the command has already
    /// run, and its status is what the caller asked for.
    fn release(self) {
        match self {
            Tunnels::Own(session, tunnels) => {
                drop(tunnels);
                if let Err(e) = session.logout() {
                    eprintln!(
                        "sdm: warning: logging out after the command: {}",
                        e.message()
                    );
                }
            }
            Tunnels::Agent(mut client, opened) => {
                for name in opened {
                    if let Err(e) = client.request(Request::Disconnect { name: name.clone() }, SLOW)
                    {
                        eprintln!(
                            "sdm: warning: cannot close the tunnel to {name}: {}",
                            e.line()
                        );
                    }
                }
            }
        }
    }
}

/// `sdm run`: returns the command's exit status, or the error that kept it from starting.
pub fn run(home: &Home, args: &RunArgs) -> Result<ExitCode, CliError> {
    let (names, command) = split(&args.words)?;
    let (tunnels, endpoints) = open(home, &names)?;
    let status = spawn_and_wait(&command, &endpoints);
    tunnels.release();
    status
}

/// NAME [NAME…] -- COMMAND [ARGS…], or NAME COMMAND [ARGS…] without `--`.
fn split(words: &[String]) -> Result<(Vec<String>, Vec<String>), CliError> {
    let (names, command) = match words.iter().position(|w| w == "--") {
        Some(at) => (words[..at].to_vec(), words[at + 1..].to_vec()),
        None => match words.split_first() {
            Some((name, command)) => (vec![name.clone()], command.to_vec()),
            None => (Vec::new(), Vec::new()),
        },
    };
    if names.is_empty() {
        return Err(CliError::new(
            Exit::Usage,
            "name a resource: sdm run NAME [NAME…] [--] COMMAND [ARGS…]",
        ));
    }
    if command.is_empty() {
        return Err(CliError::new(
            Exit::Usage,
            "name the command to run: sdm run NAME [NAME…] [--] COMMAND [ARGS…]",
        ));
    }
    Ok((names, command))
}

/// Opens a tunnel per name: through the agent when one runs with a session, else in this
/// process with the token in the environment. Nothing is left open when one fails.
fn open(home: &Home, names: &[String]) -> Result<(Tunnels, Vec<Endpoint>), CliError> {
    if let Some(client) = AgentClient::try_connect(home)? {
        match open_with_agent(client, names) {
            Err(e) if e.exit == Exit::NotLoggedIn => {}
            other => return other,
        }
    }
    let session = blocking::Session::from_env().map_err(|e| match e.kind() {
        sdm_core::ErrorKind::InvalidToken => CliError::new(
            Exit::NotAuthenticated,
            format!(
                "{}; set SDM_SERVICE_TOKEN (or log in with `sdm login` first)",
                e.message()
            ),
        ),
        _ => CliError::from(e),
    })?;
    let mut tunnels = Vec::new();
    let mut endpoints = Vec::new();
    for name in names {
        // Only this OS user may use the tunnel, as with `sdm connect`.
        match session.connect_with(name, ConnectOptions::default().same_user_only()) {
            Ok(t) => {
                let r = t.resource();
                endpoints.push(Endpoint::new(
                    &r.name,
                    r.kind.clone(),
                    &t.local_addr().to_string(),
                ));
                tunnels.push(t);
            }
            Err(e) => {
                Tunnels::Own(session, tunnels).release();
                return Err(CliError::from(e));
            }
        }
    }
    Ok((Tunnels::Own(session, tunnels), endpoints))
}

fn open_with_agent(
    mut client: AgentClient,
    names: &[String],
) -> Result<(Tunnels, Vec<Endpoint>), CliError> {
    let mut opened = Vec::new();
    let mut endpoints = Vec::new();
    for name in names {
        let request = Request::Connect {
            name: name.clone(),
            port: None,
            allow_other_users: false,
            unix_socket: None,
        };
        let reply = client.request(request, SLOW);
        let failure = match reply {
            Ok(Reply::Connected { tunnel, already }) => {
                if !already {
                    opened.push(tunnel.resource.clone());
                }
                endpoints.push(Endpoint::new(
                    &tunnel.resource,
                    tunnel.kind.clone(),
                    &tunnel.local_address,
                ));
                continue;
            }
            Ok(other) => unexpected(&other),
            Err(e) => e,
        };
        Tunnels::Agent(client, opened).release();
        return Err(failure);
    }
    Ok((Tunnels::Agent(client, opened), endpoints))
}

/// `SDM_<NAME>_…`: the resource name in capitals, anything but letters and digits as `_`.
fn env_prefix(resource: &str) -> String {
    let name: String = resource
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SDM_{name}")
}

/// The variables the command gets.
fn environment(endpoints: &[Endpoint]) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for e in endpoints {
        let prefix = env_prefix(&e.resource);
        vars.push((format!("{prefix}_HOST"), e.host.clone()));
        vars.push((format!("{prefix}_PORT"), e.port_text()));
        vars.push((format!("{prefix}_ADDR"), e.addr.clone()));
    }
    let postgres: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.kind == ResourceKind::Postgres)
        .collect();
    if let [pg] = postgres.as_slice() {
        vars.push(("PGHOST".into(), pg.host.clone()));
        vars.push(("PGPORT".into(), pg.port_text()));
        // The hop to the tunnel is local and the tunnel itself is TLS.
        vars.push(("PGSSLMODE".into(), "disable".into()));
    }
    vars
}

/// `{host}`, `{port}` and `{addr}` in an argument become the first tunnel's.
fn substitute(arg: &str, first: &Endpoint) -> String {
    arg.replace("{host}", &first.host)
        .replace("{port}", &first.port_text())
        .replace("{addr}", &first.addr)
}

fn spawn_and_wait(command: &[String], endpoints: &[Endpoint]) -> Result<ExitCode, CliError> {
    let (Some(program), Some(first)) = (command.first(), endpoints.first()) else {
        return Err(CliError::new(Exit::Usage, "nothing to run"));
    };
    let mut child = Command::new(substitute(program, first));
    child
        .args(command[1..].iter().map(|a| substitute(a, first)))
        .envs(environment(endpoints));
    run_to_end(program, child)
}

/// Runs `child` (the program `program`) to its end, passing signals on to it; its status as
/// `sdm run`'s (shared with `sdm ssh`).
pub(super) fn run_to_end(program: &str, mut child: Command) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        // Installed before the command starts, so that no signal meant for it is lost (and
        // none ends `sdm run` before the tunnels are closed).
        let mut signals = Forwarded::install()?;
        let child = match child.spawn() {
            Ok(child) => child,
            Err(e) => return Ok(ExitCode::from(spawn_failure(program, &e))),
        };
        let pid = child.id();
        let (done, mut waited) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut child = child;
            let _ = done.send(child.wait());
        });
        let status = loop {
            tokio::select! {
                status = &mut waited => break status,
                number = signals.next() => forward(pid, number),
            }
        };
        match status {
            Ok(Ok(status)) => Ok(exit_code(status)),
            Ok(Err(e)) => Err(CliError::internal(format!(
                "cannot wait for {program}: {e}"
            ))),
            Err(_) => Err(CliError::internal(format!("lost track of {program}"))),
        }
    })
}

/// The signals passed on to the command.
struct Forwarded {
    int: Signal,
    term: Signal,
    hup: Signal,
    quit: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Forwarded {
    fn install() -> Result<Forwarded, CliError> {
        let make = |kind: SignalKind| {
            signal(kind).map_err(|e| CliError::internal(format!("cannot handle signals: {e}")))
        };
        Ok(Forwarded {
            int: make(SignalKind::interrupt())?,
            term: make(SignalKind::terminate())?,
            hup: make(SignalKind::hangup())?,
            quit: make(SignalKind::quit())?,
            usr1: make(SignalKind::user_defined1())?,
            usr2: make(SignalKind::user_defined2())?,
        })
    }

    /// The number of the next signal received.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
            _ = self.quit.recv() => libc::SIGQUIT,
            _ = self.usr1.recv() => libc::SIGUSR1,
            _ = self.usr2.recv() => libc::SIGUSR2,
        }
    }
}

/// Passes a signal on to the command. SIGINT from a terminal already reached the command
/// (the terminal signals the whole foreground process group), so it is passed on only when
/// `sdm run` is not in a terminal's foreground (a `kill -INT` from a script or supervisor).
fn forward(pid: u32, number: i32) {
    if number == libc::SIGINT && in_terminal_foreground() {
        return;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory preconditions; the pid is our child's, which we have not
    // reaped yet (the waiting thread reaps it only once it exited).
    unsafe { libc::kill(pid, number) };
}

fn in_terminal_foreground() -> bool {
    // SAFETY: tcgetpgrp and getpgrp have no memory preconditions.
    unsafe {
        let foreground = libc::tcgetpgrp(libc::STDIN_FILENO);
        foreground > 0 && foreground == libc::getpgrp()
    }
}

/// The command's status as `sdm run`'s: its exit code, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(255)),
        _ => ExitCode::from(1),
    }
}

/// Says why the command did not start and returns the shell's status for it.
fn spawn_failure(program: &str, e: &std::io::Error) -> u8 {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            eprintln!("sdm: {program}: command not found (the tunnels are closed)");
            NOT_FOUND
        }
        _ => {
            eprintln!("sdm: cannot run {program}: {e} (the tunnels are closed)");
            CANNOT_RUN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_end_at_the_double_dash_or_after_the_first_word() {
        let (names, command) = split(&words(&["pg", "wh", "--", "psql", "-c", "x"])).unwrap();
        assert_eq!(
            (names, command),
            (words(&["pg", "wh"]), words(&["psql", "-c", "x"]))
        );
        let (names, command) = split(&words(&["pg", "psql", "--", "x"])).unwrap();
        assert_eq!((names, command), (words(&["pg", "psql"]), words(&["x"])));
        let (names, command) = split(&words(&["pg", "pg_dump", "-t", "t"])).unwrap();
        assert_eq!(
            (names, command),
            (words(&["pg"]), words(&["pg_dump", "-t", "t"]))
        );
        assert_eq!(split(&words(&["pg"])).unwrap_err().exit, Exit::Usage);
        assert_eq!(split(&words(&["pg", "--"])).unwrap_err().exit, Exit::Usage);
        assert_eq!(
            split(&words(&["--", "psql"])).unwrap_err().exit,
            Exit::Usage
        );
    }

    #[test]
    fn endpoints_and_their_environment() {
        let tcp = Endpoint::new("pgsql_1.31", ResourceKind::Postgres, "127.0.0.1:40001");
        let sock = Endpoint::new("cache", ResourceKind::Redis, "/run/sdm/x/socket");
        let pg_sock = Endpoint::new("pg", ResourceKind::Postgres, "/run/sdm/y/.s.PGSQL.5432");
        assert_eq!((tcp.host.as_str(), tcp.port), ("127.0.0.1", Some(40001)));
        assert_eq!((sock.host.as_str(), sock.port), ("/run/sdm/x", None));
        assert_eq!(
            (pg_sock.host.as_str(), pg_sock.port),
            ("/run/sdm/y", Some(5432))
        );
        let env = environment(&[tcp.clone(), sock]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SDM_PGSQL_1_31_PORT"), Some("40001"));
        assert_eq!(get("SDM_PGSQL_1_31_ADDR"), Some("127.0.0.1:40001"));
        assert_eq!(get("SDM_CACHE_PORT"), Some(""));
        assert_eq!(get("PGHOST"), Some("127.0.0.1"));
        assert_eq!(get("PGPORT"), Some("40001"));
        // Two postgres resources: which one PG* would name is not clear, so neither.
        let env = environment(&[tcp.clone(), pg_sock]);
        assert!(!env.iter().any(|(n, _)| n == "PGHOST"));
        assert_eq!(
            substitute("-h {host} -p {port} {addr}", &tcp),
            "-h 127.0.0.1 -p 40001 127.0.0.1:40001"
        );
    }
}
