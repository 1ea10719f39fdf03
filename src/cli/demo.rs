//! `kubedirector demo`: kubesim (API server and simulated nodes), the CRDs, our example catalog and
//! the operator, all in one process; then a scripted scenario on example clusters of `kd-shell`
//! (the app without a setup package): create N clusters, wait until every one is `configured`,
//! scale the first one up by two members and then down by one. Progress is printed as a compact
//! table (like `kubectl get kdcluster`) whenever it changes, plus one line per notable Event.
//!
//! Runs until SIGINT/SIGTERM; with `--duration` it ends as soon as the scenario is complete, or
//! when the duration has elapsed (an error when the scenario did not complete by then).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use kube::{Client, Config};
use kubedirector_crds::{KubeDirectorApp, KubeDirectorCluster};
use serde_json::{json, Value};

/// Our example catalog, embedded so that the binary works from any directory.
const CATALOG: [(&str, &str); 3] = [
    (
        "kd-keyvalue.yaml",
        include_str!("../../deploy/examples/catalog/kd-keyvalue.yaml"),
    ),
    (
        "kd-shell.yaml",
        include_str!("../../deploy/examples/catalog/kd-shell.yaml"),
    ),
    (
        "kd-webstack.yaml",
        include_str!("../../deploy/examples/catalog/kd-webstack.yaml"),
    ),
];

/// The example cluster the demo clusters are made from (an app without a setup package).
const SHELL_CLUSTER: &str = include_str!("../../deploy/examples/clusters/shell.yaml");

/// Namespace of the example apps and clusters: the kubeconfig's default, so that a plain
/// `kubectl get kdcluster` shows them.
const NS: &str = "default";

/// The namespace KubeDirector runs in.
const KD_NS: &str = "kubedirector";

/// How often the demo looks at the clusters and events.
const TICK: Duration = Duration::from_millis(500);

/// Pause between the scenario's steps in interactive runs.
const STEP_PAUSE: Duration = Duration::from_secs(5);

/// Arguments of `kubedirector demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of example clusters to create (shell-demo-1 .. shell-demo-N).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub clusters: u32,
    /// End after this many seconds, or as soon as the scripted scenario is complete, whichever
    /// comes first (for scripted runs). Exit status 0 only when the scenario completed.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Write the kubeconfig to this path and keep it (default: a temporary file, removed on exit).
    #[arg(long, value_name = "PATH")]
    pub keep_kubeconfig: Option<PathBuf>,
}

/// Runs `kubedirector demo`; returns the exit status. Prints to stdout and stderr directly (one
/// short lock per line): the operator and kubesim run on other threads of this process and log
/// through the same streams, so the caller must not hold the stdout/stderr locks.
pub fn run(args: &DemoArgs) -> u8 {
    install_logging();
    match demo(args) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "kubedirector demo: {e}");
            1
        }
    }
}

/// Logs (warnings and errors by default, `RUST_LOG` to change) go to stderr, so that stdout carries
/// only the demo's progress. The operator's own telemetry setup then keeps this subscriber.
fn install_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// One line on stdout (errors writing it are ignored: a closed pipe must not stop the demo).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A running operator thread: its stop trigger and its join handle.
type Operator = (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<anyhow::Result<()>>,
);

fn demo(args: &DemoArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let node = crate::sim::NodeSetup::new(None).map_err(|e| e.to_string())?;
    let config = node.sim_config(kubesim::SimConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        nodes: 3,
        ..kubesim::SimConfig::default()
    });
    let sim = rt
        .block_on(kubesim::Sim::start(config))
        .map_err(|e| format!("cannot start kubesim: {e}"))?;

    // From here on kubesim runs: every path shuts it down before returning.
    let result = with_sim(&rt, &sim, args);
    rt.block_on(sim.shutdown());
    drop(node);
    let ended = result?;
    say("demo: operator and kubesim stopped; shut down cleanly");
    ended
}

/// Everything that needs kubesim running. The outer result is a setup or shutdown failure; the
/// inner one is how the scenario ended (an error when `--duration` elapsed before it completed).
fn with_sim(
    rt: &tokio::runtime::Runtime,
    sim: &kubesim::Sim,
    args: &DemoArgs,
) -> Result<Result<(), String>, String> {
    let temp = match &args.keep_kubeconfig {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("kubedirector-demo-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?,
        ),
    };
    let kubeconfig = match (&args.keep_kubeconfig, &temp) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => dir.path().join("kubeconfig"),
        (None, None) => return Err("no place for the kubeconfig".into()),
    };
    sim.write_kubeconfig(&kubeconfig).map_err(|e| e.to_string())?;
    say(&format!("kubesim listening on {}", sim.url()));
    say(&format!("kubeconfig written to {}", kubeconfig.display()));
    say(&format!(
        "to use kubectl while the demo runs:  export KUBECONFIG={}",
        kubeconfig.display()
    ));

    let client = rt.block_on(install(&kubeconfig, &sim.kubeconfig_yaml()))?;
    let operator = start_operator(&kubeconfig);
    say("demo: operator started");

    let names: Vec<String> = (1..=args.clusters).map(|i| format!("shell-demo-{i}")).collect();
    let handle = &operator.1;
    let ended = rt.block_on(scenario(&client, &names, args.duration, handle));

    say("demo: stopping the operator");
    let (stop, thread) = operator;
    let _ = stop.send(());
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("operator failed: {e:#}")),
        Err(_) => return Err("the operator thread panicked".into()),
    }
    say("demo: stopping kubesim");
    drop(temp);
    Ok(ended)
}

/// Installs the CRDs, the KubeDirector namespace and the example catalog; returns a client.
async fn install(kubeconfig: &Path, yaml: &str) -> Result<Client, String> {
    let kc = Kubeconfig::from_yaml(yaml).map_err(|e| format!("invalid kubeconfig: {e}"))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("invalid kubeconfig {}: {e}", kubeconfig.display()))?;
    let client = Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;

    let crds = kubedirector_crds::crds().map_err(|e| format!("cannot generate the CRDs: {e}"))?;
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crd_api
            .create(&PostParams::default(), &crd)
            .await
            .map_err(|e| format!("cannot create CRD {name}: {e}"))?;
        say(&format!("customresourcedefinition/{name} created"));
    }

    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": KD_NS}}))
        .map_err(|e| format!("namespace object: {e}"))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| format!("cannot create namespace {KD_NS}: {e}"))?;
    say(&format!("namespace/{KD_NS} created"));

    let apps: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<KubeDirectorApp>(&()));
    for (file, text) in CATALOG {
        let app: DynamicObject =
            serde_yaml::from_str(text).map_err(|e| format!("catalog file {file}: {e}"))?;
        let name = app.metadata.name.clone().unwrap_or_default();
        apps.create(&PostParams::default(), &app)
            .await
            .map_err(|e| format!("cannot create kdapp {name} (from {file}): {e}"))?;
        say(&format!("kubedirectorapp/{name} created (namespace {NS})"));
    }
    Ok(client)
}

/// Starts the operator on its own thread (it builds its own runtime and actix System).
fn start_operator(kubeconfig: &Path) -> Operator {
    let mut opts = crate::operator::RunOptions::for_kubeconfig(kubeconfig.to_path_buf());
    opts.kd_namespace = KD_NS.into();
    opts.identity = Some("kubedirector-demo".into());
    opts.log_level = "warn".into();
    // The admission webhook too, at a local URL kubesim calls (no Service to route through).
    if let Ok(addr) = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        opts.webhook = crate::webhook::WebhookOptions {
            enabled: true,
            addr,
            url: Some(format!("https://{addr}/validate")),
            ..crate::webhook::WebhookOptions::default()
        };
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        crate::operator::run_until(opts, async move {
            let _ = rx.await;
        })
    });
    (tx, handle)
}

/// One cluster as the demo shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    state: String,
    configured: usize,
    total: usize,
    any_down: bool,
}

impl Row {
    fn from_status(status: &Value) -> Row {
        let members: Vec<&Value> = status["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["members"].as_array().into_iter().flatten())
            .collect();
        Row {
            state: status["state"].as_str().unwrap_or("").to_string(),
            configured: members.iter().filter(|m| m["state"] == "configured").count(),
            total: members.len(),
            any_down: status["memberStateRollup"]["membersDown"]
                .as_bool()
                .unwrap_or(false),
        }
    }

    /// Configured, with exactly `members` members, all configured.
    fn settled_at(&self, members: usize) -> bool {
        self.state == "configured" && self.total == members && self.configured == members
    }
}

fn table(rows: &BTreeMap<String, Row>) -> String {
    let width = rows.keys().map(String::len).max().unwrap_or(0).max(4) + 2;
    let mut out = format!("{:<width$}{:<16}{:<10}{}", "NAME", "STATE", "MEMBERS", "ANY DOWN");
    for (name, r) in rows {
        let state = if r.state.is_empty() { "<none>" } else { &r.state };
        out.push_str(&format!(
            "\n{:<width$}{:<16}{:<10}{}",
            name,
            state,
            format!("{}/{}", r.configured, r.total),
            r.any_down
        ));
    }
    out
}

/// Where the scripted scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for every cluster to be configured.
    Creating,
    /// Waiting for the first cluster to be configured at `n` members after scaling up.
    ScalingUp(usize),
    /// Waiting for the first cluster to be configured at `n` members after scaling down.
    ScalingDown(usize),
    /// Done; the demo keeps running until interrupted (or ends, with `--duration`).
    Complete,
}

/// Watches clusters and events and drives the scenario, until a signal, the operator's end, the
/// deadline, or (with a deadline) the scenario's completion.
async fn scenario(
    client: &Client,
    names: &[String],
    duration: Option<u64>,
    operator: &std::thread::JoinHandle<anyhow::Result<()>>,
) -> Result<(), String> {
    let start = tokio::time::Instant::now();
    let deadline = duration.map(|s| start + Duration::from_secs(s));
    let mut signal = std::pin::pin!(crate::signals::shutdown_signal());

    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::erase::<KubeDirectorCluster>(&()),
    );
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let template: Value =
        serde_yaml::from_str(SHELL_CLUSTER).map_err(|e| format!("example cluster shell.yaml: {e}"))?;
    let initial = template["spec"]["roles"][0]["members"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("example cluster shell.yaml: no member count in its first role")?;
    for name in names {
        let mut obj = template.clone();
        obj["metadata"]["name"] = json!(name);
        let obj: DynamicObject =
            serde_json::from_value(obj).map_err(|e| format!("example cluster shell.yaml: {e}"))?;
        clusters
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("cannot create kdcluster {name}: {e}"))?;
        say(&format!(
            "demo: created kdcluster {name} ({initial} members of kd-shell)"
        ));
    }
    let first = names.first().ok_or("no clusters to create")?;

    // Interactive runs pause between steps so that each state can be seen (and inspected with
    // kubectl); scripted runs (`--duration`) go straight on.
    let pause = if deadline.is_some() {
        Duration::ZERO
    } else {
        STEP_PAUSE
    };
    let mut settled_since: Option<tokio::time::Instant> = None;
    let mut stage = Stage::Creating;
    let mut shown: BTreeMap<String, Row> = BTreeMap::new();
    let mut configured_once: HashSet<String> = HashSet::new();
    let mut seen_events: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Signal first, then the deadline: a step is never started once either is due.
            biased;
            () = &mut signal => {
                say("demo: interrupted; shutting down");
                return Ok(());
            }
            () = until_deadline => {
                return Err(format!(
                    "the scenario did not complete within {} s (stage: {stage:?})",
                    duration.unwrap_or(0)
                ));
            }
            _ = tick.tick() => {}
        }
        if operator.is_finished() {
            return Err("the operator stopped unexpectedly".into());
        }
        let elapsed = start.elapsed().as_secs();

        // The table, when it changed.
        let list = clusters
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list kdclusters: {e}"))?;
        let rows: BTreeMap<String, Row> = list
            .items
            .iter()
            .filter_map(|c| {
                let name = c.metadata.name.clone()?;
                Some((name, Row::from_status(&c.data["status"])))
            })
            .collect();
        if rows != shown {
            say(&format!("--- t+{elapsed}s"));
            say(&table(&rows));
            shown = rows;
        }

        // Notable events: everything about kdclusters, and every warning.
        let mut evs = events
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list events: {e}"))?
            .items;
        // Creation order: timestamps have one-second precision; resource versions break ties.
        let order = |e: &Event| {
            let rv = e.metadata.resource_version.as_deref().unwrap_or("");
            (
                e.metadata.creation_timestamp.clone(),
                rv.parse::<u64>().unwrap_or(0),
            )
        };
        evs.sort_by_key(order);
        for ev in evs {
            let kind = ev.involved_object.kind.as_deref().unwrap_or("");
            let warning = ev.type_.as_deref() == Some("Warning");
            if kind != "KubeDirectorCluster" && !warning {
                continue;
            }
            let id = ev
                .metadata
                .uid
                .clone()
                .or_else(|| ev.metadata.name.clone())
                .unwrap_or_default();
            if !seen_events.insert(id) {
                continue;
            }
            say(&format!(
                "event {}/{}: {} {}: {}",
                kind.to_lowercase(),
                ev.involved_object.name.as_deref().unwrap_or(""),
                ev.type_.as_deref().unwrap_or("Normal"),
                ev.reason.as_deref().unwrap_or(""),
                ev.message.as_deref().unwrap_or("").trim()
            ));
        }

        for (name, row) in &shown {
            if row.state == "configured" && configured_once.insert(name.clone()) {
                say(&format!(
                    "demo: {name} is configured ({}/{} members)",
                    row.configured, row.total
                ));
            }
        }

        // The scripted steps: each one starts `pause` after the previous one settled.
        let settled = |name: &str, n: usize| shown.get(name).is_some_and(|r| r.settled_at(n));
        let now = tokio::time::Instant::now();
        let done = match stage {
            Stage::Creating => names.iter().all(|n| settled(n, initial)),
            Stage::ScalingUp(n) | Stage::ScalingDown(n) => settled(first, n),
            Stage::Complete => false,
        };
        settled_since = if done { settled_since.or(Some(now)) } else { None };
        let due = settled_since.is_some_and(|t| now >= t + pause);
        if settled_since == Some(now) && stage != Stage::Complete {
            report_settled(stage, first, names.len());
        }
        if !due {
            continue;
        }
        settled_since = None;
        match stage {
            Stage::Creating => {
                let to = initial + 2;
                say(&format!(
                    "demo: scaling {first} up by 2 members ({initial} -> {to})"
                ));
                scale(&clusters, first, to).await?;
                stage = Stage::ScalingUp(to);
            }
            Stage::ScalingUp(n) => {
                let to = n - 1;
                say(&format!("demo: scaling {first} down by 1 member ({n} -> {to})"));
                scale(&clusters, first, to).await?;
                stage = Stage::ScalingDown(to);
            }
            Stage::ScalingDown(_) => {
                stage = Stage::Complete;
                if deadline.is_some() {
                    say("demo: scenario complete; shutting down");
                    return Ok(());
                }
                say("demo: scenario complete; everything keeps running (Ctrl-C to stop)");
            }
            Stage::Complete => {}
        }
    }
}

/// The line announcing that a step of the scenario settled.
fn report_settled(stage: Stage, first: &str, clusters: usize) {
    match stage {
        Stage::Creating => say(&format!(
            "demo: all clusters configured ({clusters} of {clusters})"
        )),
        Stage::ScalingUp(n) => {
            say(&format!(
                "demo: scale-up done: {first} is configured with {n} members"
            ));
        }
        Stage::ScalingDown(n) => {
            say(&format!(
                "demo: scale-down done: {first} is configured with {n} members"
            ));
        }
        Stage::Complete => {}
    }
}

/// Sets the member count of the cluster's first role (merge patch of the whole roles list, the
/// other fields as they are).
async fn scale(clusters: &Api<DynamicObject>, name: &str, members: usize) -> Result<(), String> {
    let current = clusters
        .get(name)
        .await
        .map_err(|e| format!("cannot read kdcluster {name}: {e}"))?;
    let mut roles = current.data["spec"]["roles"].clone();
    match roles.get_mut(0) {
        Some(role) => role["members"] = json!(members),
        None => return Err(format!("kdcluster {name} has no roles")),
    }
    clusters
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"roles": roles}})),
        )
        .await
        .map_err(|e| format!("cannot scale kdcluster {name}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_examples_parse_and_the_shell_cluster_has_members() {
        for (file, text) in CATALOG {
            let app: Result<DynamicObject, _> = serde_yaml::from_str(text);
            assert!(app.is_ok(), "{file}");
        }
        let c: Value = serde_yaml::from_str(SHELL_CLUSTER).unwrap();
        assert_eq!(c["spec"]["app"], "kd-shell");
        assert!(c["spec"]["roles"][0]["members"].as_u64().is_some());
    }

    #[test]
    fn rows_count_configured_members_and_the_table_lines_up() {
        let status = json!({
            "state": "updating",
            "memberStateRollup": {"membersDown": false},
            "roles": [{"id": "shell", "members": [
                {"state": "configured"}, {"state": "configured"}, {"state": "create pending"}
            ]}]
        });
        let row = Row::from_status(&status);
        assert_eq!((row.configured, row.total), (2, 3));
        assert!(!row.settled_at(3));
        let rows = BTreeMap::from([("shell-demo-1".to_string(), row)]);
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains("updating") && lines[1].contains("2/3"));
        let empty = Row::from_status(&Value::Null);
        assert_eq!(empty.total, 0);
        assert!(table(&BTreeMap::from([("x".to_string(), empty)])).contains("<none>"));
    }
}
