//! Reading the committed dashboards (`dashboards/*.json`) and alerting rules
//! (`deploy/monitoring/`), substituting Grafana's template variables, and finding the metric
//! names a PromQL expression uses.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support code

use std::{collections::BTreeSet, path::PathBuf};

use serde_json::Value;

/// One query of a dashboard panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// Dashboard file name.
    pub dashboard: String,
    /// Panel title.
    pub panel: String,
    /// The PromQL expression, as written (with template variables).
    pub expr: String,
}

/// One alerting rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Alert name.
    pub alert: String,
    /// Expression.
    pub expr: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every dashboard: (file name, JSON).
pub fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Panels of a dashboard, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        for nested in p["panels"].as_array().cloned().unwrap_or_default() {
            out.push(nested);
        }
        out.push(p);
    }
    out
}

/// Every panel query of every dashboard.
pub fn panel_queries() -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push(PanelQuery {
                        dashboard: file.clone(),
                        panel: p["title"].as_str().unwrap_or_default().to_string(),
                        expr: expr.to_string(),
                    });
                }
            }
        }
    }
    out
}

/// The `label_values(<selector>, <label>)` queries of the template variables: (dashboard,
/// variable, selector, label).
pub fn variable_queries() -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for v in d["templating"]["list"].as_array().cloned().unwrap_or_default() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["definition"].as_str().unwrap_or_default();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{file}: variable query {q:?} is not label_values(...)"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            out.push((
                file.clone(),
                v["name"].as_str().unwrap_or_default().to_string(),
                selector.trim().to_string(),
                label.trim().to_string(),
            ));
        }
    }
    out
}

/// Substitutes Grafana's variables as Grafana does with every template variable set to "All"
/// (`allValue` `.*`) and the given range.
pub fn substitute(expr: &str, range: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", range)
        .replace("$namespace", ".*")
        .replace("$cluster", ".*")
}

/// The alerting rules of the plain rules file.
pub fn rules() -> Vec<Rule> {
    let doc = rules_yaml();
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            out.push(Rule {
                alert: r["alert"].as_str().unwrap().to_string(),
                expr: r["expr"].as_str().unwrap().to_string(),
            });
        }
    }
    out
}

/// The plain rules file.
pub fn rules_yaml() -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join("deploy/monitoring/kubedirector-rules.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The PrometheusRule manifest.
pub fn prometheus_rule_yaml() -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join("deploy/monitoring/prometheusrule.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The plain rules file with every `for:` shortened to `for_` (test-only variant).
pub fn rules_with_for(for_: &str) -> String {
    let mut doc = rules_yaml();
    for g in doc["groups"].as_sequence_mut().unwrap() {
        for r in g["rules"].as_sequence_mut().unwrap() {
            if r.get("for").is_some() {
                r["for"] = serde_yaml::Value::String(for_.to_string());
            }
        }
    }
    serde_yaml::to_string(&doc).unwrap()
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "inf",
    "nan",
];

/// The metric names an expression selects (label names, functions, keywords, durations and
/// template variables are skipped).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false; // the label list after by/without/on/ignoring/group_*
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_group => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_group = false;
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = j < chars.len() && chars[j] == '(';
                let lower = word.to_ascii_lowercase();
                if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&lower.as_str())
                {
                    skip_group = true;
                } else if !is_call && !KEYWORDS.contains(&lower.as_str()) {
                    out.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
