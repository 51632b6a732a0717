//! [`TunnelObserver`]: hooks a session's tunnels call as they work, so that an application
//! (the `sdm` agent's `/metrics`) can count what its tunnels do without this library keeping
//! any registry of its own.

use std::time::Duration;

use crate::resource::Resource;

/// Told what the tunnels of a session do; give one to
/// [`SessionBuilder::observer`](crate::SessionBuilder::observer). Every method does nothing by
/// default.
///
/// The methods are called on the tunnels' tasks, on the data path: they must return quickly
/// and never block (count into atomics, say). A session without an observer pays nothing for
/// this (no clock is read, nothing is called).
pub trait TunnelObserver: Send + Sync + 'static {
    /// A tunnel to `resource` opened (it listens).
    fn tunnel_opened(&self, resource: &Resource) {
        let _ = resource;
    }

    /// A tunnel to `resource` closed (by its owner, its session's logout, or a revocation);
    /// called once per [`tunnel_opened`](Self::tunnel_opened).
    fn tunnel_closed(&self, resource: &Resource) {
        let _ = resource;
    }

    /// A local connection to a tunnel to `resource` was accepted (from a user allowed to use
    /// it); it is carried from now on.
    fn connection_opened(&self, resource: &Resource) {
        let _ = resource;
    }

    /// The connection reached its resource (the gateway answered CONNECTED), `took` after it
    /// was accepted: the lease, the gateway connection (or a warm one) and the resource's
    /// connect.
    fn connection_reached(&self, resource: &Resource, took: Duration) {
        let _ = (resource, took);
    }

    /// The connection ended, having carried `sent` bytes from the local client towards the
    /// resource and `received` bytes back; `reached` says whether it ever reached the resource
    /// (false: the lease, the gateway or the resource refused or failed). Called once per
    /// [`connection_opened`](Self::connection_opened).
    fn connection_closed(&self, resource: &Resource, sent: u64, received: u64, reached: bool) {
        let _ = (resource, sent, received, reached);
    }
}
