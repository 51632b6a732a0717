//! Resource kinds.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a resource speaks. A kind this version does not know (from a newer server) is kept as
/// [`ResourceKind::Other`], never an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// Redis.
    Redis,
    /// An SSH server.
    Ssh,
    /// Any TCP service, passed through untouched.
    Tcp,
    /// A kind this version does not know, by name.
    Other(String),
}

/// How the status table groups resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceClass {
    /// Databases and other data stores.
    Datasource,
    /// Servers reached by SSH or raw TCP.
    Server,
}

impl ResourceKind {
    /// The lowercase name used on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ResourceKind::Postgres => "postgres",
            ResourceKind::Mysql => "mysql",
            ResourceKind::Redis => "redis",
            ResourceKind::Ssh => "ssh",
            ResourceKind::Tcp => "tcp",
            ResourceKind::Other(name) => name,
        }
    }

    /// Reads a kind name; unknown names become [`ResourceKind::Other`].
    pub fn from_name(name: &str) -> ResourceKind {
        match name.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "pgsql" => ResourceKind::Postgres,
            "mysql" | "mariadb" => ResourceKind::Mysql,
            "redis" => ResourceKind::Redis,
            "ssh" => ResourceKind::Ssh,
            "tcp" => ResourceKind::Tcp,
            _ => ResourceKind::Other(name.to_owned()),
        }
    }

    /// The section of the status table this kind is listed in.
    pub fn class(&self) -> ResourceClass {
        match self {
            ResourceKind::Ssh | ResourceKind::Tcp => ResourceClass::Server,
            _ => ResourceClass::Datasource,
        }
    }

    /// The usual port of the service, used when a resource is created without one.
    pub fn default_port(&self) -> Option<u16> {
        match self {
            ResourceKind::Postgres => Some(5432),
            ResourceKind::Mysql => Some(3306),
            ResourceKind::Redis => Some(6379),
            ResourceKind::Ssh => Some(22),
            ResourceKind::Tcp | ResourceKind::Other(_) => None,
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResourceKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ResourceKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(ResourceKind::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_are_kept() {
        let k: ResourceKind = serde_json::from_str("\"kafka\"").unwrap();
        assert_eq!(k, ResourceKind::Other("kafka".into()));
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"kafka\"");
        let k: ResourceKind = serde_json::from_str("\"postgres\"").unwrap();
        assert_eq!(k, ResourceKind::Postgres);
        assert_eq!(k.class(), ResourceClass::Datasource);
        assert_eq!(ResourceKind::Ssh.class(), ResourceClass::Server);
    }
}
