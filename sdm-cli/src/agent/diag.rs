//! The agent's diagnostics listener (`sdm listen --diag-listen ADDR`): sdm-diag's listener,
//! with the agent's [`AgentMetrics`] and its readiness checks:
//!
//! - `login`: the agent has no session (`sdm login` has not been run), or the control plane
//!   refuses its token (revoked, account suspended);
//! - `control_plane`: the session's control plane does not answer (asked at most every
//!   [`CHECK_EVERY`], so that probes cannot turn into a flood of API calls on this account);
//! - `shutdown`: SIGTERM, SIGINT or SIGHUP arrived (or a logout), the agent is stopping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdm_core::ErrorKind;
use sdm_diag::{Probes, Readiness};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::metrics::AgentMetrics;
use super::state::Agent;
use crate::exit::{CliError, Exit};

/// Bound on the control plane answering a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// A readiness verdict about the control plane is reused for this long.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Where and how to serve, from `sdm listen`'s flags.
#[derive(Debug, Clone, Copy)]
pub struct DiagOptions {
    /// The address of `--diag-listen`.
    pub addr: SocketAddr,
    /// `--diag-allow-remote`: an address off loopback is allowed.
    pub allow_remote: bool,
}

/// The bound listener, before the agent starts.
pub(crate) struct Bound {
    listener: TcpListener,
}

/// Binds the listener: the first thing the agent does, so that a taken port or an address
/// off loopback stops it before it touches its home or logs in.
pub(crate) async fn bind(options: DiagOptions) -> Result<Bound, CliError> {
    let listener = sdm_diag::bind(options.addr, options.allow_remote)
        .await
        .map_err(|e| {
            let exit = match e.kind() {
                sdm_diag::ErrorKind::NotLoopback => Exit::Usage,
                sdm_diag::ErrorKind::PortInUse => Exit::PortInUse,
                _ => Exit::Agent,
            };
            CliError::new(exit, e.to_string())
        })?;
    Ok(Bound { listener })
}

/// A serving diagnostics listener; it stops with the agent's runtime.
pub(crate) struct Diag {
    probes: Arc<Probes>,
    metrics: AgentMetrics,
}

impl Diag {
    /// Serves `bound` with fresh metrics; `/readyz` says `login` until [`Diag::running`].
    pub(crate) fn serve(bound: Bound) -> Diag {
        let metrics = AgentMetrics::default();
        let probes = Probes::new(Arc::new(metrics.registry()), "login: the agent is starting");
        // Stopped by the runtime's shutdown when the agent exits.
        drop(sdm_diag::serve(bound.listener, probes.clone()));
        Diag { probes, metrics }
    }

    /// The handles the agent and its sessions count into.
    pub(crate) fn metrics(&self) -> AgentMetrics {
        self.metrics.clone()
    }

    /// The agent runs: `/readyz` asks it from now on.
    pub(crate) fn running(&self, agent: Arc<Agent>) {
        self.probes.running(Arc::new(AgentReadiness {
            agent,
            last: Mutex::new(None),
        }));
    }

    /// The agent is stopping: `/readyz` says `shutdown` from now on.
    pub(crate) fn stopping(&self) {
        self.probes.stopping();
    }
}

struct AgentReadiness {
    agent: Arc<Agent>,
    /// The last control-plane verdict: for which session, when, and the failing checks. Held
    /// while asking, so that concurrent probes share one question.
    last: Mutex<Option<(Uuid, Instant, Vec<String>)>>,
}

#[async_trait::async_trait]
impl Readiness for AgentReadiness {
    async fn failing(&self) -> Vec<String> {
        let Some(session) = self.agent.session() else {
            return vec![
                "login: not logged in: the agent has no session (run `sdm login`, or start \
                 `sdm listen` with a token)"
                    .to_owned(),
            ];
        };
        let mut last = self.last.lock().await;
        if let Some((id, at, failing)) = last.as_ref()
            && *id == session.id()
            && at.elapsed() < CHECK_EVERY
        {
            return failing.clone();
        }
        let failing = match tokio::time::timeout(CHECK_TIMEOUT, session.list_resources()).await {
            Ok(Ok(_)) => Vec::new(),
            Ok(Err(e)) => match e.kind() {
                ErrorKind::Unauthenticated | ErrorKind::InvalidToken | ErrorKind::Forbidden => {
                    vec![format!(
                        "login: the control plane refuses the token: {}",
                        one_line(e.message())
                    )]
                }
                ErrorKind::Closed => vec![format!("login: {}", one_line(e.message()))],
                _ => vec![format!(
                    "control_plane: unreachable: {}",
                    one_line(e.message())
                )],
            },
            Err(_) => vec![format!(
                "control_plane: no answer within {} s",
                CHECK_TIMEOUT.as_secs()
            )],
        };
        *last = Some((session.id(), Instant::now(), failing.clone()));
        failing
    }
}

/// `text` on one line: a check is one line of the answer, and a server's message is text a
/// peer controls.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
