//! Many idle connections through one gateway: each dialed in-process (one descriptor here),
//! one echo round trip, then left open; reports the gateway process's memory before and after.

use std::time::Instant;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Args, Fallible, token};

fn rss_kib(pid: u32) -> Fallible<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

pub(crate) async fn run(args: &Args) -> Fallible<String> {
    let resource = args.one("resource")?.to_owned();
    let count: usize = args.number("count")?;
    if !(1..=50_000).contains(&count) {
        return Err("--count must be 1 to 50000".into());
    }
    let pid: u32 = args.number("gateway-pid")?;
    let session = sdm_core::Session::builder()
        .token(token()?)
        .warm_connections(0)
        .login()
        .await?;
    // One round trip first so that lease, TLS session cache and allocator are warm.
    drop(session.dial(&resource).await?);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = session.dial(&resource).await?;
        s.write_all(b"x").await?;
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await?;
        open.push(s);
    }
    let opened_in = started.elapsed().as_secs_f64();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    drop(open);
    Ok(json!({
        "idle_connections": count,
        "opened_in_s": opened_in,
        "gateway_rss_before_kib": before,
        "gateway_rss_after_kib": after,
        "gateway_kib_per_connection": (after.saturating_sub(before)) as f64 / count as f64,
    })
    .to_string())
}
