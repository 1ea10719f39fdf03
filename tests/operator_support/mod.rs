//! Harness of the operator integration tests: kubesim serving the real HTTP API with its
//! simulated control plane (scheduler, StatefulSet controller, PVC binder, kubelet), the
//! KubeDirector CRDs installed, and `kubedirector run` (in-process, on its own thread, exactly
//! as `main` runs it) talking to it through a kubeconfig.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

pub mod final_state;
mod fixtures;
pub mod kill;
mod process;

#[allow(unused_imports)] // each test binary uses a different part
pub use fixtures::{centos_app, centos_cluster, centos_cluster_in, serve_files, setup_package, two_role_app};
#[allow(unused_imports)]
pub use process::{operator_binary, signal};

use std::{path::PathBuf, time::Duration};

use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};
use kubedirector::{
    operator::{run_until, RunOptions},
    webhook::WebhookOptions,
};
use kubesim::{Sim, SimConfig};
use serde_json::{json, Value};

/// The KubeDirector namespace used by the tests.
pub const KD_NS: &str = "kubedirector";
/// The namespace of the test clusters.
pub const NS: &str = "team";
/// Another namespace.
pub const OTHER_NS: &str = "elsewhere";

/// kubesim + the operator.
pub struct Env {
    /// Runtime of kubesim and of the test's own client.
    pub rt: tokio::runtime::Runtime,
    /// The simulator.
    pub sim: Option<Sim>,
    /// kubesim's container runtime (e.g. to register test images).
    pub runtime: kubesim::sandbox::Runtime,
    /// A client for the test.
    pub client: Client,
    /// The kubeconfig file (the admin's).
    pub kubeconfig: PathBuf,
    /// The kubeconfig the operator runs with: the admin's, or under RBAC the `kubedirector`
    /// ServiceAccount's (deploy/kubedirector/10-rbac.yaml).
    pub operator_kubeconfig: PathBuf,
    /// Where the operator serves `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: std::net::SocketAddr,
    /// Where the main operator serves the admission webhook (when enabled).
    pub webhook_addr: std::net::SocketAddr,
    /// Where the operator serves its loopback admin endpoints (`PUT /log-level`).
    pub admin_addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    operator: Option<OperatorHandle>,
    namespaces: Vec<String>,
    webhook: Option<WebhookOptions>,
    /// `--status-detail-window-seconds` of operators started from now on (None: the default).
    pub status_detail_window_seconds: Option<u64>,
    /// `--watch-timeout-seconds` of the operators started from now on (None: the default).
    pub watch_timeout_seconds: Option<u32>,
    /// When set, the operator runs as a child process (`kubedirector run` plus these arguments)
    /// instead of in-process, so a test can SIGKILL, SIGSTOP and restart it.
    process_args: Option<Vec<String>>,
    child: Option<std::process::Child>,
    /// Output of every operator process started by this Env, appended in order.
    pub operator_log: PathBuf,
    /// `--configure-wait-seconds` and `--exec-timeout-seconds` of operators started from now on
    /// (None: the defaults).
    pub exec_timeouts: Option<(u64, u64)>,
}

/// deploy/kubedirector/10-rbac.yaml, document by document.
pub fn rbac_manifest() -> Vec<Value> {
    use serde::Deserialize;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubedirector/10-rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Creates every document of [`rbac_manifest`] (as the admin).
pub async fn apply_rbac_manifest(client: &Client) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    for doc in rbac_manifest() {
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), doc["apiVersion"].as_str().unwrap().to_string()),
        };
        let kind = doc["kind"].as_str().unwrap();
        let plural = format!("{}s", kind.to_lowercase());
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), &plural);
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
}

/// A free local port.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A running operator thread: its stop trigger and its join handle.
pub type OperatorHandle = (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<anyhow::Result<()>>,
);

/// Stops an operator started with [`Env::spawn_operator`].
pub fn stop(op: OperatorHandle) {
    let _ = op.0.send(());
    op.1.join().unwrap().unwrap();
}

impl Env {
    /// Starts kubesim (with the stand-in controllers), installs the CRDs, the namespaces and the
    /// centos app, and starts the operator.
    pub fn start() -> Env {
        Self::start_watching(&[])
    }

    /// As [`Env::start`], with the operator watching only `namespaces` (`--namespace`).
    pub fn start_watching(namespaces: &[&str]) -> Env {
        Self::start_full(namespaces, None)
    }

    /// As [`Env::start`], with the admission webhook served by the operator (`webhook.enabled`
    /// and `webhook.addr` are set here) and its Service mapped in kubesim.
    pub fn start_with_webhook(webhook: WebhookOptions) -> Env {
        Self::start_full(&[], Some(webhook))
    }

    /// As [`Env::start_with_webhook`] (or without webhook), with kubesim authorizing by RBAC,
    /// deploy/kubedirector/10-rbac.yaml applied by the admin and the operator running with the
    /// `kubedirector` ServiceAccount's token.
    pub fn start_rbac(webhook: Option<WebhookOptions>) -> Env {
        Self::start_inner(&[], webhook, true)
    }

    fn start_full(namespaces: &[&str], webhook: Option<WebhookOptions>) -> Env {
        Self::start_inner(namespaces, webhook, false)
    }

    fn start_inner(namespaces: &[&str], webhook: Option<WebhookOptions>, rbac: bool) -> Env {
        Self::start_mode(namespaces, webhook, rbac, None)
    }

    fn start_mode(
        namespaces: &[&str],
        webhook: Option<WebhookOptions>,
        rbac: bool,
        process_args: Option<Vec<String>>,
    ) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let operator_kubeconfig = if rbac {
            dir.path().join("operator.kubeconfig")
        } else {
            kubeconfig.clone()
        };
        let (sim, client, runtime) = rt.block_on(async {
            // kubesim's own scheduler, StatefulSet controller, PVC binder and kubelet.
            let runtime = kubesim::sandbox::Runtime::new(dir.path().join("node")).unwrap();
            // Our example catalog's images carry its setup packages, as in `kubedirector sim`.
            kubedirector::examples::register_example_images(&runtime, dir.path()).unwrap();
            let cfg = SimConfig {
                controllers: kubesim::controllers::tasks(
                    runtime.clone(),
                    kubesim::controllers::NodeConfig::default(),
                ),
                pod_handler: Some(std::sync::Arc::new(kubesim::exec::NodePodHandler::new(
                    runtime.clone(),
                ))),
                authorization: if rbac {
                    kubesim::auth::AuthorizationMode::Rbac
                } else {
                    kubesim::auth::AuthorizationMode::AlwaysAllow
                },
                ..SimConfig::default()
            };
            let sim = Sim::start(cfg).await.unwrap();
            sim.write_kubeconfig(&kubeconfig).unwrap();
            let kc = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
            let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .unwrap();
            let client = Client::try_from(config).unwrap();
            let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
            for crd in kubedirector_crds::crds().unwrap() {
                crd_api.create(&PostParams::default(), &crd).await.unwrap();
            }
            let ns_api: Api<Namespace> = Api::all(client.clone());
            for ns in [KD_NS, NS, OTHER_NS] {
                let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
                ns_api.create(&PostParams::default(), &n).await.unwrap();
            }
            if rbac {
                apply_rbac_manifest(&client).await;
                sim.write_service_account_kubeconfig(KD_NS, "kubedirector", &operator_kubeconfig)
                    .unwrap();
            }
            (sim, client, runtime)
        });
        let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut env = Env {
            rt,
            sim: Some(sim),
            runtime,
            client,
            kubeconfig,
            operator_kubeconfig,
            metrics_addr,
            webhook_addr: free_addr(),
            admin_addr,
            operator_log: dir.path().join("operator.log"),
            _dir: dir,
            operator: None,
            process_args,
            child: None,
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            webhook,
            status_detail_window_seconds: None,
            watch_timeout_seconds: None,
            exec_timeouts: None,
        };
        env.create(&ResourceKind::App, NS, centos_app(NS));
        env.create(&ResourceKind::App, OTHER_NS, centos_app(OTHER_NS));
        env.start_operator();
        env
    }

    /// Starts (or restarts) the operator thread (or process, see [`Env::start_process`]).
    pub fn start_operator(&mut self) {
        if let Some(args) = self.process_args.clone() {
            let child = self.operator_process("op", self.metrics_addr, &args, &self.operator_log);
            self.child = Some(child);
            return;
        }
        if self.webhook.is_some() {
            self.sim.as_ref().unwrap().map_webhook_service(
                KD_NS,
                "kubedirector-validator",
                &self.webhook_addr.to_string(),
            );
        }
        let op = self.spawn_operator_with("op", self.metrics_addr, self.webhook_addr, self.admin_addr);
        self.operator = Some(op);
        if self.webhook.is_some() {
            self.wait_for_webhook(self.webhook_addr);
        }
    }

    /// Waits until the webhook configurations are registered and `addr` accepts connections.
    pub fn wait_for_webhook(&self, addr: std::net::SocketAddr) {
        let api: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
            Api::all(self.client.clone());
        self.eventually("webhook registered and listening", |env| {
            env.rt
                .block_on(api.get_opt("kubedirector-webhook"))
                .ok()
                .flatten()
                .is_some()
                && std::net::TcpStream::connect(addr).is_ok()
        });
    }

    /// Starts one more operator replica with identity prefix `identity` (the caller stops it).
    pub fn spawn_operator(&self, identity: &str, metrics_addr: std::net::SocketAddr) -> OperatorHandle {
        self.spawn_operator_with(
            identity,
            metrics_addr,
            free_addr(),
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )
    }

    /// As [`Env::spawn_operator`], serving the webhook (if enabled) on `webhook_addr` and the admin server on `admin_addr`.
    pub fn spawn_operator_with(
        &self,
        identity: &str,
        metrics_addr: std::net::SocketAddr,
        webhook_addr: std::net::SocketAddr,
        admin_addr: std::net::SocketAddr,
    ) -> OperatorHandle {
        let mut opts = RunOptions::for_kubeconfig(self.operator_kubeconfig.clone());
        opts.admin_addr = admin_addr;
        if let Some(w) = &self.webhook {
            opts.webhook = w.clone();
            opts.webhook.enabled = true;
            opts.webhook.addr = webhook_addr;
        }
        opts.kd_namespace = KD_NS.into();
        opts.metrics_addr = metrics_addr;
        opts.identity = Some(identity.to_string());
        opts.namespaces = self.namespaces.clone();
        if let Some(w) = self.status_detail_window_seconds {
            opts.status_detail_window_seconds = w;
        }
        if let Some(t) = self.watch_timeout_seconds {
            opts.watch_timeout_seconds = t;
        }
        if let Some((wait, timeout)) = self.exec_timeouts {
            opts.configure_wait_seconds = wait;
            opts.exec_timeout_seconds = timeout;
        }
        opts.log_level = "warn,kubedirector=info,kubedirector_actors=info".into();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::spawn(move || {
            run_until(opts, async move {
                let _ = rx.await;
            })
        });
        (tx, handle)
    }

    /// Holder of the leader Lease, if any.
    pub fn lease_holder(&self) -> Option<String> {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(self.client.clone(), KD_NS);
        self.rt
            .block_on(api.get_opt("kubedirector-lock"))
            .ok()
            .flatten()
            .and_then(|l| l.spec.and_then(|s| s.holder_identity))
    }

    /// Stops the operator and waits for it (a process gets SIGTERM).
    pub fn stop_operator(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Only a process not reaped yet: its pid cannot have been reused.
            if c.try_wait().ok().flatten().is_none() {
                // A stopped process must run again to handle SIGTERM.
                signal(c.id(), "CONT");
                signal(c.id(), "TERM");
            }
            let _ = c.wait();
        }
        if let Some((tx, handle)) = self.operator.take() {
            let _ = tx.send(());
            handle.join().unwrap().unwrap();
        }
    }

    /// Creates an object through the HTTP API.
    pub fn create(&self, kind: &ResourceKind, ns: &str, obj: Value) {
        let api = kind.api(&self.client, ns);
        let obj: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
        self.rt
            .block_on(api.create(&PostParams::default(), &obj))
            .unwrap();
    }

    /// Reads an object (None when absent).
    pub fn get(&self, kind: &ResourceKind, ns: &str, name: &str) -> Option<Value> {
        let api = kind.api(&self.client, ns);
        self.rt
            .block_on(api.get_opt(name))
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// Lists objects of a kind in `ns`.
    pub fn list(&self, kind: &ResourceKind, ns: &str) -> Vec<Value> {
        let api = kind.api(&self.client, ns);
        self.rt
            .block_on(api.list(&Default::default()))
            .unwrap()
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    /// Merge-patches an object.
    pub fn merge_patch(&self, kind: &ResourceKind, ns: &str, name: &str, patch: Value) {
        let api = kind.api(&self.client, ns);
        self.rt
            .block_on(api.patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            ))
            .unwrap();
    }

    /// Deletes an object (background propagation).
    pub fn delete(&self, kind: &ResourceKind, ns: &str, name: &str) {
        let api = kind.api(&self.client, ns);
        self.rt
            .block_on(api.delete(name, &kube::api::DeleteParams::background()))
            .unwrap();
    }

    /// stdout of `sh -c script` in the `app` container of pod `ns/pod` (stderr dropped), through
    /// `pods/exec` as kubectl does it.
    pub fn exec_sh(&self, ns: &str, pod: &str, script: &str) -> String {
        use tokio::io::AsyncReadExt;
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt.block_on(async {
            let mut p = api
                .exec(
                    pod,
                    vec!["sh", "-c", script],
                    &kube::api::AttachParams::default().container("app").stderr(false),
                )
                .await
                .unwrap();
            let mut out = String::new();
            p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
            p.join().await.unwrap();
            out
        })
    }

    /// `GET path` on the operator's metrics/health server: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http("GET", path, "")
    }

    /// One HTTP/1.0 request to the operator's metrics/health server: (status code, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_request(self.metrics_addr, method, path, body)
    }

    /// Polls `cond` until it holds (bounded; panics with `what` otherwise).
    pub fn eventually(&self, what: &str, mut cond: impl FnMut(&Env) -> bool) {
        for _ in 0..600 {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{}", self.dump());
        panic!("never happened: {what}");
    }

    /// What a failing wait prints: every kdcluster's state and member states, every pod's phase
    /// and container states (init containers included), in every namespace.
    pub fn dump(&self) -> String {
        use kube::{
            api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
            ResourceExt,
        };
        let mut out = String::from("--- state at the failed wait ---\n");
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubedirector.hpe.com", "v1beta1", "KubeDirectorCluster"),
            "kubedirectorclusters",
        );
        let clusters: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        match self.rt.block_on(clusters.list(&ListParams::default())) {
            Ok(list) => {
                for c in list {
                    let status = c.data.get("status").cloned().unwrap_or(Value::Null);
                    out += &format!(
                        "kdcluster {}/{}: {}\n",
                        c.namespace().unwrap_or_default(),
                        c.name_any(),
                        status
                    );
                }
            }
            Err(e) => out += &format!("kdclusters: {e}\n"),
        }
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(self.client.clone());
        match self.rt.block_on(pods.list(&ListParams::default())) {
            Ok(list) => {
                for p in list {
                    let status = p.status.clone().unwrap_or_default();
                    let states = |cs: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
                        cs.iter()
                            .flatten()
                            .map(|c| {
                                format!(
                                    "{}={}",
                                    c.name,
                                    serde_json::to_string(&c.state).unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    out += &format!(
                        "pod {}/{}: {} init[{}] [{}]\n",
                        p.namespace().unwrap_or_default(),
                        p.name_any(),
                        status.phase.unwrap_or_default(),
                        states(&status.init_container_statuses),
                        states(&status.container_statuses)
                    );
                }
            }
            Err(e) => out += &format!("pods: {e}\n"),
        }
        out
    }
}

/// One HTTP/1.0 request to `addr`: (status code, body); (0, "") when it cannot connect.
pub fn http_request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_operator();
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

/// Kinds used by the tests.
pub enum ResourceKind {
    /// KubeDirectorApp.
    App,
    /// KubeDirectorCluster.
    Cluster,
    /// StatefulSet.
    StatefulSet,
    /// Service.
    Service,
    /// Pod.
    Pod,
    /// core/v1 Event.
    Event,
}

impl ResourceKind {
    fn api(&self, client: &Client, ns: &str) -> Api<kube::api::DynamicObject> {
        use kube::discovery::ApiResource;
        let ar = match self {
            ResourceKind::App => ApiResource::erase::<kubedirector_crds::KubeDirectorApp>(&()),
            ResourceKind::Cluster => ApiResource::erase::<kubedirector_crds::KubeDirectorCluster>(&()),
            ResourceKind::StatefulSet => ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
            ResourceKind::Service => ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
            ResourceKind::Pod => ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
            ResourceKind::Event => ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&()),
        };
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

/// `status.state` of a cluster ("" when absent).
pub fn state_of(env: &Env, name: &str) -> String {
    env.get(&ResourceKind::Cluster, NS, name)
        .and_then(|c| c["status"]["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Objects labelled as belonging to cluster `name`.
pub fn owned(env: &Env, kind: &ResourceKind, name: &str) -> Vec<Value> {
    env.list(kind, NS)
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["kubedirector.hpe.com/kdcluster"] == name)
        .collect()
}

/// The webhook Secret's trust bundle (`ca.crt`), PEM.
pub fn webhook_ca(env: &Env) -> String {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), KD_NS);
    let s = env.rt.block_on(api.get("kubedirector-validator-secret")).unwrap();
    String::from_utf8(s.data.unwrap()["ca.crt"].0.clone()).unwrap()
}

/// One HTTPS request to a webhook replica at `addr`, verified against `ca_pem` for the Service
/// name: (status, content type, body, the served leaf certificate DER).
pub async fn webhook_request(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, String, Vec<u8>, Vec<u8>), String> {
    use http_body_util::{BodyExt, Full};
    use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(format!("kubedirector-validator.{KD_NS}.svc")).unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "kubedirector-validator");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = sender
        .send_request(req.body(Full::new(hyper::body::Bytes::from(body))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, ct, body, leaf))
}

/// The member statuses of cluster `name` (in [`NS`]), all roles.
pub fn members(env: &Env, name: &str) -> Vec<Value> {
    env.get(&ResourceKind::Cluster, NS, name)
        .and_then(|c| c["status"]["roles"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r["members"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Whether cluster `name` is `configured` with `n` members, all `configured`.
pub fn configured_with(env: &Env, name: &str, n: usize) -> bool {
    let m = members(env, name);
    state_of(env, name) == "configured" && m.len() == n && m.iter().all(|m| m["state"] == "configured")
}
