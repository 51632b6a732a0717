//! Statement text as the audit trail keeps it: whole up to [`MAX_STATEMENT`] bytes. A longer
//! one keeps its first and last [`MAX_STATEMENT`]` / 2` bytes with a marker between them that
//! says how much was left out, so that padding in front of a statement (a long comment, say)
//! cannot push the statement itself out of the record.

use std::collections::VecDeque;

/// Statements up to this many bytes are recorded whole.
pub(crate) const MAX_STATEMENT: usize = 64 * 1024;
const HALF: usize = MAX_STATEMENT / 2;

/// Collects a text that arrives in pieces, keeping its beginning and its end.
#[derive(Debug, Default)]
pub(crate) struct TextCapture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
}

impl TextCapture {
    /// Adds the next piece.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len();
        let take = HALF.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        if bytes.len() >= HALF {
            self.tail.clear();
            bytes = &bytes[bytes.len() - HALF..];
        }
        let excess = (self.tail.len() + bytes.len()).saturating_sub(HALF);
        self.tail.drain(..excess);
        self.tail.extend(bytes);
    }

    /// The bytes kept: the whole text, or its beginning and its end.
    pub(crate) fn into_kept(self) -> Kept {
        let left_out = self.total - self.head.len() - self.tail.len();
        let mut head = self.head;
        if left_out == 0 {
            head.extend(self.tail);
            return Kept::Whole(head);
        }
        Kept::Ends {
            head,
            tail: self.tail.into(),
            total: self.total,
        }
    }

    /// The text: whole, or its two ends with a marker between them. Bytes that are not UTF-8
    /// become U+FFFD.
    pub(crate) fn finish(self) -> String {
        match self.into_kept() {
            // The usual case keeps the bytes it collected, without a second copy.
            Kept::Whole(bytes) => String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ends => ends.render(|bytes| String::from_utf8_lossy(bytes).into_owned()),
        }
    }
}

/// What a [`TextCapture`] kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kept {
    /// All of it.
    Whole(Vec<u8>),
    /// Its first and last bytes, of `total`.
    Ends {
        head: Vec<u8>,
        tail: Vec<u8>,
        total: usize,
    },
}

impl Kept {
    /// Each kept part shown with `show`, and a marker between the ends of a long text.
    pub(crate) fn render(&self, show: impl Fn(&[u8]) -> String) -> String {
        match self {
            Kept::Whole(bytes) => show(bytes),
            Kept::Ends { head, tail, total } => format!(
                "{}…[sdm: {} of {total} bytes not recorded]…{}",
                show(head),
                total - head.len() - tail.len(),
                show(tail)
            ),
        }
    }

    /// Every kept byte.
    pub(crate) fn parts(&self) -> [&[u8]; 2] {
        match self {
            Kept::Whole(bytes) => [bytes, &[]],
            Kept::Ends { head, tail, .. } => [head, tail],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(text: &[u8], piece: usize) -> String {
        let mut c = TextCapture::default();
        for part in text.chunks(piece) {
            c.push(part);
        }
        c.finish()
    }

    #[test]
    fn short_and_limit_sized_texts_are_kept_whole() {
        assert_eq!(capture(b"SELECT 1", 3), "SELECT 1");
        let exact = vec![b'a'; MAX_STATEMENT];
        for piece in [1, 1000, MAX_STATEMENT] {
            assert_eq!(capture(&exact, piece).as_bytes(), &exact[..]);
        }
    }

    #[test]
    fn a_statement_behind_padding_keeps_its_end() {
        let mut text = b"/*".to_vec();
        text.extend(std::iter::repeat_n(b'x', 200_000));
        text.extend_from_slice(b"*/ SELECT secret FROM vault");
        for piece in [7, 4096, text.len()] {
            let got = capture(&text, piece);
            assert!(got.starts_with("/*xxx"), "{}", &got[..20]);
            assert!(got.ends_with("*/ SELECT secret FROM vault"));
            let left_out = text.len() - MAX_STATEMENT;
            assert!(
                got.contains(&format!(
                    "[sdm: {left_out} of {} bytes not recorded]",
                    text.len()
                )),
                "the marker says what is missing"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        // A multi-byte character split between pieces is still one character.
        assert_eq!(capture("SELECT 'é'".as_bytes(), 1), "SELECT 'é'");
        assert_eq!(
            capture(b"SELECT '\xff\xfe' -- \xc3", 3),
            "SELECT '\u{FFFD}\u{FFFD}' -- \u{FFFD}"
        );
        let mut long = b"\xff".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_STATEMENT));
        long.extend_from_slice(b"\xfe!");
        let got = capture(&long, 4096);
        assert!(got.starts_with("\u{FFFD}xxx") && got.ends_with("xx\u{FFFD}!"));
    }

    proptest::proptest! {
        #[test]
        fn any_text_in_any_pieces_keeps_both_ends(
            len in 0usize..(3 * MAX_STATEMENT),
            piece in 1usize..20_000,
        ) {
            let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let got = capture(&text, piece);
            if len <= MAX_STATEMENT {
                proptest::prop_assert_eq!(got.as_bytes(), &text[..]);
            } else {
                proptest::prop_assert!(got.as_bytes().starts_with(&text[..HALF]));
                proptest::prop_assert!(got.as_bytes().ends_with(&text[len - HALF..]));
            }
        }
    }
}
