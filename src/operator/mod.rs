//! `kubedirector run`: the operator.
//!
//! [`run`] is synchronous and self-contained: it builds a multi-thread tokio runtime, starts
//! the actix System on it (ACTIX.md 6.1), creates the kube clients inside that runtime (a plain
//! one for the start checks, the leader Lease and the webhook; one fenced by the Lease for the
//! actors and their watches, see [`fence`]), checks that the API server is reachable and the
//! CRDs are installed, starts the actor topology (through
//! `kubedirector_actors::handle::ActorSystem`), the watch streams and the metrics/health HTTP
//! server, and runs until SIGTERM/SIGINT. Call it from a plain (non-async) `main`; calling it
//! from inside a tokio runtime is reported as an error.
//!
//! Waits and stalls (issue 12). The start checks do not wait: an API server that refuses
//! connections or does not answer within `--wait-log-interval` (30 s), or missing CRDs, end the
//! process with one line naming the cause and exit status 1, so the pod shows CrashLoopBackOff
//! with that line as its last log (what a platform team sees first) and the kubelet retries
//! with backoff (CRDs applied after the operator are picked up by the next start). The waits
//! that are part of normal operation (the Lease held by another replica, the Lease not
//! writable: namespace missing, RBAC, API errors) log their reason at once and again at least
//! every `--wait-log-interval`, and `/readyz` gives it. A leader that cannot renew within the
//! renew deadline (API server gone, paused process) stops writing at once and exits 1.
//!
//! Shutdown order (ACTIX.md 6.11): stop the watch intake, stop the actors (cluster actors
//! finish with the watcher), stop the HTTP server, stop the System.

pub mod event_fold;
pub mod fence;
pub mod guest_exec;
mod http;
pub mod kube_ports;
pub mod leader;
pub mod lean_pod;
pub mod rest_metrics;
pub mod values;
pub mod watch;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{anyhow, Context as _};
use kube::{
    api::{Api, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};
use kubedirector_actors::{
    cluster::ClusterSettings,
    handle::{run_on_system, ActorSystem},
    metrics::MetricEvent,
    ports::{Ports, SystemClock},
};
use kubedirector_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig};

use crate::telemetry::{self, LogFormat};

/// Options of `kubedirector run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Path to a kubeconfig file. Without it the configuration is inferred like kubectl does
    /// (`KUBECONFIG`, `~/.kube/config`, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace to watch for KubeDirectorClusters (repeatable). Default: all namespaces.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// The namespace KubeDirector runs in: the `system` app catalog and `kd-global-config`.
    #[arg(long, env = "MY_NAMESPACE", default_value = "kubedirector")]
    pub kd_namespace: String,
    /// Name of the operator (event source component).
    #[arg(long, env = "OPERATOR_NAME", default_value = "kubedirector")]
    pub operator_name: String,
    /// Address of the metrics and health server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, default_value = "0.0.0.0:8383")]
    pub metrics_addr: SocketAddr,
    /// Address of the admin server (`PUT /log-level`); must be a loopback address, so only a
    /// process inside the operator's pod (`kubectl exec`, `kubectl port-forward`) can use it.
    #[arg(long, default_value = "127.0.0.1:8384")]
    pub admin_addr: SocketAddr,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter directives (`RUST_LOG` takes precedence).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Safety resync period per cluster, in seconds (everything else is event-driven).
    #[arg(long, default_value_t = 600)]
    pub resync_seconds: u64,
    /// Take the leader Lease before reconciling (two replicas are then safe).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader Lease in the KubeDirector namespace.
    #[arg(long, default_value = "kubedirector-lock")]
    pub leader_election_id: String,
    /// Identity of this replica in the leader Lease (default: `$POD_NAME` or the host name, plus
    /// a random suffix). Also sent in the User-Agent (`kubedirector/VERSION (IDENTITY)`).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a leader Lease lasts without renewal before another replica may take it
    /// (client-go's LeaseDuration; `15s`, `1500ms`, `1m`).
    #[arg(long, default_value = "15s", value_parser = values::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops every write and exits; kept
    /// below the lease duration (client-go's RenewDeadline).
    #[arg(long, default_value = "10s", value_parser = values::parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Interval between lease acquisition and renewal attempts (client-go's RetryPeriod).
    #[arg(long, default_value = "2s", value_parser = values::parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// How often a wait that can last (the leader Lease, the API server) repeats its log line;
    /// at most 30 s.
    #[arg(long, default_value = "30s", value_parser = values::parse_duration)]
    pub wait_log_interval: Duration,
    /// The configcli tarball copied into members during their setup (spec 4.4 step 8); when the
    /// file is absent, members are set up without configcli and a Warning event says so.
    #[arg(long, default_value = kubedirector_actors::plan::config::script::DEFAULT_CONFIGCLI_TARBALL)]
    pub configcli_tarball: PathBuf,
    /// How long one setup exec waits in a member for `startscript --configure` to finish before
    /// polling again, in seconds.
    #[arg(long, default_value_t = 30)]
    pub configure_wait_seconds: u64,
    /// How much longer than `--configure-wait-seconds` one exec into a member may take before it
    /// is abandoned and retried (a hung exec, an unresponsive node), in seconds.
    #[arg(long, default_value_t = 60)]
    pub exec_timeout_seconds: u64,
    /// How long a cluster status change that only moves observation details (container
    /// states, the rollup, progress of some members while others still start) is held back to
    /// be written with the next real change, in seconds (0, the default: written at once).
    /// A few seconds save status writes at scale (the benchmark uses 5) at the price of
    /// scheduling messages and the member rollup showing up that much later; state changes are
    /// never held.
    #[arg(long, default_value_t = 0)]
    pub status_detail_window_seconds: u64,
    /// Server-side timeout of every watch request, in seconds: the API server ends each watch
    /// after it and the operator resumes from the last resourceVersion (no relist). The client
    /// also gives up on a watch that delivered nothing, not even a bookmark, for this long plus
    /// 5 s (a stalled or half-open connection) and re-watches, so a stall is noticed within
    /// that bound. Bookmarks come about once a minute from a real API server: keep it above 60.
    #[arg(long, default_value_t = watch::DEFAULT_WATCH_TIMEOUT_SECONDS)]
    pub watch_timeout_seconds: u32,
    /// The admission webhook.
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookOptions,
}

impl RunOptions {
    /// Options with every default, talking to the cluster of `kubeconfig` (tests, demo).
    pub fn for_kubeconfig(kubeconfig: PathBuf) -> Self {
        Self {
            kubeconfig: Some(kubeconfig),
            namespaces: Vec::new(),
            kd_namespace: "kubedirector".into(),
            operator_name: "kubedirector".into(),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            resync_seconds: 600,
            leader_elect: true,
            leader_election_id: "kubedirector-lock".into(),
            identity: None,
            leader_elect_lease_duration: Duration::from_secs(15),
            leader_elect_renew_deadline: Duration::from_secs(10),
            leader_elect_retry_period: Duration::from_secs(2),
            wait_log_interval: leader::WAIT_LOG_INTERVAL,
            configcli_tarball: PathBuf::from(
                kubedirector_actors::plan::config::script::DEFAULT_CONFIGCLI_TARBALL,
            ),
            configure_wait_seconds: 30,
            exec_timeout_seconds: 60,
            status_detail_window_seconds: 0,
            watch_timeout_seconds: watch::DEFAULT_WATCH_TIMEOUT_SECONDS,
            webhook: crate::webhook::WebhookOptions::default(),
        }
    }
}

/// Runs the operator until SIGTERM or SIGINT. Installs a panic hook that logs and exits the
/// process (actix does not supervise panics; the kubelet restarts the pod, ACTIX.md 6.7).
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    install_panic_hook();
    run_until(opts, shutdown_signal())
}

fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic; exiting so that the operator is restarted");
        default(info);
        std::process::exit(70);
    }));
}

/// Runs the operator until `shutdown` completes (tests and the demo use their own trigger).
pub fn run_until<F>(opts: RunOptions, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(anyhow!(
            "kubedirector: run() must be called outside of a tokio runtime (it builds its own)"
        ));
    }
    let log_level =
        telemetry::init(opts.log_format, &opts.log_level).map_err(|e| anyhow!("kubedirector: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kubedirector")
        .build()
        .context("kubedirector: cannot start the async runtime")?;
    run_on_system(rt, operate(opts, log_level, shutdown))
}

async fn client_config(opts: &RunOptions) -> anyhow::Result<Config> {
    match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| anyhow!("kubedirector: cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow!("kubedirector: invalid kubeconfig {}: {e}", path.display()))
        }
        None => Config::infer()
            .await
            .map_err(|e| anyhow!("kubedirector: no Kubernetes client configuration found: {e}")),
    }
}

/// Checks reachability and the CRDs, with one clear line per problem.
async fn preflight(client: &Client, url: &str, kd_namespace: &str) -> anyhow::Result<()> {
    client
        .apiserver_version()
        .await
        .map_err(|e| anyhow!("kubedirector: cannot reach the Kubernetes API server at {url}: {e}"))?;
    let lp = ListParams::default().limit(1);
    let missing = |crd: &str| {
        anyhow!("kubedirector: CRD {crd} not installed; run 'kubedirector crds | kubectl apply -f -'")
    };
    let check = |res: Result<(), kube::Error>, crd: &str| match res {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(missing(crd)),
        Err(e) => Err(anyhow!("kubedirector: cannot list {crd}: {e}")),
    };
    check(
        Api::<KubeDirectorCluster>::all(client.clone())
            .list_metadata(&lp)
            .await
            .map(|_| ()),
        "kubedirectorclusters.kubedirector.hpe.com",
    )?;
    check(
        Api::<KubeDirectorApp>::all(client.clone())
            .list_metadata(&lp)
            .await
            .map(|_| ()),
        "kubedirectorapps.kubedirector.hpe.com",
    )?;
    check(
        Api::<KubeDirectorConfig>::namespaced(client.clone(), kd_namespace)
            .list_metadata(&lp)
            .await
            .map(|_| ()),
        "kubedirectorconfigs.kubedirector.hpe.com",
    )?;
    Ok(())
}

async fn operate<F>(opts: RunOptions, log_level: telemetry::LogLevel, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + 'static,
{
    let mut config = client_config(&opts).await?;
    let identity = {
        let base = opts
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "kubedirector".into());
        format!("{base}_{}", uuid::Uuid::new_v4().simple())
    };
    // Identify ourselves to the API server (audit logs, request accounting), as kubectl does.
    config
        .headers
        .push((::http::header::USER_AGENT, values::user_agent(&identity)));
    if !opts.admin_addr.ip().is_loopback() {
        return Err(anyhow!(
            "kubedirector: --admin-addr {} is not a loopback address; the admin server (PUT /log-level) must only be reachable from inside the pod",
            opts.admin_addr
        ));
    }
    let url = config.cluster_url.to_string();
    let rest_sink = rest_metrics::MetricsSink::default();
    let client = kube::client::ClientBuilder::try_from(config.clone())
        .map_err(|e| anyhow!("kubedirector: cannot build a Kubernetes client for {url}: {e}"))?
        .with_layer(&rest_metrics::RestMetricsLayer::new(rest_sink.clone()))
        .build();
    let waiting = leader::WaitReason::default();
    let elector = opts.leader_elect.then(|| {
        leader::LeaderElector::new(
            client.clone(),
            &opts.kd_namespace,
            &opts.leader_election_id,
            &identity,
        )
        .with_timing(
            opts.leader_elect_lease_duration,
            opts.leader_elect_renew_deadline,
            opts.leader_elect_retry_period,
        )
        .with_wait_log_interval(opts.wait_log_interval)
        .with_wait_reason(waiting.clone())
    });
    // The actors (and the watches feeding them) write through a client fenced by the lease:
    // once leadership cannot be proven, their writes are refused before they leave. The elector
    // and the webhook (every replica serves it) use the plain client.
    let guard = elector
        .as_ref()
        .map_or_else(fence::LeaseGuard::unfenced, leader::LeaderElector::guard);
    let leader_client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| anyhow!("kubedirector: cannot build a Kubernetes client for {url}: {e}"))?
        .with_layer(&rest_metrics::RestMetricsLayer::new(rest_sink.clone()))
        .with_layer(&fence::FenceLayer::new(guard))
        .build();
    // Shutdown wins over every wait on the API server (SIGTERM ends the process in bounded time).
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        // Shutdown first: its first poll installs the signal handlers before any request.
        biased;
        () = &mut shutdown => {
            tracing::info!("shut down during the preflight checks");
            return Ok(());
        }
        // No silent stall: an API server that does not answer ends the start with a clear line
        // (exit non-zero, as for missing CRDs: the kubelet restarts the pod with backoff).
        r = tokio::time::timeout(opts.wait_log_interval, preflight(&client, &url, &opts.kd_namespace)) => {
            r.map_err(|_| anyhow!(
                "kubedirector: the Kubernetes API server at {url} did not answer within {:?}",
                opts.wait_log_interval
            ))??
        }
    }

    let ports = Ports {
        api: Arc::new(kube_ports::KubeClusterApi::new(leader_client.clone())),
        events: Arc::new(kube_ports::KubeEventRecorder::new(
            leader_client.clone(),
            &opts.operator_name,
        )),
        clock: Arc::new(SystemClock),
        exec: Some(Arc::new(guest_exec::KubeGuestExec::new(leader_client.clone()))),
    };
    let mut settings = ClusterSettings::new(opts.kd_namespace.clone());
    settings.resync = Duration::from_secs(opts.resync_seconds.max(1));
    settings.jobs.configure_wait = Duration::from_secs(opts.configure_wait_seconds);
    settings.jobs.exec_timeout = Duration::from_secs(opts.exec_timeout_seconds.max(1));
    settings.status_detail_window = Duration::from_secs(opts.status_detail_window_seconds);
    settings.jobs.configcli = match std::fs::read(&opts.configcli_tarball) {
        Ok(bytes) => Some(Arc::new(bytes)),
        Err(e) => {
            tracing::warn!(path = %opts.configcli_tarball.display(), error = %e,
                "no configcli tarball: members are set up without configcli");
            None
        }
    };
    (settings.watch_scopes, settings.app_scopes) = watch::scope_counts(&opts.namespaces, &opts.kd_namespace);
    let actors = ActorSystem::start(ports, settings, prometheus::Registry::new())
        .map_err(|e| anyhow!("kubedirector: cannot set up metrics: {e}"))?;
    let metrics = actors.metrics();
    rest_sink.connect(metrics.clone());
    let leader_metric = |leader: bool| {
        metrics.send(MetricEvent::Leader {
            name: opts.leader_election_id.clone(),
            leader,
        });
    };
    // Without leader election this replica reconciles unconditionally: it is the leader.
    leader_metric(!opts.leader_elect);

    let listener = http::bind(opts.metrics_addr)
        .await
        .map_err(|e| anyhow!("kubedirector: cannot listen on {}: {e}", opts.metrics_addr))?;
    let local = listener.local_addr().ok();
    let sync = watch::SyncState::default();
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin_listener = http::bind(opts.admin_addr)
        .await
        .map_err(|e| anyhow!("kubedirector: cannot listen on {}: {e}", opts.admin_addr))?;
    let admin_local = admin_listener.local_addr().ok();
    let app = http::router(http::HttpState {
        actors: actors.clone(),
        sync: sync.clone(),
        waiting: waiting.clone(),
    });
    let admin = http::admin_router(log_level);
    let server = tokio::spawn(async move {
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(async move {
            axum::serve(admin_listener, admin)
                .with_graceful_shutdown(async move {
                    let _ = admin_stop_rx.await;
                })
                .await
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop_rx.await;
            })
            .await;
        let _ = admin_stop_tx.send(());
        match admin.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "admin server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "admin server task failed"),
            Ok(Ok(())) => {}
        }
        served
    });

    // Every replica serves the webhook, leader or not (spec 2.1); only the leader reconciles.
    let webhook = if opts.webhook.enabled {
        let live_sync = sync.clone();
        let started = crate::webhook::start(
            &opts.webhook,
            client.clone(),
            &opts.kd_namespace,
            actors.caches(),
            Arc::new(move || live_sync.live()),
            Some(metrics.clone()),
        );
        tokio::select! {
            w = started => Some(w?),
            () = &mut shutdown => {
                tracing::info!("shut down while starting the webhook");
                return stop(actors, http_stop_tx, server, None, None).await;
            }
        }
    } else {
        None
    };
    if let Some(e) = &elector {
        tokio::select! {
            () = e.acquire() => leader_metric(true),
            () = &mut shutdown => {
                tracing::info!("shut down before becoming leader");
                return stop(actors, http_stop_tx, server, None, webhook).await;
            }
        }
    }

    let tasks = watch::spawn_all(
        &leader_client,
        &opts.namespaces,
        &opts.kd_namespace,
        opts.watch_timeout_seconds,
        &actors,
        &sync,
    );
    tracing::info!(api_server = %url, metrics = ?local, admin = ?admin_local, namespaces = ?opts.namespaces,
        kd_namespace = %opts.kd_namespace, "kubedirector operator started");

    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        err = lost => {
            leader_metric(false);
            Err(anyhow!("kubedirector: {err}"))
        }
    };
    tracing::info!("shutting down");
    for t in &tasks {
        t.abort();
    }
    stop(actors, http_stop_tx, server, elector, webhook).await?;
    result
}

/// The most a shutdown waits on the API server and on in-flight work, all steps together, so
/// that SIGTERM ends the process within 10 s whatever the API server does.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(8);

/// Shutdown order (ACTIX.md 6.11): watch intake is already stopped; stop the actors, drain the
/// status writer, give up the lease, stop the HTTP server, stop the System. Each step is bounded
/// (together [`SHUTDOWN_BUDGET`]); a step that runs out of time is abandoned with a warning.
async fn stop(
    actors: ActorSystem,
    http_stop_tx: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    elector: Option<leader::LeaderElector>,
    webhook: Option<crate::webhook::Webhook>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
    let step = |share: u32| {
        // Leave at least `share`/8 of the budget for this step and those after it.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        left.saturating_sub(SHUTDOWN_BUDGET * share / 8)
    };
    if tokio::time::timeout(step(3), actors.shutdown()).await.is_err() {
        tracing::warn!("actors did not drain in time; stopping anyway");
    }
    if let Some(e) = elector {
        if tokio::time::timeout(step(2), e.release()).await.is_err() {
            tracing::warn!("could not release the leader lease in time; it will expire");
        }
    }
    if let Some(w) = webhook {
        if tokio::time::timeout(step(1), w.stop()).await.is_err() {
            tracing::warn!("webhook server did not stop in time");
        }
    }
    let _ = http_stop_tx.send(());
    match tokio::time::timeout(step(0), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics server ended with an error"),
        Ok(_) => {}
        Err(_) => tracing::warn!("metrics server did not stop in time"),
    }
    actors.stop_system();
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunOptions,
    }

    #[test]
    fn run_options_have_the_documented_defaults_and_repeatable_namespaces() {
        let cli = Cli::try_parse_from(["kubedirector"]).unwrap();
        assert!(cli.run.namespaces.is_empty(), "default: all namespaces");
        assert_eq!(cli.run.metrics_addr, "0.0.0.0:8383".parse().unwrap());
        assert_eq!(cli.run.log_format, LogFormat::Text);
        assert!(cli.run.leader_elect);
        assert_eq!(cli.run.leader_election_id, "kubedirector-lock");
        if std::env::var("MY_NAMESPACE").is_err() {
            assert_eq!(cli.run.kd_namespace, "kubedirector");
        }
        let cli = Cli::try_parse_from([
            "kubedirector",
            "--namespace",
            "a",
            "--namespace",
            "b",
            "--log-format",
            "json",
            "--leader-elect",
            "false",
            "--kubeconfig",
            "/tmp/kc",
        ])
        .unwrap();
        assert_eq!(cli.run.namespaces, vec!["a", "b"]);
        assert_eq!(cli.run.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(cli.run.leader_elect_renew_deadline, Duration::from_secs(10));
        assert_eq!(cli.run.leader_elect_retry_period, Duration::from_secs(2));
        assert_eq!(cli.run.wait_log_interval, Duration::from_secs(30));
        assert_eq!(cli.run.log_format, LogFormat::Json);
        assert!(!cli.run.leader_elect);
        assert_eq!(cli.run.kubeconfig, Some(PathBuf::from("/tmp/kc")));
    }
}
