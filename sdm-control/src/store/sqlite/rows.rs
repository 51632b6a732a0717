//! How records cross into SQLite and back: each table's column list and row reader, the
//! readers of what SQLite keeps as text (ids, JSON maps and lists, enum names, whose text forms
//! are `sdm_proto`'s), and the error context of a failed call. The other files of this backend
//! read rows only through these, so that a table's shape is written once.

use std::collections::BTreeMap;
use std::str::FromStr;

use rusqlite::Row;
use sdm_proto::ResourceKind;
use sdm_proto::api::UnknownName;
use sdm_proto::audit::{AuditRecord, Outcome};
use uuid::Uuid;

use crate::store::{
    AccountRecord, GatewayRecord, GrantRecord, ResourceRecord, SessionRecord, StoreError,
    TokenRecord,
};

pub(super) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::backend(context, e))
    }
}

fn conversion(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        Box::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            message,
        )),
    )
}

pub(super) fn uuid_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(i)?;
    Uuid::parse_str(&text).map_err(|_| conversion(i, format!("bad uuid {text:?}")))
}

pub(super) fn map_at(row: &Row<'_>, i: usize) -> rusqlite::Result<BTreeMap<String, String>> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|_| conversion(i, "bad JSON map".into()))
}

pub(super) fn json(map: &BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(map).map_err(|e| StoreError::backend("encode a map as JSON", e))
}

pub(super) fn list_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|_| conversion(i, "bad JSON list".into()))
}

pub(super) fn json_list(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|e| StoreError::backend("encode a list as JSON", e))
}

/// Column `i`, an enum's name (an account kind or status, a TLS mode; see `sdm_proto::api`).
fn name_at<T: FromStr<Err = UnknownName>>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    text.parse()
        .map_err(|e: UnknownName| conversion(i, e.to_string()))
}

pub(super) fn port_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<u16>> {
    let value: Option<i64> = row.get(i)?;
    value
        .map(|p| u16::try_from(p).map_err(|_| conversion(i, format!("bad port {p}"))))
        .transpose()
}

pub(super) const ACCOUNT_COLUMNS: &str = "id, name, kind, status, created_at";

pub(super) fn account_row(row: &Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        id: uuid_at(row, 0)?,
        name: row.get(1)?,
        kind: name_at(row, 2)?,
        status: name_at(row, 3)?,
        created_at: row.get(4)?,
    })
}

pub(super) const TOKEN_COLUMNS: &str = "id, account_id, secret_hash, created_at, revoked_at";

pub(super) fn token_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: uuid_at(row, 0)?,
        account_id: uuid_at(row, 1)?,
        secret_hash: row.get(2)?,
        created_at: row.get(3)?,
        revoked_at: row.get(4)?,
    })
}

pub(super) const RESOURCE_COLUMNS: &str = "r.id, r.name, r.kind, r.hostname, r.port, r.port_override, \
     r.tags, r.username, r.database, r.password_sealed, r.created_at, r.tls_mode, r.tls_ca_pem, \
     r.databases, r.replication, r.port_assigned, r.ssh_certificate_authority, r.ssh_host_key, \
     r.ssh_record_sessions";

pub(super) fn resource_row(row: &Row<'_>) -> rusqlite::Result<ResourceRecord> {
    let kind: String = row.get(2)?;
    Ok(ResourceRecord {
        id: uuid_at(row, 0)?,
        name: row.get(1)?,
        kind: ResourceKind::from_name(&kind),
        hostname: row.get(3)?,
        port: port_at(row, 4)?.ok_or_else(|| conversion(4, "missing port".into()))?,
        port_override: port_at(row, 5)?,
        tags: map_at(row, 6)?,
        username: row.get(7)?,
        database: row.get(8)?,
        password_sealed: row.get(9)?,
        created_at: row.get(10)?,
        tls_mode: name_at(row, 11)?,
        tls_ca_pem: row.get(12)?,
        databases: list_at(row, 13)?,
        replication: row.get(14)?,
        port_assigned: row.get(15)?,
        ssh_certificate_authority: row.get(16)?,
        ssh_host_key: row.get(17)?,
        ssh_record_sessions: row.get(18)?,
    })
}

pub(super) const SESSION_COLUMNS: &str =
    "id, account_id, labels, client, created_at, ended_at, last_used_at";

pub(super) fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: uuid_at(row, 0)?,
        account_id: uuid_at(row, 1)?,
        labels: map_at(row, 2)?,
        client: row.get(3)?,
        created_at: row.get(4)?,
        ended_at: row.get(5)?,
        last_used_at: row.get(6)?,
    })
}

pub(super) const GATEWAY_COLUMNS: &str = "id, name, address, server_name, last_seen";

pub(super) fn gateway_row(row: &Row<'_>) -> rusqlite::Result<GatewayRecord> {
    Ok(GatewayRecord {
        id: uuid_at(row, 0)?,
        name: row.get(1)?,
        address: row.get(2)?,
        server_name: row.get(3)?,
        last_seen: row.get(4)?,
    })
}

pub(super) fn grant_row(row: &Row<'_>) -> rusqlite::Result<GrantRecord> {
    Ok(GrantRecord {
        account_id: uuid_at(row, 0)?,
        resource_id: uuid_at(row, 1)?,
        created_at: row.get(2)?,
    })
}

pub(super) const CONNECTION_COLUMNS: &str = "id, account_id, account_name, resource_id, \
     resource_name, gateway, session_id, lease_id, labels, client_addr, started_at, ended_at, \
     bytes_up, bytes_down, outcome, error, query_count";

pub(super) fn connection_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: uuid_at(row, 0)?,
        account_id: uuid_at(row, 1)?,
        account_name: row.get(2)?,
        resource_id: uuid_at(row, 3)?,
        resource_name: row.get(4)?,
        gateway: row.get(5)?,
        session_id: uuid_at(row, 6)?,
        lease_id: uuid_at(row, 7)?,
        labels: map_at(row, 8)?,
        client_addr: row.get(9)?,
        started_at: row.get(10)?,
        ended_at: row.get(11)?,
        bytes_up: count_at(row, 12)?,
        bytes_down: count_at(row, 13)?,
        outcome: Outcome::from(row.get::<_, String>(14)?),
        error: row.get(15)?,
        query_count: count_at(row, 16)?,
    })
}

/// Column `i`, a count stored as a signed integer.
pub(super) fn count_at(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(i)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A count as SQLite's signed integer, capped.
pub(super) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
