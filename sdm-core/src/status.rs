//! What `sdm status` shows: every granted resource and whether this session is connected to it.

use std::fmt;
use std::time::Duration;

use sdm_proto::text::escape_controls;

use crate::account::Account;
use crate::listener::ListenAddr;
use crate::resource::{Resource, ResourceClass};

/// The session's resources and their connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Who is logged in.
    pub account: Account,
    /// Every granted resource, sorted by name.
    pub resources: Vec<ResourceStatus>,
    /// Set when the control plane could not be asked: the rows are then the last list this
    /// session saw, with its open tunnels, which keep working on their current leases.
    pub unreachable: Option<Unreachable>,
}

/// Why a [`Status`] was made without the control plane, and for how long the open tunnels hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unreachable {
    /// What asking the control plane failed with.
    pub reason: String,
    /// How long the current lease of every open tunnel still holds (the shortest); `None` when
    /// no tunnel is open.
    pub leases_hold_for: Option<Duration>,
}

impl Unreachable {
    pub(crate) fn new(reason: String, leases_hold_for: Option<Duration>) -> Unreachable {
        Unreachable {
            reason,
            leases_hold_for,
        }
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the control plane cannot be reached ({}); this is what the session last knew",
            escape_controls(&self.reason)
        )?;
        match self.leases_hold_for {
            Some(left) => write!(
                f,
                ", and its open tunnels keep working on their current leases for {} s more",
                left.as_secs()
            ),
            None => Ok(()),
        }
    }
}

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceStatus {
    /// The resource.
    pub resource: Resource,
    /// Connected (with the local address) or not.
    pub state: ConnectionState,
}

/// Whether a tunnel to a resource is open in this session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A tunnel is open.
    Connected {
        /// Where it listens: a TCP address or a Unix socket path.
        local_addr: ListenAddr,
        /// Local connections being carried.
        connections: usize,
    },
    /// No tunnel is open.
    NotConnected,
}

impl ResourceStatus {
    pub(crate) fn new(resource: Resource, state: ConnectionState) -> ResourceStatus {
        ResourceStatus { resource, state }
    }

    /// The local port: the tunnel's when connected (none for a Unix socket), else the resource's
    /// fixed port, if any.
    pub fn port(&self) -> Option<u16> {
        match &self.state {
            ConnectionState::Connected { local_addr, .. } => local_addr.port(),
            ConnectionState::NotConnected => self.resource.port_override,
        }
    }

    /// Whether a tunnel is open.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, ConnectionState::Connected { .. })
    }
}

impl Status {
    pub(crate) fn new(account: Account, resources: Vec<ResourceStatus>) -> Status {
        Status {
            account,
            resources,
            unreachable: None,
        }
    }
}

/// The table of the service-account guide: a section per resource class, columns aligned.
///
/// ```text
/// DATASOURCE NAME     STATUS            PORT      TYPE
/// pgsql_1_31          not connected     5432      postgres
/// SSH SERVER          STATUS            PORT      TYPE
/// server-245a         not connected     61334     ssh
/// ```
///
/// Control characters in what the server sent (an older server accepted them in kinds) are
/// shown escaped (`\x1b`), never passed to the terminal.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_width = self
            .resources
            .iter()
            .map(|r| escape_controls(&r.resource.name).chars().count() + 2)
            .chain([20])
            .max()
            .unwrap_or(20);
        if self.resources.is_empty() {
            return writeln!(
                f,
                "No resources are granted to {}.",
                escape_controls(&self.account.name)
            );
        }
        for (class, title) in [
            (ResourceClass::Datasource, "DATASOURCE NAME"),
            (ResourceClass::Server, "SSH SERVER"),
        ] {
            let rows: Vec<&ResourceStatus> = self
                .resources
                .iter()
                .filter(|r| r.resource.kind.class() == class)
                .collect();
            if rows.is_empty() {
                continue;
            }
            writeln!(f, "{title:<name_width$}{:<18}{:<10}TYPE", "STATUS", "PORT")?;
            for row in rows {
                let status = if row.is_connected() {
                    "connected"
                } else {
                    "not connected"
                };
                let port = row.port().map_or_else(|| "-".to_owned(), |p| p.to_string());
                writeln!(
                    f,
                    "{:<name_width$}{status:<18}{port:<10}{}",
                    escape_controls(&row.resource.name),
                    escape_controls(row.resource.kind.as_str())
                )?;
            }
        }
        if let Some(unreachable) = &self.unreachable {
            writeln!(f, "warning: {unreachable}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sdm_proto::api::AccountKind;
    use uuid::Uuid;

    use super::*;
    use crate::ResourceKind;

    fn res(name: &str, kind: ResourceKind, port: Option<u16>) -> Resource {
        Resource {
            id: Uuid::new_v4(),
            name: name.into(),
            kind,
            tags: BTreeMap::new(),
            port_override: port,
            healthy: true,
            ssh_host_key: None,
        }
    }

    #[test]
    fn renders_the_guide_table() {
        let status = Status::new(
            Account {
                id: Uuid::nil(),
                name: "etl".into(),
                kind: AccountKind::Service,
            },
            vec![
                ResourceStatus::new(
                    res("pgsql_1_31", ResourceKind::Postgres, Some(5432)),
                    ConnectionState::NotConnected,
                ),
                ResourceStatus::new(
                    res("server-245a", ResourceKind::Ssh, Some(61334)),
                    ConnectionState::NotConnected,
                ),
                ResourceStatus::new(
                    res("warehouse", ResourceKind::Postgres, None),
                    ConnectionState::Connected {
                        local_addr: ListenAddr::Tcp("127.0.0.1:40001".parse().unwrap()),
                        connections: 0,
                    },
                ),
            ],
        );
        let expected = "\
DATASOURCE NAME     STATUS            PORT      TYPE
pgsql_1_31          not connected     5432      postgres
warehouse           connected         40001     postgres
SSH SERVER          STATUS            PORT      TYPE
server-245a         not connected     61334     ssh
";
        assert_eq!(status.to_string(), expected);
    }

    #[test]
    fn without_the_control_plane_the_table_says_so_and_how_long_leases_hold() {
        let mut status = Status::new(
            Account {
                id: Uuid::nil(),
                name: "etl".into(),
                kind: AccountKind::Service,
            },
            vec![ResourceStatus::new(
                res("warehouse", ResourceKind::Postgres, None),
                ConnectionState::Connected {
                    local_addr: ListenAddr::Tcp("127.0.0.1:40001".parse().unwrap()),
                    connections: 1,
                },
            )],
        );
        status.unreachable = Some(Unreachable::new(
            "connection refused".into(),
            Some(Duration::from_millis(41_900)),
        ));
        let text = status.to_string();
        assert!(
            text.ends_with(
                "warning: the control plane cannot be reached (connection refused); this is what \
                 the session last knew, and its open tunnels keep working on their current \
                 leases for 41 s more\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn control_characters_from_the_server_are_shown_escaped() {
        let status = Status::new(
            Account {
                id: Uuid::nil(),
                name: "etl".into(),
                kind: AccountKind::Service,
            },
            vec![ResourceStatus::new(
                res(
                    "kafka",
                    ResourceKind::Other("\x1b]0;pwned\x07kafka\u{9b}2J".into()),
                    None,
                ),
                ConnectionState::NotConnected,
            )],
        );
        let expected = "\
DATASOURCE NAME     STATUS            PORT      TYPE
kafka               not connected     -         \\x1b]0;pwned\\x07kafka\\u{9b}2J
";
        assert_eq!(status.to_string(), expected);
    }
}
