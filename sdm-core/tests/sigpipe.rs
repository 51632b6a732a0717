//! A write to a socket whose peer has gone must not kill a program that keeps SIGPIPE's default
//! action, as C programs do and as Go programs do for threads Go did not start. This binary puts
//! the default back (Rust ignores the signal at start) and writes to a closed socket with
//! `writev` (as TLS streams write), which raises the signal: from a task on the library's runtime, and from the future a
//! blocking call runs on the caller's thread. Without the library's blocking of SIGPIPE the
//! process dies here and the test harness reports it.

use std::io::{ErrorKind, IoSlice};
use std::mem::MaybeUninit;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

async fn write_to_a_closed_socket() -> std::io::Result<()> {
    let (mut ours, theirs) = UnixStream::pair()?;
    drop(theirs);
    // std's plain `write` passes MSG_NOSIGNAL; `writev` has no such flag.
    ours.write_vectored(&[IoSlice::new(b"anyone "), IoSlice::new(b"there?")])
        .await
        .map(drop)
}

fn sigpipe_is(set: &libc::sigset_t) -> bool {
    // SAFETY: `set` is an initialised signal set.
    unsafe { libc::sigismember(set, libc::SIGPIPE) == 1 }
}

fn this_threads_mask() -> libc::sigset_t {
    let mut mask = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: a null new set only reads the mask into `mask`.
    assert_eq!(0, unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), mask.as_mut_ptr())
    });
    // SAFETY: pthread_sigmask succeeded.
    unsafe { mask.assume_init() }
}

fn pending() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set.
    assert_eq!(0, unsafe { libc::sigpending(set.as_mut_ptr()) });
    // SAFETY: sigpending succeeded.
    unsafe { set.assume_init() }
}

#[test]
fn a_write_to_a_closed_socket_fails_with_epipe_instead_of_killing_a_program_that_keeps_sigpipe_default()
 {
    // SAFETY: restoring a signal's default action; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };

    let runtime = sdm_core::runtime::runtime().expect("the runtime starts");
    let on_a_worker = runtime
        .block_on(runtime.spawn(write_to_a_closed_socket()))
        .expect("the task ran");
    assert_eq!(
        ErrorKind::BrokenPipe,
        on_a_worker.expect_err("the write fails").kind()
    );

    let on_the_caller = sdm_core::runtime::block_on(write_to_a_closed_socket())
        .expect("a blocking call outside any runtime");
    assert_eq!(
        ErrorKind::BrokenPipe,
        on_the_caller.expect_err("the write fails").kind()
    );

    // The caller's thread is left as it was: SIGPIPE neither blocked nor pending.
    assert!(!sigpipe_is(&this_threads_mask()), "SIGPIPE left blocked");
    assert!(!sigpipe_is(&pending()), "a SIGPIPE left pending");
}
