//! Text output: aligned tables, dates, JSON.
//!
//! Everything printed here may carry text a server sent (names, kinds, tags, messages), and an
//! older or hostile server may send control characters that a terminal would act on. So cells
//! are escaped ([`escape`]) and both output streams pass through [`terminal_safe`], which
//! escapes every control character but the line break.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use sdm_core::ResourceClass;
use serde::Serialize;

use crate::exit::CliError;
use crate::protocol::{ResourceRow, StatusReport};

/// Prints a line on stdout, like `println!`, but a closed stdout (`sdm status | head -1`) is
/// not a panic: what the reader did not want is dropped.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::render::print_raw(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Prints a line on stderr, like `eprintln!`, with control characters escaped
/// ([`terminal_safe`]); for lines that carry text from a server or the agent.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::render::print_err(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use errln;

/// One value from a server, for a table cell or a line: control characters written out
/// (`\x1b`, `\u{9b}`), line breaks included.
pub fn escape(text: &str) -> Cow<'_, str> {
    sdm_core::text::escape_controls(text)
}

/// `text` with every control character but `\n` written out: what reaches the terminal.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let has_control = text
        .chars()
        .any(|c| c != '\n' && sdm_core::text::is_terminal_control(c));
    if !has_control {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.split('\n').map(escape).collect::<Vec<_>>().join("\n"))
}

/// Prints `value` as pretty JSON on stdout. JSON escapes C0 control characters itself; DEL, C1
/// controls and bidirectional overrides are escaped as `\uXXXX` too, which JSON readers decode
/// to the same strings.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::internal(format!("cannot encode JSON: {e}")))?;
    outln!("{}", json_terminal_safe(&text));
    Ok(())
}

/// Encoded JSON with the terminal controls that JSON leaves as they are written as `\uXXXX`
/// (valid: outside strings, JSON text is printable ASCII, so they can only be inside strings).
fn json_terminal_safe(json: &str) -> Cow<'_, str> {
    use std::fmt::Write as _;
    if !json
        .chars()
        .any(|c| c != '\n' && sdm_core::text::is_terminal_control(c))
    {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && sdm_core::text::is_terminal_control(c) {
            // Every terminal control is in the Basic Multilingual Plane: one \uXXXX.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Prints `text` on stdout with control characters escaped ([`terminal_safe`]), flushing it;
/// write errors (a closed pipe) are ignored.
pub fn print_raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(terminal_safe(text).as_bytes());
    let _ = out.flush();
}

/// Prints `text` on stderr with control characters escaped ([`terminal_safe`]).
pub fn print_err(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(terminal_safe(text).as_bytes());
    let _ = err.flush();
}

/// A table whose columns are as wide as their widest cell plus two spaces (the last column is
/// not padded). Cells are [escaped](escape).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell)).collect())
        .collect();
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == columns {
                text.push_str(cell);
            } else {
                let pad = widths[i] + 2 - cell.chars().count();
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(|cell| cell.as_ref()));
    }
    out
}

/// The table of the service-account guide, as `sdm status` prints it: a section per resource
/// class (datasources, then SSH/TCP servers), columns aligned. The layout is the one of
/// `sdm_core::Status`'s `Display`; the agent renders it from its report because only the agent
/// knows which tunnels auto-connect opened.
///
/// ```text
/// DATASOURCE NAME     STATUS            PORT      TYPE
/// pgsql_1_31          connected (auto)  5432      postgres
/// SSH SERVER          STATUS            PORT      TYPE
/// server-245a         not connected     61334     ssh
/// ```
///
/// Names and kinds are [escaped](escape), as `sdm_core::Status` does.
pub fn status_table(status: &StatusReport) -> String {
    if status.resources.is_empty() {
        return format!(
            "No resources are granted to {}.\n",
            escape(&status.account.name)
        );
    }
    let width = |min: usize, cells: &mut dyn Iterator<Item = usize>| {
        cells.max().map_or(min, |w| (w + 2).max(min))
    };
    let name_width = width(
        20,
        &mut status
            .resources
            .iter()
            .map(|r| escape(&r.name).chars().count()),
    );
    let status_width = width(
        18,
        &mut status
            .resources
            .iter()
            .map(|r| status_cell(r).chars().count()),
    );
    let mut out = String::new();
    for (class, title) in [
        (ResourceClass::Datasource, "DATASOURCE NAME"),
        (ResourceClass::Server, "SSH SERVER"),
    ] {
        let rows: Vec<&ResourceRow> = status
            .resources
            .iter()
            .filter(|r| r.kind.class() == class)
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "{title:<name_width$}{:<status_width$}{:<10}TYPE\n",
            "STATUS", "PORT"
        ));
        for row in rows {
            let port = row.port.map_or_else(|| "-".to_owned(), |p| p.to_string());
            out.push_str(&format!(
                "{:<name_width$}{:<status_width$}{port:<10}{}\n",
                escape(&row.name),
                status_cell(row),
                escape(row.kind.as_str())
            ));
        }
    }
    out
}

/// The STATUS cell: `connected`, `connected (auto)` (opened by auto-connect at login),
/// `failed (auto)` (auto-connect could not open it), or `not connected`.
fn status_cell(row: &ResourceRow) -> &'static str {
    match (row.status.as_str(), row.auto, &row.auto_error) {
        ("connected", true, _) => "connected (auto)",
        ("connected", false, _) => "connected",
        (_, _, Some(_)) => "failed (auto)",
        _ => "not connected",
    }
}

/// `k=v,k2=v2`, or `-` for none; keys and values [escaped](escape).
pub fn tags(tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return "-".to_owned();
    }
    tags.iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (shared with the web console).
pub use sdm_proto::utc;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, kind: sdm_core::ResourceKind, port: Option<u16>) -> ResourceRow {
        ResourceRow {
            id: uuid::Uuid::nil(),
            name: name.into(),
            kind,
            class: String::new(),
            tags: BTreeMap::new(),
            healthy: true,
            status: "not_connected".into(),
            auto: false,
            auto_error: None,
            port,
            port_override: port,
            local_address: None,
            owner_only: None,
            connections: 0,
            ssh_host_key: None,
        }
    }

    fn report(resources: Vec<ResourceRow>) -> StatusReport {
        StatusReport {
            account: crate::protocol::AccountInfo {
                id: uuid::Uuid::nil(),
                name: "etl".into(),
                kind: sdm_core::AccountKind::Service,
            },
            api_url: String::new(),
            resources,
            control_plane_unreachable: None,
        }
    }

    #[test]
    fn the_status_table_is_the_guides() {
        use sdm_core::ResourceKind;
        let mut warehouse = row("warehouse", ResourceKind::Postgres, Some(40001));
        warehouse.status = "connected".into();
        // The library's own test table (sdm-core/src/status.rs), row for row.
        let status = report(vec![
            row("pgsql_1_31", ResourceKind::Postgres, Some(5432)),
            row("server-245a", ResourceKind::Ssh, Some(61334)),
            warehouse,
        ]);
        assert_eq!(
            status_table(&status),
            "\
DATASOURCE NAME     STATUS            PORT      TYPE
pgsql_1_31          not connected     5432      postgres
warehouse           connected         40001     postgres
SSH SERVER          STATUS            PORT      TYPE
server-245a         not connected     61334     ssh
"
        );
        assert_eq!(
            status_table(&report(Vec::new())),
            "No resources are granted to etl.\n"
        );
    }

    #[test]
    fn the_status_table_marks_auto_connect_and_stays_aligned() {
        use sdm_core::ResourceKind;
        let mut auto = row("pgsql_1_31", ResourceKind::Postgres, Some(5432));
        auto.status = "connected".into();
        auto.auto = true;
        let mut failed = row("a-rather-long-server-name", ResourceKind::Tcp, Some(7000));
        failed.auto_error = Some(crate::protocol::ErrorReply::new("port_in_use", "taken"));
        // Sorted by name, as the agent reports them.
        let status = report(vec![
            failed,
            row("kafka", ResourceKind::Other("kafka".into()), None),
            auto,
        ]);
        assert_eq!(
            status_table(&status),
            "\
DATASOURCE NAME            STATUS            PORT      TYPE
kafka                      not connected     -         kafka
pgsql_1_31                 connected (auto)  5432      postgres
SSH SERVER                 STATUS            PORT      TYPE
a-rather-long-server-name  failed (auto)     7000      tcp
"
        );
    }

    #[test]
    fn control_characters_from_a_server_are_written_out() {
        use sdm_core::ResourceKind;
        let hostile = "\x1b]0;pwned\x07kafka\u{9b}2J";
        let mut kafka = row("kafka\x1b[8m", ResourceKind::Other(hostile.into()), None);
        kafka.tags = BTreeMap::from([("team\x1b[2J".into(), "data\u{202e}".into())]);
        let table = status_table(&report(vec![kafka.clone()]));
        assert_eq!(
            table,
            "\
DATASOURCE NAME     STATUS            PORT      TYPE
kafka\\x1b[8m        not connected     -         \\x1b]0;pwned\\x07kafka\\u{9b}2J
"
        );
        assert_eq!(tags(&kafka.tags), "team\\x1b[2J=data\\u{202e}");
        let t = table_of(&[vec![hostile.to_owned(), "b".into()]]);
        assert_eq!(
            t,
            "A                              B\n\\x1b]0;pwned\\x07kafka\\u{9b}2J  b\n"
        );
        // Line breaks survive the output filter, nothing else does.
        assert_eq!(terminal_safe("a\x1b[2Jb\nc\rd\n"), "a\\x1b[2Jb\nc\\x0dd\n");
        assert!(matches!(terminal_safe("plain\ntext\n"), Cow::Borrowed(_)));
        // JSON: the same strings after decoding, no control character left in the text.
        let value = serde_json::json!({ "kind": hostile, "del": "\x7f", "bidi": "\u{2066}" });
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = json_terminal_safe(&text);
        assert!(
            !safe
                .chars()
                .any(|c| c != '\n' && sdm_core::text::is_terminal_control(c))
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }

    fn table_of(rows: &[Vec<String>]) -> String {
        table(&["A", "B"], rows)
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "TYPE", "STATUS"],
            &[
                vec!["etl-bot".into(), "service".into(), "active".into()],
                vec!["a".into(), "admin".into(), "suspended".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME     TYPE     STATUS\netl-bot  service  active\na        admin    suspended\n"
        );
    }
}
