//! How records cross into PostgreSQL and back: each table's column list and row reader, the
//! readers of columns kept as JSON or as enum names (whose text forms are `sdm_proto`'s), and
//! the error context of a failed call. The other files of this backend read rows only through
//! these, so that a table's shape is written once.

use std::collections::BTreeMap;
use std::str::FromStr;

use sdm_proto::ResourceKind;
use sdm_proto::api::UnknownName;
use sdm_proto::audit::{AuditRecord, Outcome};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Json};

use crate::store::{
    AccountRecord, GatewayRecord, GrantRecord, ResourceRecord, SessionRecord, StoreError,
    TokenRecord,
};

pub(super) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::backend(context, e))
    }
}

/// Column `i` of `row`; a type mismatch is a backend error naming the column.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::backend("decode a database row", e))
}

pub(super) fn invalid(message: String) -> StoreError {
    StoreError::backend(
        "decode a database row",
        std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    )
}

pub(super) fn map_at(row: &Row, i: usize) -> Result<BTreeMap<String, String>, StoreError> {
    let Json(map) = col::<Json<BTreeMap<String, String>>>(row, i)?;
    Ok(map)
}

pub(super) fn list_at(row: &Row, i: usize) -> Result<Vec<String>, StoreError> {
    let Json(list) = col::<Json<Vec<String>>>(row, i)?;
    Ok(list)
}

/// Column `i`, a count stored as a signed integer.
pub(super) fn count_at(row: &Row, i: usize) -> Result<u64, StoreError> {
    Ok(u64::try_from(col::<i64>(row, i)?).unwrap_or(0))
}

/// A count as PostgreSQL's signed integer, capped.
pub(super) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Column `i`, an enum's name (an account kind or status, a TLS mode; see `sdm_proto::api`).
fn name_at<T: FromStr<Err = UnknownName>>(row: &Row, i: usize) -> Result<T, StoreError> {
    col::<&str>(row, i)?
        .parse()
        .map_err(|e: UnknownName| invalid(e.to_string()))
}

pub(super) fn port_at(row: &Row, i: usize) -> Result<Option<u16>, StoreError> {
    col::<Option<i32>>(row, i)?
        .map(|p| u16::try_from(p).map_err(|_| invalid(format!("bad port {p}"))))
        .transpose()
}

pub(super) const ACCOUNT_COLUMNS: &str = "id, name, kind, status, created_at";

pub(super) fn account_row(row: &Row) -> Result<AccountRecord, StoreError> {
    Ok(AccountRecord {
        id: col(row, 0)?,
        name: col(row, 1)?,
        kind: name_at(row, 2)?,
        status: name_at(row, 3)?,
        created_at: col(row, 4)?,
    })
}

pub(super) const TOKEN_COLUMNS: &str = "id, account_id, secret_hash, created_at, revoked_at";

pub(super) fn token_row(row: &Row) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: col(row, 0)?,
        account_id: col(row, 1)?,
        secret_hash: col(row, 2)?,
        created_at: col(row, 3)?,
        revoked_at: col(row, 4)?,
    })
}

pub(super) const RESOURCE_COLUMNS: &str = "r.id, r.name, r.kind, r.hostname, r.port, r.port_override, \
     r.tags, r.username, r.database, r.password_sealed, r.created_at, r.tls_mode, r.tls_ca_pem, \
     r.databases, r.replication, r.port_assigned, r.ssh_certificate_authority, r.ssh_host_key, \
     r.ssh_record_sessions";

pub(super) fn resource_row(row: &Row) -> Result<ResourceRecord, StoreError> {
    let kind: &str = col(row, 2)?;
    Ok(ResourceRecord {
        id: col(row, 0)?,
        name: col(row, 1)?,
        kind: ResourceKind::from_name(kind),
        hostname: col(row, 3)?,
        port: port_at(row, 4)?.ok_or_else(|| invalid("missing port".into()))?,
        port_override: port_at(row, 5)?,
        tags: map_at(row, 6)?,
        username: col(row, 7)?,
        database: col(row, 8)?,
        password_sealed: col(row, 9)?,
        created_at: col(row, 10)?,
        tls_mode: name_at(row, 11)?,
        tls_ca_pem: col(row, 12)?,
        databases: list_at(row, 13)?,
        replication: col(row, 14)?,
        port_assigned: col(row, 15)?,
        ssh_certificate_authority: col(row, 16)?,
        ssh_host_key: col(row, 17)?,
        ssh_record_sessions: col(row, 18)?,
    })
}

pub(super) const SESSION_COLUMNS: &str =
    "id, account_id, labels, client, created_at, ended_at, last_used_at";

pub(super) fn session_row(row: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: col(row, 0)?,
        account_id: col(row, 1)?,
        labels: map_at(row, 2)?,
        client: col(row, 3)?,
        created_at: col(row, 4)?,
        ended_at: col(row, 5)?,
        last_used_at: col(row, 6)?,
    })
}

pub(super) const GATEWAY_COLUMNS: &str = "id, name, address, server_name, last_seen";

pub(super) fn gateway_row(row: &Row) -> Result<GatewayRecord, StoreError> {
    Ok(GatewayRecord {
        id: col(row, 0)?,
        name: col(row, 1)?,
        address: col(row, 2)?,
        server_name: col(row, 3)?,
        last_seen: col(row, 4)?,
    })
}

pub(super) fn grant_row(row: &Row) -> Result<GrantRecord, StoreError> {
    Ok(GrantRecord {
        account_id: col(row, 0)?,
        resource_id: col(row, 1)?,
        created_at: col(row, 2)?,
    })
}

pub(super) const CONNECTION_COLUMNS: &str = "id, account_id, account_name, resource_id, resource_name, \
     gateway, session_id, lease_id, labels, client_addr, started_at, ended_at, bytes_up, \
     bytes_down, outcome, error, query_count";

pub(super) fn connection_row(row: &Row) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: col(row, 0)?,
        account_id: col(row, 1)?,
        account_name: col(row, 2)?,
        resource_id: col(row, 3)?,
        resource_name: col(row, 4)?,
        gateway: col(row, 5)?,
        session_id: col(row, 6)?,
        lease_id: col(row, 7)?,
        labels: map_at(row, 8)?,
        client_addr: col(row, 9)?,
        started_at: col(row, 10)?,
        ended_at: col(row, 11)?,
        bytes_up: count_at(row, 12)?,
        bytes_down: count_at(row, 13)?,
        outcome: Outcome::from(col::<String>(row, 14)?),
        error: col(row, 15)?,
        query_count: count_at(row, 16)?,
    })
}
