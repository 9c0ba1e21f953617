//! What the monitoring tests of the gateway and the operator share: the chart's alert rules and
//! Grafana dashboard, the metric names their PromQL uses, and the series a scrape holds. Both
//! crates check those names against their real `/metrics`, so the reading lives here once.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use crate::{parse_yaml_documents, workspace_root};

/// `charts/sluice/monitoring/alerts.yaml`: the alerts, as Prometheus rule groups.
pub fn alerts_file() -> PathBuf {
    workspace_root().join("charts/sluice/monitoring/alerts.yaml")
}

/// `charts/sluice/dashboards/sluice.json`: the Grafana dashboard.
pub fn dashboard_file() -> PathBuf {
    workspace_root().join("charts/sluice/dashboards/sluice.json")
}

/// `tests/monitoring/alerts.test.yaml`: promtool's unit tests of the alerts.
pub fn alert_tests_file() -> PathBuf {
    workspace_root().join("tests/monitoring/alerts.test.yaml")
}

/// Every alert of the rules file: (name, PromQL expression).
pub fn alert_expressions() -> anyhow::Result<Vec<(String, String)>> {
    let path = alerts_file();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let docs = parse_yaml_documents(&text)?;
    let file = docs.first().context("an empty rules file")?;
    let mut alerts = Vec::new();
    for rule in
        file["groups"].as_array().into_iter().flatten().flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let name = rule["alert"].as_str().context("a rule without an alert name")?;
        let expr = rule["expr"].as_str().with_context(|| format!("{name} has no expr"))?;
        alerts.push((name.to_owned(), expr.to_owned()));
    }
    Ok(alerts)
}

/// The dashboard, parsed.
pub fn dashboard() -> anyhow::Result<Value> {
    let path = dashboard_file();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every PromQL expression of a dashboard: each panel target's `expr` (rows' nested panels
/// included) and each query variable's series selector (`label_values(SELECTOR, label)`).
pub fn dashboard_expressions(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or_else(|| variable["query"].as_str()).unwrap_or_default();
        if let Some(selector) = label_values_selector(query) {
            out.push(selector.to_owned());
        }
    }
    out
}

/// The series selector of Grafana's `label_values(SELECTOR, label)`; `None` for other queries
/// and for `label_values(label)`, which names no metric.
fn label_values_selector(query: &str) -> Option<&str> {
    let inner = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let mut depth = 0usize;
    let mut quoted = false;
    let mut last_comma = None;
    for (i, c) in inner.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '{' | '(' | '[' if !quoted => depth += 1,
            '}' | ')' | ']' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => last_comma = Some(i),
            _ => {}
        }
    }
    last_comma.map(|i| inner[..i].trim())
}

/// An expression with Grafana's variables replaced so that Prometheus can parse it: the range
/// variables by `5m`, every other variable (found inside label matchers) by `x`.
pub fn without_grafana_variables(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or(braced.len());
                (&braced[..end], end + 2)
            }
            None => {
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        out.push_str(if name.starts_with("__") { "5m" } else { "x" });
        rest = &after[len.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// PromQL's aggregation operators, which may be followed by `by (...)` before their `(`.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Other words of PromQL that are not metric names.
const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];

/// The metric names a PromQL expression selects: every identifier that is not a function,
/// aggregation, keyword, label name or inside a string, label matcher or range. Grafana
/// variables should be replaced first ([`without_grafana_variables`]) or sit inside strings.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '}');
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number or a duration (`0.95`, `1e3`, `5m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_')) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let opens = chars.get(next) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if opens {
                    i = skip_group(&chars, next, ')');
                }
            } else if opens || AGGREGATIONS.contains(&lower.as_str()) || KEYWORDS.contains(&lower.as_str()) {
                // A function or an aggregation (its arguments are read on), or a keyword.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index after the string literal opening at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

/// The index after the `close` that ends the group opening at `start`, strings inside skipped.
fn skip_group(chars: &[char], start: usize, close: char) -> usize {
    let open = chars[start];
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(chars, i);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    chars.len()
}

/// The names of the series in a Prometheus or OpenMetrics text exposition: counters with their
/// `_total`, histograms as their `_bucket`, `_sum` and `_count`, as PromQL selects them.
pub fn series_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn metric_names_leave_out_functions_labels_strings_and_ranges() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.95, sum by (le, provider) (rate(a_bucket{x="y}", z=~"$v"}[5m:1m]))) / on (job) group_left (pod) b offset 5m"#
            ),
            ["a_bucket", "b"]
        );
        assert_eq!(names("sum(rate(c_total[5m])) by (project) > bool 0.1 and d unless e"), ["c_total", "d", "e"]);
        assert_eq!(names(r#"topk(10, max by (key_id) (f / g)) or vector(0)"#), ["f", "g"]);
        assert_eq!(names(r#"label_replace(h, "dst", "$1", "src", "(.*)") * 3600 + 1e3"#), ["h"]);
        assert_eq!(names("up{job=\"sluice-gateway\"} == 0 # the gateway\n"), ["up"]);
        assert_eq!(names("sum without (pod) (i)"), ["i"]);
    }

    #[test]
    fn grafana_variables_are_replaced_and_variable_queries_read() {
        assert_eq!(
            without_grafana_variables(r#"rate(a{p=~"$project", e=~"${endpoint}"}[$__rate_interval]) [$__range]"#),
            r#"rate(a{p=~"x", e=~"x"}[5m]) [5m]"#
        );
        assert_eq!(label_values_selector(r#"label_values(a{p=~"$p, q"}, endpoint)"#), Some(r#"a{p=~"$p, q"}"#));
        assert_eq!(label_values_selector("label_values(project)"), None);
        assert_eq!(label_values_selector("query_result(a)"), None);
    }

    #[test]
    fn series_names_are_what_promql_selects() {
        let text = "# HELP a_requests Requests\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\n\
                    b_seconds_bucket{le=\"+Inf\"} 1\nb_seconds_count 1\nc 2\n# EOF\n";
        let found: Vec<String> = series_names(text).into_iter().collect();
        assert_eq!(found, ["a_requests_total", "b_seconds_bucket", "b_seconds_count", "c"]);
    }
}
