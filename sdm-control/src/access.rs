//! The access decision: may this account use this resource in this session now? Judged from
//! the facts the store holds, with the reason when not. The lease route and the gateways'
//! directory both ask here, so the verdict and its words are the same wherever it is asked.

use std::collections::BTreeMap;

use sdm_proto::ErrorKind;
use sdm_proto::api::AccountStatus;

use super::pinning;
use crate::store::{AccessFacts, AccountRecord, ResourceRecord, SessionRecord};

/// When access is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moment {
    /// A client asks for a lease: a resource it was not granted must look like one that does
    /// not exist, so that names and ids of others' resources do not leak.
    Lease,
    /// A gateway asks for a connection of a lease issued earlier (the grant was there then).
    Connection,
}

/// Access allowed: the facts it was judged on.
#[derive(Debug, Clone)]
pub(crate) struct Allowed {
    pub(crate) account: AccountRecord,
    pub(crate) session: SessionRecord,
    pub(crate) resource: ResourceRecord,
}

/// Access refused: the error kind the client reports and what to tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

/// Who asks for what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) account_id: uuid::Uuid,
    pub(crate) session_id: uuid::Uuid,
    pub(crate) resource_id: uuid::Uuid,
    /// The tags of the gateway that would carry the connection; `None`: any gateway (pinning is
    /// then decided when gateways are offered).
    pub(crate) gateway_tags: Option<&'a BTreeMap<String, String>>,
    pub(crate) moment: Moment,
}

/// The verdict on `facts` (read for `request`).
pub(crate) fn judge(facts: AccessFacts, request: Request<'_>) -> Result<Allowed, Refused> {
    let refused = |kind, message: String| Err(Refused { kind, message });
    let Some(account) = facts.account else {
        return refused(
            ErrorKind::Unauthenticated,
            format!(
                "account {} was deleted; ask an admin for a new service account",
                request.account_id
            ),
        );
    };
    if account.status != AccountStatus::Active {
        return refused(
            ErrorKind::Unauthenticated,
            format!(
                "account {} is suspended; ask an admin to unsuspend it",
                account.name
            ),
        );
    }
    let session = match facts.session {
        Some(s) if s.account_id == account.id && s.ended_at.is_none() => s,
        _ => {
            return refused(
                ErrorKind::Unauthenticated,
                format!(
                    "login session {} has ended (logout, expiry, the account's session limit, \
                     token rotation or deletion) or never existed; log in again",
                    request.session_id
                ),
            );
        }
    };
    let resource = match (facts.resource, request.moment) {
        (Some(resource), _) if facts.granted => resource,
        (_, Moment::Lease) => {
            return refused(
                ErrorKind::ResourceNotFound,
                format!(
                    "no resource with id {} is available to account {}; list resources to see \
                     what it may use",
                    request.resource_id, account.name
                ),
            );
        }
        (None, Moment::Connection) => {
            return refused(
                ErrorKind::ResourceNotFound,
                format!("resource {} was deleted", request.resource_id),
            );
        }
        (Some(resource), Moment::Connection) => {
            return refused(
                ErrorKind::Forbidden,
                format!(
                    "access to resource {} was revoked for account {}",
                    resource.name, account.name
                ),
            );
        }
    };
    if let Some(tags) = request.gateway_tags
        && !pinning::serves(&resource.tags, tags)
    {
        return refused(
            ErrorKind::Forbidden,
            format!(
                "resource {} is pinned to gateways matching {}={}, and this gateway does not \
                 match; connect through a gateway the control plane offers for it",
                resource.name,
                pinning::PIN_TAG,
                pinning::pin_of(&resource.tags).unwrap_or_default()
            ),
        );
    }
    Ok(Allowed {
        account,
        session,
        resource,
    })
}

#[cfg(test)]
mod tests {
    use sdm_proto::ResourceKind;
    use sdm_proto::api::{AccountKind, TlsMode};
    use uuid::Uuid;

    use super::*;

    fn facts() -> AccessFacts {
        let account = AccountRecord {
            id: Uuid::new_v4(),
            name: "etl".into(),
            kind: AccountKind::Service,
            status: AccountStatus::Active,
            created_at: 1,
        };
        AccessFacts {
            session: Some(SessionRecord {
                id: Uuid::new_v4(),
                account_id: account.id,
                labels: BTreeMap::new(),
                client: String::new(),
                created_at: 1,
                ended_at: None,
                last_used_at: None,
            }),
            resource: Some(ResourceRecord {
                id: Uuid::new_v4(),
                name: "pg".into(),
                kind: ResourceKind::Postgres,
                hostname: "db".into(),
                port: 5432,
                port_override: None,
                port_assigned: false,
                tags: BTreeMap::from([(pinning::PIN_TAG.into(), "dc=eu".into())]),
                username: None,
                database: None,
                password_sealed: None,
                tls_mode: TlsMode::Disable,
                tls_ca_pem: None,
                databases: Vec::new(),
                replication: false,
                ssh_certificate_authority: false,
                ssh_record_sessions: false,
                ssh_host_key: None,
                created_at: 1,
            }),
            account: Some(account),
            granted: true,
        }
    }

    fn ask(
        facts: AccessFacts,
        moment: Moment,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<Allowed, Refused> {
        let request = Request {
            account_id: facts.account.as_ref().map_or_else(Uuid::nil, |a| a.id),
            session_id: facts.session.as_ref().map_or_else(Uuid::nil, |s| s.id),
            resource_id: facts.resource.as_ref().map_or_else(Uuid::nil, |r| r.id),
            gateway_tags: tags,
            moment,
        };
        judge(facts, request)
    }

    fn kind(result: Result<Allowed, Refused>) -> ErrorKind {
        result.map(|_| ()).unwrap_err().kind
    }

    #[test]
    fn every_missing_fact_has_its_reason() {
        let eu = BTreeMap::from([("dc".to_owned(), "eu".to_owned())]);
        for moment in [Moment::Lease, Moment::Connection] {
            assert!(ask(facts(), moment, Some(&eu)).is_ok());
            let mut f = facts();
            f.account = None;
            assert_eq!(kind(ask(f, moment, None)), ErrorKind::Unauthenticated);
            let mut f = facts();
            if let Some(a) = f.account.as_mut() {
                a.status = AccountStatus::Suspended;
            }
            let refused = ask(f, moment, None).map(|_| ()).unwrap_err();
            assert!(refused.message.contains("etl is suspended"), "{refused:?}");
            let mut f = facts();
            if let Some(s) = f.session.as_mut() {
                s.ended_at = Some(2);
            }
            assert_eq!(kind(ask(f, moment, None)), ErrorKind::Unauthenticated);
            let mut f = facts();
            f.session.as_mut().unwrap().account_id = Uuid::new_v4();
            assert_eq!(
                kind(ask(f, moment, None)),
                ErrorKind::Unauthenticated,
                "another's session"
            );
            let us = BTreeMap::from([("dc".to_owned(), "us".to_owned())]);
            assert_eq!(kind(ask(facts(), moment, Some(&us))), ErrorKind::Forbidden);
        }
    }

    #[test]
    fn a_lease_never_tells_an_ungranted_resource_from_a_missing_one() {
        let mut ungranted = facts();
        ungranted.granted = false;
        let mut missing = facts();
        missing.resource = None;
        missing.granted = false;
        let (a, b) = (
            ask(ungranted.clone(), Moment::Lease, None)
                .map(|_| ())
                .unwrap_err(),
            ask(missing.clone(), Moment::Lease, None)
                .map(|_| ())
                .unwrap_err(),
        );
        assert_eq!(a.kind, ErrorKind::ResourceNotFound);
        assert_eq!(
            (a.kind, a.message.contains("pg")),
            (b.kind, false),
            "no name leaks"
        );
        // A gateway asking about an issued lease says what changed.
        assert_eq!(
            kind(ask(ungranted, Moment::Connection, None)),
            ErrorKind::Forbidden
        );
        assert_eq!(
            kind(ask(missing, Moment::Connection, None)),
            ErrorKind::ResourceNotFound
        );
    }
}
