//! Operator benchmark on kubesim (DESIGN.md section 6): time for N clusters of M members to
//! reach `configured`, the operator's API requests per member by verb and resource (compared with
//! the lower bound 2 + (3+R)/M), requests while idle, requests per member added by a scale-up,
//! and the CPU time and peak memory of the operator's process and of kubesim's.
//!
//! ```text
//! cargo run --release --example bench_operator -- [--clusters N] [--members M] [--roles R]
//! ```
//!
//! kubesim runs with its node side on the *virtual* container runtime (pods are scheduled,
//! started and report container IDs; nothing is executed) in this program's process; the
//! operator runs as its own process exactly as `kubedirector run` does (leader election on; see
//! [`process`]) and talks to kubesim over HTTP through a kubeconfig. The
//! benchmark's own client sends a distinct user agent (`kd-bench`) and follows progress by
//! reading kubesim's store in-process, so that only the operator's requests are attributed to
//! it. This program prints numbers; it asserts nothing about them.
//!
//! After the operator's run (and with the operator stopped), a bare client makes the minimal
//! write set of the same clusters against the same kubesim ([`baseline`]): the operator's
//! convergence time is printed as a ratio of that physical limit. The last line is a
//! machine-readable summary, `bench: key=value ...`.

mod baseline;
mod process;
mod progress;
mod report;
mod setup;
mod touch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::Client;
use kubedirector_crds::KubeDirectorCluster;
use kubesim::{Sim, SimConfig};
use serde_json::json;

use process::{CpuTimes, Operator};
use progress::{wait_configured, wait_ready};
use report::{diff, operator_rows, operator_total, percentile, report_requests, report_times, say};
use setup::{cluster, install, role_sizes, roles_spec};

/// User agent of the benchmark's own client (kubesim attributes requests by the user agent up to
/// the first `/`); every other client is the operator (kubesim's controllers use its store
/// directly and make no HTTP requests).
const BENCH_CLIENT: &str = "kd-bench";
/// Namespace of the benchmark's app and clusters.
const NS: &str = "bench";
/// The namespace KubeDirector runs in (the leader Lease lives there).
const KD_NS: &str = "kubedirector";
/// Name of the generated app.
const APP: &str = "bench-app";
/// How often progress is sampled (from the store, in-process: no API requests), per 100
/// clusters (sampling costs CPU on the same 2 cores).
const POLL: Duration = Duration::from_millis(20);
/// Time allowed for trailing writes (status, events) after the last cluster is configured; they
/// are counted with the step that caused them.
const SETTLE: Duration = Duration::from_secs(1);
/// The idle window.
const IDLE: Duration = Duration::from_secs(5);
/// Longest wait for a step to converge: 90 s plus 0.3 s per cluster.
fn step_timeout(clusters: usize) -> Duration {
    Duration::from_secs(90) + Duration::from_millis(300) * clusters as u32
}

fn poll_every(clusters: usize) -> Duration {
    POLL * (clusters / 100).max(1) as u32
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "KubeDirector operator benchmark on kubesim")]
struct Args {
    /// Number of clusters created at once.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=2000))]
    clusters: u32,
    /// Members per cluster (split across the roles, the first roles get the remainder).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    members: u32,
    /// Roles of the generated app (r0..r{R-1}, cardinality 0+).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    roles: u32,
    /// Give the app a setup package (our kd-webstack package, baked into the simulated image), so
    /// every member is configured through pods/exec. Containers are then real bubblewrap
    /// sandboxes, which costs far more CPU than the virtual ones: use small N.
    #[arg(long)]
    setup_package: bool,
    /// The `kubedirector` binary to run the operator with (`<bin> run ...`). Default: this
    /// program in its `run` mode, which is `kubedirector run` (same options, same code).
    #[arg(long, value_name = "PATH")]
    operator_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Started as the operator's process (`bench_operator run ...`).
    if let Some(code) = process::child_main() {
        return code;
    }
    match run_benchmark(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn run_benchmark(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kubesim::sandbox=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();

    let n = args.clusters as usize;
    let m = args.members as usize;
    let r = args.roles as usize;
    // The operator's pods after the scale-up, plus the bare client's (physical limit).
    let max_pods = n * (m + 2) + n * m;
    // 110 pods per simulated node; keep headroom.
    let nodes = max_pods.div_ceil(100).max(1);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kubesim")
        .build()
        .context("cannot start the async runtime")?;
    let dir = tempfile::Builder::new()
        .prefix("kd-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let runtime = if args.setup_package {
        let rt = kubesim::sandbox::Runtime::new(dir.path().join("node"))
            .map_err(|e| anyhow!("cannot create the container runtime: {e}"))?;
        if !rt.available() {
            return Err(anyhow!(
                "--setup-package needs bubblewrap and nsenter (apt-get install bubblewrap)"
            ));
        }
        kubedirector::examples::register_example_images(&rt, dir.path())?;
        rt
    } else {
        kubesim::sandbox::Runtime::new_virtual(dir.path().join("node"))
            .map_err(|e| anyhow!("cannot create the virtual container runtime: {e}"))?
    };
    let (config, _control) = kubesim::controllers::install(
        SimConfig {
            nodes,
            ..SimConfig::default()
        },
        runtime,
        kubesim::controllers::NodeConfig::default(),
    );
    let sim = rt
        .block_on(Sim::start(config))
        .map_err(|e| anyhow!("cannot start kubesim: {e}"))?;
    let result = bench(
        &rt,
        &sim,
        dir.path().join("kubeconfig"),
        n,
        m,
        r,
        nodes,
        args.setup_package,
        args.operator_bin.as_deref(),
    );
    rt.block_on(sim.shutdown());
    result
}

#[allow(clippy::too_many_arguments)] // the benchmark's knobs, passed once
fn bench(
    rt: &tokio::runtime::Runtime,
    sim: &Sim,
    kubeconfig: PathBuf,
    n: usize,
    m: usize,
    r: usize,
    nodes: usize,
    setup_package: bool,
    operator_bin: Option<&Path>,
) -> anyhow::Result<()> {
    sim.write_kubeconfig(&kubeconfig)
        .map_err(|e| anyhow!("cannot write the kubeconfig: {e}"))?;
    let client = rt.block_on(install(sim, r, setup_package))?;

    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port for the operator's metrics server")?;
    let kubesim_start_cpu = CpuTimes::now(None)?;
    let before_start = sim.metrics().snapshot();
    let mut operator = Operator::spawn(operator_bin, &kubeconfig, KD_NS, metrics_addr)?;
    let ready_in = wait_ready(sim, metrics_addr, &mut operator)?;
    let start_cpu = CpuTimes {
        operator: 0.0,
        ..kubesim_start_cpu
    };
    let startup = operator_rows(&diff(&sim.metrics().snapshot(), &before_start));

    say(&format!(
        "kubedirector-rs operator benchmark: {n} clusters x {m} members, {r} roles \
         (role sizes {:?}); kubesim with {nodes} node(s), virtual container runtime",
        role_sizes(m, r)
    ));
    say(&format!(
        "operator (process {}) ready (leader, watches synced) in {:.2} s; its start-up requests (not counted below): {}",
        operator.pid(),
        ready_in.as_secs_f64(),
        startup
            .iter()
            .map(|(v, res, c)| format!("{v} {res} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let result = scenario(rt, sim, &client, &mut operator, metrics_addr, n, m, r, start_cpu);
    let stopped = operator.stop();
    let mut summary = result?;
    stopped?;

    // The physical limit, with the operator stopped.
    let cpu0 = CpuTimes::now(None)?;
    let bare = baseline::run(rt, sim, n, &role_sizes(m, r), step_timeout(n))?;
    let cpu1 = CpuTimes::now(None)?;
    say("");
    say("== physical limit (bare client, same kubesim, operator stopped) ==");
    say(&format!(
        "a bare client made the minimal write set ({} writes: per cluster a headless Service, {r} \
         StatefulSet(s) with final replicas, {m} member Services, 1 status write) and saw every pod \
         Ready in {:.3} s (kubesim CPU {:.2} s)",
        bare.writes,
        bare.converged.as_secs_f64(),
        cpu1.kubesim - cpu0.kubesim
    ));
    let ratio = summary.converged_s / bare.converged.as_secs_f64().max(1e-9);
    say(&format!(
        "operator convergence {:.2} s = {ratio:.2} x the physical limit {:.2} s",
        summary.converged_s,
        bare.converged.as_secs_f64()
    ));
    summary
        .fields
        .push(("bare_s".into(), format!("{:.2}", bare.converged.as_secs_f64())));
    summary.fields.push(("ratio".into(), format!("{ratio:.2}")));
    say("");
    say(&format!(
        "bench: {}",
        summary
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(())
}

/// The operator run's key numbers, for the `bench:` line.
struct Summary {
    converged_s: f64,
    fields: Vec<(String, String)>,
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    rt: &tokio::runtime::Runtime,
    sim: &Sim,
    client: &Client,
    operator: &mut Operator,
    metrics_addr: std::net::SocketAddr,
    n: usize,
    m: usize,
    r: usize,
    start_cpu: CpuTimes,
) -> anyhow::Result<Summary> {
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::erase::<KubeDirectorCluster>(&()),
    );
    let names: Vec<String> = (1..=n).map(|i| format!("c{i:03}")).collect();
    let metrics = sim.metrics();

    // 1. Create N clusters at once and wait until all are configured.
    let cpu0 = CpuTimes::now(Some(operator))?;
    let before = metrics.snapshot();
    let t0 = Instant::now();
    rt.block_on(async {
        let creates = names.iter().map(|name| {
            let obj = cluster(name, m, r);
            let clusters = clusters.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(obj)?;
                clusters
                    .create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot create kdcluster {}",
                            obj.metadata.name.unwrap_or_default()
                        )
                    })?;
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(creates).await
    })?;
    let created_in = t0.elapsed();
    let times = wait_configured(sim, operator, &names, m, t0, n)?;
    let converged_in = t0.elapsed();
    let at_converged = metrics.snapshot();
    std::thread::sleep(SETTLE);
    let after = metrics.snapshot();
    let cpu1 = CpuTimes::now(Some(operator))?;

    say("");
    say("== convergence ==");
    say(&format!(
        "created {n} kdclusters in {:.3} s; all configured ({} members) after {:.3} s",
        created_in.as_secs_f64(),
        n * m,
        converged_in.as_secs_f64()
    ));
    report_times(&times);
    let pods_ready_p50 = {
        let mut v: Vec<f64> = times.pods_ready.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    let trailing = operator_total(&diff(&after, &at_converged));
    let create = diff(&after, &before);
    say(&format!(
        "operator requests (including {trailing} in the {:.0} s after the last cluster was configured):",
        SETTLE.as_secs_f64()
    ));
    let (create_main, create_events) = report_requests(&create, n * m, Some((m, r)));
    say(&format!(
        "CPU during this step: operator process {:.2} s, kubesim process {:.2} s",
        cpu1.operator - cpu0.operator,
        cpu1.kubesim - cpu0.kubesim
    ));

    // 2. Idle.
    std::thread::sleep(IDLE);
    let idle_end = metrics.snapshot();
    let idle = diff(&idle_end, &after);
    let idle_cpu = CpuTimes::now(Some(operator))?;
    say("");
    say(&format!(
        "== idle ({:.0} s after convergence) ==",
        IDLE.as_secs_f64()
    ));
    let (leases, other): (Vec<_>, Vec<_>) = operator_rows(&idle)
        .into_iter()
        .partition(|(_, res, _)| res.starts_with("leases"));
    let other_total: u64 = other.iter().map(|(_, _, c)| c).sum();
    say(&format!(
        "operator requests other than lease renewals: {other_total}{}",
        if other.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                other
                    .iter()
                    .map(|(v, res, c)| format!("{v} {res} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    say(&format!(
        "lease (leader election) requests: {}{}",
        leases.iter().map(|(_, _, c)| c).sum::<u64>(),
        if leases.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                leases
                    .iter()
                    .map(|(v, res, c)| format!("{v} {res} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    say(&format!(
        "CPU while idle: operator process {:.2} s, kubesim process {:.2} s",
        idle_cpu.operator - cpu1.operator,
        idle_cpu.kubesim - cpu1.kubesim
    ));

    // 3. One pass over every unchanged cluster.
    let touched = touch::run(
        rt,
        sim,
        &clusters,
        &names,
        operator,
        metrics_addr,
        step_timeout(n),
    )?;
    let cpu2 = CpuTimes::now(Some(operator))?;

    // 4. Scale every cluster's first role up by two members.
    let sizes = role_sizes(m, r);
    let mut scaled = sizes.clone();
    if let Some(first) = scaled.first_mut() {
        *first += 2;
    }
    let before = metrics.snapshot();
    let t1 = Instant::now();
    rt.block_on(async {
        let patches = names.iter().map(|name| {
            let clusters = clusters.clone();
            let patch = json!({"spec": {"roles": roles_spec(&scaled)}});
            async move {
                clusters
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("cannot scale kdcluster {name}"))?;
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(patches).await
    })?;
    let times = wait_configured(sim, operator, &names, m + 2, t1, n)?;
    let scaled_in = t1.elapsed();
    std::thread::sleep(SETTLE);
    let after = metrics.snapshot();
    let cpu3 = CpuTimes::now(Some(operator))?;
    say("");
    say("== scale-up (first role +2 members in every cluster) ==");
    say(&format!(
        "patched {n} kdclusters; all configured with {} members after {:.3} s",
        m + 2,
        scaled_in.as_secs_f64()
    ));
    report_times(&times);
    say("operator requests (per added member):");
    let (scale_main, scale_events) = report_requests(&diff(&after, &before), 2 * n, None);
    say(&format!(
        "CPU during this step: operator process {:.2} s, kubesim process {:.2} s",
        cpu3.operator - cpu2.operator,
        cpu3.kubesim - cpu2.kubesim
    ));

    // 5. Process totals.
    let mib = |v: Option<f64>| v.map_or_else(|| "unknown".to_string(), |v| format!("{v:.1} MiB"));
    let (operator_hwm, kubesim_hwm) = (operator.peak_mib(), process::own_peak_mib());
    say("");
    say("== processes (the operator's; kubesim's, which is this program's) ==");
    say(&format!(
        "CPU since the operator started: operator process {:.2} s, kubesim process {:.2} s, total {:.2} s",
        cpu3.operator - start_cpu.operator,
        cpu3.kubesim - start_cpu.kubesim,
        cpu3.total() - start_cpu.total(),
    ));
    say(&format!(
        "peak memory (VmHWM): operator process {}, kubesim process {}",
        mib(operator_hwm),
        mib(kubesim_hwm)
    ));
    let lb = 2.0 + (3.0 + r as f64) / m as f64;
    let idle_leases: u64 = leases.iter().map(|(_, _, c)| c).sum();
    say("");
    say("== summary ==");
    let row = |k: &str, v: String| say(&format!("  {k:<56} {v}"));
    row("clusters x members (roles)", format!("{n} x {m} ({r})"));
    row(
        "time until all configured",
        format!("{:.2} s", converged_in.as_secs_f64()),
    );
    row(
        "operator requests per member (no events/leases)",
        format!(
            "{:.2} (bound 2 + (3+R)/M = {lb:.2}; upstream ~8-12 + 30 s poll)",
            create_main as f64 / (n * m) as f64
        ),
    );
    row(
        "operator events per member",
        format!("{:.2}", create_events as f64 / (n * m) as f64),
    );
    row(
        &format!("operator requests while idle ({:.0} s)", IDLE.as_secs_f64()),
        format!("{other_total} (+ {idle_leases} lease renewal requests)"),
    );
    row(
        "scale-up +2 members/cluster: time until configured",
        format!("{:.2} s", scaled_in.as_secs_f64()),
    );
    row(
        "scale-up: requests per added member (no events/leases)",
        format!(
            "{:.2} (+ {:.2} events)",
            scale_main as f64 / (2 * n) as f64,
            scale_events as f64 / (2 * n) as f64
        ),
    );
    row(
        "CPU s, operator process / kubesim process",
        format!(
            "{:.2} / {:.2}",
            cpu3.operator - start_cpu.operator,
            cpu3.kubesim - start_cpu.kubesim,
        ),
    );
    row("peak memory VmHWM, operator process", mib(operator_hwm));
    row("peak memory VmHWM, kubesim process", mib(kubesim_hwm));
    let clients: BTreeMap<String, u64> = after.by_client.iter().map(|(c, v)| (c.clone(), *v)).collect();
    say(&format!(
        "requests by client since kubesim started (user agent up to '/'; '{BENCH_CLIENT}' is this program): {clients:?}"
    ));
    let execs: u64 = operator_rows(&create)
        .iter()
        .filter(|(_, res, _)| res == "pods/exec")
        .map(|(_, _, c)| c)
        .sum();
    let idle_kubesim = idle_cpu.kubesim - cpu1.kubesim;
    row(
        "operator execs per member (pods/exec requests)",
        format!("{:.2}", execs as f64 / (n * m) as f64),
    );
    row(
        &format!(
            "kubesim CPU while idle ({:.0} s, {} pods)",
            IDLE.as_secs_f64(),
            n * m
        ),
        format!("{idle_kubesim:.3} s"),
    );
    row(
        "unchanged-cluster pass: operator CPU / reported time",
        format!(
            "{:.0} us / {:.0} us per pass ({:.0} passes, {} requests)",
            touched.cpu_per_pass_us, touched.reconcile_mean_us, touched.passes, touched.writes
        ),
    );
    let lags = sim.store().stream_lags();
    row(
        "kubesim event-stream overflows (re-lists, closed watches)",
        lags.to_string(),
    );
    let fields: Vec<(String, String)> = vec![
        ("clusters".into(), n.to_string()),
        ("members".into(), m.to_string()),
        ("roles".into(), r.to_string()),
        ("converged_s".into(), format!("{:.2}", converged_in.as_secs_f64())),
        ("pods_ready_p50_s".into(), format!("{pods_ready_p50:.2}")),
        (
            "req_per_member".into(),
            format!("{:.2}", create_main as f64 / (n * m) as f64),
        ),
        ("bound".into(), format!("{lb:.2}")),
        (
            "events_per_member".into(),
            format!("{:.2}", create_events as f64 / (n * m) as f64),
        ),
        (
            "execs_per_member".into(),
            format!("{:.2}", execs as f64 / (n * m) as f64),
        ),
        ("idle_requests".into(), other_total.to_string()),
        ("idle_kubesim_cpu_s".into(), format!("{idle_kubesim:.3}")),
        ("kubesim_lags".into(), lags.to_string()),
        (
            "idle_operator_cpu_s".into(),
            format!("{:.3}", idle_cpu.operator - cpu1.operator),
        ),
        (
            "converge_operator_cpu_s".into(),
            format!("{:.2}", cpu1.operator - cpu0.operator),
        ),
        (
            "converge_kubesim_cpu_s".into(),
            format!("{:.2}", cpu1.kubesim - cpu0.kubesim),
        ),
        ("pass_cpu_us".into(), format!("{:.0}", touched.cpu_per_pass_us)),
        (
            "pass_reconcile_us".into(),
            format!("{:.0}", touched.reconcile_mean_us),
        ),
        ("pass_requests".into(), touched.writes.to_string()),
        ("scaleup_s".into(), format!("{:.2}", scaled_in.as_secs_f64())),
        (
            "operator_cpu_s".into(),
            format!("{:.2}", cpu3.operator - start_cpu.operator),
        ),
        (
            "kubesim_cpu_s".into(),
            format!("{:.2}", cpu3.kubesim - start_cpu.kubesim),
        ),
        (
            "operator_rss_mib".into(),
            operator_hwm.map_or_else(String::new, |v| format!("{v:.1}")),
        ),
        (
            "kubesim_rss_mib".into(),
            kubesim_hwm.map_or_else(String::new, |v| format!("{v:.1}")),
        ),
    ];
    Ok(Summary {
        converged_s: converged_in.as_secs_f64(),
        fields,
    })
}
