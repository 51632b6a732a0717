//! MySQL packets: `length (3 bytes, little endian) | sequence id | payload`. A payload of
//! 16 MiB - 1 bytes or more is cut into packets of that size followed by a shorter one (maybe
//! empty). Reading here is for the login phases only: one packet at a time, read exactly, so
//! nothing after it is taken from the stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload of one packet; a packet this long is continued by the next.
pub(crate) const MAX_PAYLOAD: usize = 0xff_ffff;
/// Login packets are small; a larger one is not a login packet.
const MAX_LOGIN_PACKET: usize = 64 * 1024;

/// First payload bytes.
pub(crate) const OK: u8 = 0x00;
pub(crate) const ERR: u8 = 0xff;
pub(crate) const AUTH_SWITCH: u8 = 0xfe;
pub(crate) const AUTH_MORE_DATA: u8 = 0x01;

/// Reads one packet of the login phase: its sequence id and payload.
pub(crate) async fn read<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<(u8, Vec<u8>), String> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)
        .await
        .map_err(|e| format!("reading a packet: {e}"))?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len > MAX_LOGIN_PACKET {
        return Err(format!("a login packet of {len} bytes is too long"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading a packet: {e}"))?;
    Ok((header[3], payload))
}

/// Encodes `payload` as packets numbered from `seq`.
pub(crate) fn encode(mut seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    let mut rest = payload;
    loop {
        let take = rest.len().min(MAX_PAYLOAD);
        let len = take as u32;
        out.extend_from_slice(&len.to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        seq = seq.wrapping_add(1);
        if take < MAX_PAYLOAD {
            return out;
        }
    }
}

/// Writes `payload` as packets numbered from `seq` and flushes.
pub(crate) async fn write<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&encode(seq, payload)).await?;
    w.flush().await
}

/// An ERR packet numbered `seq`: in the protocol 4.1 layout (with the SQL state) once the
/// client has said it speaks 4.1, that is after the greeting; in place of the greeting, the
/// older layout (clients read it as such there).
pub(crate) fn error(seq: u8, code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut payload = vec![ERR];
    payload.extend_from_slice(&code.to_le_bytes());
    if seq != 0 {
        payload.push(b'#');
        let mut state = state.as_bytes().to_vec();
        state.resize(5, b'0');
        payload.extend_from_slice(&state);
    }
    payload.extend_from_slice(message.as_bytes());
    encode(seq, &payload)
}

/// The code and message of an ERR payload, for a person.
pub(crate) fn error_text(payload: &[u8]) -> String {
    let Some(rest) = payload.strip_prefix(&[ERR]) else {
        return "an unexpected answer".into();
    };
    let code = match rest {
        [a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => 0,
    };
    let rest = rest.get(2..).unwrap_or_default();
    let message = match rest.strip_prefix(b"#") {
        Some(after) => after.get(5..).unwrap_or_default(),
        None => rest,
    };
    format!("{} (error {code})", String::from_utf8_lossy(message))
}

/// Reads the fields of a payload in order; every read checks the length.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(payload: &'a [u8]) -> Fields<'a> {
        Fields { rest: payload }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(taken)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Up to a NUL (consumed); without one, the rest.
    pub(crate) fn nul_terminated(&mut self) -> &'a [u8] {
        match self.rest.iter().position(|&b| b == 0) {
            Some(at) => {
                let s = &self.rest[..at];
                self.rest = &self.rest[at + 1..];
                s
            }
            None => self.rest(),
        }
    }

    /// A length-encoded integer.
    pub(crate) fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.u16().map(u64::from),
            0xfd => self
                .bytes(3)
                .map(|b| u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16),
            0xfe => self
                .bytes(8)
                .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
            _ => None,
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Appends a length-encoded integer.
pub(crate) fn put_lenenc(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=0xfa => out.push(n as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_payload_is_cut_at_16_mib_and_ends_with_a_shorter_packet() {
        let payload = vec![7u8; MAX_PAYLOAD];
        let packets = encode(3, &payload);
        assert_eq!(packets.len(), MAX_PAYLOAD + 8);
        assert_eq!(&packets[..4], &[0xff, 0xff, 0xff, 3]);
        assert_eq!(
            &packets[MAX_PAYLOAD + 4..],
            &[0, 0, 0, 4],
            "an empty last packet"
        );
        assert_eq!(encode(0, b"ab"), [2, 0, 0, 0, b'a', b'b']);
    }

    #[test]
    fn error_packets_round_trip() {
        let packet = error(2, 1045, "28000", "no");
        assert_eq!(&packet[3..5], &[2, ERR]);
        assert_eq!(error_text(&packet[4..]), "no (error 1045)");
        assert_eq!(error_text(&[ERR]), " (error 0)");
        assert_eq!(error_text(&[]), "an unexpected answer");
    }

    #[test]
    fn lenenc_round_trips() {
        for n in [0, 250, 251, 65535, 65536, 0xff_ffff, 0x100_0000] {
            let mut out = Vec::new();
            put_lenenc(&mut out, n);
            assert_eq!(Fields::new(&out).lenenc(), Some(n as u64));
        }
        assert_eq!(Fields::new(&[0xfc, 1]).lenenc(), None);
    }
}
