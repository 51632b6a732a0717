//! TLS 1.3 whose records sdm seals and opens itself, for the tunnel between the client and the
//! gateway.
//!
//! rustls does the handshake (certificates, key exchange, resumption), then hands over the two
//! traffic keys ([`connect`], [`accept`]); [`TlsStream`] carries the data from there with ring's
//! AEAD directly. What that saves, per record: rustls's buffered connection copies received
//! plaintext into a buffer of its own and allocates a vector for every record it seals; here a
//! record is opened in place in the buffer it was read into and sealed in place in the one
//! buffer of outgoing records. The buffers are sized by use, as the pump's are: the outgoing one
//! goes once its records are written, the incoming one when nothing waits after a message (a
//! bulk transfer keeps its larger one until its reads are message-sized again), so a connection
//! idle between messages holds none.
//!
//! What rustls's record layer did, this module does, and its tests show it (`tls::tests`,
//! `record::tests`):
//! - the nonce of every record is the key's IV XOR its sequence number; a record changed,
//!   replayed, reordered or dropped fails its integrity check and ends the stream with an error,
//!   and no byte of it is handed out;
//! - the header is the AEAD's additional data; records of another outer type, longer than
//!   2^14 + 256 bytes, or with plaintext over 2^14 bytes are refused before or after opening;
//! - the true content type follows the plaintext, padding after it is stripped;
//! - close_notify ends the stream cleanly; the connection ending without it is an error
//!   (`UnexpectedEof`), so a truncation is never mistaken for the end;
//! - KeyUpdate: a received one replaces the receiving key (and, when asked, the sending key);
//!   the sending key is replaced before the suite's confidentiality limit (2^24 records for
//!   AES-GCM), through rustls's key schedule;
//! - NewSessionTicket: a client stores the server's tickets through rustls, so later connections
//!   resume;
//! - a record or message refused is answered with a fatal alert that says why (bad_record_mac,
//!   unexpected_message, record_overflow, decode_error; RFC 8446 §6.2), and nothing is written
//!   after it; a cut connection and the peer's own alerts get no answer.

mod handshake;
mod record;
mod stream;

pub use handshake::{accept, connect};
pub use stream::TlsStream;

#[cfg(test)]
mod tests;
