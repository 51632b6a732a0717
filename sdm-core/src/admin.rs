//! The admin API: service accounts, resources and grants. What `sdm admin` and automation use.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sdm_proto::api::{
    AccountInfo, AccountKind, AccountList, AdminResource, AdminResourceList, AuditList,
    AuditQueryList, AuditRecording, CreateAccount, CreateGrant, CreateResource, CreatedAccount,
    GrantInfo, GrantList, Settings, SshCertificateAuthority, UpdateResource, UpdateSettings,
    routes,
};
use sdm_proto::gateway::{CreateGateway, GatewayDetailsList};
use sdm_proto::{Token, TokenKind};

use crate::api::ApiClient;
use crate::error::{Error, ErrorKind, Result};
use crate::session::API_URL_ENV_VAR;

pub use sdm_proto::api::{
    AccountInfo as Account, AccountStatus, AdminResource as ResourceDetails, AuditQuery,
    AuditRecord, CreateResource as NewResource, CreatedAccount as NewAccount, Credentials,
    GrantInfo as Grant, PortRange, SshSettings, TlsMode, UpdateResource as ResourceChanges,
    UpdateSettings as SettingsChanges, UpstreamTls,
};
pub use sdm_proto::audit::Outcome;
pub use sdm_proto::gateway::{CreatedGateway as NewGateway, GatewayDetails};

/// Which audit records to list (all of them, newest first, by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditFilter {
    /// Only this account's (id or name).
    pub account: Option<String>,
    /// Only this resource's (id or name).
    pub resource: Option<String>,
    /// Started at or after (Unix seconds).
    pub since: Option<i64>,
    /// Started before (Unix seconds).
    pub until: Option<i64>,
    /// Page size (1–1000; default 100).
    pub limit: Option<u32>,
    /// The `next_before` of the previous page.
    pub before: Option<String>,
}

impl AuditFilter {
    /// Only this account's connections.
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// Only this resource's connections.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Started at or after `since` (Unix seconds).
    pub fn since(mut self, since: i64) -> Self {
        self.since = Some(since);
        self
    }

    /// Started before `until` (Unix seconds).
    pub fn until(mut self, until: i64) -> Self {
        self.until = Some(until);
        self
    }

    /// At most `limit` records per page.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after the one that returned this `next_before`.
    pub fn before(mut self, cursor: impl Into<String>) -> Self {
        self.before = Some(cursor.into());
        self
    }

    fn query(&self) -> Result<String> {
        let mut parts = Vec::new();
        if let Some(a) = &self.account {
            parts.push(format!("account={}", segment(a)?));
        }
        if let Some(r) = &self.resource {
            parts.push(format!("resource={}", segment(r)?));
        }
        if let Some(s) = self.since {
            parts.push(format!("since={s}"));
        }
        if let Some(u) = self.until {
            parts.push(format!("until={u}"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if let Some(b) = &self.before {
            parts.push(format!("before={}", segment(b)?));
        }
        Ok(if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        })
    }
}

/// Environment variable [`AdminClient::from_env`] reads.
pub const ADMIN_TOKEN_ENV_VAR: &str = "SDM_ADMIN_TOKEN";

/// A client for the admin API, authenticated with an admin token (`sdm_adm_…`).
#[derive(Debug, Clone)]
pub struct AdminClient {
    api: Arc<ApiClient>,
}

impl AdminClient {
    /// A client for the installation the admin token belongs to (`SDM_API_URL` overrides
    /// the URL it carries).
    pub fn new(token: &str) -> Result<AdminClient> {
        let url = std::env::var(API_URL_ENV_VAR)
            .ok()
            .filter(|u| !u.trim().is_empty());
        AdminClient::with_api_url(token, url.as_deref())
    }

    /// A client for the token, talking to `api_url` instead of the URL in the token.
    pub fn with_api_url(token: &str, api_url: Option<&str>) -> Result<AdminClient> {
        let token = Token::parse(token).map_err(|e| {
            Error::new(ErrorKind::InvalidToken, format!("invalid token: {e}")).with_source(e)
        })?;
        if token.kind != TokenKind::Admin {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "this is a service account token; the admin API needs an admin token (sdm_adm_…)",
            ));
        }
        Ok(AdminClient {
            api: ApiClient::new(&token, api_url, Duration::from_secs(30))?,
        })
    }

    /// A client with the token in `SDM_ADMIN_TOKEN`.
    pub fn from_env() -> Result<AdminClient> {
        let token = std::env::var(ADMIN_TOKEN_ENV_VAR)
            .map_err(|_| Error::new(ErrorKind::InvalidToken, "SDM_ADMIN_TOKEN is not set"))?;
        AdminClient::new(&token)
    }

    /// Creates a service account; its token is in the result and is never shown again.
    pub async fn create_service_account(&self, name: &str) -> Result<CreatedAccount> {
        self.create_account(name, AccountKind::Service).await
    }

    /// Creates an account of either kind.
    pub async fn create_account(&self, name: &str, kind: AccountKind) -> Result<CreatedAccount> {
        let body = CreateAccount {
            name: name.to_owned(),
            kind,
        };
        self.api.post(routes::ADMIN_ACCOUNTS, &body).await
    }

    /// Every account, sorted by name.
    pub async fn list_accounts(&self) -> Result<Vec<AccountInfo>> {
        let list: AccountList = self.api.get(routes::ADMIN_ACCOUNTS).await?;
        Ok(list.accounts)
    }

    /// Refuses the account's logins and connections until [`unsuspend_account`](Self::unsuspend_account).
    pub async fn suspend_account(&self, account: &str) -> Result<AccountInfo> {
        let path = format!("{}/{}/suspend", routes::ADMIN_ACCOUNTS, segment(account)?);
        self.api.post(&path, &()).await
    }

    /// Lets a suspended account in again.
    pub async fn unsuspend_account(&self, account: &str) -> Result<AccountInfo> {
        let path = format!("{}/{}/unsuspend", routes::ADMIN_ACCOUNTS, segment(account)?);
        self.api.post(&path, &()).await
    }

    /// Deletes an account with its tokens and grants.
    pub async fn delete_account(&self, account: &str) -> Result<()> {
        let path = format!("{}/{}", routes::ADMIN_ACCOUNTS, segment(account)?);
        self.api.delete(&path).await
    }

    /// Revokes the account's tokens and issues a new one (shown once, in the result).
    pub async fn rotate_token(&self, account: &str) -> Result<CreatedAccount> {
        let path = format!("{}/{}/tokens", routes::ADMIN_ACCOUNTS, segment(account)?);
        self.api.post(&path, &()).await
    }

    /// Creates a resource (credentials, if any, are stored encrypted and never returned).
    pub async fn create_resource(&self, resource: &CreateResource) -> Result<AdminResource> {
        self.api.post(routes::ADMIN_RESOURCES, resource).await
    }

    /// Changes a resource; only the fields set in `changes` change. Rotating a stored password
    /// is an update with new credentials.
    pub async fn update_resource(
        &self,
        resource: &str,
        changes: &UpdateResource,
    ) -> Result<AdminResource> {
        let path = format!("{}/{}", routes::ADMIN_RESOURCES, segment(resource)?);
        self.api.patch(&path, changes).await
    }

    /// The public key line of sdm's SSH certificate authority, for the `TrustedUserCAKeys`
    /// file of ssh servers that let the gateway log in with its certificates.
    pub async fn ssh_ca_public_key(&self) -> Result<String> {
        let ca: SshCertificateAuthority = self.api.get(routes::ADMIN_SSH_CA).await?;
        Ok(ca.public_key)
    }

    /// The organisation's settings.
    pub async fn settings(&self) -> Result<Settings> {
        self.api.get(routes::ADMIN_SETTINGS).await
    }

    /// Turns "connect automatically to all granted resources with a fixed port on login" on or
    /// off; returns the settings.
    pub async fn set_auto_connect(&self, on: bool) -> Result<Settings> {
        let changes = UpdateSettings {
            auto_connect: Some(on),
            ..UpdateSettings::default()
        };
        self.update_settings(&changes).await
    }

    /// Changes the settings set in `changes` and returns them all. Port-override changes
    /// (`assign_ports`, `port_range`) apply to every resource at once: switching on gives every
    /// resource without a port one from the range, a new range moves the assigned ports that
    /// fall outside it. Refused with [`ErrorKind::InvalidArgument`], changing nothing, when the
    /// range is malformed or has too few free ports.
    pub async fn update_settings(&self, changes: &UpdateSettings) -> Result<Settings> {
        self.api.patch(routes::ADMIN_SETTINGS, changes).await
    }

    /// Assigns every port the port-overrides setting assigned again, lowest first in resource
    /// name order; ports given with `--port-override` stay. Refused while the setting is off.
    pub async fn regenerate_ports(&self) -> Result<Settings> {
        self.api.post(routes::ADMIN_REGENERATE_PORTS, &()).await
    }

    /// One page of audit records, newest first.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<AuditList> {
        let path = format!("{}{}", routes::ADMIN_AUDIT, filter.query()?);
        self.api.get(&path).await
    }

    /// The queries recorded for one connection (`after`: the last `seq` already seen).
    pub async fn audit_queries(&self, record: &str, after: u64) -> Result<AuditQueryList> {
        let path = format!(
            "{}/{}/queries?after={after}",
            routes::ADMIN_AUDIT,
            segment(record)?
        );
        self.api.get(&path).await
    }

    /// One page of a connection's recorded terminal session: `channel` (`None`: the first
    /// recorded one), the lines after `after` (`None`: from the header).
    pub async fn audit_recording(
        &self,
        record: &str,
        channel: Option<u32>,
        after: Option<u64>,
    ) -> Result<AuditRecording> {
        let mut path = format!(
            "{}/{}/recording?limit=1000",
            routes::ADMIN_AUDIT,
            segment(record)?
        );
        if let Some(channel) = channel {
            path.push_str(&format!("&channel={channel}"));
        }
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        self.api.get(&path).await
    }

    /// Every resource, sorted by name.
    pub async fn list_resources(&self) -> Result<Vec<AdminResource>> {
        let list: AdminResourceList = self.api.get(routes::ADMIN_RESOURCES).await?;
        Ok(list.resources)
    }

    /// Deletes a resource and its grants.
    pub async fn delete_resource(&self, resource: &str) -> Result<()> {
        let path = format!("{}/{}", routes::ADMIN_RESOURCES, segment(resource)?);
        self.api.delete(&path).await
    }

    /// Grants `resource` (id or name) to `account` (id or name).
    pub async fn grant(&self, account: &str, resource: &str) -> Result<GrantInfo> {
        let path = format!("{}/{}/grants", routes::ADMIN_ACCOUNTS, segment(account)?);
        let body = CreateGrant {
            resource: resource.to_owned(),
        };
        self.api.post(&path, &body).await
    }

    /// Removes a grant.
    pub async fn revoke(&self, account: &str, resource: &str) -> Result<()> {
        let path = format!(
            "{}/{}/grants/{}",
            routes::ADMIN_ACCOUNTS,
            segment(account)?,
            segment(resource)?
        );
        self.api.delete(&path).await
    }

    /// The account's grants.
    pub async fn list_grants(&self, account: &str) -> Result<Vec<GrantInfo>> {
        let path = format!("{}/{}/grants", routes::ADMIN_ACCOUNTS, segment(account)?);
        let list: GrantList = self.api.get(&path).await?;
        Ok(list.grants)
    }

    /// Creates the identity of a standalone gateway (`sdm-server gateway`) that may serve under
    /// `tags`; its token (`sdm_gw_…`) is in the result and is never shown again.
    pub async fn create_gateway(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<NewGateway> {
        let body = CreateGateway {
            name: name.to_owned(),
            tags,
        };
        self.api.post(routes::ADMIN_GATEWAYS, &body).await
    }

    /// Every standalone gateway's identity, sorted by name.
    pub async fn list_gateways(&self) -> Result<Vec<GatewayDetails>> {
        let list: GatewayDetailsList = self.api.get(routes::ADMIN_GATEWAYS).await?;
        Ok(list.gateways)
    }

    /// Deletes a standalone gateway's identity: its token is refused and clients are no longer
    /// offered it.
    pub async fn delete_gateway(&self, name: &str) -> Result<()> {
        let path = format!("{}/{}", routes::ADMIN_GATEWAYS, segment(name)?);
        self.api.delete(&path).await
    }
}

/// A name or id as one URL path segment (percent-encoded).
fn segment(value: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::invalid_argument("name must not be empty"));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("etl-bot_1.x").unwrap(), "etl-bot_1.x");
        assert_eq!(segment("a/b c").unwrap(), "a%2Fb%20c");
        assert!(segment(" ").is_err());
    }
}
