//! What a protocol handler reports when its connection ends.

use sdm_proto::ErrorKind;

/// What happened on one connection.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) queries: u64,
    pub(crate) failure: Option<(ErrorKind, String)>,
}

impl Finished {
    pub(crate) fn failed(kind: ErrorKind, message: String) -> Finished {
        Finished {
            up: 0,
            down: 0,
            queries: 0,
            failure: Some((kind, message)),
        }
    }
}
