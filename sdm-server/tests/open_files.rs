//! The `sdm-server` binary started under the common soft limit of 1,024 open files: it raises
//! the limit to the hard one and holds more connections than the old limit allowed; with no
//! room to raise it, a full descriptor table makes the API pause accepting, not spin or stop.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sdm_proto::api::routes;
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(30);

/// The soft and hard limits on open files of this process.
fn own_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

struct Running {
    child: Child,
    started: Instant,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// `sdm-server serve` on free loopback ports, started with the open-file limits `soft` and
/// `hard`.
fn serve(data_dir: &std::path::Path, soft: u64, hard: u64) -> Running {
    let mut command = common::serve_command(data_dir);
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit is async-signal-safe and reads only `limit`, copied into the closure.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        started,
        stderr: rx,
        seen: Vec::new(),
    }
}

impl Running {
    /// Reads stderr until a line contains `needle`; returns that line.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every stderr line so far.
    fn log(&mut self) -> &[String] {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// The API and gateway addresses, from the line that says the server runs.
    fn addresses(&mut self) -> (SocketAddr, SocketAddr) {
        let line = self.wait_for("sdm-server is running");
        let field = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .parse()
                .unwrap()
        };
        (field("api_addr="), field("gateway_addr="))
    }

    /// The descriptors the server has open.
    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Its soft and hard limits on open files, from `/proc/PID/limits`.
    fn limits(&self) -> (String, String) {
        let text = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_owned();
        let mut numbers = line
            .trim_start_matches("Max open files")
            .split_whitespace()
            .map(str::to_owned);
        (numbers.next().unwrap(), numbers.next().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connecting hung")
        .unwrap()
}

/// Polls `check` every 50 ms until it holds, for at most `WAIT`.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_raises_its_open_file_limit_and_holds_more_than_1024_connections() {
    sdm_server::raise_open_file_limit();
    let (_, hard) = own_limit();
    assert!(
        hard >= 4096,
        "this test needs a hard open-file limit of at least 4096 (it is {hard})"
    );
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = serve(&data_dir, 1024, hard);
    let line = server.wait_for("open-file limit");
    assert!(
        line.contains(&format!("raised the open-file limit from 1024 to {hard}")),
        "{line}"
    );
    let (api, gateway) = server.addresses();
    assert_eq!(server.limits(), (hard.to_string(), hard.to_string()));

    // 1,500 connections to the gateway (silent: it drops them after its 10 s handshake
    // timeout), all accepted at once.
    let baseline = server.open_descriptors();
    let one = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut held = Vec::new();
    for _ in 0..1500 {
        held.push(connect_from(one, gateway).await);
    }
    let mut most = 0;
    let accepted = eventually(|| {
        most = most.max(server.open_descriptors());
        most >= baseline + 1500
    })
    .await;
    assert!(
        accepted,
        "the server held at most {most} descriptors ({baseline} before the connections)"
    );
    // The API still answers, and nothing ran out of descriptors.
    let client = common::Client::new(&data_dir, api);
    assert_eq!(client.get(routes::HEALTH, None).await.status, 200);
    let log = server.log().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_api_pauses_accepting_and_keeps_serving() {
    sdm_server::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // No room to raise: the hard limit is 1,024 too.
    let mut server = serve(&data_dir, 1024, 1024);
    let (api, _) = server.addresses();

    // 1,100 silent connections to the API from ten sources (each under its per-source limit):
    // more than the descriptors left.
    let mut held = Vec::new();
    for i in 0..1100u16 {
        let last = u8::try_from(i % 10 + 10).unwrap();
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, last));
        held.push(connect_from(source, api).await);
    }
    server.wait_for("Too many open files");
    drop(held);

    // The listener is still there and serves as soon as descriptors are free.
    let client = common::Client::new(&data_dir, api);
    assert_eq!(client.get(routes::HEALTH, None).await.status, 200);
    let line = server.wait_for("accepting API connections again after");
    let failures: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("failures="))
        .unwrap_or_else(|| panic!("no failure count in {line:?}"))
        .parse()
        .unwrap();
    // Each failure paused the loop (100 ms) instead of spinning: there cannot have been more
    // failures than pauses fit in the server's whole life so far. (Not a timing assertion: a
    // slow machine only makes the count smaller; a loop that spins makes thousands a second.)
    let pauses = server.started.elapsed().as_millis() / 100 + 1;
    assert!(
        u128::from(failures) <= pauses,
        "{failures} failed accepts in {:?}: the accept loop spins",
        server.started.elapsed()
    );
    // The log grew with the logarithm of the failures, not with each one (counted up to the end
    // of that run of failures).
    let warnings = server
        .seen
        .iter()
        .filter(|l| l.contains("accepting API connections fails"))
        .count();
    assert!(failures >= 1);
    let most = u64::from(failures.ilog2()) + 1;
    assert!(
        u64::try_from(warnings).unwrap() <= most,
        "{warnings} warnings for {failures} failures"
    );
}
