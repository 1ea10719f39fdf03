//! The "unchanged pass" step: annotates every kdcluster (metadata only: no spec change, nothing
//! for the operator to do) and measures what the pass each annotation triggers costs the
//! operator: its process CPU per pass (watch decoding, routing, the pass, its metrics) and the
//! mean reconcile time it reports itself. Issue 13: a pass over an unchanged cluster should cost
//! microseconds and write nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kubesim::Sim;
use serde_json::json;

use crate::process::Operator;
use crate::progress::http_get;
use crate::report::{diff, operator_rows, say};
use crate::SETTLE;

/// What the step measured.
pub(crate) struct Touch {
    /// Passes the operator reported (`controller_runtime_reconcile_total`) during the step.
    pub passes: f64,
    /// Operator process CPU per pass, microseconds.
    pub cpu_per_pass_us: f64,
    /// Mean reconcile time per pass the operator reported, microseconds.
    pub reconcile_mean_us: f64,
    /// Operator requests other than events and leases during the step.
    pub writes: u64,
}

/// Sum of the series of `name` for the kdcluster controller in a Prometheus text exposition.
fn controller_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with('{')
                && l.contains("controller=\"kubedirectorcluster\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(addr: SocketAddr) -> anyhow::Result<(f64, f64)> {
    let text = http_get(addr, "/metrics").context("cannot read the operator's /metrics")?;
    Ok((
        controller_sum(&text, "controller_runtime_reconcile_total"),
        controller_sum(&text, "controller_runtime_reconcile_time_seconds_sum"),
    ))
}

/// Runs the step and prints its block.
pub(crate) fn run(
    rt: &tokio::runtime::Runtime,
    sim: &Sim,
    clusters: &Api<DynamicObject>,
    names: &[String],
    operator: &Operator,
    metrics_addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<Touch> {
    let n = names.len() as f64;
    let before = sim.metrics().snapshot();
    let (passes0, time0) = scrape(metrics_addr)?;
    let cpu0 = operator.cpu();
    rt.block_on(async {
        let patches = names.iter().map(|name| {
            let patch = json!({"metadata": {"annotations": {"bench.kubedirector.hpe.com/touched": "1"}}});
            async move {
                clusters
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("cannot annotate kdcluster {name}"))?;
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(patches).await
    })?;
    let t0 = Instant::now();
    let (passes1, time1) = loop {
        let (p, t) = scrape(metrics_addr)?;
        if p - passes0 >= n {
            break (p, t);
        }
        if t0.elapsed() > timeout {
            bail!(
                "only {} of {n} passes after annotating every kdcluster",
                p - passes0
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(SETTLE);
    let (passes2, time2) = scrape(metrics_addr)?;
    let cpu = operator.cpu() - cpu0;
    let writes: u64 = operator_rows(&diff(&sim.metrics().snapshot(), &before))
        .iter()
        .filter(|(_, res, _)| !res.starts_with("events") && !res.starts_with("leases"))
        .map(|(_, _, c)| c)
        .sum();
    let passes = (passes2 - passes0).max(passes1 - passes0);
    let touch = Touch {
        passes,
        cpu_per_pass_us: cpu / passes.max(1.0) * 1e6,
        reconcile_mean_us: (time2.max(time1) - time0) / passes.max(1.0) * 1e6,
        writes,
    };
    say("");
    say("== unchanged passes (an annotation on every kdcluster, nothing to do) ==");
    say(&format!(
        "{:.0} passes; operator CPU {:.3} s = {:.0} us per pass (watch event to pass done); \
         reconcile time reported by the operator {:.0} us per pass; requests other than events and leases: {}",
        touch.passes, cpu, touch.cpu_per_pass_us, touch.reconcile_mean_us, touch.writes
    ));
    Ok(touch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cluster_controllers_series_are_summed() {
        let text = "\
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller=\"kubedirectorcluster\",result=\"success\"} 7
controller_runtime_reconcile_total{controller=\"kubedirectorcluster\",result=\"error\"} 2
controller_runtime_reconcile_total{controller=\"other\",result=\"success\"} 100
controller_runtime_reconcile_total_extra{controller=\"kubedirectorcluster\"} 50
";
        assert_eq!(controller_sum(text, "controller_runtime_reconcile_total"), 9.0);
    }
}
