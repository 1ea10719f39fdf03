//! kubesim: an embedded Kubernetes API server with a simulated control plane.
//!
//! It serves the real Kubernetes HTTP API on loopback so that unmodified clients (`kubectl`,
//! kube-rs) work against it: discovery, CRUD with the real status codes and `Status` bodies,
//! watches with resume/bookmarks/410, list paging, selectors, patches (merge, JSON, strategic,
//! server-side apply), CRDs with structural schemas, server-side Table printing, garbage
//! collection, namespaces, admission webhooks, plus a control API for fault injection and
//! request accounting.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubesim::SimError> {
//! let sim = kubesim::Sim::start(kubesim::SimConfig::default()).await?;
//! sim.write_kubeconfig(std::path::Path::new("/tmp/kubesim.kubeconfig"))?;
//! // kubectl --kubeconfig /tmp/kubesim.kubeconfig get ns
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Simulated controllers (kubelet, scheduler, StatefulSet controller) plug in through
//! [`SimConfig::controllers`] and talk to the [`store::Store`] directly (see the
//! `INTERFACE FOR CONTROLLERS` block in [`store`]). Pod `exec`/`log`/`attach`/`portforward`
//! requests are handed to [`SimConfig::pod_handler`].

pub mod admission;
pub mod auth;
pub mod builtin;
pub mod cluster;
pub mod control;
pub mod crd;
pub mod error;
pub mod faults;
pub mod kinds;
pub mod managed;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod respond;
pub mod reviews;
pub mod scale;
pub mod selectors;
pub mod server;
pub mod store;
pub mod util;
pub mod validation;

// Node simulation (owned by the kubesim-node helper).
pub mod controllers;
pub mod exec;
pub mod sandbox;

pub use cluster::{bootstrap, restart_store};
pub use error::ApiError;
pub use faults::{Faults, Metrics};
pub use resources::ResourceKey;
pub use server::{PodRequest, PodSubresourceHandler};
pub use store::{DeleteOptions, Propagation, Store, StoreConfig, WatchEvent, WriteOptions};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Errors starting or running the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding the listen address failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the kubeconfig failed.
    #[error("writing kubeconfig {path}: {source}")]
    WriteKubeconfig {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// A simulated controller: a task started with the store and a shutdown token.
pub type ControllerTask =
    Box<dyn FnOnce(Store, CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Simulator configuration.
pub struct SimConfig {
    /// Listen address (default `127.0.0.1:0`, an ephemeral port).
    pub listen: SocketAddr,
    /// Number of simulated Nodes created at start (`kubesim-node-1`..).
    pub nodes: usize,
    /// Store settings (watch history window).
    pub store: StoreConfig,
    /// Interval of watch BOOKMARK events (when the client allows them).
    pub bookmark_interval: Duration,
    /// Controllers to run (kubelet, scheduler, StatefulSet controller...).
    pub controllers: Vec<ControllerTask>,
    /// Handler of pods/exec, pods/log, pods/attach, pods/portforward.
    pub pod_handler: Option<Arc<dyn PodSubresourceHandler>>,
    /// How requests are authorized (default: everything allowed).
    pub authorization: auth::AuthorizationMode,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nodes: 1,
            store: StoreConfig::default(),
            bookmark_interval: Duration::from_secs(60),
            controllers: Vec::new(),
            pod_handler: None,
            authorization: auth::AuthorizationMode::AlwaysAllow,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("nodes", &self.nodes)
            .field("controllers", &self.controllers.len())
            .finish_non_exhaustive()
    }
}

/// A running simulator.
pub struct Sim {
    addr: SocketAddr,
    store: Store,
    admission: Arc<admission::Admission>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    nodes: usize,
    auth: Arc<auth::Auth>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Start the API server and the controllers.
    pub async fn start(config: SimConfig) -> Result<Sim, SimError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
        let faults = Arc::new(Faults::default());
        let metrics = Arc::new(Metrics::default());
        let store = Store::new(
            config.store.clone(),
            faults,
            metrics,
            std::sync::Arc::new(kinds::ApiKinds),
        );
        bootstrap(&store, config.nodes);
        let shutdown = CancellationToken::new();
        let admission = Arc::new(admission::Admission::default());
        // Controllers' creates pass the webhooks too, as kube-controller-manager's do.
        store.set_controller_admission(admission.clone());
        let auth = Arc::new(auth::Auth::new(config.authorization));
        let state = server::AppState {
            auth: auth.clone(),
            store: store.clone(),
            pods: config.pod_handler.clone(),
            admission: admission.clone(),
            bookmark_interval: config.bookmark_interval,
            address: addr.to_string(),
            control: Arc::new(control::ControlHooks { nodes: config.nodes }),
            render_cache: Arc::default(),
            shutdown: shutdown.clone(),
        };
        let app = server::router(state);
        let mut tasks = Vec::new();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(async move { sd.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "kubesim server stopped");
            }
        }));
        tasks.push(tokio::spawn(store::gc::run(store.clone(), shutdown.clone())));
        for c in config.controllers {
            tasks.push(tokio::spawn(c(store.clone(), shutdown.child_token())));
        }
        tracing::info!(%addr, "kubesim listening");
        Ok(Sim {
            addr,
            store,
            admission,
            shutdown,
            tasks,
            nodes: config.nodes,
            auth,
        })
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store (for in-process controllers and tests).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Fault injection.
    pub fn faults(&self) -> Arc<Faults> {
        self.store.faults().clone()
    }

    /// Request accounting.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.store.metrics().clone()
    }

    /// Map an admission webhook `service` reference to a local `host:port`.
    pub fn map_webhook_service(&self, namespace: &str, name: &str, address: &str) {
        self.admission.map_service(namespace, name, address);
    }

    /// Simulate an API server restart (see [`restart_store`]).
    pub fn restart(&self, keep_store: bool) {
        restart_store(&self.store, keep_store, self.nodes);
    }

    /// Connection settings for clients built in-process (kube-rs:
    /// `kube::Config::new(cfg.server_url.parse()?)` with `default_namespace`).
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            server_url: self.url(),
            token: "kubesim".into(),
            default_namespace: "default".into(),
        }
    }

    /// A kubeconfig (YAML) pointing at this server, context `kubesim`.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim-admin\n    namespace: default\ncurrent-context: kubesim\nusers:\n- name: kubesim-admin\n  user:\n    token: kubesim\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Authentication and authorization settings (issue ServiceAccount tokens here).
    pub fn auth(&self) -> Arc<auth::Auth> {
        self.auth.clone()
    }

    /// A kubeconfig (YAML) authenticating as ServiceAccount `namespace/name` with a freshly
    /// issued token (valid while the ServiceAccount exists), context `kubesim`.
    pub fn service_account_kubeconfig_yaml(&self, namespace: &str, name: &str) -> String {
        let token = self.auth.issue_service_account_token(namespace, name);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: {namespace}-{name}\n    namespace: {namespace}\ncurrent-context: kubesim\nusers:\n- name: {namespace}-{name}\n  user:\n    token: {token}\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Write [`Sim::service_account_kubeconfig_yaml`] to a file.
    pub fn write_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> Result<(), SimError> {
        std::fs::write(path, self.service_account_kubeconfig_yaml(namespace, name)).map_err(|source| {
            SimError::WriteKubeconfig {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Write [`Sim::kubeconfig_yaml`] to a file.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), SimError> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| SimError::WriteKubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Stop the server and controllers.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// How to reach a running simulator (what a kubeconfig would say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `http://127.0.0.1:<port>`.
    pub server_url: String,
    /// Bearer token (the admin's; any token is the admin unless RBAC is on).
    pub token: String,
    /// Default namespace.
    pub default_namespace: String,
}

/// Options of `kubedirector sim`.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// Listen address.
    pub listen: SocketAddr,
    /// Where to write a kubeconfig.
    pub kubeconfig_out: Option<PathBuf>,
    /// Number of nodes.
    pub nodes: usize,
}

/// Run kubesim until `shutdown_signal` completes (for the `sim` subcommand). Controllers and the
/// pod handler can be supplied through `config_hook`, which receives the default config.
pub async fn run_standalone(
    opts: StandaloneOptions,
    config_hook: impl FnOnce(SimConfig) -> SimConfig,
    shutdown_signal: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let cfg = config_hook(SimConfig {
        listen: opts.listen,
        nodes: opts.nodes,
        ..SimConfig::default()
    });
    let sim = Sim::start(cfg).await?;
    if let Some(p) = &opts.kubeconfig_out {
        sim.write_kubeconfig(p)?;
        tracing::info!(path = %p.display(), "wrote kubeconfig");
    }
    shutdown_signal.await;
    sim.shutdown().await;
    Ok(())
}
