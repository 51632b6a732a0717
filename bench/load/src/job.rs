//! A data job in Rust: `--clients` tokio-postgres connections each running pgbench's
//! select-only statement with a random account for `--seconds`, reached either at a local TCP
//! port (direct, or any external tunnel) or in-process through `Session::dial` (`--resource`,
//! token in SDM_SERVICE_TOKEN): the same program on every path, so the paths compare as a job
//! would see them. The same job exists in Python and Go (`bench/job/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls};

use crate::{Args, Fallible, window};

const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

/// Where the job's connections go.
enum Route {
    Port(u16),
    InProcess(sdm_core::Session, String),
}

impl Route {
    async fn connect(&self, config: &tokio_postgres::Config) -> Fallible<Client> {
        let client = match self {
            Route::Port(port) => {
                let stream = TcpStream::connect(("127.0.0.1", *port)).await?;
                stream.set_nodelay(true)?;
                let (client, connection) = config.connect_raw(stream, NoTls).await?;
                tokio::spawn(connection);
                client
            }
            Route::InProcess(session, resource) => {
                let stream = session.dial(resource).await?;
                let (client, connection) = config.connect_raw(stream, NoTls).await?;
                tokio::spawn(connection);
                client
            }
        };
        Ok(client)
    }
}

/// CPU seconds (user + system) this process has used, from /proc (10 ms ticks).
fn cpu_seconds() -> Fallible<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').ok_or("unreadable /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Fallible<f64> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

pub(crate) async fn run(args: &Args) -> Fallible<String> {
    let clients: usize = args.number("clients")?;
    if !(1..=64).contains(&clients) {
        return Err("--clients must be 1 to 64".into());
    }
    let accounts: i32 = args.number("accounts")?;
    if accounts < 1 {
        return Err("--accounts must be positive".into());
    }
    let seconds = window(args.number("seconds")?)?;
    let mut config = tokio_postgres::Config::new();
    config
        .user(args.one("user")?)
        .dbname(args.one("dbname")?)
        .application_name("sdm-load job");
    let setup = Instant::now();
    let route = match (args.all("port").first(), args.all("resource").first()) {
        (Some(port), None) => Route::Port(port.parse().map_err(|_| "--port must be a number")?),
        (None, Some(resource)) => {
            let token = std::env::var("SDM_SERVICE_TOKEN")
                .map_err(|_| "set SDM_SERVICE_TOKEN for --resource")?;
            let session = sdm_core::Session::builder().token(token).login().await?;
            Route::InProcess(session, (*resource).to_owned())
        }
        _ => return Err("give one of --port PORT or --resource NAME".into()),
    };
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = route.connect(&config).await?;
        let statement = client.prepare(SELECT).await?;
        connections.push((client, statement));
    }
    let setup_ms = setup.elapsed().as_secs_f64() * 1000.0;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_seconds()?;
    let started = Instant::now();
    let mut workers = Vec::with_capacity(clients);
    for (i, (client, statement)) in connections.into_iter().enumerate() {
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            // xorshift: a cheap, per-client sequence of accounts.
            let mut x: u32 = 0x9e37_79b9 ^ (i as u32 + 1).wrapping_mul(0x85eb_ca6b);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let aid = (x % accounts as u32) as i32 + 1;
                client.query_one(&statement, &[&aid]).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let transactions = done.load(Ordering::Relaxed);
    let cpu = cpu_seconds()? - cpu0;
    for worker in workers {
        worker.await??;
    }
    Ok(json!({
        "tps": transactions as f64 / elapsed,
        "transactions": transactions,
        "seconds": elapsed,
        "clients": clients,
        "cpu_s": cpu,
        "cpu_us_per_txn": if transactions > 0 { cpu * 1e6 / transactions as f64 } else { 0.0 },
        "setup_ms": setup_ms,
    })
    .to_string())
}
