//! Which database the gateway logs in to: the one the client names if the resource allows it
//! (the stored database and the resource's allowed databases; a resource with neither lets the
//! client choose), never silently another one; none named: the stored one, else the first
//! allowed one, else none. The same rule as PostgreSQL's, without its user-name fallback
//! (MySQL clients do not send one).

use crate::Upstream;

/// The database to log in to (`None`: none), or the refusal the client is told.
pub(crate) fn admit(resource: &Upstream, asked: Option<&str>) -> Result<Option<String>, String> {
    let stored = resource
        .credentials
        .as_ref()
        .and_then(|c| c.database.as_deref())
        .filter(|d| !d.is_empty());
    let allowed: Vec<&str> = stored
        .into_iter()
        .chain(resource.databases.iter().map(String::as_str))
        .collect();
    match asked {
        Some(db) if allowed.is_empty() || allowed.contains(&db) => Ok(Some(db.to_owned())),
        Some(db) => Err(format!(
            "sdm: resource \"{}\" does not allow database \"{db}\"; allowed: {}. Connect to one \
             of them, or ask an admin to add \"{db}\" to the resource's databases.",
            resource.resource_name,
            allowed.join(", ")
        )),
        None => Ok(allowed.first().map(|db| (*db).to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use sdm_proto::ResourceKind;

    use super::*;

    fn resource(stored: Option<&str>, databases: &[&str]) -> Upstream {
        Upstream {
            resource_name: "shop".into(),
            kind: ResourceKind::Mysql,
            host: "127.0.0.1".into(),
            port: 3306,
            credentials: Some(sdm_proto::api::Credentials {
                username: "u".into(),
                password: "p".into(),
                database: stored.map(str::to_owned),
            }),
            upstream_tls: Default::default(),
            account_name: "a".into(),
            labels: Default::default(),
            databases: databases.iter().map(|d| (*d).to_owned()).collect(),
            replication: false,
            ssh: None,
        }
    }

    #[test]
    fn the_named_database_is_used_only_when_allowed() {
        let r = resource(Some("app"), &["reports"]);
        assert_eq!(admit(&r, None).unwrap().as_deref(), Some("app"));
        assert_eq!(
            admit(&r, Some("reports")).unwrap().as_deref(),
            Some("reports")
        );
        let why = admit(&r, Some("mysql")).unwrap_err();
        assert!(why.contains("\"shop\" does not allow database \"mysql\"; allowed: app, reports"));
        let open = resource(None, &[]);
        assert_eq!(admit(&open, Some("any")).unwrap().as_deref(), Some("any"));
        assert_eq!(admit(&open, None).unwrap(), None);
        assert_eq!(
            admit(&resource(None, &["x"]), None).unwrap().as_deref(),
            Some("x")
        );
    }
}
