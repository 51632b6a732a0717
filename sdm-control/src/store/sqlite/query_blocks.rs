//! Audited statements kept in blocks: one row holds a run of one connection's statements, in
//! order. A row per statement cost the audit writer a B-tree insert and its share of WAL pages
//! each, which at 12,000 statements a second was most of what the audit trail cost the gateway
//! (docs/BENCHMARKS.md, "Lever: the audit trail in blocks"); a block costs that once for dozens.
//!
//! Texts are front-coded: a statement names which of the eight before it in the block shares the
//! longest prefix with it, and keeps only the rest. A job repeats its statements (a prepared one
//! exactly; pgbench's differ only in their numbers), so each is stored about once. This costs a
//! few comparisons per statement; deflate, tried first, stored pgbench's statements in 7.5 bytes
//! instead of about 13 but cost more than the SQLite writes it saved (its 300 KiB of state is
//! zeroed for every block).
//!
//! A body is one format byte, `FRONT_CODED`, then a varint count, then per statement: the varint
//! difference of its `seq` from the previous one's (from 0), the zig-zag varint difference of its
//! `at` (from 0), a varint `back` (0: no shared prefix; k: the k-th statement before it), the
//! varint length of the prefix shared with that one (only when `back` > 0), and the rest of the
//! text as a varint length and bytes. A body is read only by this module; one that does not
//! decode is an error, never a panic.

use sdm_proto::audit::AuditQueryEvent;
use uuid::Uuid;

const FRONT_CODED: u8 = 1;
/// How many statements before a statement may share its prefix.
const LOOK_BACK: usize = 8;
/// A block ends after this many statements or this much text, so that reading one connection's
/// next page decodes little more than it returns.
const MAX_STATEMENTS: usize = 512;
const MAX_TEXT: usize = 256 * 1024;

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
    let mut body = Vec::with_capacity(run.iter().map(|q| q.text.len() / 4 + 8).sum::<usize>() + 8);
    body.push(FRONT_CODED);
    put_varint(&mut body, run.len() as u64);
    let (mut seq, mut at) = (0u64, 0i64);
    for (i, q) in run.iter().enumerate() {
        put_varint(&mut body, q.seq.wrapping_sub(seq));
        put_varint(&mut body, zigzag(q.at.wrapping_sub(at)));
        (seq, at) = (q.seq, q.at);
        let text = q.text.as_bytes();
        // The nearest of the last few statements that shares the longest prefix with this one.
        let (mut back, mut shared) = (0, 0);
        for k in 1..=LOOK_BACK.min(i) {
            let before = run[i - k].text.as_bytes();
            // Only one that also holds the byte after the best prefix so far can do better.
            if before.get(shared) != text.get(shared) {
                continue;
            }
            let n = common_prefix(before, text);
            if n > shared {
                (back, shared) = (k, n);
                if n == text.len() {
                    break;
                }
            }
        }
        put_varint(&mut body, back as u64);
        if back > 0 {
            put_varint(&mut body, shared as u64);
        }
        put_varint(&mut body, (text.len() - shared) as u64);
        body.extend_from_slice(&text[shared..]);
    }
    Block {
        first_seq: run.first().map_or(0, |q| q.seq),
        last_seq: run.last().map_or(0, |q| q.seq),
        body,
    }
}

/// How many bytes `a` and `b` share at their start, eight at a time: the first differing
/// byte of a word is its lowest set byte of `x ^ y`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or_default());
        let differ = word(x) ^ word(y);
        if differ != 0 {
            return i + (differ.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// The statements a stored body holds, in order.
pub(super) fn decode(connection_id: Uuid, body: &[u8]) -> Result<Vec<AuditQueryEvent>, Damaged> {
    let payload = match body.split_first() {
        Some((&FRONT_CODED, payload)) => payload,
        Some(_) => return Err(Damaged("its format is unknown")),
        None => return Err(Damaged("it is empty")),
    };
    let mut r = Reader(payload);
    let count = r.varint()?;
    // Each statement takes at least four bytes.
    if count > r.0.len() as u64 / 4 {
        return Err(Damaged("it claims more statements than it holds"));
    }
    let mut queries: Vec<AuditQueryEvent> = Vec::with_capacity(count as usize);
    let (mut seq, mut at) = (0u64, 0i64);
    for i in 0..count as usize {
        seq = seq.wrapping_add(r.varint()?);
        at = at.wrapping_add(unzigzag(r.varint()?));
        let back = r.varint()?;
        let mut text = Vec::new();
        if back > 0 {
            let before = usize::try_from(back)
                .ok()
                .filter(|&k| k <= LOOK_BACK && k <= i)
                .map(|k| queries[i - k].text.as_bytes())
                .ok_or(Damaged("a statement refers to one it does not hold"))?;
            let shared = usize::try_from(r.varint()?)
                .ok()
                .filter(|&n| n <= before.len())
                .ok_or(Damaged("a shared prefix is longer than its statement"))?;
            text.extend_from_slice(&before[..shared]);
        }
        let len = usize::try_from(r.varint()?).map_err(|_| Damaged("a text is too long"))?;
        text.extend_from_slice(r.bytes(len)?);
        let text = String::from_utf8(text).map_err(|_| Damaged("a text is not UTF-8"))?;
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
        let prepared = statements(id, 1, 500, |_| {
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1".into()
        });
        // TPC-B's five statements in turn: each shares its prefix with the one five before.
        let tpcb = statements(id, 1, 500, |s| match s % 5 {
            0 => format!("UPDATE pgbench_accounts SET abalance = abalance + {s} WHERE aid = {s};"),
            1 => format!("SELECT abalance FROM pgbench_accounts WHERE aid = {s};"),
            2 => format!("UPDATE pgbench_tellers SET tbalance = tbalance + {s} WHERE tid = {s};"),
            3 => format!("UPDATE pgbench_branches SET bbalance = bbalance + {s} WHERE bid = {s};"),
            _ => format!(
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({s}, {s}, {s}, {s}, CURRENT_TIMESTAMP);"
            ),
        });
        for (workload, most) in [(pgbench, 14), (prepared, 6), (tpcb, 30)] {
            let blocks = round_trip(&workload);
            assert_eq!(blocks.len(), 1);
            let per_statement = blocks[0].body.len() / workload.len();
            let text = workload.iter().map(|q| q.text.len()).sum::<usize>() / workload.len();
            assert!(
                per_statement <= most,
                "{per_statement} bytes a statement for {text} bytes of text"
            );
        }
    }

    #[test]
    fn shared_prefixes_are_counted_to_the_byte_across_words() {
        let base = "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;".as_bytes();
        for len in 0..=base.len() {
            for differ in 0..len {
                let mut other = base[..len].to_vec();
                other[differ] ^= 0x20;
                assert_eq!(
                    common_prefix(base, &other),
                    differ,
                    "{len} bytes, byte {differ}"
                );
                assert_eq!(common_prefix(&other, base), differ);
            }
            assert_eq!(
                common_prefix(base, &base[..len]),
                len,
                "a prefix of {len} bytes"
            );
        }
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
        let mut endless = vec![FRONT_CODED];
        endless.extend([0xff; 11]);
        assert!(decode(id, &endless).is_err());
        // A count no block holds is refused before anything is allocated for it.
        let mut huge = vec![FRONT_CODED];
        put_varint(&mut huge, u64::MAX);
        assert!(decode(id, &huge).is_err());
    }

    #[test]
    fn a_reference_to_a_statement_the_block_does_not_hold_is_refused() {
        let id = Uuid::nil();
        // One statement (seq 1, at 0) that refers to the one before it, which does not exist.
        let body = [FRONT_CODED, 1, 1, 0, 1, 0, 0];
        assert_eq!(
            decode(id, &body),
            Err(Damaged("a statement refers to one it does not hold"))
        );
        // Two statements; the second shares 9 bytes with the first, which has 1.
        let body = [FRONT_CODED, 2, 1, 0, 0, 1, b'a', 1, 0, 1, 9, 0];
        assert_eq!(
            decode(id, &body),
            Err(Damaged("a shared prefix is longer than its statement"))
        );
        // A prefix that cuts a character in two, completed by nothing.
        let body = [FRONT_CODED, 2, 1, 0, 0, 2, 0xc3, 0xa9, 1, 0, 1, 1, 0];
        assert_eq!(decode(id, &body), Err(Damaged("a text is not UTF-8")));
    }
}
