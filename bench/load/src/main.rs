//! `sdm-load`: drives an sdm installation hard for a bounded time and prints what it sustained,
//! as one JSON line. Used by `bench/controlplane.sh` (see `bench/README.md`).
//!
//! ```text
//! sdm-load api   --what logins|leases --url URL [--url URL2] --ca-pem PATH
//!                --concurrency N --seconds S            token in SDM_TOKEN
//! sdm-load idle  --resource NAME --count N --gateway-pid PID   token in SDM_TOKEN
//! sdm-load echo  --port PORT --seconds S                 a TCP echo upstream
//! sdm-load relay --listen PORT --to PORT --seconds S     a plain TCP relay (bench/run.sh)
//!                [--tls-in DIR] [--tls-out DIR]          … accepting or connecting with TLS
//! sdm-load job   (--port PORT | --resource NAME) --clients N --seconds S --accounts N
//!                --user U --dbname D                     select-only PostgreSQL job (section H);
//!                                                        --resource: in-process, token in SDM_SERVICE_TOKEN
//! ```

use std::time::{Duration, Instant};

mod api;
mod echo;
mod idle;
mod job;
mod relay;

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Command-line arguments as `--name value` pairs after the mode.
struct Args {
    mode: String,
    pairs: Vec<(String, String)>,
}

impl Args {
    fn parse() -> Fallible<Args> {
        let mut it = std::env::args().skip(1);
        let mode = it
            .next()
            .ok_or("usage: sdm-load api|idle|echo|relay|job --name value …")?;
        let mut pairs = Vec::new();
        while let Some(name) = it.next() {
            let name = name
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --name, got {name:?}"))?
                .to_owned();
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            pairs.push((name, value));
        }
        Ok(Args { mode, pairs })
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Fallible<&str> {
        self.all(name)
            .first()
            .copied()
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Fallible<T> {
        self.one(name)?
            .parse()
            .map_err(|_| format!("--{name} must be a number").into())
    }
}

/// Bounded measurement window.
fn window(seconds: u64) -> Fallible<Duration> {
    if !(1..=600).contains(&seconds) {
        return Err("--seconds must be 1 to 600".into());
    }
    Ok(Duration::from_secs(seconds))
}

fn token() -> Fallible<String> {
    std::env::var("SDM_TOKEN").map_err(|_| "set SDM_TOKEN to the service token".into())
}

/// p-th percentile (0–100) of sorted latencies, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let started = Instant::now();
    let result = Args::parse().and_then(|args| {
        // The relay runs on one thread, as ssh's event loop does; the loads, and the job as
        // `#[tokio::main]` would on this 2-CPU machine, on two.
        let runtime = if args.mode == "relay" {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        .enable_all()
        .build()?;
        runtime.block_on(async {
            match args.mode.as_str() {
                "api" => api::run(&args).await,
                "idle" => idle::run(&args).await,
                "echo" => echo::run(&args).await,
                "relay" => relay::run(&args).await,
                "job" => job::run(&args).await,
                other => Err(format!("unknown mode {other:?}").into()),
            }
        })
    });
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("sdm-load: {e} (after {:?})", started.elapsed());
            std::process::exit(1);
        }
    }
}
