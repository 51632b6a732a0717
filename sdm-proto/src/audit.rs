//! The audit trail's one model: what a gateway reports ([`AuditEvent`]), what the control plane
//! keeps and shows ([`AuditRecord`], [`AuditQuery`]), and how a connection ended ([`Outcome`]).
//!
//! A gateway emits these events, a standalone one uploads them as they are
//! ([`AuditUpload`](crate::gateway::AuditUpload)), the store saves them, and the admin API
//! answers with the records they leave. The API modules re-export the types under their
//! earlier paths (`api::AuditRecord`, `gateway::AuditEvent`, …).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::ErrorKind;

/// How a connection went: `open` while it lasts, then `ok` or the [`ErrorKind`] name of what
/// ended it, or `interrupted` when its gateway stopped without ending it. A name this version
/// does not know (from a newer peer) is kept as [`Outcome::Other`], never an error, and written
/// back as it came.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The connection is still open.
    Open,
    /// It ended normally.
    Ok,
    /// Its gateway stopped (a crash, a kill) before ending it; closed at the gateway's next start.
    Interrupted,
    /// It failed or was refused, for this reason.
    Error(ErrorKind),
    /// A name this version does not know.
    Other(String),
}

impl Outcome {
    /// The name used on the wire and in the database.
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Open => "open",
            Outcome::Ok => "ok",
            Outcome::Interrupted => "interrupted",
            Outcome::Error(kind) => kind.as_str(),
            Outcome::Other(name) => name,
        }
    }

    /// Reads a name; unknown names become [`Outcome::Other`].
    pub fn from_name(name: &str) -> Outcome {
        match name {
            "open" => Outcome::Open,
            "ok" => Outcome::Ok,
            "interrupted" => Outcome::Interrupted,
            _ => match ErrorKind::ALL.into_iter().find(|k| k.as_str() == name) {
                Some(kind) => Outcome::Error(kind),
                None => Outcome::Other(name.to_owned()),
            },
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Outcome {
    type Err = std::convert::Infallible;

    fn from_str(name: &str) -> Result<Outcome, Self::Err> {
        Ok(Outcome::from_name(name))
    }
}

impl From<&str> for Outcome {
    fn from(name: &str) -> Outcome {
        Outcome::from_name(name)
    }
}

impl From<String> for Outcome {
    fn from(name: String) -> Outcome {
        match Outcome::from_name(&name) {
            Outcome::Other(_) => Outcome::Other(name),
            known => known,
        }
    }
}

impl From<ErrorKind> for Outcome {
    fn from(kind: ErrorKind) -> Outcome {
        Outcome::Error(kind)
    }
}

impl PartialEq<str> for Outcome {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Outcome::from(String::deserialize(d)?))
    }
}

/// One connection through a gateway, as the audit trail keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// Record id.
    pub id: Uuid,
    /// The account.
    pub account_id: Uuid,
    /// The account's name at the time.
    pub account_name: String,
    /// The resource.
    pub resource_id: Uuid,
    /// The resource's name at the time.
    pub resource_name: String,
    /// The gateway that carried it.
    pub gateway: String,
    /// The login session.
    pub session_id: Uuid,
    /// The lease presented.
    pub lease_id: Uuid,
    /// Job labels given at login.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The client's address as the gateway saw it.
    pub client_addr: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while open.
    pub ended_at: Option<i64>,
    /// Bytes from the client to the resource.
    pub bytes_up: u64,
    /// Bytes from the resource to the client.
    pub bytes_down: u64,
    /// `open`, `ok`, `interrupted`, or an error kind name (`upstream_refused`,
    /// `unauthenticated`, …).
    pub outcome: Outcome,
    /// What failed, when something did.
    #[serde(default)]
    pub error: Option<String>,
    /// Queries recorded (postgres).
    pub query_count: u64,
}

impl AuditRecord {
    /// Closes the record as `end` says (the one way an end changes a record, wherever it is
    /// applied: folded into a batch, or written to a store).
    pub fn apply(&mut self, end: &AuditEnd) {
        self.ended_at = Some(end.ended_at);
        self.bytes_up = end.bytes_up;
        self.bytes_down = end.bytes_down;
        self.outcome = end.outcome.clone();
        self.error = end.error.clone();
        self.query_count = end.query_count;
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEnd {
    /// The record's id (from [`AuditEvent::Started`]).
    pub id: Uuid,
    /// Unix seconds.
    pub ended_at: i64,
    /// Client → resource bytes.
    pub bytes_up: u64,
    /// Resource → client bytes.
    pub bytes_down: u64,
    /// `ok` or an error kind name.
    pub outcome: Outcome,
    /// What failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Queries recorded.
    pub query_count: u64,
}

/// A query sent through a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditQueryEvent {
    /// The record's id.
    pub connection_id: Uuid,
    /// Position within the connection, from 1.
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    /// The statement's text.
    pub text: String,
}

/// One line of a terminal session's recording (ssh resources that ask for it): an asciicast v2
/// file, one line per event, so that a recording is written as it happens and fails closed
/// like queries do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecordingEvent {
    /// The record's id.
    pub connection_id: Uuid,
    /// The SSH channel recorded (a connection may carry several terminals).
    pub channel: u32,
    /// Position within the channel's recording: 0 is the asciicast header, then its events.
    pub seq: u64,
    /// The line: the header object, or an event array (`[1.25, "o", "text"]`).
    pub line: String,
}

/// One audit event from a gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A connection started (or was refused: then `ended_at` is set). The control plane
    /// replaces `gateway` with the authenticated gateway's name. Boxed: a record is three
    /// times the size of the other events, and statements, the most frequent, are moved
    /// several times on their way to the store.
    Started(Box<AuditRecord>),
    /// A connection ended.
    Ended(AuditEnd),
    /// A query sent through a connection (postgres).
    Query(AuditQueryEvent),
    /// A line of a terminal session's recording (ssh).
    Recording(AuditRecordingEvent),
}

impl AuditEvent {
    /// The id of the record the event is about.
    pub fn connection_id(&self) -> Uuid {
        match self {
            AuditEvent::Started(r) => r.id,
            AuditEvent::Ended(e) => e.id,
            AuditEvent::Query(q) => q.connection_id,
            AuditEvent::Recording(r) => r.connection_id,
        }
    }
}

/// A query sent through a connection, as a listing of that connection's queries shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditQuery {
    /// Position within the connection, from 1.
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    /// The statement's text.
    pub text: String,
}

impl From<AuditQueryEvent> for AuditQuery {
    fn from(q: AuditQueryEvent) -> AuditQuery {
        AuditQuery {
            seq: q.seq,
            at: q.at,
            text: q.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_known_or_not() {
        let mut names = vec!["open", "ok", "interrupted", "from_the_future", "Ok", ""];
        names.extend(ErrorKind::ALL.iter().map(|k| k.as_str()));
        for name in names {
            let outcome = Outcome::from_name(name);
            assert_eq!(outcome.as_str(), name);
            assert_eq!(Outcome::from(name.to_owned()), outcome);
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, serde_json::to_string(name).unwrap());
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
        }
        assert_eq!(
            Outcome::from("upstream_refused"),
            Outcome::Error(ErrorKind::UpstreamRefused)
        );
        assert_eq!(
            Outcome::from("from_the_future"),
            Outcome::Other("from_the_future".into())
        );
        assert_eq!(Outcome::from(ErrorKind::Forbidden), "forbidden");
        assert_eq!(Outcome::Interrupted.to_string(), "interrupted");
    }

    #[test]
    fn an_end_closes_its_record() {
        let mut record: AuditRecord = serde_json::from_str(
            r#"{"id":"00000000-0000-0000-0000-000000000001",
                "account_id":"00000000-0000-0000-0000-000000000000","account_name":"etl",
                "resource_id":"00000000-0000-0000-0000-000000000000","resource_name":"pg",
                "gateway":"gw","session_id":"00000000-0000-0000-0000-000000000000",
                "lease_id":"00000000-0000-0000-0000-000000000000","client_addr":"127.0.0.1:1",
                "started_at":5,"ended_at":null,"bytes_up":0,"bytes_down":0,"outcome":"open",
                "query_count":0,"future":true}"#,
        )
        .unwrap();
        assert_eq!(record.outcome, Outcome::Open);
        let end = AuditEnd {
            id: record.id,
            ended_at: 9,
            bytes_up: 1,
            bytes_down: 2,
            outcome: ErrorKind::Closed.into(),
            error: Some("the client went away".into()),
            query_count: 3,
        };
        record.apply(&end);
        assert_eq!(
            (record.ended_at, record.bytes_up, record.bytes_down),
            (Some(9), 1, 2)
        );
        assert_eq!((&record.outcome, record.query_count), (&end.outcome, 3));
        assert_eq!(record.error.as_deref(), Some("the client went away"));
        assert_eq!(AuditEvent::Ended(end).connection_id(), record.id);
    }
}
