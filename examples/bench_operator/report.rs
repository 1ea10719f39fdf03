//! Printing: per-cluster times, the operator's requests by verb and resource.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use kubesim::faults::MetricsSnapshot;

use crate::progress::StepTimes;
use crate::BENCH_CLIENT;

/// Prints the per-cluster times of a step.
pub(crate) fn report_times(t: &StepTimes) {
    let sorted = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        v
    };
    let configured = sorted(t.configured.iter().map(Duration::as_secs_f64).collect());
    let ready = sorted(t.pods_ready.iter().map(Duration::as_secs_f64).collect());
    let lag = sorted(
        t.configured
            .iter()
            .zip(&t.pods_ready)
            .map(|(c, r)| c.saturating_sub(*r).as_secs_f64())
            .collect(),
    );
    let line = |what: &str, v: &[f64]| {
        say(&format!(
            "  {what:<54} p50 {:>7.3} s   p95 {:>7.3} s   max {:>7.3} s",
            percentile(v, 0.50),
            percentile(v, 0.95),
            percentile(v, 1.0)
        ));
    };
    line("per cluster: all member pods Ready (kubesim)", &ready);
    line("per cluster: configured", &configured);
    line("per cluster: configured - pods Ready (watch+operator)", &lag);
    let probe = sorted(t.probe.iter().map(Duration::as_secs_f64).collect());
    line(
        &format!("kubesim GET /healthz latency ({} probes)", probe.len()),
        &probe,
    );
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `after - before` of the per-client counters (`client verb resource` -> count).
pub(crate) fn diff(after: &MetricsSnapshot, before: &MetricsSnapshot) -> BTreeMap<String, u64> {
    after
        .by_client_verb_resource
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.by_client_verb_resource.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// The operator's rows of a diff: (verb, resource, count), every client but this program's.
pub(crate) fn operator_rows(d: &BTreeMap<String, u64>) -> Vec<(String, String, u64)> {
    let mut rows: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (k, v) in d {
        let mut p = k.splitn(3, ' ');
        let (Some(client), Some(verb), Some(res)) = (p.next(), p.next(), p.next()) else {
            continue;
        };
        if client == BENCH_CLIENT {
            continue;
        }
        *rows.entry((verb.to_string(), res.to_string())).or_default() += v;
    }
    rows.into_iter().map(|((v, r), c)| (v, r, c)).collect()
}

pub(crate) fn operator_total(d: &BTreeMap<String, u64>) -> u64 {
    operator_rows(d).iter().map(|(_, _, c)| c).sum()
}

/// Prints the operator's requests by verb and resource, per `members`, with events and leases
/// apart; `bound` = (M, R) adds the comparison with the DESIGN lower bound.
/// Returns (requests without events and leases, events).
pub(crate) fn report_requests(
    d: &BTreeMap<String, u64>,
    members: usize,
    bound: Option<(usize, usize)>,
) -> (u64, u64) {
    let rows = operator_rows(d);
    let per = |c: u64| c as f64 / members.max(1) as f64;
    say(&format!(
        "  {:<8} {:<34} {:>8} {:>11}",
        "VERB", "RESOURCE", "REQUESTS", "PER MEMBER"
    ));
    let mut main = 0u64;
    let mut events = 0u64;
    let mut leases = 0u64;
    for (verb, res, c) in &rows {
        let class = if res.starts_with("events") {
            events += c;
            " (event)"
        } else if res.starts_with("leases") {
            leases += c;
            " (lease)"
        } else {
            main += c;
            ""
        };
        say(&format!(
            "  {:<8} {:<34} {:>8} {:>11.2}",
            verb,
            format!("{res}{class}"),
            c,
            per(*c)
        ));
    }
    let mut by_verb: BTreeMap<&str, u64> = BTreeMap::new();
    for (verb, res, c) in &rows {
        if !res.starts_with("events") && !res.starts_with("leases") {
            *by_verb.entry(verb.as_str()).or_default() += c;
        }
    }
    say(&format!(
        "  total without events and leases: {main} = {:.2} per member (by verb: {})",
        per(main),
        by_verb
            .iter()
            .map(|(v, c)| format!("{v} {:.2}", per(*c)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some((m, r)) = bound {
        let lb = 2.0 + (3.0 + r as f64) / m as f64;
        say(&format!(
            "  DESIGN lower bound 2 + (3+R)/M = {lb:.2} per member -> measured/bound = {:.2}; \
             upstream KubeDirector makes roughly 8-12 per member plus a 30 s poll",
            per(main) / lb
        ));
    }
    say(&format!(
        "  events: {events} ({:.2} per member); leases: {leases}",
        per(events)
    ));
    (main, events)
}

pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
