//! Spawns processes that must die with this process.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//! Test harnesses run each test on a short-lived thread, so a postmaster forked there would be
//! told to shut down as soon as its test function returned. Every tied child is therefore
//! forked by one dedicated thread that lives as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// A fork takes milliseconds; this only guards against a wedged spawner.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

struct Job {
    command: Command,
    reply: SyncSender<io::Result<Child>>,
}

static SPAWNER: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Spawns `command` from the spawner thread; the child receives SIGINT (PostgreSQL's fast
/// shutdown) when this process exits, however it exits.
pub(crate) fn spawn_tied(command: Command) -> io::Result<Child> {
    spawn_tied_with(command, libc::SIGINT)
}

/// [`spawn_tied`] with another death signal (MariaDB shuts down on SIGTERM, ignores SIGINT).
pub(crate) fn spawn_tied_with(mut command: Command, signal: libc::c_int) -> io::Result<Child> {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    let tie = move || {
        // Order matters. The kernel clears the death signal whenever the euid/egid change,
        // so it must be set after Command::uid/gid take effect. std's unix do_exec applies
        // setgid, setgroups and setuid first and runs pre_exec closures afterwards, right
        // before execvp, so this runs under the final credentials. The root run of
        // tests/pg.rs `postmaster_dies_with_its_process_and_the_sweep_cleans_up` checks it: with
        // the opposite order that postmaster would survive its process.
        // Only async-signal-safe calls here: we are between fork and exec.
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // If the parent died between fork and prctl the signal will never come: give up.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure allocates nothing and only makes async-signal-safe syscalls.
    unsafe {
        command.pre_exec(tie);
    }

    let (reply, answer) = mpsc::sync_channel(1);
    spawner()?
        .send(Job { command, reply })
        .map_err(|_| io::Error::other("the sdm-testkit spawner thread is gone"))?;
    answer.recv_timeout(REPLY_TIMEOUT).map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the sdm-testkit spawner thread did not answer",
        )
    })?
}

/// The channel to the spawner thread, starting the thread on first use.
fn spawner() -> io::Result<Sender<Job>> {
    let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = slot.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, jobs) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("sdm-testkit-spawner".into())
        .spawn(move || {
            // The static keeps a sender alive forever, so this loop never ends and the
            // thread, parent of every tied child, lives until the process exits.
            while let Ok(mut job) = jobs.recv() {
                let _ = job.reply.send(job.command.spawn());
            }
            loop {
                thread::park();
            }
        })?;
    *slot = Some(sender.clone());
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tied_children_run_and_are_parented_to_this_process() {
        // Spawned from a thread that then exits: the child must not get the death signal.
        let child = thread::spawn(|| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "sleep 0.3; echo $PPID"])
                .stdout(std::process::Stdio::piped());
            spawn_tied(cmd).unwrap()
        })
        .join()
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let ppid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(ppid, std::process::id());
    }
}
