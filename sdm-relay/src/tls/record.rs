//! One TLS 1.3 record's protection (RFC 8446 §5.2–5.3): the AEAD under one traffic key, the
//! per-record nonce (the key's IV XOR the record's sequence number), the record header as the
//! additional data, and the true content type at the end of the plaintext.

use std::io;

use ring::aead::{self, AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// A record header: outer type, legacy version, length.
pub(super) const HEADER: usize = 5;
/// The AEAD tag at the end of every record (all three TLS 1.3 suites of ring).
pub(super) const TAG: usize = 16;
/// The most plaintext one record carries (2^14 bytes).
pub(super) const MAX_PLAINTEXT: usize = 16 * 1024;
/// The longest protected body a peer may send (2^14 + 256 bytes).
pub(super) const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// What one full record adds to its plaintext: header, content type, tag.
pub(super) const OVERHEAD: usize = HEADER + 1 + TAG;

/// The outer type of every protected record, and the inner type of application data.
pub(super) const APPLICATION_DATA: u8 = 23;
pub(super) const HANDSHAKE: u8 = 22;
pub(super) const ALERT: u8 = 21;

/// The traffic key of one direction and the sequence number of its next record.
pub(super) struct Keys {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    /// Keys from what rustls extracted (or derived at a key update), starting at `seq`.
    pub(super) fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> io::Result<Keys> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => {
                return Err(invalid(
                    "the TLS cipher suite is not one sdm encrypts records with",
                ));
            }
        };
        let key = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| invalid("the TLS traffic key has the wrong length"))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| invalid("the TLS traffic IV has the wrong length"))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// Records protected (or opened) under this key so far, counting those before extraction.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    fn nonce(&self) -> aead::Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[aead::NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *byte ^= seq;
        }
        aead::Nonce::assume_unique_for_key(nonce)
    }

    /// Appends one record to `out` carrying `len` bytes of type `content_type`, which `fill`
    /// appends (exactly `len`, at most [`MAX_PLAINTEXT`]).
    pub(super) fn seal(
        &mut self,
        out: &mut Vec<u8>,
        content_type: u8,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        debug_assert!(len <= MAX_PLAINTEXT);
        let [hi, lo] = ((len + 1 + TAG) as u16).to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        let start = out.len();
        out.reserve(len + OVERHEAD);
        out.extend_from_slice(&header);
        fill(out);
        if out.len() != start + HEADER + len {
            return Err(io::Error::other(
                "a record's plaintext has the wrong length",
            ));
        }
        out.push(content_type);
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(), Aad::from(header), &mut out[start + HEADER..])
            .map_err(|_| io::Error::other("a TLS record could not be encrypted"))?;
        out.extend_from_slice(tag.as_ref());
        self.seq += 1;
        Ok(())
    }

    /// Opens the record with header `header` whose protected body is `body`, in place.
    /// Returns its content type and the length of its plaintext, at the front of `body`.
    pub(super) fn open(
        &mut self,
        header: [u8; HEADER],
        body: &mut [u8],
    ) -> io::Result<(u8, usize)> {
        let plaintext = self
            .key
            .open_in_place(self.nonce(), Aad::from(header), body)
            .map_err(|_| refused(BAD_RECORD_MAC, "a TLS record failed its integrity check"))?;
        self.seq += 1;
        // Zero padding follows the content type, which is never zero.
        let at = plaintext
            .iter()
            .rposition(|&b| b != 0)
            .ok_or_else(|| refused(UNEXPECTED_MESSAGE, "a TLS record carries no content type"))?;
        if at > MAX_PLAINTEXT {
            return Err(refused(
                RECORD_OVERFLOW,
                "a TLS record's plaintext is too long",
            ));
        }
        Ok((plaintext[at], at))
    }
}

/// The length of the protected body a record header announces, checked: the outer type of
/// every record after the handshake is application data, and no body exceeds 2^14 + 256.
pub(super) fn body_len(header: [u8; HEADER]) -> io::Result<usize> {
    if header[0] != APPLICATION_DATA {
        return Err(refused(
            UNEXPECTED_MESSAGE,
            format!(
                "unexpected TLS record type {} after the handshake",
                header[0]
            ),
        ));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_CIPHERTEXT {
        return Err(refused(RECORD_OVERFLOW, "a TLS record is too long"));
    }
    if len < 1 + TAG {
        return Err(refused(
            BAD_RECORD_MAC,
            "a TLS record is too short to be protected",
        ));
    }
    Ok(len)
}

pub(super) fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Alert descriptions (RFC 8446 §6) that say why a record or message was refused.
pub(super) const UNEXPECTED_MESSAGE: u8 = 10;
pub(super) const BAD_RECORD_MAC: u8 = 20;
pub(super) const RECORD_OVERFLOW: u8 = 22;
pub(super) const DECODE_ERROR: u8 = 50;

/// Something the peer sent was refused: the stream fails, and the peer is told why with a
/// fatal `alert`.
#[derive(Debug)]
pub(super) struct Refused {
    alert: u8,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.alert {
            UNEXPECTED_MESSAGE => "unexpected_message",
            BAD_RECORD_MAC => "bad_record_mac",
            RECORD_OVERFLOW => "record_overflow",
            DECODE_ERROR => "decode_error",
            _ => "alert",
        };
        write!(f, "{} ({name})", self.message)
    }
}

impl std::error::Error for Refused {}

pub(super) fn refused(alert: u8, message: impl Into<String>) -> io::Error {
    let message = message.into();
    io::Error::new(io::ErrorKind::InvalidData, Refused { alert, message })
}

/// The alert that answers `error`, when it refused something the peer sent.
pub(super) fn alert_for(error: &io::Error) -> Option<u8> {
    error.get_ref()?.downcast_ref::<Refused>().map(|r| r.alert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn keys(seq: u64) -> Keys {
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([7u8; 32]),
            iv: Iv::new([9u8; 12]),
        };
        Keys::new(seq, secrets).unwrap()
    }

    fn sealed(keys: &mut Keys, content_type: u8, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        keys.seal(&mut out, content_type, plaintext.len(), |out| {
            out.extend_from_slice(plaintext)
        })
        .unwrap();
        out
    }

    fn opened(keys: &mut Keys, record: &mut [u8]) -> io::Result<(u8, Vec<u8>)> {
        let header: [u8; HEADER] = record[..HEADER].try_into().unwrap();
        let len = body_len(header)?;
        if len != record.len() - HEADER {
            return Err(invalid("the header's length is not the record's"));
        }
        let (content_type, n) = keys.open(header, &mut record[HEADER..])?;
        Ok((content_type, record[HEADER..HEADER + n].to_vec()))
    }

    #[test]
    fn a_record_opens_to_what_was_sealed_with_its_type() {
        let (mut tx, mut rx) = (keys(5), keys(5));
        let mut record = sealed(&mut tx, APPLICATION_DATA, b"select 1");
        assert_eq!(record.len(), 8 + OVERHEAD);
        assert_eq!(&record[..3], &[23, 3, 3]);
        let (content_type, plaintext) = opened(&mut rx, &mut record).unwrap();
        assert_eq!(
            (content_type, plaintext.as_slice()),
            (APPLICATION_DATA, &b"select 1"[..])
        );
        assert_eq!((tx.seq(), rx.seq()), (6, 6));
    }

    #[test]
    fn every_changed_byte_of_a_record_is_refused() {
        let mut tx = keys(0);
        let record = sealed(&mut tx, APPLICATION_DATA, b"abc");
        for at in 0..record.len() {
            let mut changed = record.clone();
            changed[at] ^= 0x01;
            let mut rx = keys(0);
            let result = opened(&mut rx, &mut changed);
            assert!(
                result.is_err(),
                "byte {at} changed and the record still opened"
            );
            assert_eq!(
                rx.seq(),
                0,
                "a refused record does not advance the sequence"
            );
        }
    }

    #[test]
    fn a_record_replayed_or_reordered_is_refused() {
        let mut tx = keys(0);
        let first = sealed(&mut tx, APPLICATION_DATA, b"one");
        let second = sealed(&mut tx, APPLICATION_DATA, b"two");
        let mut rx = keys(0);
        assert!(
            opened(&mut rx, &mut second.clone()).is_err(),
            "out of order"
        );
        opened(&mut rx, &mut first.clone()).unwrap();
        assert!(opened(&mut rx, &mut first.clone()).is_err(), "replayed");
        assert_eq!(opened(&mut rx, &mut second.clone()).unwrap().1, b"two");
    }

    #[test]
    fn padding_is_stripped_and_all_padding_is_refused() {
        // A peer may pad: plaintext, type, zeros. Sealed here with the type inside the fill.
        let mut tx = keys(0);
        let mut padded = Vec::new();
        tx.seal(&mut padded, 0, 6, |out| {
            out.extend_from_slice(&[b'h', b'i', 23, 0, 0, 0])
        })
        .unwrap();
        let mut rx = keys(0);
        assert_eq!(opened(&mut rx, &mut padded).unwrap(), (23, b"hi".to_vec()));

        let mut zeros = Vec::new();
        tx.seal(&mut zeros, 0, 3, |out| out.extend_from_slice(&[0, 0, 0]))
            .unwrap();
        let error = opened(&mut rx, &mut zeros).unwrap_err();
        assert!(error.to_string().contains("no content type"), "{error}");
    }

    #[test]
    fn headers_of_the_wrong_type_or_length_are_refused_before_decrypting() {
        assert!(body_len([22, 3, 3, 0, 40]).is_err(), "plaintext handshake");
        assert!(body_len([21, 3, 3, 0, 2]).is_err(), "plaintext alert");
        let too_long = (MAX_CIPHERTEXT + 1) as u16;
        let [hi, lo] = too_long.to_be_bytes();
        assert!(body_len([23, 3, 3, hi, lo]).is_err(), "record_overflow");
        assert!(
            body_len([23, 3, 3, 0, 16]).is_err(),
            "shorter than a tag and a type"
        );
        assert_eq!(body_len([23, 3, 3, 0, 17]).unwrap(), 17);
    }
}
