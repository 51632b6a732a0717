//! Writing a whole installation into PostgreSQL, for `sdm-server migrate`: one transaction,
//! rows streamed in with binary `COPY`.

use std::mem::discriminant;
use std::pin::pin;

use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};

use super::PostgresStore;
use super::rows::{Context, count_at, signed};
use crate::store::StoreError;
use crate::store::transfer::{Counts, Item};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// What the database holds already.
async fn existing(tx: &Tx<'_>) -> Result<Counts, StoreError> {
    let context = "count what the database holds";
    let row = tx
        .query_one(
            "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM tokens),
                    (SELECT COUNT(*) FROM resources), (SELECT COUNT(*) FROM grants),
                    (SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM gateways),
                    (SELECT COUNT(*) FROM settings), (SELECT COUNT(*) FROM audit_connections),
                    (SELECT COUNT(*) FROM audit_queries), (SELECT COUNT(*) FROM audit_recordings)",
            &[],
        )
        .await
        .context(context)?;
    Ok(Counts {
        accounts: count_at(&row, 0)?,
        tokens: count_at(&row, 1)?,
        resources: count_at(&row, 2)?,
        grants: count_at(&row, 3)?,
        sessions: count_at(&row, 4)?,
        gateways: count_at(&row, 5)?,
        settings: count_at(&row, 6)?,
        connections: count_at(&row, 7)?,
        queries: count_at(&row, 8)?,
        recording_lines: count_at(&row, 9)?,
    })
}

/// The `COPY` statement and column types for a kind of item.
fn copy_target(item: &Item) -> Option<(&'static str, &'static [Type])> {
    Some(match item {
        Item::Account(_) => (
            "COPY accounts (id, name, kind, status, created_at) FROM STDIN BINARY",
            &[Type::UUID, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8],
        ),
        Item::Token(_) => (
            "COPY tokens (id, account_id, secret_hash, created_at, revoked_at) FROM STDIN BINARY",
            &[Type::UUID, Type::UUID, Type::BYTEA, Type::INT8, Type::INT8],
        ),
        Item::Resource(_) => (
            "COPY resources (id, name, kind, hostname, port, port_override, tags, username,
                             database, password_sealed, created_at, tls_mode, tls_ca_pem,
                             databases, replication, port_assigned,
                             ssh_certificate_authority, ssh_host_key, ssh_record_sessions)
             FROM STDIN BINARY",
            &[
                Type::UUID,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT4,
                Type::INT4,
                Type::JSONB,
                Type::TEXT,
                Type::TEXT,
                Type::BYTEA,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::JSONB,
                Type::BOOL,
                Type::BOOL,
                Type::BOOL,
                Type::TEXT,
                Type::BOOL,
            ],
        ),
        Item::Grant(_) => (
            "COPY grants (account_id, resource_id, created_at) FROM STDIN BINARY",
            &[Type::UUID, Type::UUID, Type::INT8],
        ),
        Item::Session(_) => (
            "COPY sessions (id, account_id, labels, client, created_at, ended_at, last_used_at)
             FROM STDIN BINARY",
            &[
                Type::UUID,
                Type::UUID,
                Type::JSONB,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
            ],
        ),
        Item::Gateway(_) => (
            "COPY gateways (id, name, address, server_name, last_seen) FROM STDIN BINARY",
            &[Type::UUID, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8],
        ),
        Item::Setting { .. } => (
            "COPY settings (key, value) FROM STDIN BINARY",
            &[Type::TEXT, Type::BYTEA],
        ),
        Item::Connection(_) => (
            "COPY audit_connections (id, account_id, account_name, resource_id, resource_name,
                                     gateway, session_id, lease_id, labels, client_addr,
                                     started_at, ended_at, bytes_up, bytes_down, outcome, error,
                                     query_count)
             FROM STDIN BINARY",
            &[
                Type::UUID,
                Type::UUID,
                Type::TEXT,
                Type::UUID,
                Type::TEXT,
                Type::TEXT,
                Type::UUID,
                Type::UUID,
                Type::JSONB,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
            ],
        ),
        Item::Query(_) => (
            "COPY audit_queries (connection_id, seq, at, text) FROM STDIN BINARY",
            &[Type::UUID, Type::INT8, Type::INT8, Type::TEXT],
        ),
        Item::Recording(_) => (
            "COPY audit_recordings (connection_id, channel, seq, line) FROM STDIN BINARY",
            &[Type::UUID, Type::INT8, Type::INT8, Type::TEXT],
        ),
        Item::RevocationEpoch(_) | Item::End(_) => return None,
    })
}

/// Writes a run of items of one kind.
async fn write_run(tx: &Tx<'_>, run: &[Item]) -> Result<(), StoreError> {
    let context = "copy rows into PostgreSQL";
    let Some(first) = run.first() else {
        return Ok(());
    };
    let Some((sql, types)) = copy_target(first) else {
        for item in run {
            if let Item::RevocationEpoch(epoch) = item {
                tx.execute(
                    "UPDATE revocation_epoch SET epoch = GREATEST(epoch, $1) WHERE id = 1",
                    &[epoch],
                )
                .await
                .context("copy the revocation epoch")?;
            }
        }
        return Ok(());
    };
    let sink = tx.copy_in(sql).await.context(context)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
    for item in run {
        let written = match item {
            Item::Account(a) => {
                writer
                    .as_mut()
                    .write(&[
                        &a.id,
                        &a.name,
                        &a.kind.as_str(),
                        &a.status.as_str(),
                        &a.created_at,
                    ])
                    .await
            }
            Item::Token(t) => {
                writer
                    .as_mut()
                    .write(&[
                        &t.id,
                        &t.account_id,
                        &t.secret_hash,
                        &t.created_at,
                        &t.revoked_at,
                    ])
                    .await
            }
            Item::Resource(r) => {
                writer
                    .as_mut()
                    .write(&[
                        &r.id,
                        &r.name,
                        &r.kind.as_str(),
                        &r.hostname,
                        &i32::from(r.port),
                        &r.port_override.map(i32::from),
                        &Json(&r.tags),
                        &r.username,
                        &r.database,
                        &r.password_sealed,
                        &r.created_at,
                        &r.tls_mode.as_str(),
                        &r.tls_ca_pem,
                        &Json(&r.databases),
                        &r.replication,
                        &r.port_assigned,
                        &r.ssh_certificate_authority,
                        &r.ssh_host_key,
                        &r.ssh_record_sessions,
                    ])
                    .await
            }
            Item::Grant(g) => {
                writer
                    .as_mut()
                    .write(&[&g.account_id, &g.resource_id, &g.created_at])
                    .await
            }
            Item::Session(s) => {
                writer
                    .as_mut()
                    .write(&[
                        &s.id,
                        &s.account_id,
                        &Json(&s.labels),
                        &s.client,
                        &s.created_at,
                        &s.ended_at,
                        &s.last_used_at,
                    ])
                    .await
            }
            Item::Gateway(g) => {
                writer
                    .as_mut()
                    .write(&[&g.id, &g.name, &g.address, &g.server_name, &g.last_seen])
                    .await
            }
            Item::Setting { key, value } => writer.as_mut().write(&[key, value]).await,
            Item::Connection(c) => {
                writer
                    .as_mut()
                    .write(&[
                        &c.id,
                        &c.account_id,
                        &c.account_name,
                        &c.resource_id,
                        &c.resource_name,
                        &c.gateway,
                        &c.session_id,
                        &c.lease_id,
                        &Json(&c.labels),
                        &c.client_addr,
                        &c.started_at,
                        &c.ended_at,
                        &signed(c.bytes_up),
                        &signed(c.bytes_down),
                        &c.outcome.as_str(),
                        &c.error,
                        &signed(c.query_count),
                    ])
                    .await
            }
            Item::Query(q) => {
                writer
                    .as_mut()
                    .write(&[&q.connection_id, &signed(q.seq), &q.at, &q.text])
                    .await
            }
            Item::Recording(l) => {
                writer
                    .as_mut()
                    .write(&[
                        &l.connection_id,
                        &i64::from(l.channel),
                        &signed(l.seq),
                        &l.line,
                    ])
                    .await
            }
            Item::RevocationEpoch(_) | Item::End(_) => Ok(()),
        };
        written.context(context)?;
    }
    writer.finish().await.context(context)?;
    Ok(())
}

impl PostgresStore {
    /// Writes the items received from `items` (as an export sends them: parents before
    /// children, see [`Item`]) in one transaction, committed only when the closing
    /// [`Item::End`] arrived and matches what was written, and returns how many of each it
    /// wrote. A database that holds any sdm data is refused with [`StoreError::NotEmpty`],
    /// unless `replace`: then its contents are deleted first, in the same transaction.
    pub async fn import(
        &self,
        items: &mut mpsc::Receiver<Vec<Item>>,
        replace: bool,
    ) -> Result<Counts, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .context("start the import transaction")?;
        let before = existing(&tx).await?;
        if !before.is_empty() {
            if !replace {
                return Err(StoreError::NotEmpty(before.to_string()));
            }
            tx.batch_execute(
                "TRUNCATE accounts, tokens, resources, grants, sessions, gateways, settings,
                          audit_connections, audit_queries, audit_recordings",
            )
            .await
            .context("empty the database")?;
            tracing::warn!(replaced = %before, "replaced the database's contents");
        }
        let mut counts = Counts::default();
        let mut end = None;
        while let Some(chunk) = items.recv().await {
            if end.is_some() {
                return Err(StoreError::backend(
                    "copy rows into PostgreSQL",
                    "the source sent rows after its end",
                ));
            }
            let mut rest = chunk.as_slice();
            if let Some(Item::End(sent)) = rest.last() {
                end = Some(*sent);
                rest = &rest[..rest.len() - 1];
            }
            while let Some(first) = rest.first() {
                let kind = discriminant(first);
                let end = rest
                    .iter()
                    .position(|i| discriminant(i) != kind)
                    .unwrap_or(rest.len());
                let (run, tail) = rest.split_at(end);
                write_run(&tx, run).await?;
                run.iter().for_each(|i| counts.add(i));
                rest = tail;
            }
        }
        // Without its end the source failed half way: roll back, keep nothing.
        match end {
            None => {
                return Err(StoreError::backend(
                    "copy rows into PostgreSQL",
                    "the source stopped before its end; nothing was written",
                ));
            }
            Some(sent) if sent != counts => {
                return Err(StoreError::backend(
                    "copy rows into PostgreSQL",
                    format!("the source sent {sent} but {counts} arrived; nothing was written"),
                ));
            }
            Some(_) => {}
        }
        tx.commit().await.context("commit the import")?;
        Ok(counts)
    }

    /// How many rows of each kind the database holds.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.context("start a transaction")?;
        let counts = existing(&tx).await?;
        tx.commit().await.context("commit a transaction")?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use sdm_proto::api::{AccountKind, AccountStatus};
    use uuid::Uuid;

    use super::*;
    use crate::store::AccountRecord;
    use crate::store::suite::fresh_postgres_database;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_that_stops_half_way_leaves_nothing() {
        let url = fresh_postgres_database().await;
        let target = PostgresStore::connect(&url).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let account = AccountRecord {
            id: Uuid::new_v4(),
            name: "a".into(),
            kind: AccountKind::Admin,
            status: AccountStatus::Active,
            created_at: 1,
        };
        tx.send(vec![Item::Account(account.clone())]).await.unwrap();
        drop(tx);
        let err = target.import(&mut rx, false).await.unwrap_err();
        assert!(
            sdm_proto::error::one_line(&err).contains("stopped before its end"),
            "{err:?}"
        );
        // A miscounted end is refused too.
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(vec![
            Item::Account(account),
            Item::End(Counts {
                accounts: 2,
                ..Counts::default()
            }),
        ])
        .await
        .unwrap();
        drop(tx);
        let err = target.import(&mut rx, false).await.unwrap_err();
        assert!(
            sdm_proto::error::one_line(&err).contains("nothing was written"),
            "{err:?}"
        );
        assert!(target.counts().await.unwrap().is_empty());
    }
}
