//! The gateway's connection threads in a running `sdm-server`: by default the kernel's
//! default while idle and `SCHED_BATCH` while streams keep a thread busy; `SCHED_BATCH` or the
//! kernel's default always with `SDM_SCHED_POLICY=batch` or `normal`; the default, with a
//! warning that names the variable, for any other value (docs/OPERATIONS.md, "Sizing").

mod common;
mod processes;
mod support;

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use sdm_relay::scheduling::BUSY;
use sdm_testkit::EchoServer;
use tokio::net::TcpStream;

use processes::control_plane;
use support::{echoes_on, eventually};

const WAIT: Duration = Duration::from_secs(30);
const SCHED_OTHER: &str = "0";
const SCHED_BATCH: &str = "3";

/// `sdm-server serve` on free loopback ports, with `SDM_SCHED_POLICY` set to `policy` if given.
fn serve(data_dir: &std::path::Path, policy: Option<&str>) -> Child {
    let mut command = common::serve_command(data_dir);
    command.env_remove("SDM_SCHED_POLICY");
    if let Some(policy) = policy {
        command.env("SDM_SCHED_POLICY", policy);
    }
    command.spawn().unwrap()
}

/// The scheduling policy (field 41 of its stat) of each thread of `pid` named `sdm-gateway-N`,
/// once they are there.
fn gateway_thread_policies(pid: u32) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut policies = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if !comm.starts_with("sdm-gateway-") {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            policies.push(fields[38].to_owned());
        }
        if !policies.is_empty() {
            return policies;
        }
        assert!(
            Instant::now() < deadline,
            "no gateway threads after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `child` and returns what it wrote to standard error.
fn stop(mut child: Child) -> String {
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

#[test]
fn the_gateways_threads_are_scheduled_as_told_and_idle_ones_as_the_kernels_default() {
    for (policy, expected) in [
        (None, SCHED_OTHER),
        (Some("auto"), SCHED_OTHER),
        (Some("batch"), SCHED_BATCH),
        (Some("normal"), SCHED_OTHER),
        (Some("fifo"), SCHED_OTHER),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path(), policy);
        let policies = gateway_thread_policies(server.id());
        let stderr = stop(server);
        assert!(
            policies.iter().all(|p| p == expected),
            "SDM_SCHED_POLICY={policy:?}: gateway threads' policies {policies:?}\n{stderr}"
        );
        if policy == Some("fifo") {
            assert!(
                stderr.contains(
                    r#"SDM_SCHED_POLICY must be "auto", "batch" or "normal", not "fifo""#
                ),
                "the bad value is named:\n{stderr}"
            );
        }
    }
}

/// How many of `pid`'s gateway threads are `SCHED_BATCH`, and how many there are.
fn batch_gateway_threads(pid: u32) -> (usize, usize) {
    let policies = gateway_thread_policies(pid);
    let batch = policies.iter().filter(|p| *p == SCHED_BATCH).count();
    (batch, policies.len())
}

/// Streams through a real tunnel make a gateway thread batch once it carries [`BUSY`] of them,
/// and it goes back to the kernel's default when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_thread_is_batch_only_while_streams_keep_it_busy() {
    let cp = control_plane().await;
    let pid = cp.proc.id();
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, None).await;
    let (_, session) = cp.session("etl", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    let local = tunnel.local_addr().tcp().unwrap();
    let (batch, threads) = batch_gateway_threads(pid);
    assert_eq!(batch, 0, "idle, of {threads} gateway threads");

    // One stream at a time: a job waiting on each answer keeps the default.
    let mut one = TcpStream::connect(local).await.unwrap();
    assert!(echoes_on(&mut one).await, "no echo through the tunnel");
    tokio::time::sleep(LOOKS).await;
    assert_eq!(batch_gateway_threads(pid).0, 0, "one stream in flight");

    // More streams than threads can carry one each: some thread carries `BUSY`.
    let mut streams = vec![one];
    while streams.len() < threads * (BUSY - 1) + 1 {
        let mut stream = TcpStream::connect(local).await.unwrap();
        assert!(echoes_on(&mut stream).await, "no echo through the tunnel");
        streams.push(stream);
    }
    assert!(
        eventually(WAIT, async || batch_gateway_threads(pid).0 >= 1).await,
        "{} streams in flight: {:?} gateway threads batch",
        streams.len(),
        batch_gateway_threads(pid)
    );
    drop(streams);
    assert!(
        eventually(WAIT, async || batch_gateway_threads(pid).0 == 0).await,
        "the streams ended: {:?} gateway threads batch",
        batch_gateway_threads(pid)
    );
}

/// Long enough for a few of the gateway's looks at its threads' streams.
const LOOKS: Duration = Duration::from_millis(500);
