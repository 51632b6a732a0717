//! Values that belong to the process that created them.
//!
//! After `fork()` a child holds copies of the parent's core objects (sessions, tunnels) whose
//! sockets are registered with the parent's runtime. Using them would act on the parent's
//! sockets; even dropping them would deregister the parent's file descriptors from the epoll
//! instance that parent and child share. So in a child such a value is neither handed out nor
//! dropped: it is leaked, on purpose, like the parent's runtime (`sdm_core::runtime`).

use std::mem::ManuallyDrop;

/// `T`, usable and dropped only in the process that created it.
pub(crate) struct ProcessLocal<T> {
    pid: u32,
    value: ManuallyDrop<T>,
}

impl<T> ProcessLocal<T> {
    pub(crate) fn new(value: T) -> Self {
        ProcessLocal {
            pid: std::process::id(),
            value: ManuallyDrop::new(value),
        }
    }

    /// The value, or `None` in a process forked after it was created.
    pub(crate) fn get(&self) -> Option<&T> {
        (self.pid == std::process::id()).then_some(&*self.value)
    }

    /// The process that created the value.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

impl<T> Drop for ProcessLocal<T> {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            // SAFETY: dropped exactly once, here, and never used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
    }
}
