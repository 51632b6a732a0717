//! First-size buffers that idle directions gave back, kept by each thread for the next direction
//! that has something to read. A connection that answers requests goes idle between every two
//! messages, so without them each message would allocate and zero a buffer on its way in and on
//! its way back, in the client and again in the gateway.
//!
//! A thread keeps at most [`KEPT`]: about as many as its connections have in flight at once,
//! not one per connection it carries, so idle connections still hold no buffer. A buffer taken
//! from here still holds a former reader's bytes; a pump only ever looks at, and writes on, the
//! bytes its own read put there.

use std::cell::RefCell;

use crate::FIRST_BUFFER;

/// How many buffers a thread keeps (4 KiB each).
const KEPT: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`FIRST_BUFFER`] bytes: a spare one, or a new one.
pub(crate) fn take() -> Box<[u8]> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0u8; FIRST_BUFFER].into_boxed_slice())
}

/// Keeps `buf` for the next [`take`] on this thread, unless the thread keeps enough already (or
/// is exiting); then it is freed.
pub(crate) fn give_back(buf: Box<[u8]>) {
    debug_assert_eq!(buf.len(), FIRST_BUFFER);
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}

/// How many buffers this thread keeps now.
#[cfg(test)]
pub(crate) fn kept() -> usize {
    SPARE.with(|spare| spare.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        let buf = take();
        assert_eq!(buf.len(), FIRST_BUFFER);
        let at = buf.as_ptr();
        give_back(buf);
        let again = take();
        assert_eq!(again.as_ptr(), at, "the same allocation, not a new one");
    }

    #[test]
    fn a_thread_keeps_no_more_than_its_share() {
        let bufs: Vec<_> = (0..KEPT + 10).map(|_| take()).collect();
        for buf in bufs {
            give_back(buf);
        }
        assert_eq!(kept(), KEPT, "the rest were freed");
        let other_thread = std::thread::spawn(kept).join().expect("thread");
        assert_eq!(other_thread, 0, "each thread keeps its own");
    }
}
