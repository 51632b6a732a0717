//! The gateway's connection threads in a running `sdm-server`: `SCHED_BATCH` by default,
//! the kernel's default with `SDM_SCHED_POLICY=normal`, and batch with a warning that names the
//! variable for any other value (docs/OPERATIONS.md, "Sizing").

mod common;

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

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
fn the_gateways_threads_are_batch_unless_told_otherwise() {
    for (policy, expected) in [
        (None, SCHED_BATCH),
        (Some("normal"), SCHED_OTHER),
        (Some("fifo"), SCHED_BATCH),
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
                stderr.contains(r#"SDM_SCHED_POLICY must be "batch" or "normal", not "fifo""#),
                "the bad value is named:\n{stderr}"
            );
        }
    }
}
