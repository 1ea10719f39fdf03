//! The committed dashboards and alerting rules, checked offline: every metric they use is one
//! the operator exports, the dashboards have stable uids, the current schema, template
//! variables and panel descriptions, and the PrometheusRule carries the plain rules file's groups.
//! (tests/prometheus_e2e.rs evaluates them against a real Prometheus.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod monitoring_support;
mod skip_support;

use std::collections::BTreeSet;

use monitoring_support::{
    dashboards, metric_names, panel_queries, panels, prometheus_rule_yaml, rules, rules_yaml,
    variable_queries,
};

fn exported() -> BTreeSet<String> {
    kubedirector_actors::metrics::exported_series_names()
        .unwrap()
        .into_iter()
        .collect()
}

/// Metric names used by `exprs` that the operator does not export: (where, metric).
fn unknown_metrics<'a>(exprs: impl IntoIterator<Item = (String, &'a str)>) -> Vec<(String, String)> {
    let exported = exported();
    let mut out = Vec::new();
    for (place, expr) in exprs {
        for m in metric_names(expr) {
            if !exported.contains(&m) {
                out.push((place.clone(), m));
            }
        }
    }
    out
}

#[test]
fn metric_names_are_found_in_promql_and_labels_functions_and_variables_are_not() {
    let names = metric_names(
        r#"sum by (namespace, cluster) (rate(foo_total{state!="a b", x=~"$namespace"}[$__rate_interval])) / on (namespace) group_left (app) bar * 3 > 0.5 and baz offset 5m or vector(0)"#,
    );
    assert_eq!(
        names,
        ["bar", "baz", "foo_total"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

#[test]
fn a_dashboard_query_with_an_unexported_metric_is_reported() {
    let bad = unknown_metrics([(
        "panel".to_string(),
        "sum(rate(kubedirector_no_such_metric_total[5m])) / sum(rate(controller_runtime_reconcile_total[5m]))",
    )]);
    assert_eq!(
        bad,
        [(
            "panel".to_string(),
            "kubedirector_no_such_metric_total".to_string()
        )]
    );
}

#[test]
fn dashboards_use_only_metrics_the_operator_exports() {
    let queries = panel_queries();
    assert!(
        queries.len() >= 20,
        "expected the panels' queries, found {}",
        queries.len()
    );
    let vars = variable_queries();
    let bad = unknown_metrics(
        queries
            .iter()
            .map(|q| (format!("{} / {}", q.dashboard, q.panel), q.expr.as_str()))
            .chain(
                vars.iter()
                    .map(|v| (format!("{} / variable {}", v.0, v.1), v.2.as_str())),
            ),
    );
    assert!(
        bad.is_empty(),
        "dashboards reference metrics the operator does not export: {bad:#?}"
    );
}

#[test]
fn alerting_rules_use_only_metrics_the_operator_exports() {
    let rules = rules();
    assert_eq!(rules.len(), 6);
    let bad = unknown_metrics(rules.iter().map(|r| (r.alert.clone(), r.expr.as_str())));
    assert!(
        bad.is_empty(),
        "rules reference metrics the operator does not export: {bad:#?}"
    );
}

#[test]
fn dashboards_have_stable_uids_current_schema_variables_and_described_panels() {
    let ds = dashboards();
    let uids: Vec<_> = ds
        .iter()
        .map(|(_, d)| d["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        uids,
        ["kubedirector-cluster-progress", "kubedirector-operator-health"]
    );
    for (file, d) in &ds {
        assert!(
            d["schemaVersion"].as_u64().unwrap() >= 39,
            "{file}: schemaVersion"
        );
        assert!(
            d.get("id").is_none() || d["id"].is_null(),
            "{file}: no instance-specific id"
        );
        let vars: Vec<_> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        assert!(
            vars.contains(&"datasource".to_string()),
            "{file}: datasource variable"
        );
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: duplicate panel id"
            );
            if p["type"] == "row" {
                continue;
            }
            assert!(
                p["description"].as_str().is_some_and(|s| s.len() > 20),
                "{file}: panel {title:?} has no description"
            );
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file}: panel {title:?} datasource"
            );
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{file}: panel {title:?} has no query"
            );
        }
    }
    let progress = &ds[0].1;
    let vars: Vec<_> = progress["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "namespace", "cluster"]);
}

#[test]
fn the_prometheus_rule_carries_exactly_the_plain_rules_files_groups() {
    let plain = rules_yaml();
    let cr = prometheus_rule_yaml();
    assert_eq!(cr["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(cr["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(cr["spec"]["groups"], plain["groups"]);
}

#[test]
fn promtool_accepts_the_rules() {
    let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/monitoring/kubedirector-rules.yaml"
        ))
        .output()
    else {
        skip_support::skipped("promtool not installed (Debian package prometheus)");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules failed:\n{text}");
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
}
