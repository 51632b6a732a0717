//! The agent protocol: what `sdm` commands and the agent say over `SDM_HOME/agent.sock`.
//!
//! Line-delimited JSON (`README.md`, "Agent protocol"): the client writes one request object
//! per line, the agent answers each with one reply object on one line, in order. A line is at
//! most [`MAX_LINE`] bytes. Unknown fields are ignored so that either side may add some.

use std::collections::BTreeMap;

use sdm_core::{AccountKind, ResourceKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version both sides must speak; a request of another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest line either side reads.
pub const MAX_LINE: usize = 1024 * 1024;

/// One request line: `{"v":1,"op":"status"}`.
#[derive(Serialize, Deserialize)]
pub struct RequestLine {
    /// [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// What a command asks of the agent.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the agent there, and who is logged in? → [`Reply::Agent`].
    Ping,
    /// Log in with this token, replacing the current session if any → [`Reply::LoggedIn`].
    Login {
        /// The service account (or admin) token. Held in memory only.
        token: String,
        /// Overrides the control plane URL the token carries (`SDM_API_URL` of the caller).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_url: Option<String>,
        /// Let every OS user on the machine use the tunnels auto-connect opens; default: only the agent's user.
        #[serde(default, skip_serializing_if = "is_false")]
        allow_other_users: bool,
        /// The session's tunnels listen on private Unix sockets unless a connect asks for TCP
        /// (auto-connect keeps its fixed TCP ports).
        #[serde(default, skip_serializing_if = "is_false")]
        unix_socket: bool,
    },
    /// Every granted resource and its state → [`Reply::Status`].
    Status,
    /// Open a tunnel (or report the open one) → [`Reply::Connected`].
    Connect {
        /// Exact name or id, else a unique substring.
        name: String,
        /// Local port; default: the resource's fixed port, else a free one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// Let every OS user on the machine use the tunnel; default: only the agent's user.
        #[serde(default, skip_serializing_if = "is_false")]
        allow_other_users: bool,
        /// A private Unix socket (true) or a TCP port (false); default: the login's choice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unix_socket: Option<bool>,
    },
    /// Open a tunnel to every granted resource not yet connected → [`Reply::ConnectedAll`].
    ConnectAll {
        /// Let every OS user on the machine use the new tunnels; default: only the agent's user.
        #[serde(default, skip_serializing_if = "is_false")]
        allow_other_users: bool,
        /// Private Unix sockets (true) or TCP ports (false); default: the login's choice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unix_socket: Option<bool>,
    },
    /// Close the tunnel to a connected resource → [`Reply::Disconnected`].
    Disconnect {
        /// Exact name or id, else a unique substring among the connected resources.
        name: String,
    },
    /// Close every tunnel → [`Reply::Disconnected`].
    DisconnectAll,
    /// End the session on the server, close every tunnel and stop the agent →
    /// [`Reply::LoggedOut`], sent once the socket is removed; the agent then exits.
    Logout,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Login {
                api_url,
                allow_other_users,
                unix_socket,
                ..
            } => f
                .debug_struct("Login")
                .field("token", &"<redacted>")
                .field("api_url", api_url)
                .field("allow_other_users", allow_other_users)
                .field("unix_socket", unix_socket)
                .finish(),
            Request::Ping => f.write_str("Ping"),
            Request::Status => f.write_str("Status"),
            Request::Connect {
                name,
                port,
                allow_other_users,
                unix_socket,
            } => f
                .debug_struct("Connect")
                .field("name", name)
                .field("port", port)
                .field("allow_other_users", allow_other_users)
                .field("unix_socket", unix_socket)
                .finish(),
            Request::ConnectAll {
                allow_other_users,
                unix_socket,
            } => f
                .debug_struct("ConnectAll")
                .field("allow_other_users", allow_other_users)
                .field("unix_socket", unix_socket)
                .finish(),
            Request::Disconnect { name } => {
                f.debug_struct("Disconnect").field("name", name).finish()
            }
            Request::DisconnectAll => f.write_str("DisconnectAll"),
            Request::Logout => f.write_str("Logout"),
        }
    }
}

/// The agent's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// To [`Request::Ping`].
    Agent(AgentInfo),
    /// To [`Request::Login`].
    LoggedIn {
        /// The agent, now logged in.
        agent: AgentInfo,
        /// The account of the session this login replaced, if there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced: Option<AccountInfo>,
        /// What the login connected on its own (the organisation's auto-connect setting).
        #[serde(default)]
        auto_connect: AutoConnect,
    },
    /// To [`Request::Status`].
    Status {
        /// The data.
        status: StatusReport,
        /// The table of the service-account guide, as `sdm status` prints it.
        table: String,
    },
    /// To [`Request::Connect`].
    Connected {
        /// The tunnel.
        tunnel: TunnelInfo,
        /// True when the tunnel was already open.
        already: bool,
    },
    /// To [`Request::ConnectAll`].
    ConnectedAll {
        /// Every open tunnel (new and old), by resource name.
        tunnels: Vec<TunnelInfo>,
        /// Resources that could not be connected.
        failures: Vec<Failure>,
    },
    /// To [`Request::Disconnect`] and [`Request::DisconnectAll`].
    Disconnected {
        /// The resources whose tunnels were closed.
        resources: Vec<String>,
    },
    /// To [`Request::Logout`].
    LoggedOut {
        /// Set when the server could not be told (the agent stopped anyway).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
    /// Any request that failed.
    Error(ErrorReply),
}

/// The agent and its session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's process id.
    pub pid: u32,
    /// The agent's `sdm` version.
    pub version: String,
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// When the agent started (Unix seconds).
    pub started_at: i64,
    /// The session, when logged in.
    pub session: Option<SessionInfo>,
    /// Open tunnels.
    pub tunnels: usize,
}

/// A logged-in session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    /// The account.
    pub account: AccountInfo,
    /// The session id (audit records carry it).
    pub id: Uuid,
    /// The control plane in use.
    pub api_url: String,
    /// When the agent logged in (Unix seconds).
    pub logged_in_at: i64,
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    /// Account id.
    pub id: Uuid,
    /// Account name.
    pub name: String,
    /// `service` or `admin`.
    pub kind: AccountKind,
}

/// What `sdm status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusReport {
    /// Who is logged in.
    pub account: AccountInfo,
    /// The control plane in use.
    pub api_url: String,
    /// Every granted resource, sorted by name.
    pub resources: Vec<ResourceRow>,
    /// Set when the control plane could not be reached: the rows are what the session last
    /// knew, and its open tunnels keep working on their current leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_unreachable: Option<UnreachableInfo>,
}

/// Why `sdm status` answered without the control plane.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnreachableInfo {
    /// The one-line summary `sdm status` prints.
    pub message: String,
    /// What asking the control plane failed with.
    pub reason: String,
    /// Seconds the open tunnels' current leases still hold (the shortest); absent when no tunnel
    /// is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases_hold_for_secs: Option<u64>,
}

/// One granted resource and its tunnel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceRow {
    /// Resource id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// `postgres`, `ssh`, `tcp`, … (any lowercase name).
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    /// The status table's section: `datasource` or `server`.
    pub class: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Whether a live gateway serves it.
    pub healthy: bool,
    /// `connected` or `not_connected`.
    pub status: String,
    /// True when the open tunnel is the one the login opened on its own (auto-connect).
    #[serde(default)]
    pub auto: bool,
    /// Why auto-connect at login could not connect this resource, until it is connected.
    #[serde(default)]
    pub auto_error: Option<ErrorReply>,
    /// The tunnel's port when connected, else the fixed port (if any).
    pub port: Option<u16>,
    /// The fixed local port the admin set, if any.
    pub port_override: Option<u16>,
    /// `127.0.0.1:PORT` when connected.
    pub local_address: Option<String>,
    /// When connected: whether the tunnel serves only the OS user running the agent (false
    /// when it was opened with `--allow-other-users`).
    #[serde(default)]
    pub owner_only: Option<bool>,
    /// Local connections carried now (0 when not connected).
    pub connections: usize,
    /// ssh resources: the host key line every gateway presents for it, to pin (`sdm
    /// ssh-config`, `sdm ssh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
}

/// An open tunnel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The resource's name.
    pub resource: String,
    /// The resource's type.
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    /// Where clients connect: `127.0.0.1:PORT`, or a Unix socket's path.
    pub local_address: String,
    /// The local TCP port; none for a Unix socket.
    #[serde(default)]
    pub port: Option<u16>,
    /// Whether only the OS user running the agent may connect (false: every local user may,
    /// `--allow-other-users`; also what an older agent that did not say means).
    #[serde(default)]
    pub owner_only: bool,
}

/// What a login connected on its own: with the organisation setting "connect automatically to
/// all granted resources on login" on, every granted resource that has a fixed port, on that
/// port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AutoConnect {
    /// Whether the setting was on at login (when off, the lists are empty).
    pub enabled: bool,
    /// The tunnels opened, by resource name.
    pub tunnels: Vec<TunnelInfo>,
    /// Resources with a fixed port that could not be connected (port taken, …), by name.
    pub failures: Vec<Failure>,
    /// Granted resources without a fixed port: not connected.
    pub skipped: Vec<String>,
    /// Set when the granted resources could not be listed (nothing was connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

/// A resource `connect --all` (or auto-connect) could not connect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// The resource's name.
    pub resource: String,
    /// Why.
    pub error: ErrorReply,
}

/// A failed request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorReply {
    /// An error kind of the library (`resource_not_found`, …) or one of the agent's own:
    /// `not_logged_in`, `bad_request`.
    pub kind: String,
    /// One line for a person.
    pub message: String,
    /// For `ambiguous_resource`: the names that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// [`ErrorReply::kind`] of a request that needs a session when the agent has none.
pub const NOT_LOGGED_IN: &str = "not_logged_in";
/// [`ErrorReply::kind`] of a line that is not a request this agent understands.
pub const BAD_REQUEST: &str = "bad_request";

impl ErrorReply {
    /// An error of the agent's own kinds.
    pub fn new(kind: &str, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            kind: kind.to_owned(),
            message: message.into(),
            candidates: Vec::new(),
        }
    }
}

impl From<&sdm_core::Error> for ErrorReply {
    fn from(e: &sdm_core::Error) -> ErrorReply {
        ErrorReply {
            kind: e.kind().as_str().to_owned(),
            message: e.message().to_owned(),
            candidates: e.candidates().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_flat_object() {
        let line = RequestLine {
            v: PROTOCOL_VERSION,
            request: Request::Connect {
                name: "pg".into(),
                port: Some(5432),
                allow_other_users: false,
                unix_socket: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"v":1,"op":"connect","name":"pg","port":5432}"#
        );
        let back: RequestLine =
            serde_json::from_str(r#"{"v":1,"op":"status","future":true}"#).unwrap();
        assert_eq!(back.request, Request::Status);
    }

    #[test]
    fn the_other_users_opt_in_is_optional_and_off_by_default() {
        let all: RequestLine = serde_json::from_str(r#"{"v":1,"op":"connect_all"}"#).unwrap();
        assert_eq!(
            all.request,
            Request::ConnectAll {
                allow_other_users: false,
                unix_socket: None,
            }
        );
        let line = RequestLine {
            v: PROTOCOL_VERSION,
            request: Request::ConnectAll {
                allow_other_users: true,
                unix_socket: Some(true),
            },
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"v":1,"op":"connect_all","allow_other_users":true,"unix_socket":true}"#
        );
        // A tunnel described by an agent that did not say was open to everyone.
        let t: TunnelInfo = serde_json::from_str(
            r#"{"resource":"pg","type":"postgres","local_address":"127.0.0.1:5432","port":5432}"#,
        )
        .unwrap();
        assert!(!t.owner_only);
        // A Unix-socket tunnel has a path and no port.
        let t: TunnelInfo = serde_json::from_str(
            r#"{"resource":"pg","type":"postgres","local_address":"/run/sdm/x/.s.PGSQL.5432","port":null,"owner_only":true}"#,
        )
        .unwrap();
        assert_eq!(t.port, None);
    }

    #[test]
    fn debug_hides_the_token() {
        let r = Request::Login {
            token: "sdm_svc_supersecret".into(),
            api_url: None,
            allow_other_users: false,
            unix_socket: false,
        };
        assert!(!format!("{r:?}").contains("supersecret"));
    }

    #[test]
    fn replies_are_tagged() {
        let r = Reply::Disconnected {
            resources: vec!["pg".into()],
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"reply":"disconnected","resources":["pg"]}"#
        );
        let e = Reply::Error(ErrorReply::new(NOT_LOGGED_IN, "run sdm login"));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"reply":"error","kind":"not_logged_in","message":"run sdm login"}"#
        );
    }
}
