//! Pinning resources to gateways by tag.
//!
//! A resource with the tag `sdm.gateway` is served only by gateways that match it. Its value is
//! a comma-separated list of selectors, any of which may match:
//!
//! * `key=value`: the gateway has tag `key` with exactly that value (`sdm.gateway=region=eu`);
//! * `key`: the gateway has tag `key`, whatever its value (`sdm.gateway=eu` matches a gateway
//!   started with `--tags eu` as well as one with `--tags eu=frankfurt`).
//!
//! A resource without the tag is served by every gateway, the embedded one included. The
//! embedded gateway of `sdm-server serve` has no tags, so it never serves a pinned resource.
//! The control plane offers only matching gateways in a lease and refuses to authorize a lease
//! for a gateway that does not match, so a gateway elsewhere never receives the resource's
//! address or credentials.

use std::collections::BTreeMap;

/// The resource tag that pins it to gateways.
pub const PIN_TAG: &str = "sdm.gateway";

/// One alternative of a pin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector<'a> {
    Has(&'a str),
    Equals(&'a str, &'a str),
}

/// A pin is read like gateway tags ([`TagForm::PairsOrNames`](sdm_proto::tags::TagForm)).
fn selectors(pin: &str) -> impl Iterator<Item = Selector<'_>> {
    sdm_proto::tags::items(pin).map(|(key, value)| match value {
        Some(v) => Selector::Equals(key, v),
        None => Selector::Has(key),
    })
}

/// The pin of a resource, if it has one.
pub fn pin_of(resource_tags: &BTreeMap<String, String>) -> Option<&str> {
    resource_tags.get(PIN_TAG).map(String::as_str)
}

/// Whether a pin value has at least one selector (an empty pin would match no gateway).
pub fn is_valid_pin(pin: &str) -> bool {
    selectors(pin).next().is_some()
}

/// Whether a gateway with `gateway_tags` may serve a resource with `resource_tags`.
pub fn serves(
    resource_tags: &BTreeMap<String, String>,
    gateway_tags: &BTreeMap<String, String>,
) -> bool {
    match pin_of(resource_tags) {
        None => true,
        Some(pin) => selectors(pin).any(|s| match s {
            Selector::Has(key) => gateway_tags.contains_key(key),
            Selector::Equals(key, value) => gateway_tags.get(key).is_some_and(|v| v == value),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn unpinned_resources_go_anywhere() {
        assert!(serves(&tags(&[("env", "prod")]), &tags(&[])));
        assert!(serves(&tags(&[]), &tags(&[("eu", "")])));
    }

    #[test]
    fn a_bare_selector_needs_the_tag_and_a_pair_needs_the_value() {
        let pinned = tags(&[(PIN_TAG, "eu")]);
        assert!(serves(&pinned, &tags(&[("eu", "")])));
        assert!(serves(&pinned, &tags(&[("eu", "frankfurt")])));
        assert!(!serves(&pinned, &tags(&[("us", "")])));
        assert!(!serves(&pinned, &tags(&[])));
        let pinned = tags(&[(PIN_TAG, "region=eu")]);
        assert!(serves(&pinned, &tags(&[("region", "eu")])));
        assert!(!serves(&pinned, &tags(&[("region", "us")])));
        assert!(!serves(&pinned, &tags(&[("region", "")])));
        assert!(!serves(&pinned, &tags(&[("eu", "")])));
    }

    #[test]
    fn any_selector_of_a_list_matches() {
        let pinned = tags(&[(PIN_TAG, " eu , region=us ")]);
        assert!(serves(&pinned, &tags(&[("eu", "")])));
        assert!(serves(&pinned, &tags(&[("region", "us")])));
        assert!(!serves(&pinned, &tags(&[("region", "ap")])));
        // An empty pin matches nothing (and is refused when a resource is saved).
        assert!(!serves(&tags(&[(PIN_TAG, " , ")]), &tags(&[("eu", "")])));
        assert!(!is_valid_pin(" , "));
        assert!(is_valid_pin("eu"));
    }
}
