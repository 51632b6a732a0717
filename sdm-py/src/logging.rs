//! Rust `tracing` events to Python `logging`, under the `sdm` logger.
//!
//! A target such as `sdm_core::tunnel` becomes the logger `sdm.core.tunnel`. Whether an event is
//! wanted is decided without the GIL, from the lowest level enabled on the `sdm` logger, which is
//! read again at every call into the native module (so a level set with
//! `logging.getLogger("sdm").setLevel(...)` applies from the next sdm call on). Disabled events
//! cost an atomic load.
//!
//! The thread that emits an event (usually one of the runtime's) never calls into Python: the
//! event is queued ([`crate::delivery`]) and handed to `logging` by sdm's delivery thread, with
//! the time at which it happened.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::delivery;

/// The lowest Python level the `sdm` logger handles (WARNING until read).
static THRESHOLD: AtomicU32 = AtomicU32::new(30);

/// Installs the forwarding subscriber as the process's global default (once; a subscriber that
/// another extension installed first is left alone).
pub(crate) fn install() {
    let subscriber = Registry::default().with(ForwardToPython);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Reads the level of the `sdm` logger again (done at every call into the native module).
#[pyfunction]
pub(crate) fn refresh_log_level(py: Python<'_>) {
    refresh(py);
}

fn sdm_logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOGGER
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py
                .import("logging")?
                .call_method1("getLogger", ("sdm",))?
                .unbind())
        })
        .map(|logger| logger.bind(py))
}

pub(crate) fn refresh(py: Python<'_>) {
    let Ok(logger) = sdm_logger(py) else {
        return;
    };
    let mut threshold = 100;
    for level in [40u32, 30, 20, 10, 5] {
        match logger
            .call_method1("isEnabledFor", (level,))
            .and_then(|b| b.is_truthy())
        {
            Ok(true) => threshold = level,
            _ => break,
        }
    }
    THRESHOLD.store(threshold, Ordering::Relaxed);
}

fn python_level(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// `sdm_core::tunnel` → `sdm.core.tunnel`; another crate's `hyper::proto` → `sdm.hyper.proto`.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    match dotted.strip_prefix("sdm_") {
        Some(rest) => format!("sdm.{rest}"),
        None => format!("sdm.{dotted}"),
    }
}

struct ForwardToPython;

impl<S: Subscriber> Layer<S> for ForwardToPython {
    /// Never cache a decision per call site: the Python level can change at any time.
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        python_level(metadata.level()) >= THRESHOLD.load(Ordering::Relaxed) && delivery::open()
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        let record = Record {
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            level: python_level(metadata.level()),
            name: logger_name(metadata.target()),
            file: metadata.file().unwrap_or("<rust>"),
            line: metadata.line().unwrap_or(0),
            message: text.finish(),
        };
        delivery::push_droppable(Box::new(move |py: Python<'_>| {
            // A failing handler reports itself (`Handler.handleError`); anything else that
            // fails here (a broken filter) must not stop the delivery of later events.
            let _ = record.emit(py);
        }));
    }
}

/// An event, ready for `logging` (it holds no Python object, so it may be dropped anywhere).
struct Record {
    /// Seconds since the epoch at which the event happened (not when it was delivered).
    created: f64,
    level: u32,
    name: String,
    file: &'static str,
    line: u32,
    message: String,
}

impl Record {
    fn emit(self, py: Python<'_>) -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", (self.name.as_str(),))?;
        if !logger
            .call_method1("isEnabledFor", (self.level,))?
            .is_truthy()?
        {
            return Ok(());
        }
        // A record that points at the Rust source of the event.
        let record = logger.call_method1(
            "makeRecord",
            (
                self.name,
                self.level,
                self.file,
                self.line,
                self.message,
                PyTuple::empty(py),
                py.None(),
            ),
        )?;
        record.setattr("created", self.created)?;
        record.setattr("msecs", (self.created.fract() * 1000.0).floor())?;
        logger.call_method1("handle", (record,))?;
        Ok(())
    }
}

/// `message key=value key=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_owned()
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}
