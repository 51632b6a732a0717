//! [`Workers`]: the threads that carry the gateway's connections, each running its own
//! single-threaded runtime.
//!
//! A connection lives on one thread from its first byte to its last: its sockets are registered
//! with that thread's I/O driver, so a readable socket wakes the task on the thread that polls
//! for it. On a shared multi-threaded runtime the thread that sees the event and the thread
//! that runs the task often differ, and every message then costs a cross-thread wake-up (under
//! pgbench select-only, `futex` was 69 % of the gateway's system-call time). The control plane
//! keeps the main runtime.
//!
//! A new connection goes to the first thread that is not full (fewer than [`FULL`] streams and
//! handshakes in flight), else to the least busy one. Spreading connections pays only when they
//! work at the same time: a job that opens one connection after another would otherwise wake a
//! different, idle thread for each, and each new connection's first byte came about 0.035 ms
//! later and cost the gateway a quarter more CPU than on one thread (docs/BENCHMARKS.md, "Lever:
//! one thread until it is busy" and "Lever: one thread until it is full"). The threads are
//! scheduled as relaying threads: `SCHED_BATCH`, whose wake-ups do not preempt the thread
//! running on a CPU, while a thread is busy, unless `SDM_SCHED_POLICY` fixes the policy
//! (`sdm_relay::scheduling`).

use std::future::Future;
use std::io;
use std::thread::JoinHandle;

use sdm_relay::scheduling::{self, InFlight, Load, Policy};
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// A thread takes new connections while fewer than this many streams and handshakes are in
/// flight on it: one more than [`scheduling::BUSY`], because a job that opens connections one
/// after another has two in flight there whenever its agent's pool refills (the stream starting
/// and the one before it ending), and the refill, which carries the job's later streams, belongs
/// on the same thread.
const FULL: usize = scheduling::BUSY + 1;

/// Threads carrying connections.
pub(super) struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// The streams in flight on the thread.
    load: Load,
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
            let (loaded, load) = std::sync::mpsc::sync_channel(1);
            let thread = std::thread::Builder::new()
                .name(format!("sdm-gateway-{i}"))
                .spawn(move || {
                    let _ = loaded.send(Load::here());
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
            let load = load.recv().map_err(|_| {
                io::Error::other(format!("gateway thread {i} stopped as it started"))
            })?;
            workers.push(Worker {
                handle,
                load,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// Runs a new connection's task on the first thread that is not [full](FULL), else on the
    /// least busy one. The task is given its place on that thread, counted as a stream in flight
    /// there until it drops it (when its handshake is done), so that connections accepted one
    /// after another are placed knowing of each other. Sockets the task opens or adopts
    /// (`TcpStream::from_std`) are driven by that thread.
    pub(super) fn spawn<F>(&self, task: impl FnOnce(InFlight) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .find(|w| w.load.in_flight() < FULL)
            .or_else(|| self.workers.iter().min_by_key(|w| w.load.in_flight()));
        if let Some(worker) = worker {
            drop(worker.handle.spawn(task(worker.load.count())));
        }
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

    /// Places a connection that keeps its place (as one carrying a stream does) until the
    /// sender it pushes onto `ends` is sent or dropped; the name of the thread it runs on.
    fn place_busy(workers: &Workers, ends: &mut Vec<oneshot::Sender<()>>) -> String {
        let (end, ended) = oneshot::channel::<()>();
        ends.push(end);
        let (tx, rx) = std::sync::mpsc::channel();
        workers.spawn(|placed| async move {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
            let _ = ended.await;
            drop(placed);
        });
        rx.recv().unwrap().unwrap()
    }

    #[test]
    fn connections_go_to_the_first_thread_until_it_is_full_then_to_the_least_busy() {
        let workers = Workers::start_n(3, Policy::Normal).unwrap();
        let mut ends = Vec::new();
        let placed: Vec<String> = (0..11).map(|_| place_busy(&workers, &mut ends)).collect();
        // The third: a thread carrying one stream that starts and one that ends still takes the
        // pool's refill.
        let expected = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1].map(|i| format!("sdm-gateway-{i}"));
        assert_eq!(placed, expected);

        // Connections that are done with their handshake and idle leave the first thread free.
        ends.clear();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while workers.workers.iter().any(|w| w.load.in_flight() > 0) {
            assert!(
                std::time::Instant::now() < deadline,
                "places never given up"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for _ in 0..5 {
            let (tx, rx) = std::sync::mpsc::channel();
            workers.spawn(|placed| async move {
                drop(placed);
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
            });
            let name = rx.recv().unwrap().unwrap();
            assert_eq!(name, "sdm-gateway-0");
        }
    }

    /// A place is counted from the moment it is given, before the task runs: connections
    /// accepted in a burst are spread even when their tasks have not started yet.
    #[test]
    fn a_burst_of_connections_is_spread_before_their_tasks_start() {
        let workers = Workers::start_n(2, Policy::Normal).unwrap();
        // Every thread blocked until the burst is placed, so that no task of it starts before.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Arc::new(std::sync::Mutex::new(released));
        let mut blocked = Vec::new();
        for worker in &workers.workers {
            let released = released.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            drop(worker.handle.spawn(async move {
                let _ = tx.send(());
                let _ = released.lock().unwrap().recv();
            }));
            blocked.push(rx);
        }
        for rx in blocked {
            rx.recv().unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 * FULL {
            let tx = tx.clone();
            workers.spawn(|placed| async move {
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
                drop(placed);
            });
        }
        drop(release);
        let mut names: Vec<String> = (0..2 * FULL).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        let expected: Vec<String> = ["sdm-gateway-0", "sdm-gateway-1"]
            .iter()
            .flat_map(|name| std::iter::repeat_n(name.to_string(), FULL))
            .collect();
        assert_eq!(names, expected);
    }

    /// The scheduling policy of the thread running a task on `workers`.
    #[cfg(target_os = "linux")]
    fn policy_of_a_task(workers: &Workers) -> libc::c_int {
        let (tx, rx) = std::sync::mpsc::channel();
        workers.spawn(|_| async move {
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
            workers.spawn(|_| async move {
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
        workers.spawn(|_| async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(workers);
        // The task was dropped with its runtime, so its sender is gone.
        assert!(rx.blocking_recv().is_err());
    }
}
