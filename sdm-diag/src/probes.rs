//! What `/readyz` and `/metrics` ask: [`Probes`], and a running process's [`Readiness`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::registry::Registry;

/// What `/readyz` asks a running process.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// The checks failing now, each as `NAME: why`; empty when ready.
    async fn failing(&self) -> Vec<String>;
}

/// What the listener serves: the process's metrics, and its readiness once it runs.
pub struct Probes {
    registry: Arc<Registry>,
    /// Until the process runs, `/readyz` answers with `starting`.
    ready: RwLock<Option<Arc<dyn Readiness>>>,
    starting: String,
    /// Set at SIGTERM: a load balancer stops sending work while connections drain.
    stopping: AtomicBool,
}

impl Probes {
    /// Probes of a process that is starting: `/metrics` serves `registry`, and `/readyz`
    /// fails with `starting` (`NAME: why`) until [`Probes::running`].
    pub fn new(registry: Arc<Registry>, starting: impl Into<String>) -> Arc<Probes> {
        Arc::new(Probes {
            registry,
            ready: RwLock::new(None),
            starting: starting.into(),
            stopping: AtomicBool::new(false),
        })
    }

    /// The process is stopping: `/readyz` fails with `shutdown` from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The process runs: `/readyz` asks `readiness` from now on.
    pub fn running(&self, readiness: Arc<dyn Readiness>) {
        // A poisoned lock still holds a usable value.
        *self.ready.write().unwrap_or_else(|e| e.into_inner()) = Some(readiness);
    }

    /// The registry `/metrics` serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The checks failing now (`shutdown` alone once stopping).
    pub async fn failing(&self) -> Vec<String> {
        if self.stopping.load(Ordering::Relaxed) {
            return vec!["shutdown: the process is stopping (open connections drain)".to_owned()];
        }
        let ready = self.ready.read().unwrap_or_else(|e| e.into_inner()).clone();
        match ready {
            Some(ready) => ready.failing().await,
            None => vec![self.starting.clone()],
        }
    }
}
