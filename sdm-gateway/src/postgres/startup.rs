//! What a client's startup may ask for through a resource: a database the resource allows
//! (never silently another one), and replication only where the resource allows it. And the
//! startup the gateway sends in the client's name when it logs in with stored credentials.

use crate::{Upstream, UpstreamCredentials};

/// Why a startup is refused, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// SQLSTATE.
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) hint: String,
}

/// Checks a client's startup parameters against the resource; with stored credentials, returns
/// the database the gateway logs in to.
///
/// The database: the one the client names if the resource allows it: the stored database and
/// the resource's allowed databases (a resource with neither lets the client choose). A client
/// that names none gets the stored database (else the first allowed one); libpq and most
/// drivers send the user name as the database when none is named, so a database equal to the
/// client's user name that the resource does not allow counts as none named.
pub(crate) fn admit(resource: &Upstream, params: &[(String, String)]) -> Result<String, Refusal> {
    let name = &resource.resource_name;
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if let Some(mode) = param("replication")
        && !matches!(
            mode.to_ascii_lowercase().as_str(),
            "false" | "off" | "no" | "0"
        )
        && !resource.replication
    {
        return Err(Refusal {
            code: "42501",
            message: format!(
                "sdm: resource \"{name}\" does not allow replication connections \
                 (replication={mode})"
            ),
            hint: format!(
                "An admin can allow them with `sdm admin resources update {name} \
                 --allow-replication`; they read every database of the server."
            ),
        });
    }
    let stored = resource
        .credentials
        .as_ref()
        .and_then(|c| c.database.clone());
    let allowed: Vec<&str> = stored
        .iter()
        .chain(&resource.databases)
        .map(String::as_str)
        .collect();
    let user = param("user").unwrap_or("");
    let asked = param("database").filter(|d| !d.is_empty());
    let refuse = |db: &str| Refusal {
        code: "42501",
        message: format!(
            "sdm: resource \"{name}\" does not allow database \"{db}\"; allowed: {}",
            allowed.join(", ")
        ),
        hint: format!(
            "Connect with one of them (e.g. dbname={}), or ask an admin to add \"{db}\" to the \
             resource's databases.",
            allowed.first().copied().unwrap_or_default()
        ),
    };
    let Some(creds) = &resource.credentials else {
        // The client logs in itself and its startup goes through unchanged: the database it
        // gets is the one it names, else its user name.
        let db = asked.unwrap_or(user);
        return if allowed.is_empty() || allowed.contains(&db) {
            Ok(db.to_owned())
        } else {
            Err(refuse(db))
        };
    };
    match asked {
        Some(db) if allowed.is_empty() || allowed.contains(&db) => Ok(db.to_owned()),
        Some(db) if db != user => Err(refuse(db)),
        // None named.
        _ => Ok(allowed
            .first()
            .map_or_else(|| creds.username.clone(), |db| (*db).to_owned())),
    }
}

/// The startup the gateway sends when it logs in with `creds` to `database`: the client's
/// parameters with the user and database replaced, and protocol extensions (`_pq_.…`) left out.
/// Returns it and the extensions left out (the client is told with NegotiateProtocolVersion).
pub(crate) fn login_params(
    creds: &UpstreamCredentials,
    database: String,
    params: Vec<(String, String)>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut dropped = Vec::new();
    let mut startup = vec![
        ("user".to_owned(), creds.username.clone()),
        ("database".to_owned(), database),
    ];
    for (k, v) in params {
        if k.starts_with("_pq_.") {
            dropped.push(k);
        } else if k != "user" && k != "database" {
            startup.push((k, v));
        }
    }
    (startup, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(stored: Option<&str>, databases: &[&str], replication: bool) -> Upstream {
        Upstream {
            resource_name: "pg".into(),
            kind: sdm_proto::ResourceKind::Postgres,
            host: "127.0.0.1".into(),
            port: 5432,
            credentials: Some(UpstreamCredentials {
                username: "app_rw".into(),
                password: "pw".into(),
                database: stored.map(str::to_owned),
            }),
            upstream_tls: Default::default(),
            account_name: "etl".into(),
            labels: Default::default(),
            databases: databases.iter().map(|d| (*d).to_owned()).collect(),
            replication,
            ssh: None,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_database_is_one_the_resource_allows_and_never_silently_another() {
        let r = resource(Some("app"), &["reports"], false);
        let pick = |p: &[(&str, &str)]| admit(&r, &params(p));
        assert_eq!(
            pick(&[("user", "x"), ("database", "app")]),
            Ok("app".into())
        );
        assert_eq!(
            pick(&[("user", "x"), ("database", "reports")]),
            Ok("reports".into())
        );
        assert_eq!(pick(&[("user", "x")]), Ok("app".into()), "none named");
        assert_eq!(pick(&[("user", "x"), ("database", "")]), Ok("app".into()));
        assert_eq!(
            pick(&[("user", "root"), ("database", "root")]),
            Ok("app".into()),
            "libpq's default (the user name) counts as none named"
        );
        let refused = pick(&[("user", "x"), ("database", "nosuchdb")]).unwrap_err();
        assert_eq!(refused.code, "42501");
        assert!(
            refused.message.contains("\"pg\"") && refused.message.contains("app, reports"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn without_a_stored_database_or_list_the_client_chooses() {
        let r = resource(None, &[], false);
        assert_eq!(
            admit(&r, &params(&[("user", "x"), ("database", "any")])),
            Ok("any".into())
        );
        assert_eq!(admit(&r, &params(&[("user", "x")])), Ok("app_rw".into()));
        let listed = resource(None, &["a", "b"], false);
        assert_eq!(admit(&listed, &params(&[("user", "x")])), Ok("a".into()));
        assert!(admit(&listed, &params(&[("user", "x"), ("database", "c")])).is_err());
    }

    #[test]
    fn a_client_that_logs_in_itself_gets_what_it_names_within_the_list() {
        let mut r = resource(None, &["app"], false);
        r.credentials = None;
        let pick = |p: &[(&str, &str)]| admit(&r, &params(p));
        assert_eq!(
            pick(&[("user", "u"), ("database", "app")]),
            Ok("app".into())
        );
        assert!(
            pick(&[("user", "u")]).is_err(),
            "its own default, the user name"
        );
        assert!(pick(&[("user", "app")]).is_ok());
        assert!(pick(&[("user", "u"), ("database", "u")]).is_err());
    }

    #[test]
    fn replication_only_where_allowed() {
        for mode in ["true", "database", "on", "1", "yes", "physical?"] {
            let p = params(&[("user", "x"), ("database", "app"), ("replication", mode)]);
            let refused = admit(&resource(Some("app"), &[], false), &p).unwrap_err();
            assert!(refused.message.contains("replication"), "{mode}");
            assert!(
                admit(&resource(Some("app"), &[], true), &p).is_ok(),
                "{mode}"
            );
        }
        for mode in ["false", "off", "no", "0", "FALSE"] {
            let p = params(&[("user", "x"), ("replication", mode)]);
            assert!(
                admit(&resource(Some("app"), &[], false), &p).is_ok(),
                "{mode}"
            );
        }
    }

    #[test]
    fn login_params_replace_the_identity_and_drop_extensions() {
        let creds = resource(Some("app"), &[], false).credentials.unwrap();
        let (startup, dropped) = login_params(
            &creds,
            "app".into(),
            params(&[
                ("user", "x"),
                ("database", "y"),
                ("application_name", "etl"),
                ("_pq_.compression", "on"),
            ]),
        );
        assert_eq!(
            startup,
            params(&[
                ("user", "app_rw"),
                ("database", "app"),
                ("application_name", "etl")
            ])
        );
        assert_eq!(dropped, ["_pq_.compression"]);
    }
}
