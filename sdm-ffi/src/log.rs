//! `sdm_set_log_callback`: the library's log events (Rust `tracing`) handed to a C function.
//!
//! One process-wide subscriber forwards each event at or above the chosen level to the
//! callback, on the thread that emitted it (one of libsdm's runtime threads, or the caller's).
//! Events below the level cost an atomic load.

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::boundary::call;
use crate::error::{Failure, sdm_error, sdm_status};

/// The level of a log event; also the `max_level` of `sdm_set_log_callback` (which takes it as
/// an `int`): events at that level and the more severe ones are delivered.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sdm_log_level {
    /// Something failed.
    Error = 1,
    /// Something went wrong and was handled (a retry, a refused local connection).
    Warn = 2,
    /// A normal event worth a line: a tunnel opened or closed.
    Info = 3,
    /// Details for debugging.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

/// A log callback: `level`, `target` (the module that logged, e.g. `"sdm_core::tunnel"`) and
/// `message` (the text, then any fields as ` key=value`) are valid only during the call.
/// `userdata` is what was given to `sdm_set_log_callback`.
#[allow(non_camel_case_types)]
pub type sdm_log_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: sdm_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// The callback and its userdata (a C pointer the caller vouches for across threads).
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, sdm_log_level, *const c_char, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: `sdm_set_log_callback` documents that the callback is called from any thread with
// this userdata; the caller who set it takes that on.
unsafe impl Send for Sink {}
// SAFETY: as above; the pointer is only passed back to the callback, never dereferenced here.
unsafe impl Sync for Sink {}

/// The current callback. Held for reading while a callback runs, so that setting another one
/// waits until no call to the old one is in progress.
static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// The most verbose level delivered (an `sdm_log_level`); 0 while no callback is set.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);

fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn c_level(level: &Level) -> sdm_log_level {
    match *level {
        Level::ERROR => sdm_log_level::Error,
        Level::WARN => sdm_log_level::Warn,
        Level::INFO => sdm_log_level::Info,
        Level::DEBUG => sdm_log_level::Debug,
        Level::TRACE => sdm_log_level::Trace,
    }
}

struct ForwardToC;

impl<S: Subscriber> Layer<S> for ForwardToC {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level can change at any time: ask `enabled` at every event.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        level_number(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let Ok(sink) = SINK.read() else {
            return;
        };
        let Some(sink) = sink.as_ref() else {
            return;
        };
        let mut text = Text::default();
        event.record(&mut text);
        let message = CString::new(text.finish().replace('\0', " ")).unwrap_or_default();
        let target = CString::new(event.metadata().target().replace('\0', " ")).unwrap_or_default();
        // SAFETY: the callback and userdata were given together by `sdm_set_log_callback`,
        // whose caller guarantees the callback may be called from any thread until replaced;
        // the strings live until the call returns.
        unsafe {
            (sink.callback)(
                sink.userdata,
                c_level(event.metadata().level()),
                target.as_ptr(),
                message.as_ptr(),
            )
        };
    }
}

/// The message field first, then the other fields as ` key=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        self.message + &self.fields
    }
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// Installs the forwarding subscriber once; false when another one was installed first.
fn installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(Registry::default().with(ForwardToC)).is_ok()
    })
}

/// Hands libsdm's log events to `callback`: every event at `max_level` (an `sdm_log_level`:
/// `SDM_LOG_LEVEL_ERROR` 1 … `SDM_LOG_LEVEL_TRACE` 5) or more severe, with its level, target
/// and message. NULL `callback` stops the delivery. Replaces any callback set before.
///
/// The callback runs on the thread that logged: one of libsdm's own threads or a thread of the
/// caller inside a libsdm call, possibly on several threads at once; so it must be thread-safe,
/// must not block for long, and must not call libsdm (a call from inside it may deadlock). When
/// this function returns, no call to the previous callback is in progress and none follows, so
/// the previous `userdata` may be freed.
///
/// `max_level` outside 1…5: `SDM_STATUS_INVALID_ARGUMENT`. A process whose Rust code already
/// installed its own global `tracing` subscriber: `SDM_STATUS_INTERNAL` (that subscriber gets
/// the events). Thread-safe.
///
/// # Safety
/// `callback` is NULL or a function that may be called as described, with `userdata`, from any
/// thread until this function is called again; `error_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sdm_set_log_callback(
    callback: sdm_log_callback,
    userdata: *mut c_void,
    max_level: c_int,
    error_out: *mut *mut sdm_error,
) -> sdm_status {
    call(error_out, || {
        let Some(callback) = callback else {
            MAX_LEVEL.store(0, Ordering::Relaxed);
            replace(None)?;
            return Ok(());
        };
        let level = u8::try_from(max_level)
            .ok()
            .filter(|l| (1..=5).contains(l))
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "max_level {max_level} is not a log level: use SDM_LOG_LEVEL_ERROR (1) to \
                     SDM_LOG_LEVEL_TRACE (5)"
                ))
            })?;
        if !installed() {
            return Err(Failure::new(
                sdm_status::Internal,
                "this process already has a global tracing subscriber; libsdm's events go to it",
            ));
        }
        replace(Some(Sink { callback, userdata }))?;
        MAX_LEVEL.store(level, Ordering::Relaxed);
        Ok(())
    })
}

/// Swaps the sink, waiting for calls to the old one to finish.
fn replace(sink: Option<Sink>) -> Result<(), Failure> {
    let mut current = SINK
        .write()
        .map_err(|_| Failure::new(sdm_status::Internal, "the log callback lock is poisoned"))?;
    *current = sink;
    Ok(())
}
