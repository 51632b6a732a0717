//! Checks on what callers send, with messages that say what is allowed.

use std::collections::BTreeMap;

use super::error::ApiError;

/// Longest account or resource name.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Most labels on a session, or tags on a resource.
pub(crate) const MAX_LABELS: usize = 32;
/// Longest label or tag key.
pub(crate) const MAX_LABEL_KEY_LEN: usize = 64;
/// Longest label or tag value.
pub(crate) const MAX_LABEL_VALUE_LEN: usize = 256;
/// Longest client string, user name or database name.
pub(crate) const MAX_TEXT_LEN: usize = 256;
/// Longest host name (DNS limit).
pub(crate) const MAX_HOSTNAME_LEN: usize = 253;
/// Longest stored password.
pub(crate) const MAX_PASSWORD_LEN: usize = 4096;

/// An account or resource name: 1–64 characters of `A-Z a-z 0-9 . _ -`.
pub(crate) fn name(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "invalid {what} name {value:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'"
        )))
    }
}

/// Session labels, resource or gateway tags: at most 32, keys 1–64 characters, values up to
/// 256, no control characters (they are printed in tables and logs).
pub(crate) fn labels(what: &str, map: &BTreeMap<String, String>) -> Result<(), ApiError> {
    recorded_labels(what, map)?;
    for (key, value) in map {
        printable(&format!("{what} key {key:?}"), key)?;
        printable(&format!("the value of {what} {key:?}"), value)?;
    }
    Ok(())
}

/// The bounds of [`labels`] without the check for control characters, for labels that were
/// accepted earlier and are now only recorded (a gateway's audit events carry its sessions'
/// labels; a session from before that check may hold control characters, and refusing them
/// would refuse the whole batch of events).
pub(crate) fn recorded_labels(what: &str, map: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if map.len() > MAX_LABELS {
        return Err(ApiError::invalid(format!(
            "too many {what}: {} given, at most {MAX_LABELS} allowed",
            map.len()
        )));
    }
    for (key, value) in map {
        if key.is_empty() || key.chars().count() > MAX_LABEL_KEY_LEN {
            return Err(ApiError::invalid(format!(
                "{what} key {key:?} must have 1 to {MAX_LABEL_KEY_LEN} characters"
            )));
        }
        if value.chars().count() > MAX_LABEL_VALUE_LEN {
            return Err(ApiError::invalid(format!(
                "the value of {what} {key:?} is longer than {MAX_LABEL_VALUE_LEN} characters"
            )));
        }
        no_nul(what, key)?;
        no_nul(what, value)?;
    }
    Ok(())
}

/// NUL characters are refused everywhere: PostgreSQL cannot store them in text, and they are
/// never meaningful in names, labels or credentials.
fn no_nul(what: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::invalid(format!(
            "{what} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// A resource's pin to gateways (tag `sdm.gateway`), when it has one, names at least one tag.
pub(crate) fn pin(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    use crate::pinning::{PIN_TAG, is_valid_pin, pin_of};
    match pin_of(tags) {
        Some(pin) if !is_valid_pin(pin) => Err(ApiError::invalid(format!(
            "tag {PIN_TAG} pins the resource to gateways and must name at least one gateway \
             tag: key or key=value, several separated by commas (e.g. {PIN_TAG}=eu)"
        ))),
        _ => Ok(()),
    }
}

/// Free text such as a resource kind or the client string: at most `max` characters, no
/// control characters.
pub(crate) fn text(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    secret(what, value, max)?;
    printable(what, value)
}

/// A secret such as a stored password: at most `max` characters, no NUL; it is never printed,
/// so other control characters are the owner's business.
pub(crate) fn secret(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{what} is longer than {max} characters"
        )));
    }
    no_nul(what, value)
}

/// No terminal control characters ([`sdm_proto::text::is_terminal_control`]): text the API
/// stores is printed by `sdm status`, `sdm admin …` and logs, where an escape sequence would
/// act on the reader's terminal instead of being shown.
fn printable(what: &str, value: &str) -> Result<(), ApiError> {
    match sdm_proto::text::find_terminal_control(value) {
        None => Ok(()),
        Some((at, c)) => Err(ApiError::invalid(format!(
            "{what} must not contain control characters: found U+{:04X} at character {}; \
             use printable text",
            u32::from(c),
            at + 1
        ))),
    }
}

/// A host name or IP address the gateway can connect to.
pub(crate) fn hostname(value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_HOSTNAME_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "invalid hostname {value:?}: give a host name or IP address (at most \
             {MAX_HOSTNAME_LEN} characters, no scheme, port or path)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["etl", "etl-bot_2.prod", &"a".repeat(64)] {
            assert!(name("account", ok).is_ok(), "{ok}");
        }
        for bad in ["", "with space", "é", "a/b", &"a".repeat(65)] {
            assert!(name("account", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nul_characters_are_refused() {
        assert!(text("client", "sdm-core/0.1", 64).is_ok());
        assert!(text("client", "bad\0client", 64).is_err());
        let labels = BTreeMap::from([("dag_id".to_owned(), "x\0y".to_owned())]);
        assert!(super::labels("label", &labels).is_err());
    }

    #[test]
    fn control_characters_are_refused_in_printed_text_only() {
        for bad in [
            "\x1b[2J",
            "a\u{9b}31m",
            "bell\x07",
            "tab\t",
            "new\nline",
            "\u{202e}txt",
        ] {
            let e = text("resource kind", bad, 64).unwrap_err();
            assert!(
                e.message()
                    .contains("resource kind must not contain control"),
                "{e:?}"
            );
            let tags = BTreeMap::from([("team".to_owned(), bad.to_owned())]);
            let e = labels("tag", &tags).unwrap_err();
            assert!(e.message().contains("the value of tag \"team\""), "{e:?}");
            let tags = BTreeMap::from([(bad.to_owned(), "x".to_owned())]);
            let e = labels("tag", &tags).unwrap_err();
            // The key is quoted with its control characters escaped.
            assert!(e.message().starts_with("tag key \""), "{e:?}");
            assert!(sdm_proto::text::find_terminal_control(e.message()).is_none());
            // Recorded labels and secrets keep only their bounds.
            assert!(recorded_labels("label", &tags).is_ok());
            assert!(secret("credentials.password", bad, 64).is_ok());
        }
        for ok in ["postgres", "kafka-3.7", "données", "東京", "a b"] {
            assert!(text("resource kind", ok, 64).is_ok(), "{ok}");
        }
        assert!(secret("credentials.password", "a\0b", 64).is_err());
    }

    #[test]
    fn label_bounds() {
        let mut m = BTreeMap::new();
        m.insert("dag_id".to_owned(), "x".repeat(256));
        assert!(labels("label", &m).is_ok());
        m.insert("k".to_owned(), "x".repeat(257));
        assert!(labels("label", &m).is_err());
        let many: BTreeMap<_, _> = (0..33).map(|i| (i.to_string(), String::new())).collect();
        assert!(labels("label", &many).is_err());
        let long_key = BTreeMap::from([("k".repeat(65), String::new())]);
        assert!(labels("label", &long_key).is_err());
        let empty_key = BTreeMap::from([(String::new(), String::new())]);
        assert!(labels("label", &empty_key).is_err());
    }

    #[test]
    fn hostnames() {
        for ok in ["db.internal", "10.0.0.5", "::1", "pg_1"] {
            assert!(hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "https://db", "db:5432/x", "a b", &"a".repeat(254)] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }
}
