//! Operator benchmark on kubesim (DESIGN.md section 6): time for N clusters of M members to
//! reach `configured`, the operator's API requests per member by verb and resource (compared with
//! the lower bound 2 + (3+R)/M), requests while idle, requests per member added by a scale-up,
//! and the CPU time and peak memory of the process (operator and kubesim share it).
//!
//! ```text
//! cargo run --release --example bench_operator -- [--clusters N] [--members M] [--roles R]
//! ```
//!
//! kubesim runs with its node side on the *virtual* container runtime (pods are scheduled,
//! started and report container IDs; nothing is executed), the operator runs in-process exactly
//! as `kubedirector run` does (leader election on) and talks to kubesim over HTTP. The
//! benchmark's own client sends a distinct user agent (`kd-bench`) and follows progress by
//! reading kubesim's store in-process, so that only the operator's requests are attributed to
//! it. This program prints numbers; it asserts nothing about them.
//!
//! After the operator's run (and with the operator stopped), a bare client makes the minimal
//! write set of the same clusters against the same kubesim ([`baseline`]): the operator's
//! convergence time is printed as a ratio of that physical limit. The last line is a
//! machine-readable summary, `bench: key=value ...`.

mod baseline;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, Config};
use kubedirector::operator::{run_until, RunOptions};
use kubedirector_crds::{KubeDirectorApp, KubeDirectorCluster};
use kubesim::faults::MetricsSnapshot;
use kubesim::{ResourceKey, Sim, SimConfig};
use serde_json::{json, Value};

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
/// Linux `USER_HZ` (the unit of utime/stime in /proc; 100 on every Linux architecture).
const CLOCK_TICKS: f64 = 100.0;

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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    );
    rt.block_on(sim.shutdown());
    result
}

/// A running operator thread: its stop trigger and its join handle.
type Operator = (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<anyhow::Result<()>>,
);

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
) -> anyhow::Result<()> {
    sim.write_kubeconfig(&kubeconfig)
        .map_err(|e| anyhow!("cannot write the kubeconfig: {e}"))?;
    let client = rt.block_on(install(sim, r, setup_package))?;

    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port for the operator's metrics server")?;
    let start_cpu = cpu_times()?;
    let before_start = sim.metrics().snapshot();
    let operator = start_operator(kubeconfig, metrics_addr)?;
    let ready_in = wait_ready(sim, metrics_addr, &operator)?;
    let startup = operator_rows(&diff(&sim.metrics().snapshot(), &before_start));

    say(&format!(
        "kubedirector-rs operator benchmark: {n} clusters x {m} members, {r} roles \
         (role sizes {:?}); kubesim with {nodes} node(s), virtual container runtime",
        role_sizes(m, r)
    ));
    say(&format!(
        "operator ready (leader, watches synced) in {:.2} s; its start-up requests (not counted below): {}",
        ready_in.as_secs_f64(),
        startup
            .iter()
            .map(|(v, res, c)| format!("{v} {res} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let result = scenario(rt, sim, &client, &operator, n, m, r, start_cpu);

    let (stop, thread) = operator;
    let _ = stop.send(());
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("operator failed: {e:#}"),
        Err(_) => bail!("the operator thread panicked"),
    }
    let mut summary = result?;

    // The physical limit, with the operator stopped.
    let cpu0 = cpu_times()?;
    let bare = baseline::run(rt, sim, n, &role_sizes(m, r), step_timeout(n))?;
    let cpu1 = cpu_times()?;
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
    operator: &Operator,
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
    let cpu0 = cpu_times()?;
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
    let cpu1 = cpu_times()?;

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
        "process CPU during this step: {:.2} s (operator {:.2} s, kubesim {:.2} s)",
        cpu1.total - cpu0.total,
        cpu1.operator - cpu0.operator,
        cpu1.kubesim - cpu0.kubesim
    ));

    // 2. Idle.
    std::thread::sleep(IDLE);
    let idle_end = metrics.snapshot();
    let idle = diff(&idle_end, &after);
    let cpu2 = cpu_times()?;
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
        "process CPU while idle: {:.2} s (operator {:.2} s, kubesim {:.2} s)",
        cpu2.total - cpu1.total,
        cpu2.operator - cpu1.operator,
        cpu2.kubesim - cpu1.kubesim
    ));

    // 3. Scale every cluster's first role up by two members.
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
    let cpu3 = cpu_times()?;
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
        "process CPU during this step: {:.2} s (operator {:.2} s, kubesim {:.2} s)",
        cpu3.total - cpu2.total,
        cpu3.operator - cpu2.operator,
        cpu3.kubesim - cpu2.kubesim
    ));

    // 4. Process totals.
    say("");
    say("== process (operator + kubesim, one process) ==");
    say(&format!(
        "CPU since the operator started: {:.2} s total; by thread: operator {:.2} s, kubesim {:.2} s, \
         this program's main thread and exited threads {:.2} s",
        cpu3.total - start_cpu.total,
        cpu3.operator - start_cpu.operator,
        cpu3.kubesim - start_cpu.kubesim,
        (cpu3.total - cpu3.operator - cpu3.kubesim)
            - (start_cpu.total - start_cpu.operator - start_cpu.kubesim)
    ));
    say(&format!(
        "peak memory (VmHWM, operator + kubesim): {}",
        proc_status("VmHWM").unwrap_or_else(|| "unknown".into())
    ));
    let hwm = proc_status("VmHWM").unwrap_or_else(|| "unknown".into());
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
        "CPU s, operator threads / kubesim threads / process",
        format!(
            "{:.2} / {:.2} / {:.2}",
            cpu3.operator - start_cpu.operator,
            cpu3.kubesim - start_cpu.kubesim,
            cpu3.total - start_cpu.total
        ),
    );
    row("peak memory VmHWM, process (operator + kubesim)", hwm);
    let clients: BTreeMap<String, u64> = after.by_client.iter().map(|(c, v)| (c.clone(), *v)).collect();
    say(&format!(
        "requests by client since kubesim started (user agent up to '/'; '{BENCH_CLIENT}' is this program): {clients:?}"
    ));
    let execs: u64 = operator_rows(&create)
        .iter()
        .filter(|(_, res, _)| res == "pods/exec")
        .map(|(_, _, c)| c)
        .sum();
    let idle_kubesim = cpu2.kubesim - cpu1.kubesim;
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
        (
            "idle_operator_cpu_s".into(),
            format!("{:.3}", cpu2.operator - cpu1.operator),
        ),
        (
            "converge_operator_cpu_s".into(),
            format!("{:.2}", cpu1.operator - cpu0.operator),
        ),
        (
            "converge_kubesim_cpu_s".into(),
            format!("{:.2}", cpu1.kubesim - cpu0.kubesim),
        ),
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
            "peak_rss_mib".into(),
            proc_status("VmHWM")
                .map(|s| s.trim_end_matches(" MiB").to_string())
                .unwrap_or_default(),
        ),
    ];
    Ok(Summary {
        converged_s: converged_in.as_secs_f64(),
        fields,
    })
}

// ---------------------------------------------------------------------------------------------
// Setup.

/// Installs the CRDs, the namespaces and the generated app; returns the benchmark's client.
async fn install(sim: &Sim, roles: usize, setup_package: bool) -> anyhow::Result<Client> {
    let mut config = Config::new(sim.url().parse()?);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&format!("{BENCH_CLIENT}/0.1"))?,
    ));
    let client = Client::try_from(config)?;
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kubedirector_crds::crds()? {
        crd_api.create(&PostParams::default(), &crd).await?;
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in [KD_NS, NS] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        ns_api.create(&PostParams::default(), &obj).await?;
    }
    let apps: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<KubeDirectorApp>(&()));
    let app: DynamicObject = serde_json::from_value(app(roles, setup_package))?;
    apps.create(&PostParams::default(), &app)
        .await
        .context("cannot create the app")?;
    Ok(client)
}

/// An app without a setup package: roles r0..r{R-1} (cardinality 0+), one service with an
/// endpoint port on every role (so every member gets a Service).
fn app(roles: usize, setup_package: bool) -> Value {
    let ids: Vec<String> = (0..roles).map(|i| format!("r{i}")).collect();
    let package = if setup_package {
        json!({"packageURL": format!("file://{}/{}", kubedirector::examples::PACKAGE_DIR, kubedirector::examples::PACKAGES[0].file)})
    } else {
        Value::Null
    };
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": APP, "namespace": NS},
        "spec": {
            "label": {"name": "Benchmark app", "description": "generated"},
            "distroID": "kd-bench/app",
            "version": "1.0",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": "docker.io/library/debian:12-slim",
            "defaultConfigPackage": package,
            "services": [{"id": "ssh", "label": {"name": "SSH"},
                          "endpoint": {"port": 22, "isDashboard": false}}],
            "roles": ids.iter().map(|id| json!({"id": id, "cardinality": "0+"})).collect::<Vec<_>>(),
            "config": {
                "roleServices": ids.iter().map(|id| json!({"roleID": id, "serviceIDs": ["ssh"]})).collect::<Vec<_>>(),
                "selectedRoles": ids
            }
        }
    })
}

/// Members per role: `m` split over `r` roles, the first roles get the remainder.
fn role_sizes(m: usize, r: usize) -> Vec<usize> {
    (0..r).map(|i| m / r + usize::from(i < m % r)).collect()
}

fn roles_spec(sizes: &[usize]) -> Vec<Value> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"id": format!("r{i}"), "members": n,
                   "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                 "limits": {"cpu": "100m", "memory": "64Mi"}}})
        })
        .collect()
}

fn cluster(name: &str, m: usize, r: usize) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        // ClusterIP member Services: NodePorts (upstream's default) run out at 2,768 per
        // cluster (30000-32767), fewer than the members of 1,000 clusters.
        "spec": {"app": APP, "serviceType": "ClusterIP", "roles": roles_spec(&role_sizes(m, r))}
    })
}

/// Starts the operator on its own thread, as `kubedirector run` would run (leader election on).
fn start_operator(kubeconfig: PathBuf, metrics_addr: SocketAddr) -> anyhow::Result<Operator> {
    let mut opts = RunOptions::for_kubeconfig(kubeconfig);
    // Coalesce progress-only status changes, as an operator at scale would be configured.
    opts.status_detail_window_seconds = 5;
    opts.kd_namespace = KD_NS.into();
    opts.metrics_addr = metrics_addr;
    opts.identity = Some("bench".into());
    opts.log_level = "warn".into();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("kd-operator".into())
        .spawn(move || {
            run_until(opts, async move {
                let _ = rx.await;
            })
        })
        .context("cannot start the operator thread")?;
    Ok((tx, handle))
}

/// Waits until the operator holds the lease, its watches are synced (`/readyz`) and its watch
/// of kdclusters is open.
fn wait_ready(sim: &Sim, addr: SocketAddr, operator: &Operator) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        if operator.1.is_finished() {
            bail!("the operator stopped during start-up");
        }
        let watching = sim
            .metrics()
            .snapshot()
            .by_client_verb_resource
            .iter()
            .any(|(k, _)| {
                let mut p = k.splitn(3, ' ');
                let (c, v, res) = (p.next(), p.next(), p.next());
                c != Some(BENCH_CLIENT) && v == Some("watch") && res == Some("kubedirectorclusters")
            });
        if watching && http_status(addr, "/readyz") == Some(200) {
            // Let the remaining watches open.
            std::thread::sleep(Duration::from_millis(500));
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the operator did not become ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Status code of `GET path` on the operator's HTTP server.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Progress.

/// When each cluster got there, measured from the step's start.
#[derive(Debug, Default)]
struct StepTimes {
    /// The cluster is `configured` with every member configured.
    configured: Vec<Duration>,
    /// Every member pod of the cluster is Ready (kubesim's side: scheduler, StatefulSet
    /// controller, kubelet); sampled less often than `configured`.
    pods_ready: Vec<Duration>,
    /// Latencies of `GET /healthz` on kubesim during the step (how long kubesim takes to answer
    /// any HTTP request, watch streams included, while its controllers are busy).
    probe: Vec<Duration>,
}

/// Waits until every cluster is `configured` with `members` members, all configured; returns the
/// time (since `t0`) at which each one first was, and when its pods were all Ready. Reads
/// kubesim's store directly (no API requests).
fn wait_configured(
    sim: &Sim,
    operator: &Operator,
    names: &[String],
    members: usize,
    t0: Instant,
    clusters: usize,
) -> anyhow::Result<StepTimes> {
    let key = ResourceKey::new("kubedirector.hpe.com", "v1beta1", "kubedirectorclusters");
    let pods_key = ResourceKey::core("pods");
    let store = sim.store();
    let mut done: BTreeMap<String, Duration> = BTreeMap::new();
    let mut ready: BTreeMap<String, Duration> = BTreeMap::new();
    let mut probe = Vec::new();
    let mut round = 0u64;
    loop {
        round += 1;
        let now = t0.elapsed();
        // Look at the stored objects in place (copying 1,000 big statuses per round costs CPU).
        let newly = std::cell::RefCell::new(Vec::new());
        store.list_where(&key, Some(NS), |c| {
            if let Some(name) = c["metadata"]["name"].as_str() {
                if !done.contains_key(name) && settled(&c["status"], members) {
                    newly.borrow_mut().push(name.to_string());
                }
            }
            false
        });
        for name in newly.into_inner() {
            done.insert(name, now);
        }
        // Pods are many and big: look at them every fifth round only.
        if round % 5 == 1 {
            let t = Instant::now();
            if http_status(sim.addr(), "/healthz") == Some(200) {
                probe.push(t.elapsed());
            }
        }
        if round % 5 == 1 && ready.len() < names.len() {
            let count: std::cell::RefCell<BTreeMap<String, usize>> = Default::default();
            store.list_where(&pods_key, Some(NS), |p| {
                let Some(cluster) = p["metadata"]["labels"]["kubedirector.hpe.com/kdcluster"].as_str() else {
                    return false;
                };
                let is_ready = p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                if is_ready {
                    *count.borrow_mut().entry(cluster.to_string()).or_default() += 1;
                }
                false
            });
            let count = count.into_inner();
            for (cluster, n) in count {
                if n == members && !ready.contains_key(&cluster) {
                    // Not seen earlier than configured (sampling).
                    let at = done.get(&cluster).map_or(now, |d| (*d).min(now));
                    ready.insert(cluster, at);
                }
            }
        }
        if names.iter().all(|n| done.contains_key(n)) {
            let configured: Vec<Duration> = names.iter().filter_map(|n| done.get(n).copied()).collect();
            let pods_ready = names
                .iter()
                .filter_map(|n| ready.get(n).or_else(|| done.get(n)).copied())
                .collect();
            return Ok(StepTimes {
                configured,
                pods_ready,
                probe,
            });
        }
        if operator.1.is_finished() {
            bail!("the operator stopped");
        }
        if now > step_timeout(clusters) {
            bail!(
                "only {} of {} clusters configured with {members} members after {} s",
                done.len(),
                names.len(),
                step_timeout(clusters).as_secs()
            );
        }
        std::thread::sleep(poll_every(clusters));
    }
}

/// Prints the per-cluster times of a step.
fn report_times(t: &StepTimes) {
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

fn settled(status: &Value, members: usize) -> bool {
    let all: Vec<&Value> = status["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["members"].as_array().into_iter().flatten())
        .collect();
    status["state"] == "configured" && all.len() == members && all.iter().all(|m| m["state"] == "configured")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// Request accounting.

/// `after - before` of the per-client counters (`client verb resource` -> count).
fn diff(after: &MetricsSnapshot, before: &MetricsSnapshot) -> BTreeMap<String, u64> {
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
fn operator_rows(d: &BTreeMap<String, u64>) -> Vec<(String, String, u64)> {
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

fn operator_total(d: &BTreeMap<String, u64>) -> u64 {
    operator_rows(d).iter().map(|(_, _, c)| c).sum()
}

/// Prints the operator's requests by verb and resource, per `members`, with events and leases
/// apart; `bound` = (M, R) adds the comparison with the DESIGN lower bound.
/// Returns (requests without events and leases, events).
fn report_requests(d: &BTreeMap<String, u64>, members: usize, bound: Option<(usize, usize)>) -> (u64, u64) {
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

// ---------------------------------------------------------------------------------------------
// Process statistics.

/// CPU seconds (user + system) of the process and of its live threads by name.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    /// The whole process (all threads, including exited ones).
    total: f64,
    /// Live threads of the operator (`kd-operator`, its runtime's `kubedirector` workers).
    operator: f64,
    /// Live threads of kubesim's runtime (`kubesim` workers; they also carry this program's
    /// small HTTP client work).
    kubesim: f64,
}

/// utime + stime (seconds) and the name of a `/proc/.../stat` file.
fn stat_times(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime); `rest` starts at field 3.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / CLOCK_TICKS))
}

fn cpu_times() -> anyhow::Result<CpuTimes> {
    let (_, total) = stat_times("/proc/self/stat").ok_or_else(|| anyhow!("cannot read /proc/self/stat"))?;
    let mut t = CpuTimes {
        total,
        ..CpuTimes::default()
    };
    for entry in std::fs::read_dir("/proc/self/task")?.flatten() {
        let path = entry.path().join("stat");
        let Some((comm, secs)) = path.to_str().and_then(stat_times) else {
            continue;
        };
        if comm.starts_with("kubedirector") || comm.starts_with("kd-operator") {
            t.operator += secs;
        } else if comm.starts_with("kubesim") {
            t.kubesim += secs;
        }
    }
    Ok(t)
}

/// A line of /proc/self/status (`VmHWM` -> "123456 kB" shown in MiB).
fn proc_status(field: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kb / 1024.0))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
