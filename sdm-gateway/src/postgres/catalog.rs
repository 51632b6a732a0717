//! Names of functions, looked up in the resource's own catalog, so that the audit record of a
//! `FunctionCall` (which carries only an OID) says which function ran. The gateway asks on a
//! connection of its own, logged in with the stored credentials to the client's database; a
//! resource without stored credentials cannot be asked, and its records keep the OID alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::message::{self, MAX_AUTH_MESSAGE};
use super::{auth, upstream};
use crate::Upstream;

/// How long one look-up may take; after it the call is recorded with its OID alone.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest answer read (a few signatures).
const MAX_ANSWER: usize = 64 * 1024;

/// Where to look function names up.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    resource: Arc<Upstream>,
    database: String,
}

impl Catalog {
    /// The catalog of `database` on `resource`, if the gateway can log in there.
    pub(crate) fn of(resource: &Upstream, database: &str) -> Option<Catalog> {
        resource.credentials.as_ref()?;
        Some(Catalog {
            resource: Arc::new(resource.clone()),
            database: database.to_owned(),
        })
    }

    /// `oid → name(argument types)` for those of `oids` it could look up.
    pub(crate) async fn names(self, oids: Vec<u32>) -> HashMap<u32, String> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.ask(&oids)).await {
            Ok(Ok(names)) => names,
            Ok(Err(why)) => {
                tracing::warn!(resource = %self.resource.resource_name, reason = %why, "function names could not be looked up for the audit trail");
                HashMap::new()
            }
            Err(_) => {
                tracing::warn!(resource = %self.resource.resource_name, "looking up function names for the audit trail timed out");
                HashMap::new()
            }
        }
    }

    async fn ask(&self, oids: &[u32]) -> Result<HashMap<u32, String>, String> {
        let creds = self
            .resource
            .credentials
            .as_ref()
            .ok_or("no stored credentials")?;
        let mut server = upstream::connect(&self.resource).await?;
        let startup = [
            ("user".to_owned(), creds.username.clone()),
            ("database".to_owned(), self.database.clone()),
            (
                "application_name".to_owned(),
                "sdm-gateway audit".to_owned(),
            ),
        ];
        server
            .write_all(&message::startup_message(&startup))
            .await
            .map_err(|e| e.to_string())?;
        let logged_in = auth::log_in(&mut server, creds)
            .await
            .map_err(|e| format!("login failed: {e:?}"))?;
        // OIDs are numbers: the query holds no text from the client.
        let list: Vec<String> = oids.iter().map(u32::to_string).collect();
        let sql = format!(
            "SELECT oid, oid::regprocedure::text FROM pg_catalog.pg_proc WHERE oid IN ({})\0",
            list.join(",")
        );
        server
            .write_all(&message::message(b'Q', sql.as_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = BytesMut::from(&logged_in.forward[..]);
        let mut names = HashMap::new();
        let mut ready = 0;
        // ReadyForQuery after the login, then after the query.
        while ready < 2 {
            let msg = match message::take_message(&mut buf, MAX_AUTH_MESSAGE)? {
                Some(msg) => msg,
                None => {
                    if buf.len() > MAX_ANSWER {
                        return Err("the answer is too long".into());
                    }
                    let mut chunk = [0u8; 4096];
                    let n = server.read(&mut chunk).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("the server closed the connection".into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            };
            match msg.tag {
                b'Z' => ready += 1,
                // A row that cannot be read is left out, like one of another shape.
                b'E' | b'D' => match msg.parse() {
                    Ok(Message::ErrorResponse(error)) => {
                        let fields = message::fields(error.fields());
                        return Err(message::field(&fields, b'M').unwrap_or("error").to_owned());
                    }
                    Ok(Message::DataRow(row)) => {
                        if let Some((oid, name)) = data_row(&row) {
                            names.insert(oid, name);
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        let _ = server.write_all(&message::message(b'X', b"")).await;
        Ok(names)
    }
}

/// A `DataRow` of two text columns: OID, name.
fn data_row(row: &DataRowBody) -> Option<(u32, String)> {
    let mut ranges = row.ranges();
    let mut column = || match ranges.next() {
        Ok(Some(Some(range))) => std::str::from_utf8(row.buffer().get(range)?)
            .ok()
            .map(str::to_owned),
        // NULL, missing or malformed
        _ => None,
    };
    let oid = column()?.parse().ok()?;
    Some((oid, column()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row in a `DataRow` message with `body`, if it is one of two text columns.
    fn row(body: &[u8]) -> Option<(u32, String)> {
        let mut buf = BytesMut::from(&message::message(b'D', body)[..]);
        let msg = message::take_message(&mut buf, MAX_ANSWER).ok()??;
        match msg.parse() {
            Ok(Message::DataRow(row)) => data_row(&row),
            _ => None,
        }
    }

    #[test]
    fn data_rows_are_read_and_garbage_is_not() {
        let mut body = 2i16.to_be_bytes().to_vec();
        for value in ["2925", "query_to_xml(text,boolean,boolean,text)"] {
            body.extend_from_slice(&(value.len() as i32).to_be_bytes());
            body.extend_from_slice(value.as_bytes());
        }
        assert_eq!(
            row(&body),
            Some((2925, "query_to_xml(text,boolean,boolean,text)".into()))
        );
        for cut in 0..body.len() {
            assert_eq!(row(&body[..cut]), None);
        }
        let mut null = 2i16.to_be_bytes().to_vec();
        null.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(row(&null), None);
    }
}
