//! A TCP relay on 127.0.0.1: the pump sdm's tunnels use (`sdm_relay::relay`), with no lease,
//! framing or audit. Two in a row are the benchmark's `relay` path, the floor that any tunnel
//! with a hop on each side (ssh -L, stunnel, sdm) pays before it encrypts anything.
//!
//! With `--tls-in DIR` a relay accepts TLS 1.3 (a throwaway CA and a leaf it issued, the CA
//! written to `DIR/ca.der`), and with `--tls-out DIR` it connects with TLS trusting that CA: two
//! relays so joined are the `tls_relay` path, the same hops with sdm's record layer
//! (`sdm_relay::tls`, sdm_proto's gateway configurations) between them, so that what sdm's
//! cipher and records cost can be told apart from what the rest of sdm costs.
//!
//! One thread, as ssh's event loop; exits after `--seconds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use sdm_proto::server_tls::{ALPN_GATEWAY, Leaf, LeafResolver};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::{Args, Fallible};

/// A relay outlives a whole benchmark run, unlike the bounded loads.
const MAX_SECONDS: u64 = 4 * 3600;
const CA_FILE: &str = "ca.der";

/// The TLS of each side: none, or sdm's record layer.
#[derive(Clone)]
struct Sides {
    accept: Option<Arc<ServerConfig>>,
    connect: Option<Arc<ClientConfig>>,
}

pub(crate) async fn run(args: &Args) -> Fallible<String> {
    let listen: u16 = args.number("listen")?;
    let to: u16 = args.number("to")?;
    let seconds: u64 = args.number("seconds")?;
    if !(1..=MAX_SECONDS).contains(&seconds) {
        return Err(format!("--seconds must be 1 to {MAX_SECONDS}").into());
    }
    let sides = Sides {
        accept: match args.all("tls-in").first() {
            Some(dir) => Some(server_config(Path::new(dir))?),
            None => None,
        },
        connect: match args.all("tls-out").first() {
            Some(dir) => Some(client_config(Path::new(dir))?),
            None => None,
        },
    };
    let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
    let carried = Arc::new(AtomicU64::new(0));
    let serve = async {
        loop {
            let Ok((local, _)) = listener.accept().await else {
                // Out of descriptors, say: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let (carried, sides) = (carried.clone(), sides.clone());
            tokio::spawn(async move {
                if carry(local, to, &sides).await.is_ok() {
                    carried.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
    }
    Ok(json!({"relay": "stopped", "connections": carried.load(Ordering::Relaxed)}).to_string())
}

/// Relays one accepted connection to `to`, through TLS on the sides that have it.
async fn carry(local: TcpStream, to: u16, sides: &Sides) -> std::io::Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", to)).await?;
    // As every tunnel in the benchmark: small messages go out at once.
    local.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    match &sides.accept {
        Some(config) => {
            let local = sdm_relay::tls::accept(config.clone(), local).await?;
            carry_to(local, upstream, sides).await
        }
        None => carry_to(local, upstream, sides).await,
    }
}

async fn carry_to<L>(mut local: L, mut upstream: TcpStream, sides: &Sides) -> std::io::Result<()>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    match &sides.connect {
        Some(config) => {
            let name = sdm_proto::pinned_ca::server_name("localhost").ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "server name")
            })?;
            let mut upstream = sdm_relay::tls::connect(config.clone(), name, upstream).await?;
            sdm_relay::relay(&mut local, &mut upstream).await?;
        }
        None => {
            sdm_relay::relay(&mut local, &mut upstream).await?;
        }
    }
    Ok(())
}

/// A throwaway CA and a `localhost` leaf it issued; the CA goes to `dir` for the other relay.
fn server_config(dir: &Path) -> Fallible<Arc<ServerConfig>> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])?
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))?;
    std::fs::write(ca_path(dir), ca.der())?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())?;
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let resolver = LeafResolver::new(Leaf { chain, key })?;
    let mut config = (*sdm_proto::server_tls::server_config(resolver, ALPN_GATEWAY)?).clone();
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// Trusts the CA the `--tls-in` relay wrote to `dir`, as sdm's client pins its gateway's CA.
fn client_config(dir: &Path) -> Fallible<Arc<ClientConfig>> {
    let ca = std::fs::read(ca_path(dir)).map_err(|e| {
        format!(
            "{}: {e} (start the --tls-in relay first)",
            ca_path(dir).display()
        )
    })?;
    let fingerprint = sdm_proto::sha256(&ca);
    let mut config = (*sdm_proto::pinned_ca::client_config(fingerprint, ALPN_GATEWAY, 8)?).clone();
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

fn ca_path(dir: &Path) -> PathBuf {
    dir.join(CA_FILE)
}
