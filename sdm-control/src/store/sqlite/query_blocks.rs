//! Audited statements kept in blocks: one row holds a run of one connection's statements, in
//! order, compressed. A row per statement cost the audit writer a B-tree insert and its share of
//! WAL pages each, which at 12,000 statements a second was most of what the audit trail cost the
//! gateway (docs/BENCHMARKS.md, "The audit trail in blocks"); a block costs that once for
//! hundreds, and deflate keeps a text the block repeats (pgbench sends one text, differing only
//! in its numbers) about once.
//!
//! A block's body is one format byte and a payload: `RAW` holds it as it is, `DEFLATE` as a raw
//! deflate stream. The payload is a varint count, then per statement the varint difference of its
//! `seq` from the previous one's (from 0), the zig-zag varint difference of its `at` (from 0),
//! and its text as a varint length and UTF-8 bytes. A body is read only by this module; one that
//! does not decode is an error, never a panic.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::bufread::DeflateDecoder;
use flate2::write::DeflateEncoder;
use sdm_proto::audit::AuditQueryEvent;
use uuid::Uuid;

const RAW: u8 = 0;
const DEFLATE: u8 = 1;
/// A block ends after this many statements or this much text, so that reading one connection's
/// next page decodes little more than it returns.
const MAX_STATEMENTS: usize = 512;
const MAX_TEXT: usize = 256 * 1024;
/// Shorter payloads are kept raw: deflate would not pay for its header.
const COMPRESS_FROM: usize = 128;
/// A decoded payload is never larger than this (a statement is at most 64 KiB, a block stops
/// after `MAX_TEXT`); a body that claims more is not believed.
const MAX_PAYLOAD: u64 = 4 * 1024 * 1024;

/// One block, ready to be stored.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Block {
    pub first_seq: u64,
    pub last_seq: u64,
    pub body: Vec<u8>,
}

/// Why a stored block cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a stored block of audited statements is damaged: {0}")]
pub(super) struct Damaged(&'static str);

/// One connection's statements, in the order given, as blocks.
pub(super) fn encode(queries: &[&AuditQueryEvent]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut rest = queries;
    while !rest.is_empty() {
        let mut text = 0;
        let mut n = 0;
        while n < rest.len() && n < MAX_STATEMENTS && (n == 0 || text < MAX_TEXT) {
            text += rest[n].text.len();
            n += 1;
        }
        let (run, after) = rest.split_at(n);
        blocks.push(encode_one(run));
        rest = after;
    }
    blocks
}

fn encode_one(run: &[&AuditQueryEvent]) -> Block {
    let mut payload = Vec::with_capacity(run.iter().map(|q| q.text.len() + 8).sum::<usize>() + 4);
    put_varint(&mut payload, run.len() as u64);
    let (mut seq, mut at) = (0u64, 0i64);
    for q in run {
        put_varint(&mut payload, q.seq.wrapping_sub(seq));
        put_varint(&mut payload, zigzag(q.at.wrapping_sub(at)));
        put_varint(&mut payload, q.text.len() as u64);
        payload.extend_from_slice(q.text.as_bytes());
        (seq, at) = (q.seq, q.at);
    }
    let body = if payload.len() >= COMPRESS_FROM {
        compressed(&payload).unwrap_or_else(|| raw(payload))
    } else {
        raw(payload)
    };
    Block {
        first_seq: run.first().map_or(0, |q| q.seq),
        last_seq: run.last().map_or(0, |q| q.seq),
        body,
    }
}

fn raw(payload: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 1);
    body.push(RAW);
    body.extend_from_slice(&payload);
    body
}

/// The payload deflated, if that makes it smaller.
fn compressed(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = DeflateEncoder::new(vec![DEFLATE], Compression::fast());
    out.write_all(payload).ok()?;
    let body = out.finish().ok()?;
    (body.len() <= payload.len()).then_some(body)
}

/// The statements a stored body holds, in order.
pub(super) fn decode(connection_id: Uuid, body: &[u8]) -> Result<Vec<AuditQueryEvent>, Damaged> {
    let inflated;
    let payload = match body.split_first() {
        Some((&RAW, payload)) => payload,
        Some((&DEFLATE, stream)) => {
            let mut out = Vec::new();
            let mut stream = DeflateDecoder::new(stream);
            (&mut stream)
                .take(MAX_PAYLOAD + 1)
                .read_to_end(&mut out)
                .map_err(|_| Damaged("its compressed stream does not inflate"))?;
            if out.len() as u64 > MAX_PAYLOAD {
                return Err(Damaged("it inflates beyond any block's size"));
            }
            if !stream.into_inner().is_empty() {
                return Err(Damaged("bytes follow its compressed stream"));
            }
            inflated = out;
            &inflated[..]
        }
        Some(_) => return Err(Damaged("its format is unknown")),
        None => return Err(Damaged("it is empty")),
    };
    let mut r = Reader(payload);
    let count = r.varint()?;
    // Each statement takes at least three bytes.
    if count > r.0.len() as u64 / 3 {
        return Err(Damaged("it claims more statements than it holds"));
    }
    let mut queries = Vec::with_capacity(count as usize);
    let (mut seq, mut at) = (0u64, 0i64);
    for _ in 0..count {
        seq = seq.wrapping_add(r.varint()?);
        at = at.wrapping_add(unzigzag(r.varint()?));
        let len = usize::try_from(r.varint()?).map_err(|_| Damaged("a text is too long"))?;
        let text = std::str::from_utf8(r.bytes(len)?)
            .map_err(|_| Damaged("a text is not UTF-8"))?
            .to_owned();
        queries.push(AuditQueryEvent {
            connection_id,
            seq,
            at,
            text,
        });
    }
    if !r.0.is_empty() {
        return Err(Damaged("bytes follow its last statement"));
    }
    Ok(queries)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Damaged> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or(Damaged("it is cut short"))?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damaged("a number runs over 64 bits"))
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], Damaged> {
        if len > self.0.len() {
            return Err(Damaged("it is cut short"));
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(
        id: Uuid,
        from: u64,
        n: u64,
        text: impl Fn(u64) -> String,
    ) -> Vec<AuditQueryEvent> {
        (from..from + n)
            .map(|seq| AuditQueryEvent {
                connection_id: id,
                seq,
                at: 1_765_000_000 + (seq as i64 % 7) - 3,
                text: text(seq),
            })
            .collect()
    }

    fn round_trip(queries: &[AuditQueryEvent]) -> Vec<Block> {
        let refs: Vec<&AuditQueryEvent> = queries.iter().collect();
        let blocks = encode(&refs);
        let id = queries.first().map_or(Uuid::nil(), |q| q.connection_id);
        let back: Vec<AuditQueryEvent> = blocks
            .iter()
            .flat_map(|b| decode(id, &b.body).unwrap())
            .collect();
        assert_eq!(back, queries);
        for b in &blocks {
            let inside = decode(id, &b.body).unwrap();
            assert_eq!(
                (b.first_seq, b.last_seq),
                (inside[0].seq, inside[inside.len() - 1].seq)
            );
        }
        blocks
    }

    #[test]
    fn statements_come_back_as_they_went_in() {
        let id = Uuid::new_v4();
        round_trip(&statements(id, 1, 1, |_| "SELECT 1".into()));
        round_trip(&statements(id, 7, 3, |s| {
            format!("SELECT 'ünïcode', E'\\n' -- {s}\0")
        }));
        round_trip(&statements(id, 1, 2, |_| String::new()));
        // Times that go backwards and far, seqs with gaps (statements lost while failing open).
        let odd = vec![
            AuditQueryEvent {
                connection_id: id,
                seq: 3,
                at: i64::MAX,
                text: "a".into(),
            },
            AuditQueryEvent {
                connection_id: id,
                seq: u64::MAX,
                at: i64::MIN,
                text: "b".into(),
            },
        ];
        round_trip(&odd);
    }

    #[test]
    fn a_repeated_statement_is_stored_about_once() {
        let id = Uuid::new_v4();
        let pgbench = statements(id, 1, 500, |s| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                s * 7919 % 1_000_000
            )
        });
        let blocks = round_trip(&pgbench);
        assert_eq!(blocks.len(), 1);
        let text: usize = pgbench.iter().map(|q| q.text.len()).sum();
        assert!(
            blocks[0].body.len() * 4 < text,
            "{} bytes for {text} bytes of text",
            blocks[0].body.len()
        );
        assert_eq!(blocks[0].body[0], DEFLATE);
    }

    #[test]
    fn long_runs_are_split_into_blocks_by_count_and_by_text() {
        let id = Uuid::new_v4();
        let many = round_trip(&statements(id, 1, 1500, |_| "BEGIN".into()));
        assert_eq!(
            many.iter()
                .map(|b| (b.first_seq, b.last_seq))
                .collect::<Vec<_>>(),
            vec![(1, 512), (513, 1024), (1025, 1500)]
        );
        let big = round_trip(&statements(id, 1, 10, |_| "x".repeat(64 * 1024)));
        assert_eq!(
            big.iter()
                .map(|b| (b.first_seq, b.last_seq))
                .collect::<Vec<_>>(),
            vec![(1, 4), (5, 8), (9, 10)]
        );
    }

    #[test]
    fn a_damaged_body_is_an_error_at_every_cut_and_flipped_byte() {
        let id = Uuid::new_v4();
        for queries in [
            statements(id, 1, 3, |s| format!("SELECT {s}")),
            statements(id, 1, 200, |s| format!("SELECT {s} FROM t")),
        ] {
            let refs: Vec<&AuditQueryEvent> = queries.iter().collect();
            let body = encode(&refs).remove(0).body;
            for cut in 0..body.len() {
                assert!(decode(id, &body[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = body.clone();
            longer.push(0);
            assert!(decode(id, &longer).is_err(), "a byte too many");
            for at in 0..body.len() {
                let mut flipped = body.clone();
                flipped[at] ^= 0x5a;
                // Some flips still decode (a changed letter); none may panic.
                let _ = decode(id, &flipped);
            }
        }
        assert_eq!(
            decode(id, &[9, 1, 2]),
            Err(Damaged("its format is unknown"))
        );
        let mut endless = vec![RAW];
        endless.extend([0xff; 11]);
        assert!(decode(id, &endless).is_err());
        // A count no block holds is refused before anything is allocated for it.
        let mut huge = vec![RAW];
        put_varint(&mut huge, u64::MAX);
        assert!(decode(id, &huge).is_err());
    }

    #[test]
    fn a_body_that_inflates_beyond_any_block_is_refused() {
        let mut out = DeflateEncoder::new(vec![DEFLATE], Compression::fast());
        out.write_all(&vec![0u8; MAX_PAYLOAD as usize + 10])
            .unwrap();
        let bomb = out.finish().unwrap();
        assert_eq!(
            decode(Uuid::nil(), &bomb),
            Err(Damaged("it inflates beyond any block's size"))
        );
    }
}
