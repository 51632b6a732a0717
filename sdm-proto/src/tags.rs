//! Tags as written on a command line: `env=prod,team=data`, and for gateways also bare names
//! (`eu,zone=a`, where `eu` is the tag `eu` with an empty value).
//!
//! One reading of the list ([`items`]) and two forms on top of it, which differ in one rule
//! only: whether a bare name is allowed.
//!
//! * [`TagForm::Pairs`]: every item is `key=value` (resource tags: `sdm admin … --tags`);
//! * [`TagForm::PairsOrNames`]: an item may also be a bare `key` (gateway tags, and the
//!   selectors of a `sdm.gateway` pin, where `eu` means "has the tag eu").
//!
//! Items are separated by commas and trimmed; empty items are skipped; a value is everything
//! after the first `=` (`zone=a=b` has the value `a=b`). A key is never empty, and appears once.
//!
//! A value that holds commas itself (the selector list of a `sdm.gateway` pin,
//! `sdm.gateway=eu,us`) cannot be one item of a list: [`parse_one`] reads one tag whole, as the
//! command line's repeatable `--tag key=value` gives it.

use std::collections::BTreeMap;

/// Which items a tag list may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagForm {
    /// `key=value` only.
    Pairs,
    /// `key=value` or a bare `key` (value `""`).
    PairsOrNames,
}

/// Why a tag list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// A bare name where `key=value` is required.
    #[error("{0:?} is not key=value")]
    NotAPair(String),
    /// `=value`.
    #[error("tag {0:?} has no name; write key=value")]
    NoName(String),
    /// The same key twice.
    #[error("tag {0:?} is given twice")]
    Twice(String),
}

/// The items of a comma-separated list, trimmed: `(key, Some(value))` for `key=value`,
/// `(key, None)` for a bare word. Empty items are skipped; keys are not checked.
pub fn items(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(item)
}

/// One item, trimmed: the value is everything after the first `=`.
fn item(text: &str) -> (&str, Option<&str>) {
    match text.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (text, None),
    }
}

/// An item as a tag of the given form.
fn tag(key: &str, value: Option<&str>, form: TagForm) -> Result<(String, String), TagError> {
    let value = match (value, form) {
        (Some(v), _) => v,
        (None, TagForm::PairsOrNames) => "",
        (None, TagForm::Pairs) => return Err(TagError::NotAPair(key.to_owned())),
    };
    if key.is_empty() {
        return Err(TagError::NoName(format!("={value}")));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Reads a tag list of the given form into a map.
pub fn parse(text: &str, form: TagForm) -> Result<BTreeMap<String, String>, TagError> {
    let mut tags = BTreeMap::new();
    for (key, value) in items(text) {
        merge(&mut tags, [tag(key, value, form)?])?;
    }
    Ok(tags)
}

/// Reads one tag whole: `key=value`, the value everything after the first `=`, commas
/// included; with [`TagForm::PairsOrNames`], also a bare `key`.
pub fn parse_one(text: &str, form: TagForm) -> Result<(String, String), TagError> {
    let (key, value) = item(text.trim());
    tag(key, value, form)
}

/// Adds `tags` to `to`, refusing a key that is there already.
pub fn merge(
    to: &mut BTreeMap<String, String>,
    tags: impl IntoIterator<Item = (String, String)>,
) -> Result<(), TagError> {
    for (key, value) in tags {
        if to.contains_key(&key) {
            return Err(TagError::Twice(key));
        }
        to.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pairs() {
        assert_eq!(
            parse("env=prod, team=data,,", TagForm::Pairs),
            Ok(map(&[("env", "prod"), ("team", "data")]))
        );
        assert_eq!(parse("a=", TagForm::Pairs), Ok(map(&[("a", "")])));
        assert_eq!(parse("", TagForm::Pairs), Ok(map(&[])));
        assert_eq!(
            parse("novalue", TagForm::Pairs),
            Err(TagError::NotAPair("novalue".into()))
        );
        assert_eq!(
            parse("=x", TagForm::Pairs),
            Err(TagError::NoName("=x".into()))
        );
        assert_eq!(
            parse("a=1,a=2", TagForm::Pairs),
            Err(TagError::Twice("a".into()))
        );
    }

    #[test]
    fn pairs_or_names() {
        assert_eq!(
            parse("eu, region=eu-west ,zone=a=b", TagForm::PairsOrNames),
            Ok(map(&[("eu", ""), ("region", "eu-west"), ("zone", "a=b")]))
        );
        assert!(parse("=x", TagForm::PairsOrNames).is_err());
        assert!(parse("eu,eu=x", TagForm::PairsOrNames).is_err());
    }

    #[test]
    fn items_keep_bare_words_apart() {
        let all: Vec<_> = items(" eu , region=us ,, ").collect();
        assert_eq!(all, [("eu", None), ("region", Some("us"))]);
    }

    #[test]
    fn one_tag_is_read_whole_commas_included() {
        assert_eq!(
            parse_one("sdm.gateway=eu, region=us", TagForm::Pairs).unwrap(),
            ("sdm.gateway".to_owned(), "eu, region=us".to_owned())
        );
        assert_eq!(
            parse_one(" edge ", TagForm::PairsOrNames).unwrap(),
            ("edge".to_owned(), String::new())
        );
        assert_eq!(
            parse_one("edge", TagForm::Pairs),
            Err(TagError::NotAPair("edge".into()))
        );
        assert!(matches!(
            parse_one("=x", TagForm::Pairs),
            Err(TagError::NoName(_))
        ));
        let mut tags = parse("env=prod", TagForm::Pairs).unwrap();
        merge(&mut tags, [("team".to_owned(), "data".to_owned())]).unwrap();
        assert_eq!(
            merge(&mut tags, [("env".to_owned(), "dev".to_owned())]),
            Err(TagError::Twice("env".into()))
        );
        assert_eq!(tags, map(&[("env", "prod"), ("team", "data")]));
    }
}
