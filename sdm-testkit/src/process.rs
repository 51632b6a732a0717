//! Small helpers around child processes: bounded waits and liveness checks by pid.

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Child, Output};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestkitError;

/// Collects a child's output, killing it if it runs longer than `timeout`.
pub(crate) fn output_within(
    child: Child,
    program: &str,
    timeout: Duration,
) -> Result<Output, TestkitError> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // wait_with_output drains both pipes without deadlock; a thread lets us bound it.
    thread::Builder::new()
        .name("sdm-testkit-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .map_err(|e| {
            TestkitError::io(format!("could not start a thread to wait for {program}"), e)
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => {
            result.map_err(|e| TestkitError::io(format!("could not wait for {program}"), e))
        }
        Err(RecvTimeoutError::Timeout) => {
            // The waiter still holds the unreaped child, so the pid cannot have been reused.
            signal(pid_t(pid), libc::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(10));
            Err(TestkitError::CommandTimeout {
                program: program.to_string(),
                after: timeout,
            })
        }
        Err(RecvTimeoutError::Disconnected) => Err(TestkitError::io(
            format!("the thread waiting for {program} died"),
            io::Error::other("waiter thread ended without a result"),
        )),
    }
}

/// Waits up to `grace` for `child` to exit; true when it has.
pub(crate) fn wait_within(child: &mut Child, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            // ECHILD: someone else reaped it; either way it is gone.
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Converts a std pid to libc's type; pids always fit.
pub(crate) fn pid_t(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).unwrap_or(libc::pid_t::MAX)
}

/// Sends `sig` to `pid`, ignoring failure (the process may already be gone).
pub(crate) fn signal(pid: libc::pid_t, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// True while `pid` names a process that has not exited (a zombie counts as exited).
pub(crate) fn is_running(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_some_and(|(state, _)| state != 'Z'),
        Err(_) if Path::new("/proc/self/stat").exists() => false,
        Err(_) => {
            // No /proc: fall back to kill(pid, 0); EPERM means it exists under another user.
            // SAFETY: kill(2) with signal 0 only checks for existence.
            let rc = unsafe { libc::kill(pid, 0) };
            rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
}

/// The pids whose parent is `ppid`, from /proc (empty without /proc).
pub(crate) fn children_of(ppid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(_, parent)| parent == ppid)
        })
        .collect()
}

/// State letter and parent pid from a /proc/PID/stat line. The command name sits in
/// parentheses and may itself contain spaces and parentheses, so parse after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, libc::pid_t)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (postgres: a) b) S 77 1234 1234 0 -1 4194560";
        assert_eq!(parse_stat(line), Some(('S', 77)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_running_and_its_parent_is_known() {
        let me = pid_t(std::process::id());
        assert!(is_running(me));
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        assert!(children_of(parent).contains(&me));
    }

    #[test]
    fn reaped_child_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = pid_t(child.id());
        child.wait().unwrap();
        assert!(!is_running(pid));
    }
}
