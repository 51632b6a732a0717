//! [`Workers`]: the threads that carry the gateway's connections, each running its own
//! single-threaded runtime.
//!
//! A connection lives on one thread from its first byte to its last: its sockets are registered
//! with that thread's I/O driver, so a readable socket wakes the task on the thread that polls
//! for it. On a shared multi-threaded runtime the thread that sees the event and the thread
//! that runs the task often differ, and every message then costs a cross-thread wake-up (under
//! pgbench select-only, `futex` was 69 % of the gateway's system-call time). Connections are
//! handed out round-robin; the control plane keeps the main runtime. The threads are scheduled
//! as relaying threads: `SCHED_BATCH`, whose wake-ups do not preempt the thread running on a
//! CPU, while a thread is busy, unless `SDM_SCHED_POLICY` fixes the policy
//! (`sdm_relay::scheduling`).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use sdm_relay::scheduling::{self, Policy};
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// Threads carrying connections.
pub(super) struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// One thread per CPU this process may use, scheduled as `SDM_SCHED_POLICY` says.
    pub(super) fn start() -> io::Result<Workers> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        let policy = Policy::from_env().unwrap_or_else(|why| {
            tracing::warn!("{why}; the gateway's threads are scheduled as \"auto\"");
            Policy::Auto
        });
        Workers::start_n(count, policy)
    }

    fn start_n(count: usize, policy: Policy) -> io::Result<Workers> {
        let mut workers = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("sdm-gateway-{i}"))
                .spawn(move || {
                    if let Err(e) = policy.apply_to_this_thread() {
                        tracing::warn!(error = %e, ?policy, "cannot set a gateway thread's policy");
                    }
                    if policy == Policy::Auto {
                        drop(runtime.spawn(scheduling::follow_load()));
                    }
                    // Runs the connections spawned onto `handle` until told to stop; dropping
                    // the runtime then drops whatever is left.
                    let _ = runtime.block_on(stopped);
                })?;
            workers.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `task` on the next thread. Sockets it opens or adopts (`TcpStream::from_std`) are
    /// driven by that thread.
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        drop(self.workers[i].handle.spawn(task));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_worker_threads_round_robin() {
        let workers = Workers::start_n(2, Policy::Batch).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
            });
        }
        let mut names: Vec<_> = (0..4).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "sdm-gateway-0",
                "sdm-gateway-0",
                "sdm-gateway-1",
                "sdm-gateway-1"
            ]
        );
    }

    /// The scheduling policy of the thread running a task on `workers`.
    #[cfg(target_os = "linux")]
    fn policy_of_a_task(workers: &Workers) -> libc::c_int {
        let (tx, rx) = std::sync::mpsc::channel();
        workers.spawn(async move {
            // SAFETY: pid 0 is the calling thread.
            tx.send(unsafe { libc::sched_getscheduler(0) }).unwrap();
        });
        rx.recv().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn connections_run_on_threads_scheduled_as_asked() {
        let batch = Workers::start_n(1, Policy::Batch).unwrap();
        assert_eq!(policy_of_a_task(&batch), libc::SCHED_BATCH);
        let normal = Workers::start_n(1, Policy::Normal).unwrap();
        assert_eq!(policy_of_a_task(&normal), libc::SCHED_OTHER);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_auto_thread_turns_batch_while_busy_and_back_when_not() {
        let workers = Workers::start_n(1, Policy::Auto).unwrap();
        assert_eq!(policy_of_a_task(&workers), libc::SCHED_OTHER, "idle");
        // Streams in flight until told to end.
        let mut ends = Vec::new();
        for _ in 0..scheduling::BUSY {
            let (end, ended) = oneshot::channel::<()>();
            workers.spawn(async move {
                let _in_flight = scheduling::InFlight::count();
                let _ = ended.await;
            });
            ends.push(end);
        }
        let becomes = |policy| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if policy_of_a_task(&workers) == policy {
                    return true;
                }
                std::thread::sleep(scheduling::LOOK_EVERY / 4);
            }
            false
        };
        assert!(becomes(libc::SCHED_BATCH), "busy: batch");
        ends.clear();
        assert!(
            becomes(libc::SCHED_OTHER),
            "idle again: the kernel's default"
        );
    }

    #[test]
    fn dropping_the_workers_stops_their_threads_and_drops_pending_tasks() {
        let workers = Workers::start_n(1, Policy::Normal).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        workers.spawn(async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(workers);
        // The task was dropped with its runtime, so its sender is gone.
        assert!(rx.blocking_recv().is_err());
    }
}
