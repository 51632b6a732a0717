//! A plain TCP relay on 127.0.0.1: the pump sdm's tunnels use (`sdm_relay::relay`), with no
//! TLS, lease or audit. Two in a row are the benchmark's `relay` path, the floor that any
//! tunnel with a hop on each side (ssh -L, stunnel, sdm) pays before it encrypts anything.
//! One thread, as ssh's event loop; exits after `--seconds`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::{Args, Fallible};

/// A relay outlives a whole benchmark run, unlike the bounded loads.
const MAX_SECONDS: u64 = 4 * 3600;

pub(crate) async fn run(args: &Args) -> Fallible<String> {
    let listen: u16 = args.number("listen")?;
    let to: u16 = args.number("to")?;
    let seconds: u64 = args.number("seconds")?;
    if !(1..=MAX_SECONDS).contains(&seconds) {
        return Err(format!("--seconds must be 1 to {MAX_SECONDS}").into());
    }
    let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
    let carried = Arc::new(AtomicU64::new(0));
    let serve = async {
        loop {
            let Ok((mut local, _)) = listener.accept().await else {
                // Out of descriptors, say: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let carried = carried.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                // As every tunnel in the benchmark: small messages go out at once.
                let _ = local.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                if sdm_relay::relay(&mut local, &mut upstream).await.is_ok() {
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
