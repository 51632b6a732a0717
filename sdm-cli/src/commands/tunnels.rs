//! `status`, `connect` and `disconnect`: requests to the running agent.

use serde::Serialize;

use crate::cli::{ConnectArgs, DisconnectArgs, JsonArg};
use crate::client::{AgentClient, SLOW, error_from_reply};
use crate::exit::{CliError, Exit};
use crate::home::Home;
use crate::protocol::{Reply, Request, TunnelInfo};
use crate::render::{errln, outln, print_json, print_raw};

use super::unexpected;

/// `sdm status`. When the control plane cannot be reached, the agent answers from what it holds
/// (its tunnels keep working on their current leases): the table or JSON is printed, then the
/// command fails with exit 8 (`api_unreachable`) saying so.
pub fn status(home: &Home, args: JsonArg) -> Result<(), CliError> {
    let mut client = AgentClient::connect(home)?;
    match client.request(Request::Status, SLOW)? {
        Reply::Status { status, table } => {
            let unreachable = status
                .control_plane_unreachable
                .as_ref()
                .map(|u| CliError::new(Exit::ApiUnreachable, u.message.clone()));
            if args.json {
                print_json(&status)?;
                return unreachable.map_or(Ok(()), Err);
            }
            print_raw(&table);
            // The table says `failed (auto)`; the reason goes to stderr, the table stays a table.
            for r in &status.resources {
                if let Some(e) = &r.auto_error {
                    errln!(
                        "warning: auto-connect at login could not connect {}: {}; `sdm connect {}` \
                         tries again",
                        r.name,
                        e.message,
                        r.name
                    );
                }
            }
            unreachable.map_or(Ok(()), Err)
        }
        other => Err(unexpected(&other)),
    }
}

/// What `sdm connect NAME --json` prints.
#[derive(Serialize)]
struct Connected<'a> {
    #[serde(flatten)]
    tunnel: &'a TunnelInfo,
    already: bool,
}

/// `sdm connect`.
pub fn connect(home: &Home, args: ConnectArgs) -> Result<(), CliError> {
    let mut client = AgentClient::connect(home)?;
    // Neither flag: the login's choice (`sdm login --unix-socket`), else TCP.
    let unix_socket = match (args.unix_socket, args.tcp) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let name = match (args.all, args.name) {
        (false, Some(name)) => name,
        _ => {
            return connect_all(&mut client, args.json, args.allow_other_users, unix_socket);
        }
    };
    let request = Request::Connect {
        name,
        port: args.port,
        allow_other_users: args.allow_other_users,
        unix_socket,
    };
    match client.request(request, SLOW)? {
        Reply::Connected { tunnel, already } => {
            warn_if_open_to_all(&tunnel);
            if args.json {
                return print_json(&Connected {
                    tunnel: &tunnel,
                    already,
                });
            }
            if already {
                outln!(
                    "{} is already connected on {}",
                    tunnel.resource,
                    tunnel.local_address
                );
            } else {
                outln!("connected {} on {}", tunnel.resource, tunnel.local_address);
            }
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

/// On stderr, for a tunnel opened with `--allow-other-users`.
pub fn warn_if_open_to_all(tunnel: &TunnelInfo) {
    if !tunnel.owner_only {
        eprintln!(
            "warning: every OS user on this machine can use the tunnel to {} on {} (as this \
             account); unsafe on a shared host",
            tunnel.resource, tunnel.local_address
        );
    }
}

fn connect_all(
    client: &mut AgentClient,
    json: bool,
    allow_other_users: bool,
    unix_socket: Option<bool>,
) -> Result<(), CliError> {
    let request = Request::ConnectAll {
        allow_other_users,
        unix_socket,
    };
    let (tunnels, failures) = match client.request(request, SLOW)? {
        Reply::ConnectedAll { tunnels, failures } => (tunnels, failures),
        other => return Err(unexpected(&other)),
    };
    for t in &tunnels {
        warn_if_open_to_all(t);
    }
    if json {
        print_json(&serde_json::json!({ "tunnels": tunnels, "failures": failures }))?;
    } else {
        for t in &tunnels {
            outln!("{} connected on {}", t.resource, t.local_address);
        }
        if tunnels.is_empty() && failures.is_empty() {
            outln!("no resources are granted to this account");
        }
    }
    // One line per resource that failed; the exit code is the first failure's.
    for f in &failures {
        errln!("sdm: cannot connect {}: {}", f.resource, f.error.message);
    }
    match failures.first() {
        Some(f) => Err(CliError {
            message: String::new(),
            ..error_from_reply(&f.error)
        }),
        None => Ok(()),
    }
}

/// `sdm disconnect`.
pub fn disconnect(home: &Home, args: DisconnectArgs) -> Result<(), CliError> {
    let mut client = AgentClient::connect(home)?;
    let request = match (args.all, args.name) {
        (false, Some(name)) => Request::Disconnect { name },
        _ => Request::DisconnectAll,
    };
    let resources = match client.request(request, SLOW)? {
        Reply::Disconnected { resources } => resources,
        other => return Err(unexpected(&other)),
    };
    if args.json {
        return print_json(&serde_json::json!({ "disconnected": resources }));
    }
    if resources.is_empty() {
        outln!("no tunnels were open");
    } else {
        outln!("disconnected {}", resources.join(", "));
    }
    Ok(())
}
