//! One function per command; each returns `Ok` or the error to print and exit with.

pub mod admin;
pub mod probe;
mod replay;
pub mod run;
pub mod service;
pub mod session;
pub mod ssh;
pub mod tunnels;

use crate::exit::CliError;
use crate::protocol::Reply;

/// A reply of the wrong type for the request (a different agent version, or a bug).
pub(crate) fn unexpected(reply: &Reply) -> CliError {
    let kind = serde_json::to_value(reply)
        .ok()
        .and_then(|v| v.get("reply").and_then(|r| r.as_str().map(str::to_owned)))
        .unwrap_or_default();
    CliError::agent(format!(
        "the sdm agent gave an unexpected answer ({kind}); restart it with `sdm logout` and \
         `sdm login`"
    ))
}
