//! `sdm ssh-config` and `sdm ssh`: the system's OpenSSH client through a tunnel, with the host
//! key every gateway presents for the resource pinned. The gateway logs in to the server; the
//! client only has to trust the gateway's key for that resource, which the control plane gives
//! with the resource (`ssh_host_key` in `sdm status --json`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use sdm_core::ResourceKind;

use crate::cli::SshArgs;
use crate::client::{AgentClient, SLOW};
use crate::exit::{CliError, Exit};
use crate::home::Home;
use crate::protocol::{Reply, Request, ResourceRow, StatusReport};
use crate::render::{errln, print_raw};

use super::run::run_to_end;
use super::unexpected;

/// The known_hosts file `sdm ssh-config` writes in the agent's directory.
pub const KNOWN_HOSTS: &str = "known_hosts";

/// The name ssh knows a resource by: its `Host` and its known_hosts entry
/// (`HostKeyAlias`), so the pinned key does not depend on the local port.
fn alias(resource: &str) -> String {
    format!("sdm-{resource}")
}

/// The known_hosts line that pins `host_key` for `resource`.
fn known_hosts_line(resource: &str, host_key: &str) -> String {
    format!("{} {}\n", alias(resource), host_key.trim())
}

/// One ssh_config `Host` block for `resource` on its tunnel's `port`.
fn host_block(resource: &str, port: u16, known_hosts: &Path) -> String {
    let alias = alias(resource);
    // Names are letters, digits, '.', '_' and '-'; a path may hold spaces, so it is quoted.
    format!(
        "# sdm ssh resource {resource}: the gateway logs in to the server as the resource's \
         user, whatever User says\n\
         Host {alias}\n    \
         HostName 127.0.0.1\n    \
         Port {port}\n    \
         User sdm\n    \
         HostKeyAlias {alias}\n    \
         UserKnownHostsFile \"{}\"\n    \
         StrictHostKeyChecking yes\n    \
         UpdateHostKeys no\n",
        known_hosts.display()
    )
}

/// The granted ssh resources a `Host` block can be written for: with a host key to pin and a
/// local TCP port (connected, or fixed by the admin).
fn pinnable(status: &StatusReport) -> Vec<(&ResourceRow, u16, &str)> {
    status
        .resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Ssh)
        .filter_map(|r| Some((r, r.port?, r.ssh_host_key.as_deref()?)))
        .collect()
}

fn status(client: &mut AgentClient) -> Result<StatusReport, CliError> {
    match client.request(Request::Status, SLOW)? {
        Reply::Status { status, .. } => Ok(status),
        other => Err(unexpected(&other)),
    }
}

/// Writes `text` to `path` whole or not at all (a reader never sees half a file).
fn write_whole(path: &Path, text: &str) -> Result<(), CliError> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            CliError::internal(format!("cannot write {}: {e}", path.display()))
        })
}

/// `sdm ssh-config`.
pub fn ssh_config(home: &Home) -> Result<(), CliError> {
    let mut client = AgentClient::connect(home)?;
    let status = status(&mut client)?;
    let resources = pinnable(&status);
    if resources.is_empty() {
        errln!(
            "sdm: no granted ssh resource has a local port: connect one (`sdm connect NAME`) or \
             ask an admin for a fixed port (--port-override), then run `sdm ssh-config` again"
        );
        return Ok(());
    }
    let known_hosts = home.dir().join(KNOWN_HOSTS);
    let lines: String = resources
        .iter()
        .map(|(r, _, key)| known_hosts_line(&r.name, key))
        .collect();
    write_whole(&known_hosts, &lines)?;
    let mut config = String::new();
    for (r, port, _) in &resources {
        let _ = writeln!(config, "{}", host_block(&r.name, *port, &known_hosts));
    }
    print_raw(&config);
    Ok(())
}

/// A known_hosts file for one `ssh` run, removed when dropped.
struct TemporaryKnownHosts(PathBuf);

impl Drop for TemporaryKnownHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `ssh` command line for `resource` on `port`, trusting only the key in `known_hosts`.
fn ssh_command(resource: &str, port: u16, known_hosts: &Path, command: &[String]) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.arg("-p")
        .arg(port.to_string())
        .arg("-o")
        .arg(format!("HostKeyAlias={}", alias(resource)))
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "UpdateHostKeys=no"])
        .args(["-l", "sdm"])
        .arg("127.0.0.1")
        .args(command);
    ssh
}

/// `sdm ssh NAME [COMMAND…]`.
pub fn ssh(home: &Home, args: &SshArgs) -> Result<ExitCode, CliError> {
    let mut client = AgentClient::connect(home)?;
    let request = Request::Connect {
        name: args.name.clone(),
        port: None,
        allow_other_users: false,
        unix_socket: Some(false),
    };
    let (tunnel, already) = match client.request(request, SLOW)? {
        Reply::Connected { tunnel, already } => (tunnel, already),
        other => return Err(unexpected(&other)),
    };
    if tunnel.kind != ResourceKind::Ssh {
        if !already {
            let _ = client.request(
                Request::Disconnect {
                    name: tunnel.resource.clone(),
                },
                SLOW,
            );
        }
        return Err(CliError::new(
            Exit::InvalidArgument,
            format!(
                "{} is a {} resource, not ssh: use `sdm connect {}` and a client for it",
                tunnel.resource, tunnel.kind, tunnel.resource
            ),
        ));
    }
    let Some(port) = tunnel.port else {
        return Err(CliError::new(
            Exit::InvalidArgument,
            format!(
                "{} is connected on a Unix socket ({}), which ssh cannot use: `sdm disconnect \
                 {}` and run `sdm ssh {}` again",
                tunnel.resource, tunnel.local_address, tunnel.resource, tunnel.resource
            ),
        ));
    };
    let status = status(&mut client)?;
    let Some(host_key) = status
        .resources
        .iter()
        .find(|r| r.name == tunnel.resource)
        .and_then(|r| r.ssh_host_key.clone())
    else {
        return Err(CliError::new(
            Exit::Unsupported,
            format!(
                "the control plane gave no gateway host key for {}, so it cannot be pinned; \
                 upgrade sdm-server",
                tunnel.resource
            ),
        ));
    };
    home.ensure()?;
    let known_hosts = TemporaryKnownHosts(
        home.dir()
            .join(format!("{KNOWN_HOSTS}.ssh-{}", std::process::id())),
    );
    write_whole(
        &known_hosts.0,
        &known_hosts_line(&tunnel.resource, &host_key),
    )?;
    run_to_end(
        "ssh",
        ssh_command(&tunnel.resource, port, &known_hosts.0, &args.command),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQvC1MkOVEB74PVl31WCUi7loOAB2JpWfNHQzNChLgV";

    #[test]
    fn host_blocks_point_at_the_tunnel_and_pin_the_key_by_alias() {
        let block = host_block("web", 20022, Path::new("/home/me/.sdm/known_hosts"));
        for line in [
            "Host sdm-web\n",
            "    HostName 127.0.0.1\n",
            "    Port 20022\n",
            "    HostKeyAlias sdm-web\n",
            "    UserKnownHostsFile \"/home/me/.sdm/known_hosts\"\n",
            "    StrictHostKeyChecking yes\n",
        ] {
            assert!(block.contains(line), "{line:?} in\n{block}");
        }
        assert_eq!(
            known_hosts_line("web", &format!(" {KEY}\n")),
            format!("sdm-web {KEY}\n")
        );
    }

    #[test]
    fn ssh_runs_against_the_tunnel_with_only_the_pinned_key() {
        let command = ssh_command(
            "web",
            20022,
            Path::new("/tmp/kh"),
            &["uname".into(), "-a".into()],
        );
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(command.get_program(), "ssh");
        let text = args.join(" ");
        assert!(text.starts_with("-p 20022 -o HostKeyAlias=sdm-web -o UserKnownHostsFile=/tmp/kh"));
        assert!(text.contains("-o StrictHostKeyChecking=yes"));
        assert!(text.ends_with("127.0.0.1 uname -a"), "{text}");
    }
}
