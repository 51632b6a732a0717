//! [`Account`]: who a session is logged in as.

use sdm_proto::api::AccountKind;
use uuid::Uuid;

/// The account a session is logged in as.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Account {
    /// Account id.
    pub id: Uuid,
    /// Account name.
    pub name: String,
    /// Service account or admin.
    pub kind: AccountKind,
}
