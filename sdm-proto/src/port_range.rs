//! The range of local ports that the port-overrides setting assigns from.

use serde::{Deserialize, Serialize};

/// A range of local ports, both ends included, written `FIRST-LAST` (`20000-29999`).
///
/// The default, 20000-29999, is chosen so that an assigned port is free on a job's host as
/// often as possible: it lies below every common ephemeral range (Linux 32768-60999, Windows
/// and macOS 49152-65535), so outgoing connections never hold one; above the ports of common
/// databases and servers (22, 1433, 3306, 5432, 6379, 9042, …; MongoDB's 27017 is the one
/// well-known exception); and above 1024, so no privilege is needed to listen. Its 10,000 ports
/// are more than any installation has resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// The first port (at least 1).
    pub first: u16,
    /// The last port (at least `first`).
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> PortRange {
        PortRange {
            first: 20000,
            last: 29999,
        }
    }
}

impl PortRange {
    /// The range, when it holds at least one port and no port 0.
    pub fn new(first: u16, last: u16) -> Result<PortRange, String> {
        if first == 0 {
            return Err(format!(
                "the port range {first}-{last} starts at 0; ports run from 1 to 65535"
            ));
        }
        if first > last {
            return Err(format!(
                "the port range {first}-{last} starts after it ends; write it FIRST-LAST with \
                 FIRST <= LAST"
            ));
        }
        Ok(PortRange { first, last })
    }

    /// How many ports it holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last).saturating_sub(u32::from(self.first)) + 1
    }

    /// Never true for a range built by [`PortRange::new`]; here for completeness.
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// Whether `port` is in it.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// Its ports, lowest first.
    pub fn ports(&self) -> impl Iterator<Item = u16> + use<> {
        self.first..=self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `FIRST-LAST`, each 1 to 65535, FIRST <= LAST.
    fn from_str(text: &str) -> Result<PortRange, String> {
        let (first, last) = text.split_once('-').ok_or_else(|| {
            format!("{text:?} is not a port range; write it FIRST-LAST, e.g. 20000-29999")
        })?;
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|_| format!("{s:?} in the port range {text:?} is not a port (1 to 65535)"))
        };
        PortRange::new(port(first)?, port(last)?)
    }
}

#[cfg(test)]
mod tests {
    use super::PortRange;

    #[test]
    fn ranges_parse_and_bad_ones_say_why() {
        let r: PortRange = "20000-20009".parse().unwrap();
        assert_eq!((r.first, r.last, r.len()), (20000, 20009, 10));
        assert_eq!(r.to_string(), "20000-20009");
        assert_eq!("7-7".parse::<PortRange>().unwrap().len(), 1);
        assert_eq!("1-65535".parse::<PortRange>().unwrap().len(), 65535);
        assert!(PortRange::default().contains(20000) && !PortRange::default().contains(30000));
        for (bad, says) in [
            ("20000", "FIRST-LAST"),
            ("0-10", "starts at 0"),
            ("10-9", "starts after it ends"),
            ("1-65536", "not a port"),
            ("a-b", "not a port"),
            ("-5-10", "not a port"),
        ] {
            let e = bad.parse::<PortRange>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
