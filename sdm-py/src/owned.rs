//! Values that belong to the process that created them.
//!
//! After `fork()` a child holds copies of the parent's core objects (sessions, tunnels) whose
//! sockets are registered with the parent's runtime. Using them would act on the parent's
//! sockets; even dropping them would deregister the parent's file descriptors from the epoll
//! instance that parent and child share. So in a child such a value is neither handed out nor
//! dropped: it is leaked, on purpose, like the parent's runtime (`sdm_core::runtime`).

use std::mem::ManuallyDrop;

/// `T`, usable and dropped only in the process that created it.
pub(crate) struct ProcessLocal<T: Send + 'static> {
    pid: u32,
    value: ManuallyDrop<T>,
}

impl<T: Send + 'static> ProcessLocal<T> {
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

impl<T: Send + 'static> Drop for ProcessLocal<T> {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return; // the parent's: leaked
        }
        // SAFETY: taken exactly once, here; `self.value` is not used afterwards.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        // Python drops these with the GIL held, at any moment (garbage collection). Dropping a
        // tunnel closes it, which takes locks shared with the runtime's threads: so the value
        // is dropped on the runtime instead of here, and the GIL is never held while waiting.
        match sdm_core::runtime::runtime() {
            Ok(rt) => drop(rt.spawn(async move { drop(value) })),
            Err(_) => drop(value),
        }
    }
}
