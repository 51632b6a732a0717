//! A registry written out as text: OpenMetrics (what `prometheus_client` writes) and the
//! Prometheus text format 0.0.4 (what `promtool check metrics` and most scrapers read).

use std::collections::HashSet;

use prometheus_client::registry::Registry;

/// Every metric of `registry` in the OpenMetrics 1.0 text format.
pub fn encode_openmetrics(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Every metric of `registry` in the Prometheus text format 0.0.4.
pub fn encode_prometheus(registry: &Registry) -> Result<String, std::fmt::Error> {
    Ok(openmetrics_to_prometheus(&encode_openmetrics(registry)?))
}

/// OpenMetrics text differs from Prometheus text in three ways that matter here: a counter's
/// HELP and TYPE name the family without `_total` (Prometheus names the sample), `# UNIT`
/// lines, and the closing `# EOF`.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut counters = HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_lines_go() {
        let openmetrics = "# HELP sdm_x Things.\n# TYPE sdm_x counter\nsdm_x_total 3\n\
                           # HELP sdm_open Now.\n# TYPE sdm_open gauge\n# UNIT sdm_open seconds\n\
                           sdm_open 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(openmetrics),
            "# HELP sdm_x_total Things.\n# TYPE sdm_x_total counter\nsdm_x_total 3\n\
             # HELP sdm_open Now.\n# TYPE sdm_open gauge\nsdm_open 1\n"
        );
    }
}
