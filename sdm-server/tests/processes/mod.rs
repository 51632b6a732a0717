//! `sdm-server` child processes for the tests that run the control plane and gateways as
//! separate processes, as an operator does.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on a process reaching a state it logs.
pub const WAIT: Duration = Duration::from_secs(60);

/// A child `sdm-server` process; killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The audit spool of a gateway given none, removed with the process.
    _spool: Option<tempfile::TempDir>,
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `sdm-server ARGS` with `env`. A gateway given no `--audit-spool` spools in a
/// directory of its own (not the user's state directory), removed with the process.
pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sdm-server"));
    command
        .env_remove("RUST_LOG")
        .env_remove("SDM_SECRET_KEY")
        .env_remove("SDM_DATABASE_URL")
        .env_remove("SDM_AUDIT_SPOOL")
        .env_remove("SDM_GATEWAY_TOKEN");
    let spool = (args.first() == Some(&"gateway")
        && !args.contains(&"--audit-spool")
        && !env.iter().any(|(k, _)| *k == "SDM_AUDIT_SPOOL"))
    .then(|| tempfile::tempdir().unwrap());
    if let Some(dir) = &spool {
        command.env("SDM_AUDIT_SPOOL", dir.path().join("spool"));
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    Proc {
        name: name.to_owned(),
        child,
        stdout,
        stderr,
        seen: Vec::new(),
        _spool: spool,
    }
}

impl Proc {
    /// Reads stderr until a line contains `needle`; returns that line.
    pub fn wait_for(&mut self, needle: &str) -> String {
        tokio::task::block_in_place(|| {
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
                        "{}: no stderr line with {needle:?}; saw:\n{}",
                        self.name,
                        self.seen.join("\n")
                    ),
                }
            }
        })
    }

    pub fn first_stdout_line(&mut self) -> String {
        tokio::task::block_in_place(|| {
            self.stdout
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{}: nothing on stdout", self.name))
        })
    }

    /// Everything written to stderr so far.
    pub fn stderr_so_far(&mut self) -> String {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the exit (bounded); returns the exit code (-1 for a signal) and all of stderr.
    pub fn wait_exit(&mut self) -> (i32, String) {
        let status = tokio::task::block_in_place(|| {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    panic!("{} did not exit", self.name);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        tokio::task::block_in_place(|| {
            while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(300)) {
                self.seen.push(line);
            }
        });
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }

    /// Kills it as a crash would, and reaps it (so its sockets are closed).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a log line.
pub fn field(line: &str, key: &str) -> String {
    let needle = format!("{key}=");
    let start = line
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        + needle.len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_owned()
}
