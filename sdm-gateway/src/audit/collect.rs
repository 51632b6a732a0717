//! A test sink that keeps the statements recorded and refuses once its room is used up: the
//! audit trail as protocol taps' tests see it.

use std::sync::{Arc, Mutex};

use sdm_proto::audit::AuditEvent;

use super::{AuditSink, AuditUnavailable};

/// Keeps the statements recorded; refuses once `room` is used up.
pub(crate) struct Collect {
    texts: Mutex<Vec<String>>,
    room: usize,
}

impl Collect {
    pub(crate) fn new(room: usize) -> Arc<Collect> {
        Arc::new(Collect {
            texts: Mutex::new(Vec::new()),
            room,
        })
    }

    pub(crate) fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }
}

impl AuditSink for Collect {
    fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        let mut texts = self.texts.lock().unwrap();
        if texts.len() == self.room {
            return Err(AuditUnavailable("full".into()));
        }
        if let AuditEvent::Query(q) = event {
            texts.push(q.text);
        }
        Ok(())
    }
}
