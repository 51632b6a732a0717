//! A TCP echo upstream on 127.0.0.1 that holds many connections cheaply (one task each), for
//! the idle-connection measurement; exits after `--seconds`.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Args, Fallible, window};

pub(crate) async fn run(args: &Args) -> Fallible<String> {
    let port: u16 = args.number("port")?;
    let span = window(args.number("seconds")?)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let serve = async {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                // Out of descriptors, say: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = tokio::time::sleep(span) => {}
    }
    Ok(json!({"echo": "stopped"}).to_string())
}
