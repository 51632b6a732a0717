//! `sdm admin …`: accounts, resources, grants, organisation settings and the audit trail through
//! `sdm_core::admin::AdminClient`.

use std::io::BufRead;

use sdm_core::admin::{
    ADMIN_TOKEN_ENV_VAR, Account, AdminClient, AuditFilter, AuditRecord, Credentials,
    GatewayDetails, NewAccount, NewResource, ResourceChanges, ResourceDetails, SettingsChanges,
    SshSettings, TlsMode, UpstreamTls,
};
use sdm_core::{ErrorKind, ResourceKind, Settings};
use serde_json::json;

use crate::cli::{
    AdminArgs, AdminCommand, AuditArgs, AuditCommand, DatasourceAddArgs, DatasourceKind,
    DatasourcesCommand, GatewaysCommand, OnOff, ResourceOptions, ResourcesCommand, ServerAddArgs,
    ServerKind, ServerUpdateArgs, ServersCommand, ServicesCommand, SettingsCommand, SshCaCommand,
    SshLoginArgs,
};
use crate::exit::{CliError, Exit};
use crate::render::{errln, outln, print_json, print_raw, table, tags, utc};

/// `sdm admin …`.
pub fn run(args: AdminArgs) -> Result<(), CliError> {
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var(ADMIN_TOKEN_ENV_VAR).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CliError::new(
                Exit::NotAuthenticated,
                "no admin token: pass --token or set SDM_ADMIN_TOKEN",
            )
        })?;
    // Read a password from stdin before any network call, so that a prompt-less pipe works.
    let password = match &args.command {
        AdminCommand::Datasources(DatasourcesCommand::Add(add)) => Some(password(add)?),
        _ => None,
    };
    let client = AdminClient::new(&token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(dispatch(&client, args, password))
}

fn unsupported(command: &str, feature: &str) -> CliError {
    CliError::new(
        Exit::Unsupported,
        format!(
            "`sdm admin {command}` is not supported by this server: its API has no route for \
             {feature}; upgrade sdm-server"
        ),
    )
}

/// A server older than a route answers it with 404 `invalid_argument` "no such API route: …"
/// (sdm-server's fallback); that is [`Exit::Unsupported`], not a refused value.
fn or_unsupported(e: sdm_core::Error, command: &str, feature: &str) -> CliError {
    if e.kind() == ErrorKind::InvalidArgument && e.message().starts_with("no such API route") {
        unsupported(command, feature)
    } else {
        CliError::from(e)
    }
}

async fn dispatch(
    client: &AdminClient,
    args: AdminArgs,
    password: Option<String>,
) -> Result<(), CliError> {
    let json = args.json;
    match args.command {
        AdminCommand::Services(command) => services(client, command, json).await,
        AdminCommand::Datasources(DatasourcesCommand::Add(add)) => {
            let resource = datasource(add, password.unwrap_or_default())?;
            create_resource(client, resource, "datasource", json).await
        }
        AdminCommand::Servers(ServersCommand::Add(add)) => {
            create_resource(client, server(add)?, "server", json).await
        }
        AdminCommand::Servers(ServersCommand::Update(update)) => {
            let name = update.name.clone();
            let updated = client
                .update_resource(&name, &server_changes(update)?)
                .await?;
            if json {
                return print_json(&updated);
            }
            outln!(
                "updated server {}: {}",
                updated.name,
                ssh_login_text(&updated)
            );
            Ok(())
        }
        AdminCommand::SshCa(SshCaCommand::PublicKey) => {
            let line = client
                .ssh_ca_public_key()
                .await
                .map_err(|e| or_unsupported(e, "ssh-ca public-key", "an SSH CA"))?;
            if json {
                return print_json(&json!({ "public_key": line }));
            }
            outln!("{line}");
            Ok(())
        }
        AdminCommand::Resources(ResourcesCommand::List) => {
            let resources = client.list_resources().await?;
            if json {
                return print_json(&json!({ "resources": resources }));
            }
            print_raw(&resources_table(&resources));
            Ok(())
        }
        AdminCommand::Resources(ResourcesCommand::Update {
            name,
            databases,
            replication,
            port_override,
            clear_port_override,
        }) => {
            let changes = ResourceChanges {
                databases: databases
                    .map(|list| list.into_iter().filter(|d| !d.is_empty()).collect()),
                replication: replication.map(|r| r == OnOff::On),
                port_override,
                clear_port_override,
                ..ResourceChanges::default()
            };
            let updated = client.update_resource(&name, &changes).await?;
            if json {
                return print_json(&updated);
            }
            // The local port only when asked about, so that the line stays what scripts read.
            let port = if port_override.is_some() || clear_port_override {
                format!("; local port {}", local_port(&updated))
            } else {
                String::new()
            };
            outln!(
                "updated resource {}: databases {}; replication {}{port}",
                updated.name,
                allowed_databases(&updated),
                if updated.replication {
                    "allowed"
                } else {
                    "refused"
                }
            );
            Ok(())
        }
        AdminCommand::Resources(ResourcesCommand::Delete { name }) => {
            client.delete_resource(&name).await?;
            if json {
                return print_json(&json!({ "deleted": name }));
            }
            outln!("deleted resource {name} and its grants");
            Ok(())
        }
        AdminCommand::Grant(g) => {
            let grant = client.grant(&g.account, &g.resource).await?;
            if json {
                return print_json(&grant);
            }
            outln!("granted {} to {}", grant.resource_name, g.account);
            Ok(())
        }
        AdminCommand::Revoke(g) => {
            client.revoke(&g.account, &g.resource).await?;
            if json {
                return print_json(
                    &json!({ "account": g.account, "resource": g.resource, "revoked": true }),
                );
            }
            outln!("revoked {} from {}", g.resource, g.account);
            Ok(())
        }
        AdminCommand::Audit(a) => audit(client, a, json).await,
        AdminCommand::Settings(command) => settings(client, command, json).await,
        AdminCommand::Gateways(command) => gateways(client, command, json).await,
    }
}

async fn gateways(
    client: &AdminClient,
    command: GatewaysCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        GatewaysCommand::Create { name, tags } => {
            let created = client
                .create_gateway(&name, tags.unwrap_or_default())
                .await?;
            let notice = format!(
                "created gateway {}; its token follows, shown only this once: give it to \
                 `sdm-server gateway` (SDM_GATEWAY_TOKEN or --gateway-token-file)",
                created.gateway.name
            );
            print_token(&created, &created.token, &notice, json)
        }
        GatewaysCommand::List => {
            let gateways = client.list_gateways().await?;
            if json {
                return print_json(&json!({ "gateways": gateways }));
            }
            print_raw(&gateways_table(&gateways));
            Ok(())
        }
        GatewaysCommand::Delete { name } => {
            client.delete_gateway(&name).await?;
            if json {
                return print_json(&json!({ "deleted": name }));
            }
            outln!("deleted gateway {name}; its token is refused from now on");
            Ok(())
        }
    }
}

fn gateways_table(gateways: &[GatewayDetails]) -> String {
    let rows: Vec<Vec<String>> = gateways
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.address.clone().unwrap_or_else(|| "-".to_owned()),
                tags(&g.tags),
                g.last_seen.map_or_else(|| "-".to_owned(), utc),
                if g.live { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(&["NAME", "ADDRESS", "TAGS", "LAST SEEN", "LIVE"], &rows)
}

/// `settings show` and `settings port-overrides …`: both print the settings as they are
/// afterwards; a change of ports also lists every resource's local port.
async fn settings(
    client: &AdminClient,
    command: SettingsCommand,
    json: bool,
) -> Result<(), CliError> {
    const NAME: &str = "settings port-overrides";
    const FEATURE: &str = "organisation settings";
    let SettingsCommand::PortOverrides {
        auto_connect,
        assign_ports,
        range,
        regenerate,
    } = command
    else {
        let settings = client
            .settings()
            .await
            .map_err(|e| or_unsupported(e, "settings show", FEATURE))?;
        return print_settings(&settings, json);
    };
    let changes = SettingsChanges {
        auto_connect: auto_connect.map(|v| v == OnOff::On),
        assign_ports: assign_ports.map(|v| v == OnOff::On),
        port_range: range,
    };
    let mut settings = if changes == SettingsChanges::default() {
        client.settings().await
    } else {
        client.update_settings(&changes).await
    }
    .map_err(|e| or_unsupported(e, NAME, FEATURE))?;
    // A server without port overrides ignores the fields it does not know.
    let ignored = (assign_ports == Some(OnOff::On) && !settings.assign_ports)
        || range.is_some_and(|r| r != settings.port_range);
    if ignored {
        return Err(unsupported(
            NAME,
            "port overrides (--assign-ports, --range)",
        ));
    }
    if regenerate {
        settings = client
            .regenerate_ports()
            .await
            .map_err(|e| or_unsupported(e, NAME, "port overrides (--regenerate)"))?;
    }
    print_settings(&settings, json)?;
    if !json && (assign_ports.is_some() || range.is_some() || regenerate) {
        let resources = client.list_resources().await?;
        print_raw(&format!("\n{}", local_ports_table(&resources)));
    }
    eprintln!("agents act on the setting when they next log in (`sdm login`)");
    Ok(())
}

fn print_settings(settings: &Settings, json: bool) -> Result<(), CliError> {
    if json {
        print_json(settings)?;
    } else {
        print_raw(&settings_text(settings));
    }
    Ok(())
}

fn settings_text(settings: &Settings) -> String {
    let auto = if settings.auto_connect {
        "on (at login, every granted resource with a fixed port is connected on that port)"
    } else {
        "off"
    };
    let assign = if settings.assign_ports {
        "on (every resource gets a unique local port from the range)"
    } else {
        "off (only resources given --port-override have a local port)"
    };
    format!(
        "auto-connect on login: {auto}\n\
         assign local ports: {assign}\n\
         port range: {}\n",
        settings.port_range
    )
}

/// Every resource's local port and where it came from.
fn local_ports_table(resources: &[ResourceDetails]) -> String {
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.port_override
                    .map_or_else(|| "-".to_owned(), |p| p.to_string()),
                match (r.port_override, r.port_assigned) {
                    (None, _) => "-",
                    (Some(_), true) => "assigned",
                    (Some(_), false) => "--port-override",
                }
                .to_owned(),
            ]
        })
        .collect();
    table(&["RESOURCE", "LOCAL PORT", "FROM"], &rows)
}

/// A resource's local port, marked when the port-overrides setting assigned it.
fn local_port(r: &ResourceDetails) -> String {
    match (r.port_override, r.port_assigned) {
        (None, _) => "-".to_owned(),
        (Some(p), false) => p.to_string(),
        (Some(p), true) => format!("{p} (assigned)"),
    }
}

async fn services(
    client: &AdminClient,
    command: ServicesCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        ServicesCommand::Create { name, admin: false } => {
            let created = client.create_service_account(&name).await?;
            print_account_token(&created, json, "created service account")
        }
        ServicesCommand::Create { name, admin: true } => {
            let created = client
                .create_account(&name, sdm_core::AccountKind::Admin)
                .await?;
            print_account_token(&created, json, "created admin")
        }
        ServicesCommand::Rotate { name } => {
            let created = client.rotate_token(&name).await?;
            print_account_token(
                &created,
                json,
                "revoked every token and ended every session of",
            )
        }
        ServicesCommand::List => {
            let accounts = client.list_accounts().await?;
            if json {
                return print_json(&json!({ "accounts": accounts }));
            }
            print_raw(&accounts_table(&accounts));
            Ok(())
        }
        ServicesCommand::Suspend { name } => {
            let account = client.suspend_account(&name).await?;
            print_account(&account, json)
        }
        ServicesCommand::Unsuspend { name } => {
            let account = client.unsuspend_account(&name).await?;
            print_account(&account, json)
        }
        ServicesCommand::Delete { name } => {
            client.delete_account(&name).await?;
            if json {
                return print_json(&json!({ "deleted": name }));
            }
            outln!("deleted account {name} with its tokens and grants");
            Ok(())
        }
    }
}

/// The token alone on stdout (so `TOKEN=$(sdm admin services create etl)` works), `notice` on
/// stderr; or all of `created` as JSON on stdout.
fn print_token(
    created: &impl serde::Serialize,
    token: &str,
    notice: &str,
    json: bool,
) -> Result<(), CliError> {
    if json {
        return print_json(created);
    }
    errln!("{notice}");
    outln!("{token}");
    Ok(())
}

/// `print_token` for a service account's new token, after `what` was done to it.
fn print_account_token(created: &NewAccount, json: bool, what: &str) -> Result<(), CliError> {
    let notice = format!(
        "{what} {}; its token follows, shown only this once: keep it in a secret store",
        created.account.name
    );
    print_token(created, &created.token, &notice, json)
}

fn print_account(account: &Account, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(account);
    }
    outln!("{}: {}", account.name, account.status.as_str());
    Ok(())
}

/// Every account; the TYPE column marks service accounts.
fn accounts_table(accounts: &[Account]) -> String {
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.kind.as_str().to_owned(),
                a.status.as_str().to_owned(),
                utc(a.created_at),
            ]
        })
        .collect();
    table(&["NAME", "TYPE", "STATUS", "CREATED"], &rows)
}

/// The databases clients may name through a resource, for people.
fn allowed_databases(r: &ResourceDetails) -> String {
    let all: Vec<&str> = r
        .database
        .iter()
        .chain(&r.databases)
        .map(String::as_str)
        .collect();
    if all.is_empty() {
        "any".to_owned()
    } else {
        all.join(", ")
    }
}

fn resources_table(resources: &[ResourceDetails]) -> String {
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.kind.to_string(),
                r.hostname.clone(),
                r.port.to_string(),
                local_port(r),
                match (&r.username, r.has_credentials) {
                    (Some(user), true) => format!("stored ({user})"),
                    _ => "-".to_owned(),
                },
                tags(&r.tags),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "TYPE",
            "HOST",
            "PORT",
            "LOCAL PORT",
            "CREDENTIALS",
            "TAGS",
        ],
        &rows,
    )
}

/// One page of the audit trail, newest first.
async fn audit(client: &AdminClient, args: AuditArgs, json: bool) -> Result<(), CliError> {
    if let Some(AuditCommand::Replay(replay)) = args.command {
        return super::replay::replay(client, replay, json).await;
    }
    let mut filter = AuditFilter::default();
    if let Some(a) = args.account {
        filter = filter.account(a);
    }
    if let Some(r) = args.resource {
        filter = filter.resource(r);
    }
    if let Some(since) = args.since {
        filter = filter.since(since.at(now()));
    }
    if let Some(limit) = args.limit {
        filter = filter.limit(limit);
    }
    if let Some(before) = args.before {
        filter = filter.before(before);
    }
    let page = client.audit(&filter).await?;
    if json {
        return print_json(&page);
    }
    if page.records.is_empty() {
        outln!("no connections recorded");
    } else {
        print_raw(&audit_table(&page.records));
    }
    if let Some(cursor) = page.next_before {
        eprintln!("older records: add --before {cursor}");
    }
    Ok(())
}

fn audit_table(records: &[AuditRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                utc(r.started_at),
                r.ended_at.map_or_else(
                    || "open".to_owned(),
                    |end| format!("{}s", end.saturating_sub(r.started_at)),
                ),
                r.account_name.clone(),
                r.resource_name.clone(),
                r.bytes_up.to_string(),
                r.bytes_down.to_string(),
                r.query_count.to_string(),
                match &r.error {
                    Some(e) => format!("{}: {e}", r.outcome),
                    None => r.outcome.to_string(),
                },
            ]
        })
        .collect();
    table(
        &[
            "STARTED",
            "DURATION",
            "ACCOUNT",
            "RESOURCE",
            "BYTES UP",
            "BYTES DOWN",
            "QUERIES",
            "OUTCOME",
        ],
        &rows,
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn password(add: &DatasourceAddArgs) -> Result<String, CliError> {
    if let Some(p) = &add.password {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::new(Exit::Usage, format!("cannot read the password: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(CliError::new(
            Exit::Usage,
            "--password-stdin: standard input held no password",
        ));
    }
    Ok(password)
}

fn datasource(add: DatasourceAddArgs, password: String) -> Result<NewResource, CliError> {
    let kind = match add.kind {
        DatasourceKind::Postgres => ResourceKind::Postgres,
        DatasourceKind::Mysql if add.allow_replication => {
            return Err(CliError::new(
                Exit::Usage,
                "--allow-replication is for postgres datasources; MySQL replication connections \
                 are not carried",
            ));
        }
        DatasourceKind::Mysql => ResourceKind::Mysql,
    };
    let mut resource = NewResource::new(add.name, kind, add.hostname)
        .port(add.port)
        .credentials(Credentials {
            username: add.username,
            password,
            database: Some(add.database),
        });
    resource.databases = add
        .databases
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect();
    resource.replication = add.allow_replication;
    resource.upstream_tls = upstream_tls(add.upstream_tls, add.upstream_ca.as_deref())?;
    with_options(resource, add.common)
}

/// `--upstream-tls` and `--upstream-ca`, with the CA file read (here, before any network call).
fn upstream_tls(
    mode: Option<TlsMode>,
    ca: Option<&std::path::Path>,
) -> Result<Option<UpstreamTls>, CliError> {
    let ca_pem = match ca {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            CliError::new(
                Exit::Usage,
                format!("--upstream-ca: cannot read {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    match (mode, ca_pem) {
        (None, None) => Ok(None),
        (None | Some(TlsMode::Disable | TlsMode::Require), Some(_)) => Err(CliError::new(
            Exit::Usage,
            "--upstream-ca is for --upstream-tls verify-full",
        )),
        (Some(TlsMode::VerifyFull), None) => Err(CliError::new(
            Exit::Usage,
            "--upstream-tls verify-full needs --upstream-ca PATH (the CA certificate that signs \
             the database's certificate, PEM)",
        )),
        (Some(mode), ca_pem) => Ok(Some(UpstreamTls { mode, ca_pem })),
    }
}

fn server(add: ServerAddArgs) -> Result<NewResource, CliError> {
    let resource = match add.kind {
        ServerKind::Ssh => {
            let Some(username) = add.username else {
                return Err(CliError::new(
                    Exit::Usage,
                    "servers add ssh needs --username (the user the gateway logs in as)",
                ));
            };
            if add.ssh.key_file.is_none() && !add.ssh.certificate_authority {
                return Err(CliError::new(
                    Exit::Usage,
                    "servers add ssh needs --key-file PATH (an OpenSSH private key the gateway \
                     logs in with) or --certificate-authority (the server trusts sdm's SSH CA: \
                     `sdm admin ssh-ca public-key`)",
                ));
            }
            NewResource::new(add.name, ResourceKind::Ssh, add.hostname)
                .port(add.port)
                .ssh(ssh_settings(username, add.ssh)?)
        }
        ServerKind::Tcp => {
            let ssh = &add.ssh;
            if add.username.is_some()
                || ssh.key_file.is_some()
                || ssh.certificate_authority
                || ssh.host_key.is_some()
                || ssh.record_sessions.is_some()
            {
                return Err(CliError::new(
                    Exit::Usage,
                    "a tcp server is passed through as it is: --username, --key-file, \
                     --certificate-authority, --host-key and --record-sessions are for ssh \
                     servers",
                ));
            }
            NewResource::new(add.name, ResourceKind::Tcp, add.hostname).port(add.port)
        }
    };
    with_options(resource, add.common)
}

/// The ssh settings the flags give, with the key file read (here, before any network call).
fn ssh_settings(username: String, login: SshLoginArgs) -> Result<SshSettings, CliError> {
    let private_key = match &login.key_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            CliError::new(
                Exit::Usage,
                format!("--key-file: cannot read {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    Ok(SshSettings {
        username,
        private_key,
        certificate_authority: login.certificate_authority,
        host_key: login.host_key,
        record_sessions: login.record_sessions,
    })
}

/// The change `sdm admin servers update` asks for.
fn server_changes(update: ServerUpdateArgs) -> Result<ResourceChanges, CliError> {
    let login = &update.ssh;
    let changes_login = update.username.is_some()
        || login.key_file.is_some()
        || login.certificate_authority
        || login.host_key.is_some()
        || login.record_sessions.is_some();
    if !changes_login && !update.forget_host_key {
        return Err(CliError::new(
            Exit::Usage,
            "nothing to change: give --username, --key-file, --certificate-authority, \
             --host-key, --record-sessions or --forget-host-key",
        ));
    }
    let ssh = if changes_login {
        Some(ssh_settings(
            update.username.unwrap_or_default(),
            update.ssh,
        )?)
    } else {
        None
    };
    Ok(ResourceChanges {
        ssh,
        clear_ssh_host_key: update.forget_host_key,
        ..ResourceChanges::default()
    })
}

/// How the gateway logs in to an ssh server, in a line.
fn ssh_login_text(resource: &ResourceDetails) -> String {
    let Some(ssh) = &resource.ssh else {
        return "not an ssh server".into();
    };
    let login = if ssh.certificate_authority {
        "sdm's SSH CA"
    } else if resource.has_credentials {
        "a stored key"
    } else {
        "nothing (set --key-file or --certificate-authority)"
    };
    let host_key = match &ssh.host_key {
        Some(key) => format!("host key {key}"),
        None => "host key recorded on the next connection".into(),
    };
    let recording = if ssh.record_sessions == Some(true) {
        "; terminal sessions recorded"
    } else {
        ""
    };
    format!(
        "logs in as {} with {login}; {host_key}{recording}",
        ssh.username
    )
}

/// The resource with the options every kind takes; a tag given by both `--tags` and `--tag`
/// is refused.
fn with_options(
    mut resource: NewResource,
    options: ResourceOptions,
) -> Result<NewResource, CliError> {
    if let Some(p) = options.port_override {
        resource = resource.port_override(p);
    }
    let mut tags = options.tags.unwrap_or_default();
    sdm_core::tags::merge(&mut tags, options.tag)
        .map_err(|e| CliError::new(Exit::Usage, format!("--tag: {e}")))?;
    for (k, v) in tags {
        resource = resource.tag(k, v);
    }
    Ok(resource)
}

async fn create_resource(
    client: &AdminClient,
    resource: NewResource,
    what: &str,
    json: bool,
) -> Result<(), CliError> {
    let created = client.create_resource(&resource).await?;
    if json {
        return print_json(&created);
    }
    let local = match (created.port_override, created.port_assigned) {
        (None, _) => String::new(),
        (Some(p), false) => format!("; clients listen on port {p}"),
        (Some(p), true) => format!("; clients listen on port {p} (assigned from the port range)"),
    };
    outln!(
        "created {} {what} {} ({}:{}){local}",
        created.kind,
        created.name,
        created.hostname,
        created.port
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use sdm_core::admin::AccountStatus;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn an_older_server_without_the_route_is_unsupported() {
        let old = sdm_core::Error::new(
            ErrorKind::InvalidArgument,
            "no such API route: PATCH /v1/admin/settings; see docs/PROTOCOL.md for the routes",
        );
        let e = or_unsupported(old, "settings port-overrides", "organisation settings");
        assert_eq!(e.exit, Exit::Unsupported);
        assert!(e.message.contains("upgrade sdm-server"), "{}", e.message);
        // Any other refusal keeps its own code.
        let refused = sdm_core::Error::new(ErrorKind::InvalidArgument, "bad value");
        let e = or_unsupported(refused, "settings port-overrides", "organisation settings");
        assert_eq!(e.exit, Exit::InvalidArgument);
        let forbidden = sdm_core::Error::new(ErrorKind::Forbidden, "not an admin");
        assert_eq!(
            or_unsupported(forbidden, "settings show", "organisation settings").exit,
            Exit::Forbidden
        );
    }

    #[test]
    fn settings_read_as_a_sentence() {
        assert_eq!(
            settings_text(&Settings::default()),
            "auto-connect on login: off\n\
             assign local ports: off (only resources given --port-override have a local port)\n\
             port range: 20000-29999\n"
        );
        let on = Settings {
            auto_connect: true,
            assign_ports: true,
            port_range: "100-199".parse().unwrap(),
        };
        assert!(
            settings_text(&on).ends_with(
                "assign local ports: on (every resource gets a unique local port from the \
                 range)\nport range: 100-199\n"
            ),
            "{}",
            settings_text(&on)
        );
    }

    #[test]
    fn local_ports_say_where_they_came_from() {
        let resource = |name: &str, port: Option<u16>, assigned: bool| ResourceDetails {
            id: Uuid::nil(),
            name: name.into(),
            kind: ResourceKind::Tcp,
            hostname: "h".into(),
            port: 9,
            port_override: port,
            port_assigned: assigned,
            tags: Default::default(),
            username: None,
            database: None,
            has_credentials: false,
            upstream_tls: Default::default(),
            databases: Vec::new(),
            replication: false,
            ssh: None,
            created_at: 0,
        };
        let table = local_ports_table(&[
            resource("a", Some(20000), true),
            resource("b", Some(5432), false),
            resource("c", None, false),
        ]);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["RESOURCE", "LOCAL", "PORT", "FROM"],
                vec!["a", "20000", "assigned"],
                vec!["b", "5432", "--port-override"],
                vec!["c", "-", "-"],
            ]
        );
        assert_eq!(
            local_port(&resource("a", Some(20000), true)),
            "20000 (assigned)"
        );
    }

    #[test]
    fn accounts_table_marks_service_accounts() {
        let accounts = [
            Account {
                id: Uuid::nil(),
                name: "admin".into(),
                kind: sdm_core::AccountKind::Admin,
                status: AccountStatus::Active,
                created_at: 1_767_225_600,
                last_login: None,
            },
            Account {
                id: Uuid::nil(),
                name: "etl-bot".into(),
                kind: sdm_core::AccountKind::Service,
                status: AccountStatus::Suspended,
                created_at: 1_767_225_661,
                last_login: None,
            },
        ];
        assert_eq!(
            accounts_table(&accounts),
            "\
NAME     TYPE     STATUS     CREATED
admin    admin    active     2026-01-01 00:00:00 UTC
etl-bot  service  suspended  2026-01-01 00:01:01 UTC
"
        );
    }

    fn server_args(words: &[&str]) -> ServerAddArgs {
        use clap::Parser;
        let mut all = vec!["sdm", "admin", "servers", "add"];
        all.extend_from_slice(words);
        match crate::cli::Cli::try_parse_from(all).unwrap().command {
            crate::cli::Command::Admin(args) => match args.command {
                AdminCommand::Servers(ServersCommand::Add(add)) => add,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn servers_take_ssh_settings_only_for_ssh() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let key = key.to_str().unwrap();
        let base = ["web", "--hostname", "h", "--port", "22"];
        let ssh = |extra: &[&str]| {
            let mut words = vec!["ssh"];
            words.extend_from_slice(&base);
            words.extend_from_slice(extra);
            server(server_args(&words))
        };
        let resource = ssh(&["--username", "deploy", "--key-file", key]).unwrap();
        let settings = resource.ssh.unwrap();
        assert_eq!(settings.username, "deploy");
        assert_eq!(
            settings.private_key.as_deref(),
            Some("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        );
        assert!(!settings.certificate_authority);
        let refused = |r: Result<NewResource, CliError>, needle: &str| {
            let e = r.unwrap_err();
            assert_eq!(e.exit, Exit::Usage);
            assert!(e.message.contains(needle), "{}", e.message);
        };
        refused(ssh(&["--key-file", key]), "--username");
        refused(ssh(&["--username", "deploy"]), "--key-file PATH");
        refused(
            ssh(&["--username", "deploy", "--key-file", "/nonexistent/key"]),
            "cannot read /nonexistent/key",
        );
        let mut tcp = vec!["tcp"];
        tcp.extend_from_slice(&base);
        assert_eq!(server(server_args(&tcp)).unwrap().ssh, None);
        tcp.extend_from_slice(&["--username", "deploy"]);
        refused(server(server_args(&tcp)), "passed through as it is");
    }
}
