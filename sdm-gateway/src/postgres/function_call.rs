//! `FunctionCall` ('F', the "fast path") read as it streams past: the function's OID and its
//! arguments. A function call runs a function without any SQL text (`query_to_xml` called
//! this way runs any query it is given as an argument), so its arguments are what the audit
//! trail must show.
//!
//! Body: `oid:i32 | nformats:i16 | format:i16 × nformats | nargs:i16 | (len:i32 | bytes) ×
//! nargs | result format:i16`; a length of -1 is NULL.

use super::statement::{Kept, TextCapture};

/// Which field comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Oid,
    FormatCount,
    Format,
    ArgCount,
    ArgLen,
    ArgBytes,
    /// The result format and anything after it: not recorded.
    Done,
}

/// Reads one `FunctionCall` body fed in pieces of any size.
#[derive(Debug)]
pub(crate) struct CallReader {
    field: Field,
    int: [u8; 4],
    int_len: usize,
    oid: u32,
    /// Whether each format code read says binary.
    binary: Vec<bool>,
    formats: usize,
    args: usize,
    arg: usize,
    arg_remaining: usize,
    arg_bytes: TextCapture,
    /// The arguments rendered so far, `'text', NULL, '\x0001'`.
    rendered: TextCapture,
}

impl CallReader {
    pub(crate) fn new() -> CallReader {
        CallReader {
            field: Field::Oid,
            int: [0; 4],
            int_len: 0,
            oid: 0,
            binary: Vec::new(),
            formats: 0,
            args: 0,
            arg: 0,
            arg_remaining: 0,
            arg_bytes: TextCapture::default(),
            rendered: TextCapture::default(),
        }
    }

    /// The next piece of the body.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.field != Field::Done {
            if self.field == Field::ArgBytes {
                let take = self.arg_remaining.min(bytes.len());
                self.arg_bytes.push(&bytes[..take]);
                self.arg_remaining -= take;
                bytes = &bytes[take..];
                if self.arg_remaining == 0 {
                    self.end_arg(false);
                }
                continue;
            }
            let width = if matches!(self.field, Field::Oid | Field::ArgLen) {
                4
            } else {
                2
            };
            let take = (width - self.int_len).min(bytes.len());
            self.int[self.int_len..self.int_len + take].copy_from_slice(&bytes[..take]);
            self.int_len += take;
            bytes = &bytes[take..];
            if self.int_len == width {
                self.int_len = 0;
                let value = if width == 4 {
                    i32::from_be_bytes(self.int)
                } else {
                    i32::from(i16::from_be_bytes([self.int[0], self.int[1]]))
                };
                self.field_read(value);
            }
        }
    }

    fn field_read(&mut self, value: i32) {
        match self.field {
            Field::Oid => {
                self.oid = value as u32;
                self.field = Field::FormatCount;
            }
            Field::FormatCount => {
                self.formats = usize::try_from(value).unwrap_or(0);
                self.field = if self.formats == 0 {
                    Field::ArgCount
                } else {
                    Field::Format
                };
            }
            Field::Format => {
                self.binary.push(value == 1);
                if self.binary.len() == self.formats {
                    self.field = Field::ArgCount;
                }
            }
            Field::ArgCount => {
                self.args = usize::try_from(value).unwrap_or(0);
                self.field = if self.args == 0 {
                    Field::Done
                } else {
                    Field::ArgLen
                };
            }
            Field::ArgLen => match usize::try_from(value) {
                Ok(0) => self.end_arg(false),
                Ok(len) => {
                    self.arg_remaining = len;
                    self.field = Field::ArgBytes;
                }
                Err(_) => self.end_arg(true),
            },
            Field::ArgBytes | Field::Done => {}
        }
    }

    fn end_arg(&mut self, null: bool) {
        let binary = match self.binary.len() {
            0 => false,
            1 => self.binary[0],
            _ => self.binary.get(self.arg).copied().unwrap_or(false),
        };
        if self.arg > 0 {
            self.rendered.push(b", ");
        }
        let bytes = std::mem::take(&mut self.arg_bytes).into_kept();
        let shown = if null {
            "NULL".to_owned()
        } else {
            render_arg(&bytes, binary)
        };
        self.rendered.push(shown.as_bytes());
        self.arg += 1;
        self.field = if self.arg == self.args {
            Field::Done
        } else {
            Field::ArgLen
        };
    }

    /// The function's OID (0 until read).
    pub(crate) fn oid(&self) -> u32 {
        self.oid
    }

    /// The call as the audit trail shows it, without the function's name: `(args)`, and a note
    /// when the body ended before its arguments did (PostgreSQL refuses such a message).
    pub(crate) fn arguments(mut self) -> String {
        let complete = self.field == Field::Done;
        if self.field == Field::ArgBytes {
            self.end_arg(false);
        }
        let mut shown = format!("({})", self.rendered.finish());
        if !complete {
            shown.push_str(" [sdm: the message ended early]");
        }
        shown
    }
}

/// Text as a quoted literal when it is printable UTF-8 (text format, or binary `text`), other
/// bytes as `'\x…'` hex.
fn render_arg(bytes: &Kept, binary: bool) -> String {
    let printable = bytes.parts().iter().all(|part| {
        std::str::from_utf8(part).is_ok_and(|s| {
            !s.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        })
    });
    if printable || !binary {
        let quoted = bytes.render(|part| String::from_utf8_lossy(part).replace('\'', "''"));
        format!("'{quoted}'")
    } else {
        let hex = bytes.render(|part| part.iter().map(|b| format!("{b:02x}")).collect());
        format!("'\\x{hex}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FunctionCall body.
    pub(crate) fn call_body(oid: u32, formats: &[i16], args: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = oid.to_be_bytes().to_vec();
        body.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        body.extend_from_slice(&(args.len() as i16).to_be_bytes());
        for arg in args {
            match arg {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    body.extend_from_slice(bytes);
                }
            }
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        body
    }

    fn read(body: &[u8], piece: usize) -> (u32, String) {
        let mut reader = CallReader::new();
        for part in body.chunks(piece) {
            reader.feed(part);
        }
        (reader.oid(), reader.arguments())
    }

    #[test]
    fn query_to_xml_through_the_fast_path_shows_its_query() {
        // libpq's PQfn sends every argument in binary; text in binary is its UTF-8 bytes.
        let body = call_body(
            2925,
            &[1],
            &[
                Some(b"SELECT * FROM secrets WHERE note = 'it''s'"),
                Some(&[1]),
                Some(&[0]),
                Some(b""),
            ],
        );
        for piece in [1, 2, 3, 5, body.len()] {
            assert_eq!(
                read(&body, piece),
                (
                    2925,
                    "('SELECT * FROM secrets WHERE note = ''it''''s''', '\\x01', '\\x00', '')"
                        .to_owned()
                ),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn formats_nulls_and_broken_bodies() {
        let body = call_body(42, &[0, 1], &[Some(b"abc"), None]);
        assert_eq!(read(&body, 1), (42, "('abc', NULL)".to_owned()));
        let text = call_body(7, &[], &[Some(b"\x01raw")]);
        assert_eq!(read(&text, 4).1, "('\u{1}raw')", "text format is text");
        let cut = &body[..body.len() - 6];
        assert!(read(cut, 3).1.ends_with("[sdm: the message ended early]"));
    }

    #[test]
    fn a_padded_argument_keeps_its_end() {
        let mut sql = b"/*".to_vec();
        sql.extend(std::iter::repeat_n(b' ', 100_000));
        sql.extend_from_slice(b"*/ SELECT secret FROM vault");
        let body = call_body(2925, &[1], &[Some(&sql)]);
        let (_, shown) = read(&body, 8192);
        assert!(
            shown.ends_with("*/ SELECT secret FROM vault')"),
            "{shown:.40}"
        );
        assert!(shown.contains("bytes not recorded]"));
    }

    proptest::proptest! {
        #[test]
        fn any_body_in_any_pieces(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            piece in 1usize..300,
        ) {
            let whole = read(&bytes, bytes.len().max(1));
            proptest::prop_assert_eq!(read(&bytes, piece), whole);
        }
    }
}
