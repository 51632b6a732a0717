//! Resources an account may connect to, and how a name or substring picks one.

use std::collections::BTreeMap;

use sdm_proto::api::ResourceInfo;
use uuid::Uuid;

pub use sdm_proto::ResourceKind;
pub use sdm_proto::resource::ResourceClass;

use crate::error::{Error, ErrorKind, Result};

/// A resource granted to the session's account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resource {
    /// Resource id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// What it speaks; unknown kinds from a newer server are kept as [`ResourceKind::Other`].
    pub kind: ResourceKind,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
    /// The fixed local port tunnels listen on, when the admin set one.
    pub port_override: Option<u16>,
    /// Whether a live gateway serves it.
    pub healthy: bool,
    /// ssh resources: the host key line (`ssh-ed25519 AAAA…`) every gateway presents for it,
    /// to pin in `known_hosts`.
    pub ssh_host_key: Option<String>,
}

impl From<ResourceInfo> for Resource {
    fn from(r: ResourceInfo) -> Resource {
        Resource {
            id: r.id,
            name: r.name,
            kind: r.kind,
            tags: r.tags,
            port_override: r.port_override,
            healthy: r.healthy,
            ssh_host_key: r.ssh_host_key,
        }
    }
}

/// Picks the resource `query` means: an exact name (or id), else a unique case-insensitive
/// exact name, else a unique case-insensitive substring.
pub(crate) fn resolve<'a>(resources: &'a [Resource], query: &str) -> Result<&'a Resource> {
    let query = query.trim();
    if query.is_empty() {
        return Err(Error::invalid_argument("resource name is empty"));
    }
    if let Some(r) = resources
        .iter()
        .find(|r| r.name == query || r.id.to_string() == query)
    {
        return Ok(r);
    }
    let lower = query.to_lowercase();
    let same_name: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.name.to_lowercase() == lower)
        .collect();
    if let [one] = same_name.as_slice() {
        return Ok(one);
    }
    let matches: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.name.to_lowercase().contains(&lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::new(
            ErrorKind::ResourceNotFound,
            format!(
                "no resource named or containing {query:?} is granted to this account \
                 (`sdm status` or list_resources() shows what is)"
            ),
        )),
        many => {
            let names: Vec<String> = many.iter().map(|r| r.name.clone()).collect();
            Err(Error::new(
                ErrorKind::AmbiguousResource,
                format!(
                    "{query:?} matches {} resources: {}; use a longer part of the name",
                    names.len(),
                    names.join(", ")
                ),
            )
            .with_candidates(names))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str) -> Resource {
        Resource {
            id: Uuid::new_v4(),
            name: name.into(),
            kind: ResourceKind::Postgres,
            tags: BTreeMap::new(),
            port_override: None,
            healthy: true,
            ssh_host_key: None,
        }
    }

    #[test]
    fn picks_exact_then_unique_substring() {
        let all = vec![
            res("pgsql_1_31"),
            res("pgsql_2"),
            res("server-245a"),
            res("PG"),
        ];
        assert_eq!(resolve(&all, "pgsql_2").unwrap().name, "pgsql_2");
        assert_eq!(resolve(&all, "server").unwrap().name, "server-245a");
        assert_eq!(resolve(&all, "_1_").unwrap().name, "pgsql_1_31");
        // "pg" is ambiguous as a substring but exactly (case-insensitively) names "PG".
        assert_eq!(resolve(&all, "pg").unwrap().name, "PG");
        let id = all[2].id.to_string();
        assert_eq!(resolve(&all, &id).unwrap().name, "server-245a");
    }

    #[test]
    fn ambiguous_lists_candidates_and_missing_is_not_found() {
        let all = vec![res("pgsql_1_31"), res("pgsql_2"), res("server-245a")];
        let e = resolve(&all, "PGSQL").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AmbiguousResource);
        assert_eq!(e.candidates(), ["pgsql_1_31", "pgsql_2"]);
        assert!(e.message().contains("pgsql_1_31, pgsql_2"));
        assert_eq!(
            resolve(&all, "mysql").unwrap_err().kind(),
            ErrorKind::ResourceNotFound
        );
        assert_eq!(
            resolve(&all, "  ").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
