//! For the tests that scrape a diagnostics listener: Debian's `promtool check metrics` (the
//! Prometheus project's own judgement of a scrape: names, types, HELP, units, histograms), and
//! the scrape's samples by name.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::TestkitError;

/// Checks `text` (a scrape in the Prometheus text format) with `promtool check metrics`; an
/// error carries promtool's complaint, or says how to install it when it is missing.
pub fn check_metrics(text: &str) -> Result<(), TestkitError> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TestkitError::Io {
            context: "promtool is needed to check a scrape: install Debian's `prometheus` \
                      package (scripts/install-deps.sh does)"
                .into(),
            source,
        })?;
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(text.as_bytes()),
        None => Ok(()),
    };
    let out = child
        .wait_with_output()
        .map_err(|source| TestkitError::Io {
            context: "promtool did not finish".into(),
            source,
        })?;
    if out.status.success() && written.is_ok() {
        return Ok(());
    }
    Err(TestkitError::CommandFailed {
        program: "promtool check metrics".into(),
        status: out.status.to_string(),
        stderr: format!(
            "{}{}\non:\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// Every sample of a scrape in the Prometheus text format, `name{labels}` → value; `None` for a
/// line that is not `SERIES VALUE`.
pub fn samples(text: &str) -> Option<BTreeMap<String, f64>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
