//! The resource form, shared by **add resource** and a resource's edit form: its fields as
//! posted ([`ResourceFields`]), what the page shows of them ([`FormView`], which has no
//! password or private key field, so neither is ever rendered back), and their translation into
//! the API's [`CreateResource`] and [`UpdateResource`].
//!
//! The console only reads the text of the fields (a port is a number, tags are `k=v, k=v`); every
//! rule is the API's, and a refusal is shown beside the field the API names
//! ([`ApiError::field`]).

use std::collections::BTreeMap;

use sdm_proto::ResourceKind;
use sdm_proto::api::{
    AdminResource, CreateResource, Credentials, SshSettings, TlsMode, UpdateResource, UpstreamTls,
};
use sdm_proto::tags::{self, TagForm};
use serde::Deserialize;

use crate::api::ApiError;
use crate::pinning::{PIN_TAG, pin_of};

/// The kinds the form offers: `(value, label)`.
pub(crate) const KINDS: &[(&str, &str)] = &[
    ("postgres", "PostgreSQL"),
    ("ssh", "SSH server"),
    ("tcp", "TCP service"),
];

/// The upstream TLS modes the form offers: `(value, label)`.
pub(crate) const TLS_MODES: &[(&str, &str)] = &[
    ("disable", "disable (no TLS)"),
    ("require", "require (TLS, certificate not checked)"),
    (
        "verify-full",
        "verify-full (TLS, certificate checked against the CA below)",
    ),
];

/// The `ssh_login` choice: a certificate from sdm's SSH CA for each connection.
pub(crate) const LOGIN_WITH_CA: &str = "certificate_authority";
/// The `ssh_login` choice: the private key stored with the resource.
pub(crate) const LOGIN_WITH_KEY: &str = "private_key";

/// The form as posted. Checkboxes are present only when ticked.
#[derive(Deserialize, Default)]
pub(crate) struct ResourceFields {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    port_override: String,
    #[serde(default)]
    clear_port_override: Option<String>,
    #[serde(default)]
    tags: String,
    /// The `sdm.gateway` tag, taken whole (its value is a comma-separated list itself).
    #[serde(default)]
    pin: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    database: String,
    /// Write-only: read here, never copied into a [`FormView`].
    #[serde(default)]
    password: String,
    #[serde(default)]
    clear_credentials: Option<String>,
    #[serde(default)]
    tls_mode: String,
    #[serde(default)]
    ca_pem: String,
    /// The user the gateway logs in as on an ssh server (the API's `ssh.username`; the
    /// PostgreSQL `username` is a field of its own, posted too when no script hides it).
    #[serde(default)]
    ssh_username: String,
    /// [`LOGIN_WITH_CA`] or [`LOGIN_WITH_KEY`].
    #[serde(default)]
    ssh_login: String,
    /// Write-only like the password: read here, never copied into a [`FormView`].
    #[serde(default)]
    ssh_private_key: String,
    #[serde(default)]
    ssh_host_key: String,
    #[serde(default)]
    clear_ssh_host_key: Option<String>,
    #[serde(default)]
    ssh_record_sessions: Option<String>,
}

/// Messages beside fields, by field name (the form's names: `port`, `tags`, `password`, …);
/// `""` is the form as a whole.
#[derive(Default)]
pub(crate) struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    /// The message beside `field`, if any.
    pub(crate) fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    /// Whether `field` has a message.
    pub(crate) fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// The API's refusal, beside the field it names (or above the form).
    pub(crate) fn of_api(e: &ApiError) -> FieldErrors {
        let field = match e.field() {
            Some("name") => "name",
            Some("kind") => "kind",
            Some("hostname") => "hostname",
            Some("port") => "port",
            Some("port_override") => "port_override",
            Some("tags") => "tags",
            Some("tags.sdm.gateway") => "pin",
            Some("credentials.username") => "username",
            Some("credentials.database") => "database",
            Some("credentials.password" | "credentials") => "password",
            Some("upstream_tls.ca_pem" | "upstream_tls.mode") => "ca_pem",
            Some("ssh.username") => "ssh_username",
            Some("ssh.host_key") => "ssh_host_key",
            // `ssh` alone: settings given for a kind that takes none, the key most of all.
            Some("ssh.private_key" | "ssh") => "ssh_private_key",
            _ => "",
        };
        let mut errors = FieldErrors::default();
        errors.add(field, e.message());
        errors
    }
}

/// The form as a page shows it: what was typed (or stored), never a password or private key.
pub(crate) struct FormView {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) hostname: String,
    pub(crate) port: String,
    pub(crate) port_override: String,
    pub(crate) clear_port_override: bool,
    pub(crate) tags: String,
    pub(crate) pin: String,
    pub(crate) username: String,
    pub(crate) database: String,
    pub(crate) clear_credentials: bool,
    pub(crate) tls_mode: String,
    pub(crate) ca_pem: String,
    pub(crate) ssh_username: String,
    pub(crate) ssh_login: String,
    pub(crate) ssh_host_key: String,
    pub(crate) clear_ssh_host_key: bool,
    pub(crate) ssh_record_sessions: bool,
    pub(crate) errors: FieldErrors,
}

impl FormView {
    /// The empty **add resource** form.
    pub(crate) fn empty() -> FormView {
        FormView {
            kind: "postgres".to_owned(),
            name: String::new(),
            hostname: String::new(),
            port: String::new(),
            port_override: String::new(),
            clear_port_override: false,
            tags: String::new(),
            pin: String::new(),
            username: String::new(),
            database: String::new(),
            clear_credentials: false,
            tls_mode: TlsMode::Disable.as_str().to_owned(),
            ca_pem: String::new(),
            ssh_username: String::new(),
            ssh_login: LOGIN_WITH_CA.to_owned(),
            ssh_host_key: String::new(),
            clear_ssh_host_key: false,
            ssh_record_sessions: false,
            errors: FieldErrors::default(),
        }
    }

    /// The edit form of `r` as stored. The port override shown is an explicit one only (an
    /// assigned port is the setting's, shown beside the field); the CA is not read back, nor
    /// the recorded host key (shown on the page; an empty field keeps it).
    pub(crate) fn of(r: &AdminResource) -> FormView {
        let ssh = r.ssh.as_ref();
        FormView {
            kind: r.kind.as_str().to_owned(),
            name: r.name.clone(),
            hostname: r.hostname.clone(),
            port: r.port.to_string(),
            port_override: explicit_port(r).map(|p| p.to_string()).unwrap_or_default(),
            clear_port_override: false,
            tags: tag_text(r),
            pin: pin_of(&r.tags).unwrap_or_default().to_owned(),
            username: r.username.clone().unwrap_or_default(),
            database: r.database.clone().unwrap_or_default(),
            clear_credentials: false,
            tls_mode: r.upstream_tls.as_str().to_owned(),
            ca_pem: String::new(),
            ssh_username: ssh.map(|s| s.username.clone()).unwrap_or_default(),
            ssh_login: match ssh {
                Some(s) if !s.certificate_authority => LOGIN_WITH_KEY,
                _ => LOGIN_WITH_CA,
            }
            .to_owned(),
            ssh_host_key: String::new(),
            clear_ssh_host_key: false,
            ssh_record_sessions: ssh.is_some_and(|s| s.record_sessions == Some(true)),
            errors: FieldErrors::default(),
        }
    }

    /// The form as posted (the password and private key left out), with `errors`.
    pub(crate) fn posted(fields: &ResourceFields, errors: FieldErrors) -> FormView {
        FormView {
            kind: fields.kind.clone(),
            name: fields.name.clone(),
            hostname: fields.hostname.clone(),
            port: fields.port.clone(),
            port_override: fields.port_override.clone(),
            clear_port_override: fields.clear_port_override.is_some(),
            tags: fields.tags.clone(),
            pin: fields.pin.clone(),
            username: fields.username.clone(),
            database: fields.database.clone(),
            clear_credentials: fields.clear_credentials.is_some(),
            tls_mode: fields.tls_mode.clone(),
            ca_pem: fields.ca_pem.clone(),
            ssh_username: fields.ssh_username.clone(),
            ssh_login: fields.ssh_login.clone(),
            ssh_host_key: fields.ssh_host_key.clone(),
            clear_ssh_host_key: fields.clear_ssh_host_key.is_some(),
            ssh_record_sessions: fields.ssh_record_sessions.is_some(),
            errors,
        }
    }

    /// Whether the login choice shown is the stored private key (else sdm's SSH CA).
    pub(crate) fn logs_in_with_key(&self) -> bool {
        self.ssh_login == LOGIN_WITH_KEY
    }

    /// The message beside `field`, if any.
    pub(crate) fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field)
    }

    /// Whether `field` has a message (for `aria-invalid`).
    pub(crate) fn invalid(&self, field: &str) -> bool {
        self.errors.has(field)
    }
}

/// A resource's port override when an admin gave it (not assigned by the setting).
pub(crate) fn explicit_port(r: &AdminResource) -> Option<u16> {
    r.port_override.filter(|_| !r.port_assigned)
}

/// Tags as the form writes them, `k=v, k=v`, but the pin (its own field).
pub(crate) fn tag_text(r: &AdminResource) -> String {
    r.tags
        .iter()
        .filter(|(k, _)| *k != PIN_TAG)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A port field: empty is none.
fn port(errors: &mut FieldErrors, field: &'static str, label: &str, text: &str) -> Option<u16> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match text.parse::<u16>() {
        Ok(p) => Some(p),
        Err(_) => {
            errors.add(
                field,
                format!("{label} {text:?} is not a port: give a number from 1 to 65535."),
            );
            None
        }
    }
}

/// The tags field and the pin field as one map, as the CLI's `--tags` and `--tag` make it.
fn tag_map(errors: &mut FieldErrors, text: &str, pin: &str) -> BTreeMap<String, String> {
    let mut map = tags::parse(text, TagForm::Pairs).unwrap_or_else(|e| {
        errors.add(
            "tags",
            format!("Tags: {e}. Write them as key=value, separated by commas."),
        );
        BTreeMap::new()
    });
    let pin = pin.trim();
    if !pin.is_empty() && tags::merge(&mut map, [(PIN_TAG.to_owned(), pin.to_owned())]).is_err() {
        errors.add(
            "tags",
            format!("Tags: give the tag {PIN_TAG} in Gateway pin only."),
        );
    }
    map
}

/// The TLS mode chosen; `None` when the form did not post one (a kind without the PostgreSQL
/// fields, whose fieldset the script disables).
fn tls_mode(errors: &mut FieldErrors, text: &str) -> Option<TlsMode> {
    if text.trim().is_empty() {
        return None;
    }
    match text.trim().parse() {
        Ok(mode) => Some(mode),
        Err(e) => {
            errors.add("tls_mode", format!("{e}: choose one of the listed modes."));
            None
        }
    }
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn ca_pem(text: &str) -> Option<String> {
    (!text.trim().is_empty()).then(|| text.to_owned())
}

/// The login choice posted: `Some(true)` for sdm's SSH CA; `None` when none was posted.
fn logs_in_with_ca(errors: &mut FieldErrors, text: &str) -> Option<bool> {
    match text.trim() {
        "" => None,
        LOGIN_WITH_CA => Some(true),
        LOGIN_WITH_KEY => Some(false),
        other => {
            errors.add(
                "ssh_login",
                format!("Log in with {other:?} is not a choice: choose one of the listed ones."),
            );
            None
        }
    }
}

impl ResourceFields {
    /// Whether any ssh field was filled in. The form without its script posts every kind's
    /// fields; ssh settings typed for another kind go to the API, which says they do not
    /// belong (a login choice alone is the form's default, not something typed).
    fn ssh_typed(&self) -> bool {
        !self.ssh_username.trim().is_empty()
            || !self.ssh_private_key.trim().is_empty()
            || !self.ssh_host_key.trim().is_empty()
    }

    /// The ssh settings as typed; the key is taken as pasted.
    fn ssh_settings(&self, certificate_authority: bool) -> SshSettings {
        SshSettings {
            username: self.ssh_username.trim().to_owned(),
            private_key: (!self.ssh_private_key.trim().is_empty())
                .then(|| self.ssh_private_key.clone()),
            certificate_authority,
            host_key: non_empty(&self.ssh_host_key),
            record_sessions: Some(self.ssh_record_sessions.is_some()),
        }
    }

    /// The **add resource** request, or what the fields' text does not say.
    pub(crate) fn create_request(&self) -> Result<CreateResource, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut request = CreateResource::new(
            self.name.trim(),
            ResourceKind::from_name(self.kind.trim()),
            self.hostname.trim(),
        );
        request.port = port(&mut errors, "port", "Port", &self.port);
        request.port_override = port(
            &mut errors,
            "port_override",
            "Port override",
            &self.port_override,
        );
        request.tags = tag_map(&mut errors, &self.tags, &self.pin);
        let database = non_empty(&self.database);
        if !self.username.trim().is_empty() || !self.password.is_empty() || database.is_some() {
            request.credentials = Some(Credentials {
                username: self.username.trim().to_owned(),
                password: self.password.clone(),
                database,
            });
        }
        let mode = tls_mode(&mut errors, &self.tls_mode).unwrap_or_default();
        let ca_pem = ca_pem(&self.ca_pem);
        if mode != TlsMode::Disable || ca_pem.is_some() {
            request.upstream_tls = Some(UpstreamTls { mode, ca_pem });
        }
        let certificate_authority = logs_in_with_ca(&mut errors, &self.ssh_login);
        if request.kind == ResourceKind::Ssh || self.ssh_typed() {
            if request.kind == ResourceKind::Ssh && certificate_authority.is_none() {
                errors.add(
                    "ssh_login",
                    "Choose how the gateway logs in: with sdm's SSH certificate authority or a \
                     stored private key.",
                );
            }
            // A key pasted with the CA chosen goes too: the API says to give one of them.
            request.ssh = Some(self.ssh_settings(certificate_authority.unwrap_or(false)));
        }
        if errors.0.is_empty() {
            Ok(request)
        } else {
            Err(errors)
        }
    }

    /// The change of `current` the edit form asks for, or what the fields' text does not say.
    /// An empty password or private key keeps the stored one; an empty port keeps the port; an
    /// empty host key keeps the recorded one.
    pub(crate) fn update_request(
        &self,
        current: &AdminResource,
    ) -> Result<UpdateResource, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut request = UpdateResource {
            hostname: Some(self.hostname.trim().to_owned()),
            port: port(&mut errors, "port", "Port", &self.port),
            tags: Some(tag_map(&mut errors, &self.tags, &self.pin)),
            ..UpdateResource::default()
        };
        let wanted = port(
            &mut errors,
            "port_override",
            "Port override",
            &self.port_override,
        );
        if self.clear_port_override.is_some() {
            request.clear_port_override = true;
        } else if wanted.is_some() && wanted != explicit_port(current) {
            request.port_override = wanted;
        }
        let username = self.username.trim();
        let database = non_empty(&self.database);
        request.clear_credentials = self.clear_credentials.is_some();
        if !self.password.is_empty() {
            // With clear_credentials too, the API says which one to give.
            request.credentials = Some(Credentials {
                username: username.to_owned(),
                password: self.password.clone(),
                database,
            });
        } else if !request.clear_credentials
            // An ssh resource's user name is its ssh settings', not these fields'.
            && current.kind != ResourceKind::Ssh
            && (username != current.username.as_deref().unwrap_or_default()
                || database != current.database)
        {
            errors.add(
                "password",
                "Give the password again to change the user name or database: sdm stores it \
                 sealed and never reads it back.",
            );
        }
        let mode = tls_mode(&mut errors, &self.tls_mode).unwrap_or(current.upstream_tls);
        let ca_pem = ca_pem(&self.ca_pem);
        if mode != current.upstream_tls || ca_pem.is_some() {
            request.upstream_tls = Some(UpstreamTls { mode, ca_pem });
        }
        request.ssh = self.ssh_change(&mut errors, current);
        request.clear_ssh_host_key = self.clear_ssh_host_key.is_some();
        if errors.0.is_empty() {
            Ok(request)
        } else {
            Err(errors)
        }
    }
}

impl ResourceFields {
    /// The ssh settings the edit form changes, `None` when it changes none.
    fn ssh_change(&self, errors: &mut FieldErrors, current: &AdminResource) -> Option<SshSettings> {
        let Some(stored) = current.ssh.as_ref() else {
            // Not an ssh resource: settings typed anyway go to the API, which refuses them.
            return self.ssh_typed().then(|| self.ssh_settings(false));
        };
        let certificate_authority =
            logs_in_with_ca(errors, &self.ssh_login).unwrap_or(stored.certificate_authority);
        let wanted = self.ssh_settings(certificate_authority);
        if !certificate_authority && stored.certificate_authority && wanted.private_key.is_none() {
            // Else the API would keep the CA: an update that gives no key keeps the stored login.
            errors.add(
                "ssh_private_key",
                "Paste the private key the gateway should log in with: it logs in with sdm's SSH \
                 certificate authority now, and no key is stored.",
            );
        }
        let changed = wanted.username != stored.username
            || wanted.private_key.is_some()
            || wanted.certificate_authority != stored.certificate_authority
            || wanted.host_key.is_some()
            || wanted.record_sessions != stored.record_sessions;
        changed.then_some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> ResourceFields {
        serde_urlencoded::from_str(&serde_urlencoded::to_string(pairs).unwrap()).unwrap()
    }

    #[test]
    fn a_postgres_resource_with_credentials_and_tls() {
        let request = fields(&[
            ("kind", "postgres"),
            ("name", "pg"),
            ("hostname", " db.internal "),
            ("port", "5433"),
            ("port_override", ""),
            ("tags", "env=prod, team=data"),
            ("username", "app"),
            ("database", "app"),
            ("password", " secret "),
            ("tls_mode", "verify-full"),
            ("ca_pem", "-----BEGIN CERTIFICATE-----\n"),
        ])
        .create_request()
        .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(request.kind, ResourceKind::Postgres);
        assert_eq!(request.hostname, "db.internal");
        assert_eq!((request.port, request.port_override), (Some(5433), None));
        assert_eq!(request.tags.len(), 2);
        let credentials = request.credentials.unwrap();
        // A password is taken as typed.
        assert_eq!(credentials.password, " secret ");
        assert_eq!(credentials.database.as_deref(), Some("app"));
        assert_eq!(request.upstream_tls.unwrap().mode, TlsMode::VerifyFull);
    }

    #[test]
    fn text_that_is_no_port_or_tag_is_shown_beside_its_field() {
        let Err(errors) = fields(&[
            ("kind", "tcp"),
            ("name", "t"),
            ("hostname", "h"),
            ("port", "70000"),
            ("port_override", "x"),
            ("tags", "env"),
        ])
        .create_request() else {
            panic!("accepted");
        };
        assert!(errors.get("port").unwrap().contains("\"70000\""));
        assert!(errors.has("port_override"));
        assert!(errors.get("tags").unwrap().contains("not key=value"));
        assert!(!errors.has("hostname"));
        // The pin is its own field, its commas its own.
        let request = fields(&[("kind", "tcp"), ("tags", "env=prod"), ("pin", "eu, zone=a")])
            .create_request()
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(request.tags[PIN_TAG], "eu, zone=a");
        assert_eq!(request.tags["env"], "prod");
        let Err(errors) = fields(&[("tags", "sdm.gateway=eu"), ("pin", "us")]).create_request()
        else {
            panic!("accepted");
        };
        assert!(errors.get("tags").unwrap().contains("Gateway pin"));
        // A kind without the PostgreSQL fields posts no TLS mode.
        let request = fields(&[
            ("kind", "ssh"),
            ("name", "s"),
            ("hostname", "h"),
            ("ssh_login", LOGIN_WITH_CA),
        ])
        .create_request()
        .unwrap_or_else(|_| panic!("refused"));
        assert_eq!((request.upstream_tls, request.credentials), (None, None));
        let Err(errors) = fields(&[("kind", "ssh"), ("tls_mode", "verify_full")]).create_request()
        else {
            panic!("accepted");
        };
        assert!(errors.has("tls_mode"));
    }

    fn stored() -> AdminResource {
        AdminResource {
            id: uuid::Uuid::nil(),
            name: "pg".into(),
            kind: ResourceKind::Postgres,
            hostname: "h".into(),
            port: 5432,
            port_override: Some(20000),
            port_assigned: true,
            tags: Default::default(),
            username: Some("app".into()),
            database: Some("app".into()),
            has_credentials: true,
            upstream_tls: TlsMode::Require,
            databases: Vec::new(),
            replication: false,
            ssh: None,
            created_at: 0,
        }
    }

    #[test]
    fn an_unchanged_edit_form_changes_neither_credentials_nor_ports() {
        let current = stored();
        let view = FormView::of(&current);
        // An assigned port is not shown as the admin's.
        assert_eq!(view.port_override, "");
        let request = fields(&[
            ("hostname", "h"),
            ("port", "5432"),
            ("port_override", ""),
            ("tags", ""),
            ("username", "app"),
            ("database", "app"),
            ("password", ""),
            ("tls_mode", "require"),
            ("ca_pem", ""),
        ])
        .update_request(&current)
        .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(request.credentials, None);
        assert!(!request.clear_credentials);
        assert_eq!(request.port_override, None);
        assert!(!request.clear_port_override);
        assert_eq!(request.upstream_tls, None);
    }

    #[test]
    fn a_new_user_name_needs_the_password_again() {
        let Err(errors) =
            fields(&[("username", "other"), ("tls_mode", "require")]).update_request(&stored())
        else {
            panic!("accepted");
        };
        assert!(errors.has("password"));
        let request = fields(&[
            ("username", "other"),
            ("password", "new"),
            ("tls_mode", "require"),
            ("clear_port_override", "on"),
        ])
        .update_request(&stored())
        .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(request.credentials.unwrap().username, "other");
        assert!(request.clear_port_override);
    }

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUA\n-----END OPENSSH PRIVATE KEY-----\n";
    const HOST_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIQvC1MkOVEB74PVl31WCUi7loOAB2JpWfNHQzNChLgV";

    /// The add form as posted without its script: every kind's fields, the ssh ones filled in.
    fn ssh_form<'a>(kind: &'a str, login: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("kind", kind),
            ("name", "web"),
            ("hostname", "10.0.0.5"),
            ("port", ""),
            ("tags", ""),
            ("username", ""),
            ("database", ""),
            ("password", ""),
            ("tls_mode", "disable"),
            ("ca_pem", ""),
            ("ssh_username", " deploy "),
            ("ssh_login", login),
            ("ssh_private_key", key),
            ("ssh_host_key", ""),
        ]
    }

    #[test]
    fn an_ssh_server_logging_in_with_sdms_ca() {
        let request = fields(&ssh_form("ssh", LOGIN_WITH_CA, ""))
            .create_request()
            .unwrap_or_else(|_| panic!("refused"));
        // The PostgreSQL fields posted beside them ask for nothing.
        assert_eq!((request.credentials, request.upstream_tls), (None, None));
        assert_eq!(
            request.ssh,
            Some(SshSettings {
                username: "deploy".into(),
                private_key: None,
                certificate_authority: true,
                host_key: None,
                record_sessions: Some(false),
            })
        );
    }

    #[test]
    fn an_ssh_server_logging_in_with_a_stored_key_and_a_known_host_key() {
        let mut form = ssh_form("ssh", LOGIN_WITH_KEY, KEY);
        form.retain(|(k, _)| *k != "ssh_host_key");
        form.push(("ssh_host_key", HOST_KEY));
        let posted = fields(&form);
        let request = posted
            .create_request()
            .unwrap_or_else(|_| panic!("refused"));
        let ssh = request.ssh.unwrap();
        assert_eq!(ssh.private_key.as_deref(), Some(KEY));
        assert!(!ssh.certificate_authority);
        assert_eq!(ssh.host_key.as_deref(), Some(HOST_KEY));
        // A refused form shows what was typed, never the key.
        let view = FormView::posted(&posted, FieldErrors::default());
        assert!(view.logs_in_with_key());
        assert_eq!(view.ssh_host_key, HOST_KEY);
        // A CA chosen with a key pasted goes to the API as both, which says to give one.
        let both = fields(&ssh_form("ssh", LOGIN_WITH_CA, KEY))
            .create_request()
            .unwrap_or_else(|_| panic!("refused"));
        let both = both.ssh.unwrap();
        assert!(both.certificate_authority && both.private_key.is_some());
    }

    #[test]
    fn a_key_on_a_tcp_resource_goes_to_the_api_and_its_refusal_is_shown_beside_the_key() {
        let request = fields(&ssh_form("tcp", LOGIN_WITH_CA, KEY))
            .create_request()
            .unwrap_or_else(|_| panic!("refused"));
        assert!(request.ssh.is_some());
        // The API names `ssh` for settings on a kind that takes none.
        let refusal = ApiError::invalid("ssh settings are for resources of kind ssh, not tcp")
            .in_field("ssh");
        let errors = FieldErrors::of_api(&refusal);
        assert!(errors.get("ssh_private_key").unwrap().contains("kind ssh"));
        for (api, form) in [
            ("ssh.private_key", "ssh_private_key"),
            ("ssh.host_key", "ssh_host_key"),
            ("ssh.username", "ssh_username"),
        ] {
            assert!(FieldErrors::of_api(&ApiError::invalid("no").in_field(api)).has(form));
        }
        // The form's default login choice alone is not ssh settings.
        let request = fields(&[("kind", "tcp"), ("ssh_login", LOGIN_WITH_CA)])
            .create_request()
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(request.ssh, None);
    }

    fn stored_ssh(certificate_authority: bool, host_key: Option<&str>) -> AdminResource {
        AdminResource {
            kind: ResourceKind::Ssh,
            username: Some("deploy".into()),
            database: None,
            has_credentials: !certificate_authority,
            upstream_tls: TlsMode::Disable,
            ssh: Some(SshSettings {
                username: "deploy".into(),
                private_key: None,
                certificate_authority,
                host_key: host_key.map(str::to_owned),
                record_sessions: Some(false),
            }),
            ..stored()
        }
    }

    /// The edit form of `current` as shown, posted with `changes`.
    fn edit(
        current: &AdminResource,
        changes: &[(&str, &str)],
    ) -> Result<UpdateResource, FieldErrors> {
        let view = FormView::of(current);
        let login = if view.logs_in_with_key() {
            LOGIN_WITH_KEY
        } else {
            LOGIN_WITH_CA
        };
        let mut form = vec![
            ("hostname", "h"),
            ("port", "5432"),
            ("ssh_username", view.ssh_username.as_str()),
            ("ssh_login", login),
            ("ssh_private_key", ""),
            ("ssh_host_key", ""),
        ];
        form.retain(|(k, _)| !changes.iter().any(|(c, _)| c == k));
        form.extend_from_slice(changes);
        fields(&form).update_request(current)
    }

    #[test]
    fn an_unchanged_ssh_edit_form_keeps_the_stored_key_and_host_key() {
        let current = stored_ssh(false, Some(HOST_KEY));
        let view = FormView::of(&current);
        assert!(view.logs_in_with_key());
        assert_eq!(view.ssh_username, "deploy");
        let request = edit(&current, &[]).unwrap_or_else(|_| panic!("refused"));
        assert_eq!(request.ssh, None);
        assert!(!request.clear_ssh_host_key);
        assert_eq!(request.credentials, None);
        // A new user name alone keeps the key: the API keeps what is left out.
        let request =
            edit(&current, &[("ssh_username", "ops")]).unwrap_or_else(|_| panic!("refused"));
        let ssh = request.ssh.unwrap();
        assert_eq!((ssh.username.as_str(), ssh.private_key), ("ops", None));
        assert!(!ssh.certificate_authority);
        // A new key replaces it.
        let request =
            edit(&current, &[("ssh_private_key", KEY)]).unwrap_or_else(|_| panic!("refused"));
        assert_eq!(request.ssh.unwrap().private_key.as_deref(), Some(KEY));
        // Switching to the CA drops it (the API's doing, asked for here).
        let request =
            edit(&current, &[("ssh_login", LOGIN_WITH_CA)]).unwrap_or_else(|_| panic!("refused"));
        assert!(request.ssh.unwrap().certificate_authority);
    }

    #[test]
    fn switching_from_the_ca_to_a_key_needs_the_key() {
        let current = stored_ssh(true, None);
        let Err(errors) = edit(&current, &[("ssh_login", LOGIN_WITH_KEY)]) else {
            panic!("accepted");
        };
        assert!(
            errors
                .get("ssh_private_key")
                .unwrap()
                .contains("no key is stored")
        );
        let request = edit(
            &current,
            &[("ssh_login", LOGIN_WITH_KEY), ("ssh_private_key", KEY)],
        )
        .unwrap_or_else(|_| panic!("refused"));
        let ssh = request.ssh.unwrap();
        assert!(!ssh.certificate_authority);
        assert_eq!(ssh.private_key.as_deref(), Some(KEY));
    }

    #[test]
    fn the_recorded_host_key_is_forgotten_or_replaced() {
        let current = stored_ssh(true, Some(HOST_KEY));
        let request =
            edit(&current, &[("clear_ssh_host_key", "on")]).unwrap_or_else(|_| panic!("refused"));
        assert!(request.clear_ssh_host_key);
        // Nothing else changes.
        assert_eq!(request.ssh, None);
        let other =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHoGvZIpxzLq37/pvplqmvkR9cw0ptZaBGyt4yrMzg3l";
        let request =
            edit(&current, &[("ssh_host_key", other)]).unwrap_or_else(|_| panic!("refused"));
        assert!(!request.clear_ssh_host_key);
        let ssh = request.ssh.unwrap();
        assert_eq!(ssh.host_key.as_deref(), Some(other));
        assert!(ssh.certificate_authority);
    }
}
