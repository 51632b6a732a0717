//! Quoting for the four languages a value passes through: libpq conninfo, URLs, SQL and
//! postgresql.conf.

use std::fmt::Write;

/// A libpq keyword value: bare when it can be, else single-quoted with `\` escapes.
pub(crate) fn conninfo_value(value: &str) -> String {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
    if bare {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for userinfo and path).
pub(crate) fn url_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A SQL string literal (standard_conforming_strings is on by default since 9.1).
pub(crate) fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A SQL identifier, always quoted so that case and odd characters survive.
pub(crate) fn sql_ident(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

/// A postgresql.conf value: single-quoted; the file parser also reads `\` escapes.
pub(crate) fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_only_when_needed() {
        assert_eq!(conninfo_value("abc123"), "abc123");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value(r"it's\x"), r"'it\'s\\x'");
    }

    #[test]
    fn url_encodes_reserved_bytes() {
        assert_eq!(url_component("aZ9-._~"), "aZ9-._~");
        assert_eq!(url_component("p@ss w/rd:é"), "p%40ss%20w%2Frd%3A%C3%A9");
    }

    #[test]
    fn sql_and_conf_quoting() {
        assert_eq!(sql_literal("it's"), "'it''s'");
        assert_eq!(sql_ident("My \"db\""), "\"My \"\"db\"\"\"");
        assert_eq!(conf_value(r"a'b\c"), r"'a''b\\c'");
    }
}
