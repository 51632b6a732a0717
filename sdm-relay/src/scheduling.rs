//! How the threads that carry connections ask the kernel to schedule them.
//!
//! A relaying thread is woken by every message, and the message is worth moving soon, but not
//! worth taking a CPU from the thread running there: that is the job, the database or the
//! tunnel's other side, which is about to produce the next message anyway. Linux's
//! `SCHED_BATCH` says exactly this. The thread keeps its fair share of the CPU, and an idle CPU
//! still runs it at once; only its wake-ups no longer preempt the thread that is running. On a
//! busy two-core machine, the gateway's connection threads under `SCHED_BATCH` switched context
//! about a fifth less often per pgbench transaction and carried about 9 % more transactions
//! (docs/BENCHMARKS.md, "Lever: relaying threads that do not preempt").
//!
//! `SDM_SCHED_POLICY=normal` keeps the kernel's default instead. Threads a relaying thread
//! starts (a blocking pool's) inherit the policy, so it is set only where a process relays and
//! starts no other programs: the gateway's connection threads. The `sdm` agent keeps the
//! default (it sits beside the client that a new connection's first byte waits on), and the
//! library in a job's own process leaves the job's scheduling alone.

use std::io;

/// The environment variable that chooses the [`Policy`].
pub const POLICY_VARIABLE: &str = "SDM_SCHED_POLICY";

/// How a relaying thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// `SCHED_BATCH`: its wake-ups do not preempt the running thread (the default).
    #[default]
    Batch,
    /// The kernel's default (`SCHED_OTHER`).
    Normal,
}

impl Policy {
    /// The policy [`POLICY_VARIABLE`] asks for (`batch` or `normal`; unset or empty: `batch`).
    /// Any other value is an error that names it; callers warn and keep the default.
    pub fn from_env() -> Result<Policy, String> {
        Policy::parse(std::env::var(POLICY_VARIABLE).ok().as_deref())
    }

    fn parse(setting: Option<&str>) -> Result<Policy, String> {
        match setting.map(str::trim) {
            None | Some("") | Some("batch") => Ok(Policy::Batch),
            Some("normal") => Ok(Policy::Normal),
            Some(other) => Err(format!(
                "{POLICY_VARIABLE} must be \"batch\" or \"normal\", not {other:?}"
            )),
        }
    }

    /// Schedules the calling thread, and the threads it starts from now on, this way. Only
    /// Linux has `SCHED_BATCH`; elsewhere this does nothing.
    pub fn apply_to_this_thread(self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let policy = match self {
                Policy::Batch => libc::SCHED_BATCH,
                Policy::Normal => libc::SCHED_OTHER,
            };
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
            let set = unsafe { libc::sched_setscheduler(0, policy, &param) };
            if set != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_batch_unless_it_says_normal_and_anything_else_is_named() {
        assert_eq!(Policy::parse(None), Ok(Policy::Batch));
        assert_eq!(Policy::parse(Some(" ")), Ok(Policy::Batch));
        assert_eq!(Policy::parse(Some("batch")), Ok(Policy::Batch));
        assert_eq!(Policy::parse(Some(" normal\n")), Ok(Policy::Normal));
        let refused = Policy::parse(Some("fifo")).unwrap_err();
        assert!(
            refused.contains("SDM_SCHED_POLICY") && refused.contains("\"fifo\""),
            "{refused}"
        );
    }

    #[cfg(target_os = "linux")]
    fn policy_of_this_thread() -> libc::c_int {
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_is_scheduled_as_asked_and_so_are_the_threads_it_starts() {
        std::thread::spawn(|| {
            Policy::Batch.apply_to_this_thread().unwrap();
            assert_eq!(policy_of_this_thread(), libc::SCHED_BATCH);
            let started = std::thread::spawn(policy_of_this_thread).join().unwrap();
            assert_eq!(started, libc::SCHED_BATCH, "a thread it starts inherits it");
            Policy::Normal.apply_to_this_thread().unwrap();
            assert_eq!(policy_of_this_thread(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
