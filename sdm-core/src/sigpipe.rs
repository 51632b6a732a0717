//! Keeps a write to a socket whose peer has gone from killing the program that loaded us.
//!
//! Such a write raises SIGPIPE, whose default action ends the process. Rust and Python programs
//! ignore it at start, but C programs keep the default, and a Go program forwards a SIGPIPE
//! raised on a thread Go did not start (our runtime's) to that default. Tokio writes vectored
//! buffers (TLS streams do) with `writev`, which cannot ask the kernel not to signal as
//! `send(MSG_NOSIGNAL)` can, so the library blocks the signal instead: for good on its own
//! threads, and for the length of a call on the caller's. The write then fails with
//! EPIPE, which the library handles like any closed connection.

use std::mem::MaybeUninit;
use std::ptr;

/// Blocks SIGPIPE in the calling thread for the rest of its life (the runtime's threads).
pub(crate) fn block_for_this_thread() {
    let set = sigpipe_only();
    // SAFETY: `set` is an initialised signal set; a null old set is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
}

/// Blocks SIGPIPE in the calling thread until dropped, then discards a SIGPIPE the library's
/// writes left pending and restores the thread's signal mask.
pub(crate) struct CallerGuard {
    /// The mask to restore, or `None` when SIGPIPE was blocked already (nothing to undo).
    restore: Option<libc::sigset_t>,
    /// A SIGPIPE pending before the call is the program's, not ours: it stays pending.
    was_pending: bool,
}

impl CallerGuard {
    pub(crate) fn hold() -> CallerGuard {
        let set = sigpipe_only();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: both pointers are valid; pthread_sigmask fills `old`.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) };
        if rc != 0 {
            return CallerGuard {
                restore: None,
                was_pending: false,
            };
        }
        // SAFETY: pthread_sigmask succeeded, so `old` is initialised.
        let old = unsafe { old.assume_init() };
        // SAFETY: `old` is an initialised signal set.
        let already_blocked = unsafe { libc::sigismember(&old, libc::SIGPIPE) } == 1;
        CallerGuard {
            restore: (!already_blocked).then_some(old),
            was_pending: pending(),
        }
    }
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        let Some(old) = self.restore else { return };
        if !self.was_pending && pending() {
            let set = sigpipe_only();
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid set and timeout; a null siginfo is allowed. Takes the pending
            // SIGPIPE without waiting.
            unsafe { libc::sigtimedwait(&set, ptr::null_mut(), &zero) };
        }
        // SAFETY: `old` is the mask pthread_sigmask returned in `hold`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    }
}

fn pending() -> bool {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: sigpending succeeded, so the set is initialised.
    unsafe { libc::sigismember(set.as_ptr(), libc::SIGPIPE) == 1 }
}

fn sigpipe_only() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset adds a valid signal number to it.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}
