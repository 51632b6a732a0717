//! What every exported function shares: the panic boundary, argument checks, output writing.
//!
//! Every exported function has the same shape: `call(error_out, || { check every pointer;
//! do the work; write the outputs })`. The closure writes `*_out` parameters last, so they are
//! written only on success; `call` catches panics and turns failures into a status (and, when
//! the caller asked for one, an `sdm_error`).

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Failure, sdm_error, sdm_status};

/// Runs `work` behind the panic boundary and reports its outcome to C.
pub(crate) fn call(
    error_out: *mut *mut sdm_error,
    work: impl FnOnce() -> Result<(), Failure>,
) -> sdm_status {
    let outcome = match catch_unwind(AssertUnwindSafe(work)) {
        Ok(outcome) => outcome,
        Err(payload) => Err(Failure::panic(payload)),
    };
    match outcome {
        Ok(()) => sdm_status::Ok,
        Err(failure) => {
            let status = failure.status;
            if !error_out.is_null() {
                let error = Box::into_raw(Box::new(sdm_error::from(failure)));
                // SAFETY: the caller passes NULL (checked above) or a writable `sdm_error **`.
                unsafe { error_out.write(error) };
            }
            status
        }
    }
}

/// Like [`call`] for functions that return a value instead of a status: `fallback` on a panic.
pub(crate) fn guard<T>(fallback: T, work: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or(fallback)
}

/// The value behind a handle pointer, or `NULL_ARGUMENT`.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` that outlives the returned reference.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// A UTF-8 text argument, or `NULL_ARGUMENT` / `INVALID_ARGUMENT`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the returned reference.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated, guaranteed by the caller.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes
        .to_str()
        .map_err(|_| Failure::invalid(format!("argument `{name}` is not valid UTF-8")))
}

/// Checks that an output pointer is not NULL (before any work is done).
pub(crate) fn out<T>(ptr: *mut T, name: &str) -> Result<*mut T, Failure> {
    if ptr.is_null() {
        Err(Failure::null(name))
    } else {
        Ok(ptr)
    }
}

/// Writes an output value. Call it only once the work has succeeded.
///
/// # Safety
/// `ptr` is a non-NULL pointer (checked with [`out`]) to writable memory for a `T`.
pub(crate) unsafe fn write<T>(ptr: *mut T, value: T) {
    // SAFETY: guaranteed by the caller; `write` does not drop the old (uninitialised) value.
    unsafe { ptr.write(value) }
}

/// A C string from text a peer or user controls: an interior NUL (which C cannot represent)
/// becomes U+FFFD instead of failing.
pub(crate) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Copies `value` and a terminating NUL into the caller's buffer (`buf`, `buf_len` bytes).
/// Writes the size needed (including the NUL) to `needed_out` when it is not NULL, both on
/// success and on `BUFFER_TOO_SMALL`; `buf` may be NULL when `buf_len` is 0 to ask for the size.
///
/// # Safety
/// `buf` is NULL or writable for `buf_len` bytes; `needed_out` is NULL or writable.
pub(crate) unsafe fn copy_text(
    value: &str,
    buf: *mut c_char,
    buf_len: usize,
    needed_out: *mut usize,
) -> Result<(), Failure> {
    if buf.is_null() && buf_len > 0 {
        return Err(Failure::null("buf"));
    }
    let needed = value.len() + 1;
    if !needed_out.is_null() {
        // SAFETY: non-NULL and writable, guaranteed by the caller.
        unsafe { needed_out.write(needed) };
    }
    if buf_len < needed {
        return Err(Failure::new(
            sdm_status::BufferTooSmall,
            format!("the buffer has {buf_len} bytes; {needed} are needed (with the NUL)"),
        ));
    }
    // SAFETY: `buf` is writable for `buf_len >= needed` bytes and does not overlap `value`.
    unsafe {
        std::ptr::copy_nonoverlapping(value.as_ptr().cast::<c_char>(), buf, value.len());
        buf.add(value.len()).write(0);
    }
    Ok(())
}

/// The process a handle was created in; handles are not usable in a forked child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner(u32);

impl Owner {
    pub(crate) fn current() -> Owner {
        Owner(std::process::id())
    }

    pub(crate) fn is_current(self) -> bool {
        self.0 == std::process::id()
    }

    /// `CLOSED` in a forked child: its parent's sockets and runtime threads are not there.
    pub(crate) fn check(self, what: &str) -> Result<(), Failure> {
        if self.is_current() {
            Ok(())
        } else {
            Err(Failure::closed(format!(
                "this {what} was created by process {} before fork(); a child process must not \
                 use its parent's sessions or tunnels: call sdm_login in the child",
                self.0
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_an_error() {
        let mut error: *mut sdm_error = std::ptr::null_mut();
        let status = call(&mut error, || panic!("boom"));
        assert_eq!(status, sdm_status::Panic);
        assert!(!error.is_null());
        let message = unsafe { CStr::from_ptr(crate::error::sdm_error_message(error)) };
        assert!(message.to_str().unwrap().contains("boom"));
        unsafe { crate::error::sdm_error_free(error) };
        assert_eq!(guard(7, || panic!("again")), 7);
    }

    #[test]
    fn copy_text_reports_the_needed_size() {
        let mut buf = [1 as c_char; 8];
        let mut needed = 0usize;
        let small = unsafe { copy_text("127.0.0.1:5432", buf.as_mut_ptr(), 8, &mut needed) };
        assert_eq!(small.unwrap_err().status, sdm_status::BufferTooSmall);
        assert_eq!(needed, 15);
        assert_eq!(buf[0], 1, "nothing written on failure");
        let mut big = [1 as c_char; 15];
        unsafe { copy_text("127.0.0.1:5432", big.as_mut_ptr(), 15, &mut needed) }.unwrap();
        let text = unsafe { CStr::from_ptr(big.as_ptr()) };
        assert_eq!(text.to_str().unwrap(), "127.0.0.1:5432");
        let sized = unsafe { copy_text("ab", std::ptr::null_mut(), 0, &mut needed) };
        assert_eq!(sized.unwrap_err().status, sdm_status::BufferTooSmall);
        assert_eq!(needed, 3);
    }

    #[test]
    fn interior_nul_does_not_fail() {
        assert_eq!(cstring("a\0b").to_str().unwrap(), "a\u{FFFD}b");
    }
}
