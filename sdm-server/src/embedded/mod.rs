//! The control plane and gateways of one `sdm-server serve` process, wired together in
//! process through the gateway's traits.

mod audit;
mod directory;
mod gateways;
mod registry;

pub(crate) use audit::store_audit_writer;
pub(crate) use directory::EmbeddedDirectory;
pub(crate) use gateways::{EmbeddedGateway, GatewayKit};
