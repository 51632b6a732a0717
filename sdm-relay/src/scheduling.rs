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
//! That holds for a busy thread, whose streams keep each other's messages coming. It does not
//! for a thread carrying one stream (a job's first query on a new connection): the job waits on
//! every message, and each batch wake-up adds a wait for the running thread to sleep, about
//! 0.015–0.03 ms of a new connection's first byte (docs/BENCHMARKS.md, "Lever: batch only while
//! busy"). So by default ([`Policy::Auto`]) a thread is batch only while at least [`BUSY`]
//! streams are in flight on it, looked at every [`LOOK_EVERY`] ([`follow_load`]);
//! `SDM_SCHED_POLICY=batch` or `normal` fixes the policy instead. Changing the policy is a
//! system call of several microseconds: too dear for every stream (docs/BENCHMARKS.md, "Lever:
//! normal while a stream is set up", not kept), nothing at most ten times a second.
//!
//! Threads a relaying thread starts (a blocking pool's) inherit the policy, so it is set only
//! where a process relays and starts no other programs: the gateway's connection threads. The
//! `sdm` agent keeps the default (it sits beside the client that a new connection's first byte
//! waits on), and the library in a job's own process leaves the job's scheduling alone.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// The environment variable that chooses the [`Policy`].
pub const POLICY_VARIABLE: &str = "SDM_SCHED_POLICY";

/// Streams in flight on a thread from which it is busy ([`Load::is_busy`]): [`Policy::Auto`]
/// schedules it as batch.
pub const BUSY: usize = 2;

/// How often [`follow_load`] looks at the streams in flight.
pub const LOOK_EVERY: Duration = Duration::from_millis(100);

/// How a relaying thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// `SCHED_BATCH` while at least [`BUSY`] streams are in flight on the thread, the kernel's
    /// default otherwise ([`follow_load`]; the default).
    #[default]
    Auto,
    /// `SCHED_BATCH` always: its wake-ups do not preempt the running thread.
    Batch,
    /// The kernel's default (`SCHED_OTHER`) always.
    Normal,
}

impl Policy {
    /// The policy [`POLICY_VARIABLE`] asks for (`auto`, `batch` or `normal`; unset or empty:
    /// `auto`). Any other value is an error that names it; callers warn and keep the default.
    pub fn from_env() -> Result<Policy, String> {
        Policy::parse(std::env::var(POLICY_VARIABLE).ok().as_deref())
    }

    fn parse(setting: Option<&str>) -> Result<Policy, String> {
        match setting.map(str::trim) {
            None | Some("") | Some("auto") => Ok(Policy::Auto),
            Some("batch") => Ok(Policy::Batch),
            Some("normal") => Ok(Policy::Normal),
            Some(other) => Err(format!(
                "{POLICY_VARIABLE} must be \"auto\", \"batch\" or \"normal\", not {other:?}"
            )),
        }
    }

    /// Schedules the calling thread, and the threads it starts from now on, this way (`Auto`
    /// starts as the kernel's default: no stream is in flight yet). Only Linux has
    /// `SCHED_BATCH`; elsewhere this does nothing.
    pub fn apply_to_this_thread(self) -> io::Result<()> {
        match self {
            Policy::Batch => Kernel::Batch.set_for_this_thread(),
            Policy::Auto | Policy::Normal => Kernel::Normal.set_for_this_thread(),
        }
    }
}

/// The kernel's policies a relaying thread is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Batch,
    Normal,
}

impl Kernel {
    fn set_for_this_thread(self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let policy = match self {
                Kernel::Batch => libc::SCHED_BATCH,
                Kernel::Normal => libc::SCHED_OTHER,
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

thread_local! {
    /// The streams in flight on this thread.
    static HERE: Load = Load::default();
}

/// How many streams are in flight on one thread: each [`InFlight`] counted on it and not yet
/// dropped. Read by the thread itself ([`follow_load`]) and by whoever chooses a thread for a
/// new connection.
#[derive(Debug, Clone, Default)]
pub struct Load(Arc<AtomicUsize>);

impl Load {
    /// The calling thread's.
    pub fn here() -> Load {
        HERE.with(Load::clone)
    }

    /// Streams in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether at least [`BUSY`] streams are in flight.
    pub fn is_busy(&self) -> bool {
        self.in_flight() >= BUSY
    }

    /// Counts one more stream in flight on this load's thread, from any thread.
    pub fn count(&self) -> InFlight {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlight(self.0.clone())
    }
}

/// One stream in flight on a thread, from its request to its end, counted while this is held.
#[derive(Debug)]
#[must_use = "the stream counts only while this is held"]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts a stream on the calling thread.
    pub fn count() -> InFlight {
        Load::here().count()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// For a thread given [`Policy::Auto`]: every [`LOOK_EVERY`], schedules it as batch if at
/// least [`BUSY`] streams are in flight on it, as the kernel's default if fewer. The policy is
/// changed only when the answer changes. Runs until dropped, as a task of the thread's own
/// single-threaded runtime. Its timer also keeps the runtime's next wake-up near, so that a
/// stream's later time limits (an upstream connect's) never have to wake the thread early.
pub async fn follow_load() {
    let mut looks = tokio::time::interval(LOOK_EVERY);
    looks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut now = Kernel::Normal;
    loop {
        looks.tick().await;
        let wanted = if HERE.with(Load::is_busy) {
            Kernel::Batch
        } else {
            Kernel::Normal
        };
        // A refusal leaves the thread as it was (the policy decides how soon its wake-ups run,
        // never whether); the next look tries again.
        if wanted != now && wanted.set_for_this_thread().is_ok() {
            now = wanted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_auto_unless_it_says_batch_or_normal_and_anything_else_is_named() {
        assert_eq!(Policy::parse(None), Ok(Policy::Auto));
        assert_eq!(Policy::parse(Some(" ")), Ok(Policy::Auto));
        assert_eq!(Policy::parse(Some("auto")), Ok(Policy::Auto));
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
            Policy::Batch.apply_to_this_thread().unwrap();
            Policy::Auto.apply_to_this_thread().unwrap();
            assert_eq!(
                policy_of_this_thread(),
                libc::SCHED_OTHER,
                "auto starts idle"
            );
        })
        .join()
        .unwrap();
    }

    /// Lets `follow_load` take its next look (the clock is paused: no real waiting).
    #[cfg(target_os = "linux")]
    async fn next_look() {
        tokio::time::sleep(LOOK_EVERY).await;
        tokio::task::yield_now().await;
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_auto_thread_is_batch_while_busy_streams_are_in_flight_on_it() {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                Policy::Auto.apply_to_this_thread().unwrap();
                let following = tokio::spawn(follow_load());
                let first = InFlight::count();
                next_look().await;
                assert_eq!(policy_of_this_thread(), libc::SCHED_OTHER, "one stream");
                let second = InFlight::count();
                next_look().await;
                assert_eq!(policy_of_this_thread(), libc::SCHED_BATCH, "{BUSY} streams");
                drop(first);
                next_look().await;
                assert_eq!(policy_of_this_thread(), libc::SCHED_OTHER, "one left");
                drop(second);
                following.abort();
            });
        })
        .join()
        .unwrap();
    }
}
