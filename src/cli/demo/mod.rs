//! `kubedirector demo`: kubesim (API server and simulated nodes), the CRDs, our example catalog and
//! the operator, all in one process; then a scripted scenario ([`scenario`]): `shell-demo-N`
//! clusters of `kd-shell` (no setup package) and one `webstack-demo` cluster of `kd-webstack`
//! (setup package: configmeta, startscript `--configure`), all waited for until `configured`; then
//! `webstack-demo` is scaled out by one worker (the other members get `--addnodes`) and back in
//! (`--delnodes`). Progress: live progress bars redrawn in place on a terminal, the plain cluster
//! table and event lines otherwise ([`view`]).
//!
//! Runs until SIGINT/SIGTERM; with `--exit-when-configured` (or `--duration`) it ends as soon as the
//! scenario is complete (exit 0), on the first member in `config error`, or at the timeout (exit 1,
//! with the reason).

mod preflight;
mod scenario;
mod view;

use std::io::Write;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use kube::{Client, Config};
use kubedirector_crds::KubeDirectorApp;
use serde_json::json;

/// Our example catalog, embedded so that the binary works from any directory.
const CATALOG: [(&str, &str); 3] = [
    (
        "kd-keyvalue.yaml",
        include_str!("../../../deploy/examples/catalog/kd-keyvalue.yaml"),
    ),
    (
        "kd-shell.yaml",
        include_str!("../../../deploy/examples/catalog/kd-shell.yaml"),
    ),
    (
        "kd-webstack.yaml",
        include_str!("../../../deploy/examples/catalog/kd-webstack.yaml"),
    ),
];

/// The example cluster the `shell-demo-N` clusters are made from (an app without a setup package).
const SHELL_CLUSTER: &str = include_str!("../../../deploy/examples/clusters/shell.yaml");

/// The example cluster with a setup package the demo creates once, as `webstack-demo`, and scales.
const WEBSTACK_CLUSTER: &str = include_str!("../../../deploy/examples/clusters/webstack.yaml");

/// Namespace of the example apps and clusters: the kubeconfig's default, so that a plain
/// `kubectl get kdcluster` shows them.
const NS: &str = "default";

/// The namespace KubeDirector runs in.
const KD_NS: &str = "kubedirector";

/// Arguments of `kubedirector demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of kd-shell example clusters to create (shell-demo-1 .. shell-demo-N), besides the
    /// one kd-webstack cluster (webstack-demo).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub clusters: u32,
    /// Exit 0 as soon as the scenario is complete and every cluster is configured; exit 1 with the
    /// reason (cluster, state, last config error) when a member fails its configuration or at
    /// `--timeout`.
    #[arg(long)]
    pub exit_when_configured: bool,
    /// With `--exit-when-configured`: give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
    /// Same as `--exit-when-configured --timeout SECONDS` (kept for scripts).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Write the kubeconfig to this path and keep it (default: a temporary file, removed on exit).
    #[arg(long, value_name = "PATH")]
    pub keep_kubeconfig: Option<PathBuf>,
}

impl DemoArgs {
    /// The scripted run's time limit, if this is a scripted run.
    fn deadline_secs(&self) -> Option<u64> {
        self.duration
            .or(self.exit_when_configured.then_some(self.timeout))
    }
}

/// Runs `kubedirector demo`; returns the exit status. Prints to stdout and stderr directly (one
/// short lock per line): the operator and kubesim run on other threads of this process and log
/// through the same streams, so the caller must not hold the stdout/stderr locks.
pub fn run(args: &DemoArgs) -> u8 {
    let log_file = install_logging();
    if let Some(path) = &log_file {
        say(&format!(
            "operator and kubesim logs: {} (kept off the terminal, which shows the progress)",
            path.display()
        ));
    }
    match demo(args) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "kubedirector demo: {e}");
            1
        }
    }
}

/// Logs (warnings and errors by default, `RUST_LOG` to change) go to stderr, so that stdout carries
/// only the demo's progress; when stdout and stderr are both the terminal, they go to a file
/// instead (its path is returned), so that they never break the progress display. The operator's
/// own telemetry setup then keeps this subscriber.
fn install_logging() -> Option<PathBuf> {
    use std::io::IsTerminal;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
        let file = tempfile::Builder::new()
            .prefix("kubedirector-demo-")
            .suffix(".log")
            .tempfile()
            .ok()
            .and_then(|f| f.keep().ok());
        if let Some((file, path)) = file {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .try_init();
            return Some(path);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    None
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
    preflight::ensure_bubblewrap(&say)?;
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
/// inner one is how the scenario ended (an error when a scripted run failed or timed out).
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
    for hint in [
        "  kubectl get kdcluster                 # KDApp, State, Any Down, Any ConfigError",
        "  kubectl get pods -o wide              # the members' pods on the simulated nodes",
        "  kubectl kd status webstack-demo       # roles, members, notifications (plugin: kubedirector install-plugin)",
        "  kubectl kd logs webstack-demo <pod>   # a member's startscript output",
    ] {
        say(hint);
    }

    let client = rt.block_on(install(&kubeconfig, &sim.kubeconfig_yaml()))?;
    let operator = start_operator(&kubeconfig);
    say("demo: operator started");

    let clusters = scenario::clusters(args.clusters)?;
    let handle = &operator.1;
    let ended = rt.block_on(scenario::run(&client, &clusters, args.deadline_secs(), handle));

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_the_deadline_comes_from_either_flag() {
        for (file, text) in CATALOG {
            let app: Result<DynamicObject, _> = serde_yaml::from_str(text);
            assert!(app.is_ok(), "{file}");
        }
        let args = |a: &[&str]| {
            #[derive(clap::Parser)]
            struct P {
                #[command(flatten)]
                d: DemoArgs,
            }
            <P as clap::Parser>::try_parse_from([&["demo"], a].concat())
                .unwrap()
                .d
        };
        assert_eq!(args(&[]).deadline_secs(), None);
        assert_eq!(args(&["--exit-when-configured"]).deadline_secs(), Some(600));
        assert_eq!(
            args(&["--exit-when-configured", "--timeout", "90"]).deadline_secs(),
            Some(90)
        );
        assert_eq!(args(&["--duration", "5"]).deadline_secs(), Some(5));
    }
}
