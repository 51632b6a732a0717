//! The resource form, shared by **add resource** and a resource's edit form: its fields as
//! posted ([`ResourceFields`]), what the page shows of them ([`FormView`], which has no
//! password field, so a password is never rendered back), and their translation into the API's
//! [`CreateResource`] and [`UpdateResource`].
//!
//! The console only reads the text of the fields (a port is a number, tags are `k=v, k=v`); every
//! rule is the API's, and a refusal is shown beside the field the API names
//! ([`ApiError::field`]).

use std::collections::BTreeMap;

use sdm_proto::ResourceKind;
use sdm_proto::api::{
    AdminResource, CreateResource, Credentials, TlsMode, UpdateResource, UpstreamTls,
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
            _ => "",
        };
        let mut errors = FieldErrors::default();
        errors.add(field, e.message());
        errors
    }
}

/// The form as a page shows it: what was typed (or stored), never a password.
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
            errors: FieldErrors::default(),
        }
    }

    /// The edit form of `r` as stored. The port override shown is an explicit one only (an
    /// assigned port is the setting's, shown beside the field); the CA is not read back.
    pub(crate) fn of(r: &AdminResource) -> FormView {
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
            errors: FieldErrors::default(),
        }
    }

    /// The form as posted (the password left out), with `errors`.
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
            errors,
        }
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

impl ResourceFields {
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
        if errors.0.is_empty() {
            Ok(request)
        } else {
            Err(errors)
        }
    }

    /// The change of `current` the edit form asks for, or what the fields' text does not say.
    /// An empty password keeps the stored one; an empty port keeps the port.
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
        if errors.0.is_empty() {
            Ok(request)
        } else {
            Err(errors)
        }
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
        let request = fields(&[("kind", "ssh"), ("name", "s"), ("hostname", "h")])
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
}
