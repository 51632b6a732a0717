//! Opening connections to gateways: TCP, TLS 1.3 with the pinned CA, HELLO with the lease;
//! the next gateway is tried when one fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sdm_proto::api::GatewayInfo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::stream::GatewayStream;
use crate::error::{Error, ErrorKind, Result, describe_io};
use crate::lease::ActiveLease;
use crate::tls;

/// A gateway that failed is tried last for this long, then in its turn again (it may be back).
const COOLDOWN: Duration = Duration::from_secs(5);

/// Connects to gateways; shared by everything in one session (it holds the TLS session cache).
///
/// Gateways are tried in the order of the lease (the control plane starts each lease at a
/// different gateway, which spreads the load); a gateway that failed recently goes to the end of
/// the line until its cooldown has passed.
pub(crate) struct Connector {
    /// Secrets extractable: the record layer is `sdm_relay::tls`.
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    failed: Mutex<HashMap<String, Instant>>,
}

impl Connector {
    pub(crate) fn new(ca_fingerprint: [u8; 32], connect_timeout: Duration) -> Result<Connector> {
        let config = tls::client_config(ca_fingerprint, tls::ALPN_GATEWAY)
            .map_err(|e| Error::internal(format!("TLS setup failed: {e}")))?;
        let mut config = (*config).clone();
        config.enable_secret_extraction = true;
        Ok(Connector {
            tls: Arc::new(config),
            connect_timeout,
            failed: Mutex::new(HashMap::new()),
        })
    }

    /// A connection whose HELLO (and, with `open`, OPEN) has been sent. Tries every gateway
    /// of the lease, starting with the one that worked last.
    pub(crate) async fn connect(
        &self,
        lease: &Arc<ActiveLease>,
        resource: &str,
        open: bool,
    ) -> Result<GatewayStream> {
        let gateways = &lease.gateways;
        if gateways.is_empty() {
            return Err(Error::new(
                ErrorKind::GatewayUnreachable,
                format!("no gateway is serving resource {resource:?} right now; try again later"),
            ));
        }
        let mut order: Vec<&GatewayInfo> = gateways.iter().collect();
        if let Ok(failed) = self.failed.lock() {
            // Stable: healthy gateways keep the lease's order, recently failed ones go last.
            order.sort_by_key(|g| {
                failed
                    .get(&g.name)
                    .is_some_and(|at| at.elapsed() < COOLDOWN)
            });
        }
        let mut failures = Vec::new();
        for gateway in order {
            match self.connect_one(gateway, lease, open).await {
                Ok(stream) => {
                    if let Ok(mut failed) = self.failed.lock() {
                        failed.remove(&gateway.name);
                    }
                    return Ok(stream);
                }
                Err(reason) => {
                    tracing::debug!(gateway = %gateway.address, %reason, "gateway failed");
                    self.avoid(&gateway.name);
                    failures.push(format!("{} ({}): {reason}", gateway.name, gateway.address));
                }
            }
        }
        Err(Error::new(
            ErrorKind::GatewayUnreachable,
            format!(
                "could not reach a gateway for resource {resource:?}: {}",
                failures.join("; ")
            ),
        ))
    }

    /// Tries gateway `name` last for a while: it failed, or refused a stream for a reason of
    /// its own (it cannot check leases or record the connection), not one of access.
    pub(crate) fn avoid(&self, name: &str) {
        if let Ok(mut failed) = self.failed.lock() {
            failed.insert(name.to_owned(), Instant::now());
        }
    }

    /// Whether gateway `name` failed within the cooldown.
    pub(crate) fn avoided(&self, name: &str) -> bool {
        self.failed
            .lock()
            .is_ok_and(|failed| failed.get(name).is_some_and(|at| at.elapsed() < COOLDOWN))
    }

    async fn connect_one(
        &self,
        gateway: &GatewayInfo,
        lease: &ActiveLease,
        open: bool,
    ) -> std::result::Result<GatewayStream, String> {
        let server_name = tls::server_name(&gateway.server_name)
            .ok_or_else(|| format!("invalid server name {:?}", gateway.server_name))?;
        let work = async {
            let tcp = TcpStream::connect(gateway.address.as_str())
                .await
                .map_err(|e| describe_io(&e))?;
            tune_socket(&tcp);
            let mut tls = sdm_relay::tls::connect(self.tls.clone(), server_name, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {}", describe_io(&e)))?;
            // HELLO and OPEN go out in one TLS record. Only a connection that waits for READY
            // asks for framed streams: its first bytes must not be written before it knows
            // whether the gateway frames them.
            let first = if open {
                let mut first = Vec::with_capacity(lease.hello.len() + 1);
                first.extend_from_slice(&lease.hello);
                first.push(sdm_proto::handshake::OPEN);
                first
            } else {
                lease.hello_framed.clone()
            };
            tls.write_all(&first).await.map_err(|e| describe_io(&e))?;
            tls.flush().await.map_err(|e| describe_io(&e))?;
            Ok(GatewayStream::after_hello(
                tls,
                gateway.name.clone(),
                lease.lease_id,
            ))
        };
        tokio::time::timeout(self.connect_timeout, work)
            .await
            .map_err(|_| format!("timed out after {:?}", self.connect_timeout))?
    }
}

/// Low latency over buffering: every hop sets TCP_NODELAY (Nagle plus delayed ACKs costs
/// tens of milliseconds per request/response exchange).
fn tune_socket(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
}
