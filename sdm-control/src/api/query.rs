//! Query strings of the admin list routes (`?account=etl&limit=50`), read strictly: an unknown or
//! repeated parameter is refused rather than ignored, so that a misspelt filter never silently
//! widens a list.

use std::collections::HashMap;

use super::error::ApiError;

/// `a=1&b=2` into a map; values are ids, names, numbers and cursors, so only `%XX` escapes and
/// `+` are decoded. Parameters other than `known`, or given twice, are refused.
pub(crate) fn parse(
    query: Option<&str>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&key) {
            return Err(ApiError::invalid(format!(
                "unknown query parameter {key:?}; known: {}",
                known.join(", ")
            )));
        }
        let value = percent_decode(value)
            .ok_or_else(|| ApiError::invalid(format!("bad escape in {key}")))?;
        if params.insert(key.to_owned(), value).is_some() {
            return Err(ApiError::invalid(format!(
                "query parameter {key:?} given twice"
            )));
        }
    }
    Ok(params)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_parse_strictly() {
        let known = ["account", "since", "before", "limit"];
        let p = parse(Some("account=etl&since=10&before=5%3Aabc"), &known).unwrap();
        assert_eq!(p["account"], "etl");
        assert_eq!(p["before"], "5:abc");
        assert!(parse(Some("acount=etl"), &known).is_err());
        assert!(parse(Some("limit=1&limit=2"), &known).is_err());
        assert!(parse(Some("account=%zz"), &known).is_err());
        assert!(parse(None, &known).unwrap().is_empty());
    }
}
