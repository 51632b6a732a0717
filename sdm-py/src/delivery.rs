//! Calls into Python on behalf of the runtime's threads (log events, results of async calls),
//! queued here and run by the delivery thread.
//!
//! The runtime's threads never run Python code. One that has something for Python queues it;
//! the delivery thread, a Python thread of the `sdm` package (`sdm/_delivery.py`), takes the
//! items in order and runs each with the GIL held.
//!
//! Why: a thread running Python code may hold a Python-level lock (a log file's buffered writer,
//! say) at the moment another thread forks, and the child inherits that lock held for ever. The
//! runtime's threads run at moments the user does not control; the delivery thread is held still
//! around `os.fork()` (`os.register_at_fork`), so no delivery of sdm's is half done in a child.
//!
//! The queue belongs to the process that made it, like the runtime: a forked child starts with
//! an empty one and leaves the parent's items (only the parent can deliver them) alone.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Work for the delivery thread; runs with the GIL held.
pub(crate) type Item = Box<dyn FnOnce(Python<'_>) + Send>;

/// Droppable items (log events) beyond this many waiting are dropped and counted: handlers
/// that cannot keep up must not make sdm's memory grow without bound. Other items (results
/// that someone awaits) are never dropped.
const DROPPABLE_CAPACITY: usize = 10_000;

/// How long a blocking call waits, at most, for the items queued before it returned to be
/// delivered (its own log lines among them).
const SETTLE_BOUND: Duration = Duration::from_secs(2);

/// True once the interpreter began to exit: items are no longer queued.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// The process whose delivery thread was started (0: none yet).
static CONSUMER_PID: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Whether this thread is delivering items now (a logging handler that calls sdm).
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

struct Entry {
    item: Item,
    droppable: bool,
}

#[derive(Default)]
struct State {
    items: VecDeque<Entry>,
    droppable: usize,
    dropped: u64,
    /// Items queued, and items delivered, since the queue was made (for `settle`).
    pushed: u64,
    delivered: u64,
}

struct Queue {
    pid: u32,
    state: Mutex<State>,
    /// Signalled when an item is queued and when the queue closes.
    queued: Condvar,
    /// Signalled when the delivery thread finished a batch.
    delivered: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static CURRENT: AtomicPtr<Queue> = AtomicPtr::new(std::ptr::null_mut());

/// This process's queue, made on first use (and again in a forked child).
fn queue() -> &'static Queue {
    let pid = std::process::id();
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: pointers stored in CURRENT come from Box::into_raw and are never freed.
    if let Some(queue) = unsafe { current.as_ref() }
        && queue.pid == pid
    {
        return queue;
    }
    let fresh = Box::into_raw(Box::new(Queue {
        pid,
        state: Mutex::new(State::default()),
        queued: Condvar::new(),
        delivered: Condvar::new(),
    }));
    match CURRENT.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // A parent's queue (its lock possibly held by a thread that does not exist here) is
        // leaked on purpose, items and all.
        // SAFETY: `fresh` was just published and is never freed.
        Ok(_) => unsafe { &*fresh },
        Err(_) => {
            // SAFETY: `fresh` was never published, so this thread owns it.
            drop(unsafe { Box::from_raw(fresh) });
            queue()
        }
    }
}

/// Queues a log event (dropped, and counted, when too many are waiting). Never blocks on Python.
pub(crate) fn push_droppable(item: Item) {
    enqueue(item, true);
}

/// Queues work that must run (the result of an async call). Never blocks on Python.
pub(crate) fn push(item: Item) {
    enqueue(item, false);
}

fn enqueue(item: Item, droppable: bool) {
    if CLOSED.load(Ordering::Acquire) {
        // The interpreter is exiting and nothing will run it; it may hold Python objects,
        // which must not be released without the GIL now.
        std::mem::forget(item);
        return;
    }
    let queue = queue();
    let mut state = queue.lock();
    if droppable && state.droppable >= DROPPABLE_CAPACITY {
        state.dropped += 1;
        return; // a log event holds no Python object: dropping it here is fine
    }
    state.items.push_back(Entry { item, droppable });
    state.droppable += usize::from(droppable);
    state.pushed += 1;
    drop(state);
    queue.queued.notify_one();
}

/// Whether events should still be produced at all.
pub(crate) fn open() -> bool {
    !CLOSED.load(Ordering::Acquire)
}

/// Starts this process's delivery thread unless it runs (called at every call into sdm, on the
/// caller's thread, before anything is queued in this process).
pub(crate) fn ensure_consumer(py: Python<'_>) {
    let pid = std::process::id();
    if CONSUMER_PID.load(Ordering::Acquire) == pid {
        return;
    }
    static START: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let started = START
        .import(py, "sdm._delivery", "start")
        .and_then(|start| start.call0());
    // Failing (the interpreter is exiting) leaves items queued, and calls do not wait for them.
    if started.is_ok() {
        CONSUMER_PID.store(pid, Ordering::Release);
    }
}

/// After a blocking call: waits until the items queued so far were delivered, so that the
/// call's log lines were handled when it returns. Bounded by [`SETTLE_BOUND`] (a handler that
/// blocks delays calls, never stops them); Python signal handlers run every `poll`.
pub(crate) fn settle(py: Python<'_>, poll: Duration) -> PyResult<()> {
    if CONSUMER_PID.load(Ordering::Acquire) != std::process::id()
        || DELIVERING.with(Cell::get)
        || !open()
    {
        return Ok(());
    }
    let queue = queue();
    let target = {
        // Held only briefly by anyone, never while waiting for the GIL: fine to take here.
        let state = queue.lock();
        if state.delivered >= state.pushed {
            return Ok(()); // nothing pending: no need to give up the GIL
        }
        state.pushed
    };
    let deadline = Instant::now() + SETTLE_BOUND;
    loop {
        let done = py.detach(|| {
            let until = (Instant::now() + poll).min(deadline);
            let mut state = queue.lock();
            while state.delivered < target && open() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = queue
                    .delivered
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.delivered >= target || !open()
        });
        if done || Instant::now() >= deadline {
            return Ok(());
        }
        py.check_signals()?;
    }
}

/// The delivery thread's wait: returns once an item is queued or `timeout` seconds passed;
/// false once the interpreter is exiting (the thread then ends).
#[pyfunction]
pub(crate) fn _wait_for_items(py: Python<'_>, timeout: f64) -> bool {
    let limit = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
    py.detach(|| {
        let queue = queue();
        let deadline = Instant::now() + limit;
        let mut state = queue.lock();
        while state.items.is_empty() && open() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = queue
                .queued
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        open()
    })
}

/// Runs up to `limit` queued items, in order, on this thread; returns how many log events were
/// dropped since the last call (the caller reports them). Called by the delivery thread with
/// its gate held (`sdm/_delivery.py`), and once more at exit.
#[pyfunction]
pub(crate) fn _deliver(py: Python<'_>, limit: usize) -> u64 {
    let queue = queue();
    let was_delivering = DELIVERING.with(|d| d.replace(true));
    let mut dropped = 0;
    for _ in 0..limit {
        let entry = {
            let mut state = queue.lock();
            dropped += std::mem::take(&mut state.dropped);
            let Some(entry) = state.items.pop_front() else {
                break;
            };
            state.droppable -= usize::from(entry.droppable);
            entry
        };
        // An item converts its own errors; a panic must not end the delivery thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| (entry.item)(py)));
        queue.lock().delivered += 1;
    }
    DELIVERING.with(|d| d.set(was_delivering));
    queue.delivered.notify_all();
    dropped
}

/// Called at interpreter exit: nothing more is queued and the delivery thread stops waiting.
/// Items already queued stay there for one last `_deliver`.
#[pyfunction]
pub(crate) fn _shutdown() {
    CLOSED.store(true, Ordering::Release);
    let queue = queue();
    // Taking the lock orders this after any waiter's check of `open()`: no wake-up is lost.
    drop(queue.lock());
    queue.queued.notify_all();
    queue.delivered.notify_all();
}
