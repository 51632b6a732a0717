//! Durations as people type them on a command line: `300` (seconds), `300s`, `5m`, `1h`, `7d`,
//! and what [`humantime`] reads besides (`1h30m`, `90 min`, `500ms`).
//!
//! Two limits on top of humantime, both as sdm has always read durations: whole numbers only
//! (`90m`, not `1.5h`), and no unit above a day (`14d`, not `2w`; a month has no fixed length).

use std::time::Duration;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration ({why}); use e.g. 300, 300s, 5m, 1h or 7d")]
pub struct DurationError {
    text: String,
    why: String,
}

/// Units humantime knows that sdm does not take.
const LONGER_THAN_A_DAY: [&str; 13] = [
    "weeks", "week", "wk", "wks", "w", "months", "month", "M", "years", "year", "yr", "yrs", "y",
];

/// Reads a duration: bare digits are seconds; otherwise numbers with units.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let refuse = |why: &str| DurationError {
        text: text.to_owned(),
        why: why.to_owned(),
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| refuse("too large"));
    }
    if text.contains(['.', ',', '-', '+']) {
        return Err(refuse("whole numbers only"));
    }
    let units = text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty());
    if let Some(unit) = units.into_iter().find(|w| LONGER_THAN_A_DAY.contains(w)) {
        return Err(refuse(&format!("{unit:?}: the longest unit is d")));
    }
    humantime::parse_duration(text).map_err(|e| refuse(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_sdm_has_always_read() {
        assert_eq!(parse("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(" 300s "), Ok(Duration::from_secs(300)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn what_humantime_adds() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2 days"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "d",
            "h",
            "5w",
            "2 weeks",
            "1M",
            "1y",
            "-1h",
            "-5",
            "1.5h",
            "2hh",
            "5x",
            "99999999999999999999999",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("use e.g. 300"), "{bad}: {e}");
        }
    }
}
