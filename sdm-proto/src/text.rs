//! Text that ends up on a terminal: which characters may not be in it, and how to show them
//! when a peer sent them anyway.
//!
//! A terminal acts on control characters instead of showing them: ESC and CSI start sequences
//! that move the cursor, clear the screen, set the window title or the clipboard; BEL, BS and
//! CR rewrite what a line appears to say. Bidirectional overrides and isolates reorder what is
//! shown after them. The server refuses such characters in the text it stores and others print
//! (resource kinds, tags, session labels, …); clients escape them when printing what a server
//! sent, since an older or hostile server may still send them.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` changes what a terminal shows instead of being shown: C0 and C1 control
/// characters, DEL, and the bidirectional embeddings, overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069).
pub fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The first terminal control character of `text` with its position in characters (from 0).
pub fn find_terminal_control(text: &str) -> Option<(usize, char)> {
    text.chars()
        .enumerate()
        .find(|(_, c)| is_terminal_control(*c))
}

/// `text` with every [terminal control character](is_terminal_control) written out: `\x1b` for
/// those below U+0080, `\u{9b}` for the others. Text without any is returned as is.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if find_terminal_control(text).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_terminal_control(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_found() {
        for c in [
            '\0', '\x07', '\x08', '\t', '\n', '\r', '\x1b', '\x7f', '\u{9b}', '\u{202e}',
        ] {
            assert!(is_terminal_control(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', '→', '\u{200f}', '漢'] {
            assert!(!is_terminal_control(c), "{c:?}");
        }
        assert_eq!(find_terminal_control("ab\x1bc"), Some((2, '\x1b')));
        assert_eq!(find_terminal_control("prod-eu"), None);
    }

    #[test]
    fn escaping_shows_every_control_and_nothing_else() {
        assert!(matches!(escape_controls("postgres"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("\x1b]0;title\x07kafka\u{9b}2J\u{202e}x"),
            "\\x1b]0;title\\x07kafka\\u{9b}2J\\u{202e}x"
        );
        assert_eq!(escape_controls("tab\there\n"), "tab\\x09here\\x0a");
        // Escaped text has nothing left to escape.
        let once = escape_controls("\x1b[31mred\x7f").into_owned();
        assert_eq!(escape_controls(&once), once);
    }
}
