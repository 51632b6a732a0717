//! `login`, `logout`, `ready` and `listen`: the agent's life and its session.

use serde::Serialize;

use crate::agent::{self, InitialLogin, launch};
use crate::cli::{JsonArg, ListenArgs, LoginArgs};
use crate::client::{AgentClient, QUICK, SLOW};
use crate::exit::{CliError, Exit};
use crate::home::Home;
use crate::protocol::{AccountInfo, AgentInfo, AutoConnect, Reply, Request};
use crate::render::{errln, outln, print_json};

use super::unexpected;

/// The token from `--token`, else `SDM_ADMIN_TOKEN`, else `SDM_SERVICE_TOKEN`.
fn session_token(flag: Option<String>) -> Option<String> {
    flag.into_iter()
        .chain(
            sdm_core::TOKEN_ENV_VARS
                .iter()
                .filter_map(|name| std::env::var(name).ok()),
        )
        .map(|t| t.trim().to_owned())
        .find(|t| !t.is_empty())
}

fn api_url_override() -> Option<String> {
    std::env::var(sdm_core::API_URL_ENV_VAR)
        .ok()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
}

fn no_token() -> CliError {
    CliError::new(
        Exit::NotAuthenticated,
        "no token: pass --token, or set SDM_ADMIN_TOKEN or SDM_SERVICE_TOKEN",
    )
}

/// `sdm login`.
pub fn login(home: &Home, args: LoginArgs) -> Result<(), CliError> {
    let token = session_token(args.token).ok_or_else(no_token)?;
    let (before, started) = launch::ensure_running(home, &[])?;
    let LoginReply {
        agent,
        replaced,
        auto_connect,
    } = match send_login(home, token, args.allow_other_users, args.unix_socket) {
        Ok(done) => done,
        Err(e) => {
            if started {
                // Leave nothing behind that the failed login started.
                stop_quietly(home);
            }
            return Err(e);
        }
    };
    // Notices only once the login worked: a failure is one line.
    if started {
        eprintln!(
            "started the sdm agent (pid {}; log: {})",
            before.pid,
            home.log_file().display()
        );
    }
    if let Some(old) = &replaced {
        errln!(
            "replaced the session of {} (its tunnels were closed)",
            old.name
        );
    }
    auto_connect_notices(&auto_connect);
    if args.json {
        return print_json(&LoginJson {
            agent: &agent,
            auto_connect: &auto_connect,
        });
    }
    if let Some(session) = &agent.session {
        outln!(
            "logged in as {} ({}) at {}",
            session.account.name,
            account_kind(&session.account),
            session.api_url
        );
    }
    for t in &auto_connect.tunnels {
        outln!("auto-connected {} on {}", t.resource, t.local_address);
    }
    Ok(())
}

/// What `sdm login --json` prints: the agent (as `sdm ready --json` shows it) and what the
/// login connected on its own.
#[derive(Serialize)]
struct LoginJson<'a> {
    #[serde(flatten)]
    agent: &'a AgentInfo,
    auto_connect: &'a AutoConnect,
}

/// On stderr: what auto-connect could not connect (the login worked all the same), and which
/// resources it leaves alone for want of a fixed port.
fn auto_connect_notices(auto: &AutoConnect) {
    for t in &auto.tunnels {
        super::tunnels::warn_if_open_to_all(t);
    }
    for f in &auto.failures {
        errln!(
            "warning: auto-connect could not connect {}: {}",
            f.resource,
            f.error.message
        );
    }
    if let Some(e) = &auto.error {
        errln!(
            "warning: auto-connect could not list the granted resources, nothing was connected: {}",
            e.message
        );
    }
    if !auto.skipped.is_empty() {
        errln!(
            "not auto-connected (no fixed port): {}; `sdm connect NAME` opens them",
            auto.skipped.join(", ")
        );
    }
}

/// The agent's answer to a login.
struct LoginReply {
    agent: AgentInfo,
    replaced: Option<AccountInfo>,
    auto_connect: AutoConnect,
}

fn send_login(
    home: &Home,
    token: String,
    allow_other_users: bool,
    unix_socket: bool,
) -> Result<LoginReply, CliError> {
    let mut client = AgentClient::connect(home)?;
    let request = Request::Login {
        token,
        api_url: api_url_override(),
        allow_other_users,
        unix_socket,
    };
    match client.request(request, SLOW)? {
        Reply::LoggedIn {
            agent,
            replaced,
            auto_connect,
        } => Ok(LoginReply {
            agent,
            replaced,
            auto_connect,
        }),
        other => Err(unexpected(&other)),
    }
}

fn stop_quietly(home: &Home) {
    if let Ok(Some(mut client)) = AgentClient::try_connect(home)
        && client.request(Request::Logout, SLOW).is_ok()
    {
        let _ = client.wait_closed(QUICK);
    }
}

/// "service account" or "admin".
pub fn account_kind(account: &AccountInfo) -> &'static str {
    match account.kind {
        sdm_core::AccountKind::Service => "service account",
        sdm_core::AccountKind::Admin => "admin",
    }
}

/// `sdm logout`.
pub fn logout(home: &Home) -> Result<(), CliError> {
    let Some(mut client) = AgentClient::try_connect(home)? else {
        eprintln!(
            "not logged in: no sdm agent is running for {}",
            home.dir().display()
        );
        return Ok(());
    };
    let warning = match client.request(Request::Logout, SLOW)? {
        Reply::LoggedOut { warning } => warning,
        other => return Err(unexpected(&other)),
    };
    client.wait_closed(QUICK)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    outln!("logged out; the sdm agent stopped");
    Ok(())
}

/// What `sdm ready --json` prints.
#[derive(Serialize)]
struct Readiness<'a> {
    ready: bool,
    /// `not_running` or `not_logged_in` when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    home: &'a std::path::Path,
    agent: Option<AgentInfo>,
}

/// `sdm ready`.
pub fn ready(home: &Home, args: JsonArg) -> Result<(), CliError> {
    let agent = launch::ping(home)?;
    let (reason, error) = match &agent {
        None => (Some("not_running"), Some(crate::client::not_running(home))),
        Some(a) if a.session.is_none() => (
            Some("not_logged_in"),
            Some(CliError::new(
                Exit::NotLoggedIn,
                format!(
                    "not logged in: the sdm agent (pid {}) runs but has no session; run `sdm login`",
                    a.pid
                ),
            )),
        ),
        Some(_) => (None, None),
    };
    if args.json {
        print_json(&Readiness {
            ready: error.is_none(),
            reason,
            home: home.dir(),
            agent: agent.clone(),
        })?;
    } else if let Some(AgentInfo {
        pid,
        tunnels,
        session: Some(session),
        ..
    }) = &agent
    {
        outln!(
            "ready: logged in as {} ({}); agent pid {pid}, {tunnels} tunnel{} open",
            session.account.name,
            account_kind(&session.account),
            if *tunnels == 1 { "" } else { "s" }
        );
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `sdm listen`.
pub fn listen(home: &Home, args: ListenArgs) -> Result<(), CliError> {
    let token = session_token(args.token);
    if !args.daemon {
        let login = token.map(|token| InitialLogin {
            token,
            api_url: api_url_override(),
            allow_other_users: args.allow_other_users,
            unix_socket: args.unix_socket,
        });
        let diag = args.diag_listen.map(|addr| agent::DiagOptions {
            addr,
            allow_remote: args.diag_allow_remote,
        });
        return agent::run(home, login, diag);
    }
    // The background agent gets the diagnostics flags (never the token: that goes over the
    // socket).
    let mut passed = Vec::new();
    if let Some(addr) = args.diag_listen {
        passed.extend(["--diag-listen".to_owned(), addr.to_string()]);
    }
    if args.diag_allow_remote {
        passed.push("--diag-allow-remote".to_owned());
    }
    let (info, started) = launch::ensure_running(home, &passed)?;
    if started {
        eprintln!(
            "started the sdm agent (pid {}; log: {})",
            info.pid,
            home.log_file().display()
        );
    } else {
        eprintln!("an sdm agent is already running (pid {})", info.pid);
    }
    if let Some(token) = token {
        let reply = send_login(home, token, args.allow_other_users, args.unix_socket).inspect_err(
            |_| {
                if started {
                    stop_quietly(home);
                }
            },
        )?;
        if let Some(session) = reply.agent.session {
            errln!("logged in as {}", session.account.name);
        }
        for t in &reply.auto_connect.tunnels {
            errln!("auto-connected {} on {}", t.resource, t.local_address);
        }
        auto_connect_notices(&reply.auto_connect);
    }
    Ok(())
}
