//! The simulated kubelet, serving every simulated Node.
//!
//! One worker task per bound pod does what a kubelet does, reporting each step in the pod status
//! (phase, conditions, `containerStatuses` with real `containerd://` IDs, `podIP`, `hostIP`,
//! `startTime`) and in Events (`Pulling`, `Pulled`, `Created`, `Started`, `Killing`, `BackOff`,
//! `FailedMount`, ...):
//!
//! 1. allocates the pod IP from the node's `podCIDR` and sets up volumes (waiting, with a
//!    `FailedMount` event, until claims are bound and config maps/secrets exist);
//! 2. runs the init containers in order, **really executing their command** in the sandbox
//!    (output goes to the container log); a failing one is retried with back-off, or fails the
//!    pod under `restartPolicy: Never`;
//! 3. starts the app containers (their entrypoint is not run: the container is its sandbox, ready
//!    for `exec`), runs `lifecycle.postStart.exec` hooks, marks them ready (after a readiness
//!    probe's `initialDelaySeconds`);
//! 4. on deletion runs `preStop` hooks within the grace period, stops the containers, removes the
//!    sandbox (PVC data is kept) and deletes the pod object (grace 0).
//!
//! Faults: `PodFaults.crashPods` (`ns/name`) restarts every app container of the pod once (new
//! container ID, files outside volumes lost, `restartCount` + 1, `lastState.terminated`) and is
//! cleared; `PodFaults.failStartPods` makes container starts fail (`RunContainerError`, back-off)
//! while listed. [`KubeletControl`] restarts one container or fails a pod (phase `Failed`)
//! directly.

pub(crate) mod status;
mod subpath;
mod volumes;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    sync::{broadcast::error::RecvError, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use self::status::{ContainerRecord, PodView};
use super::{event, name_of, pods_key, uid_of, update_status_with, NodeConfig};
use crate::{
    exec::logs,
    faults::PodFaults,
    resources::ResourceKey,
    sandbox::{ContainerId, ContainerSpec, PodDns, Runtime, SandboxError},
    store::{now_rfc3339, DeleteOptions, EventKind, Store},
};

const COMPONENT: &str = "kubelet";

/// A direct command to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// Kill a container and let the kubelet restart it (new container ID).
    RestartContainer {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Container name.
        container: String,
    },
    /// Stop every container of a pod and mark it `Failed`.
    FailPod {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
}

/// Sends [`NodeCommand`]s to a running kubelet.
#[derive(Debug, Clone)]
pub struct KubeletControl {
    tx: mpsc::UnboundedSender<NodeCommand>,
}

impl KubeletControl {
    /// A control handle and the receiver to give to [`run_with_control`].
    pub fn new() -> (Self, mpsc::UnboundedReceiver<NodeCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Restarts one container of a pod. `false` when the kubelet is gone.
    pub fn restart_container(&self, namespace: &str, pod: &str, container: &str) -> bool {
        self.tx
            .send(NodeCommand::RestartContainer {
                namespace: namespace.into(),
                pod: pod.into(),
                container: container.into(),
            })
            .is_ok()
    }

    /// Fails a pod. `false` when the kubelet is gone.
    pub fn fail_pod(&self, namespace: &str, pod: &str) -> bool {
        self.tx
            .send(NodeCommand::FailPod {
                namespace: namespace.into(),
                pod: pod.into(),
            })
            .is_ok()
    }
}

/// Runs the kubelet until shutdown.
pub async fn run(store: Store, runtime: Runtime, config: NodeConfig, shutdown: CancellationToken) {
    run_with_control(store, runtime, config, None, shutdown).await;
}

#[derive(Debug)]
enum Cmd {
    Recheck,
    Terminate,
    Restart(Option<String>),
    Fail,
}

struct Shared {
    store: Store,
    runtime: Runtime,
    config: NodeConfig,
    next_ip: Mutex<HashMap<String, u32>>,
    pulled: Mutex<HashSet<(String, String)>>,
}

struct WorkerHandle {
    namespace: String,
    name: String,
    /// The worker waits for volumes (claims, config maps, secrets) and wants [`Cmd::Recheck`].
    waiting: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
}

/// Runs the kubelet, also obeying [`NodeCommand`]s from `commands`.
pub async fn run_with_control(
    store: Store,
    runtime: Runtime,
    config: NodeConfig,
    mut commands: Option<mpsc::UnboundedReceiver<NodeCommand>>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        store: store.clone(),
        runtime: runtime.clone(),
        config: config.clone(),
        next_ip: Mutex::new(HashMap::new()),
        pulled: Mutex::new(HashSet::new()),
    });
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut rx = store.subscribe();
    for pod in store.list(&pods_key(), None).0 {
        handle_pod(&shared, &mut workers, &pod);
    }
    let mut faults = tokio::time::interval(config.fault_check_interval.max(Duration::from_millis(10)));
    faults.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            ev = rx.recv() => match ev {
                Ok(ev) => match (ev.gr.group.as_str(), ev.gr.resource.as_str()) {
                    ("", "pods") if ev.kind == EventKind::Deleted => {
                        let uid = uid_of(&ev.object).to_string();
                        if let Some(w) = workers.remove(&uid) {
                            w.task.abort();
                            let runtime = runtime.clone();
                            tokio::spawn(async move {
                                let _ = runtime.remove_pod(&uid).await;
                            });
                        }
                    }
                    ("", "pods") => handle_pod(&shared, &mut workers, &ev.object),
                    // Nodes are (re)created at start and after a store wipe (which emits no
                    // deletions): forget pods that no longer exist.
                    ("", "nodes") if ev.kind == EventKind::Added => resync(&shared, &mut workers),
                    ("", "persistentvolumeclaims" | "configmaps" | "secrets") => {
                        for w in workers
                            .values()
                            .filter(|w| w.namespace == ev.namespace && w.waiting.load(Ordering::Relaxed))
                        {
                            let _ = w.tx.send(Cmd::Recheck);
                        }
                    }
                    _ => {}
                },
                Err(RecvError::Lagged(_)) => {
                    store.note_lag();
                    resync(&shared, &mut workers);
                }
                Err(RecvError::Closed) => break,
            },
            cmd = next_command(&mut commands) => match cmd {
                Some(NodeCommand::RestartContainer { namespace, pod, container }) => {
                    if let Some(w) = find(&workers, &namespace, &pod) {
                        let _ = w.tx.send(Cmd::Restart(Some(container)));
                    }
                }
                Some(NodeCommand::FailPod { namespace, pod }) => {
                    if let Some(w) = find(&workers, &namespace, &pod) {
                        let _ = w.tx.send(Cmd::Fail);
                    }
                }
                None => commands = None,
            },
            _ = faults.tick() => apply_crash_faults(&store, &workers),
        }
    }
    for (_, w) in workers.drain() {
        w.task.abort();
    }
    runtime.shutdown().await;
}

/// Re-lists pods: workers of vanished pods are stopped (their sandboxes removed), missing
/// workers started, and every worker re-checks what it waits for.
fn resync(shared: &Arc<Shared>, workers: &mut HashMap<String, WorkerHandle>) {
    let pods = shared.store.list(&pods_key(), None).0;
    let alive: HashSet<String> = pods.iter().map(|p| uid_of(p).to_string()).collect();
    workers.retain(|uid, w| {
        let keep = alive.contains(uid);
        if !keep {
            w.task.abort();
            let runtime = shared.runtime.clone();
            let uid = uid.clone();
            tokio::spawn(async move {
                let _ = runtime.remove_pod(&uid).await;
            });
        }
        keep
    });
    for pod in &pods {
        handle_pod(shared, workers, pod);
    }
    for w in workers.values() {
        let _ = w.tx.send(Cmd::Recheck);
    }
}

async fn next_command(commands: &mut Option<mpsc::UnboundedReceiver<NodeCommand>>) -> Option<NodeCommand> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn find<'a>(workers: &'a HashMap<String, WorkerHandle>, ns: &str, name: &str) -> Option<&'a WorkerHandle> {
    workers
        .values()
        .find(|w| w.namespace == ns && w.name == name && !w.task.is_finished())
}

fn apply_crash_faults(store: &Store, workers: &HashMap<String, WorkerHandle>) {
    let pf = store.faults().pod_faults();
    if pf.crash_pods.is_empty() {
        return;
    }
    let mut remaining = Vec::new();
    for entry in &pf.crash_pods {
        let (ns, name) = entry.split_once('/').unwrap_or(("default", entry.as_str()));
        match find(workers, ns, name) {
            Some(w) => {
                let _ = w.tx.send(Cmd::Restart(None));
            }
            None => remaining.push(entry.clone()),
        }
    }
    if remaining.len() != pf.crash_pods.len() {
        store.faults().set_pod_faults(PodFaults {
            crash_pods: remaining,
            ..pf
        });
    }
}

fn handle_pod(shared: &Arc<Shared>, workers: &mut HashMap<String, WorkerHandle>, pod: &Value) {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return;
    }
    let uid = uid_of(pod).to_string();
    let terminating = pod["metadata"]["deletionTimestamp"].is_string();
    if let Some(w) = workers.get(&uid) {
        if terminating {
            let _ = w.tx.send(Cmd::Terminate);
        }
        return;
    }
    if terminating {
        // No worker (e.g. the pod never started here): just finish the deletion.
        let shared = Arc::clone(shared);
        let (ns, name) = (
            pod["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
            name_of(pod).to_string(),
        );
        tokio::spawn(async move {
            let _ = shared.runtime.remove_pod(&uid).await;
            finish_deletion(&shared.store, &ns, &name, &uid);
        });
        return;
    }
    if matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker::new(Arc::clone(shared), pod, rx);
    let handle = WorkerHandle {
        namespace: worker.ns.clone(),
        name: worker.name.clone(),
        waiting: Arc::clone(&worker.waiting),
        tx,
        task: tokio::spawn(worker.run()),
    };
    workers.insert(uid, handle);
}

fn finish_deletion(store: &Store, ns: &str, name: &str, uid: &str) {
    let opts = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: Some(uid.to_string()),
        ..DeleteOptions::default()
    };
    if let Err(e) = store.delete(&pods_key(), Some(ns), name, &opts) {
        if e.code != 404 && e.code != 409 {
            tracing::warn!(pod = %name, error = %e, "finishing pod deletion failed");
        }
    }
}

struct Worker {
    sh: Arc<Shared>,
    ns: String,
    name: String,
    uid: String,
    node: String,
    host_ip: String,
    pod_ip: Option<String>,
    start_time: String,
    inits: Vec<ContainerRecord>,
    apps: Vec<ContainerRecord>,
    ready_at: Vec<Option<Instant>>,
    failed: bool,
    rx: mpsc::UnboundedReceiver<Cmd>,
    volumes: HashMap<String, PathBuf>,
    waiting: Arc<AtomicBool>,
    terminate: bool,
    backoff: HashMap<String, Duration>,
}

fn containers(pod: &Value, field: &str) -> Vec<Value> {
    pod["spec"][field].as_array().cloned().unwrap_or_default()
}

fn argv(c: &Value) -> Vec<String> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let mut v = list(&c["command"]);
    v.extend(list(&c["args"]));
    v
}

impl Worker {
    fn new(sh: Arc<Shared>, pod: &Value, rx: mpsc::UnboundedReceiver<Cmd>) -> Self {
        let has_inits = !containers(pod, "initContainers").is_empty();
        let app_reason = if has_inits {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let record = |c: &Value, reason: &str| {
            ContainerRecord::waiting(
                c["name"].as_str().unwrap_or(""),
                c["image"].as_str().unwrap_or(""),
                reason,
            )
        };
        let inits: Vec<ContainerRecord> = containers(pod, "initContainers")
            .iter()
            .map(|c| record(c, "PodInitializing"))
            .collect();
        let apps: Vec<ContainerRecord> = containers(pod, "containers")
            .iter()
            .map(|c| record(c, app_reason))
            .collect();
        let n = apps.len();
        Self {
            sh,
            ns: pod["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
            name: name_of(pod).to_string(),
            uid: uid_of(pod).to_string(),
            node: pod["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            host_ip: String::new(),
            pod_ip: None,
            start_time: now_rfc3339(),
            inits,
            apps,
            ready_at: vec![None; n],
            failed: false,
            rx,
            volumes: HashMap::new(),
            waiting: Arc::new(AtomicBool::new(false)),
            terminate: false,
            backoff: HashMap::new(),
        }
    }

    fn pod(&self) -> Option<Value> {
        self.sh
            .store
            .get(&pods_key(), Some(&self.ns), &self.name)
            .filter(|p| uid_of(p) == self.uid)
    }

    fn publish(&self) {
        let Some(pod) = self.pod() else {
            return;
        };
        let view = PodView {
            pod: &pod,
            host_ip: &self.host_ip,
            pod_ip: self.pod_ip.as_deref(),
            start_time: &self.start_time,
            inits: &self.inits,
            containers: &self.apps,
            failed: self.failed,
        };
        let result = update_status_with(
            &self.sh.store,
            &pods_key(),
            Some(&self.ns),
            &self.name,
            Some(&self.uid),
            |s| {
                *s = status::compose(s, &view);
            },
        );
        if let Err(e) = result {
            tracing::warn!(pod = %self.name, error = %e, "pod status update failed");
        }
    }

    fn event(&self, type_: &str, reason: &str, message: &str) {
        if let Some(pod) = self.pod() {
            event(&self.sh.store, &pod, type_, reason, message, COMPONENT);
        }
    }

    fn allocate_network(&mut self) {
        let node = self.sh.store.get(&ResourceKey::core("nodes"), None, &self.node);
        let addresses = node
            .as_ref()
            .and_then(|n| n["status"]["addresses"].as_array().cloned())
            .unwrap_or_default();
        self.host_ip = addresses
            .iter()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or("172.18.0.2")
            .to_string();
        let cidr = node
            .as_ref()
            .and_then(|n| n["spec"]["podCIDR"].as_str().map(String::from))
            .unwrap_or_else(|| "10.244.0.0/24".to_string());
        let prefix = cidr
            .split('/')
            .next()
            .unwrap_or("10.244.0.0")
            .rsplit_once('.')
            .map_or("10.244.0", |(p, _)| p)
            .to_string();
        let host = {
            let mut ips = self.sh.next_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = ips.entry(self.node.clone()).or_insert(1);
            *n = if *n >= 254 { 2 } else { *n + 1 };
            *n
        };
        self.pod_ip = Some(format!("{prefix}.{host}"));
    }

    /// Waits for the next command; `false` when the pod must stop (terminate or kubelet gone).
    async fn wait_cmd(&mut self) -> bool {
        match self.rx.recv().await {
            Some(Cmd::Terminate) | None => {
                self.terminate = true;
                false
            }
            Some(_) => true,
        }
    }

    /// Sleeps, returning `false` early when termination is requested.
    async fn sleep(&mut self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.terminate;
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return !self.terminate,
                cmd = self.rx.recv() => match cmd {
                    Some(Cmd::Terminate) | None => {
                        self.terminate = true;
                        return false;
                    }
                    Some(_) => {}
                },
            }
        }
    }

    fn next_backoff(&mut self, container: &str) -> Duration {
        let base = self.sh.config.crash_backoff;
        let d = self
            .backoff
            .get(container)
            .map_or(base, |d| (*d * 2).min(Duration::from_secs(300)));
        self.backoff.insert(container.to_string(), d);
        d
    }

    async fn run(mut self) {
        self.allocate_network();
        self.publish();
        let Some(pod) = self.pod() else {
            return;
        };
        loop {
            // Set before looking, so a change made while we look still sends a recheck.
            self.waiting.store(true, Ordering::Relaxed);
            match volumes::prepare(&self.sh.store, &self.sh.runtime, &pod) {
                Ok(dirs) => {
                    self.waiting.store(false, Ordering::Relaxed);
                    self.volumes = dirs;
                    break;
                }
                Err(nr) => {
                    if !nr.silent {
                        self.event("Warning", nr.reason, &nr.message);
                    }
                    if !self.wait_cmd().await {
                        return self.finish().await;
                    }
                }
            }
        }
        let inits = containers(&pod, "initContainers");
        for (i, c) in inits.iter().enumerate() {
            if !self.run_init(i, c).await {
                if self.terminate {
                    return self.finish().await;
                }
                return self.serve().await;
            }
        }
        let apps = containers(&pod, "containers");
        for (i, c) in apps.iter().enumerate() {
            if self.apps[i].state["waiting"]["reason"] == "PodInitializing" {
                self.apps[i].state = json!({"waiting": {"reason": "ContainerCreating"}});
            }
            if !self.start_app(i, c).await {
                return self.finish().await;
            }
        }
        self.publish();
        self.serve().await;
    }

    fn pod_spec_container(&self, field: &str, name: &str) -> Option<Value> {
        self.pod()
            .and_then(|p| containers(&p, field).into_iter().find(|c| c["name"] == name))
    }

    /// Pulls an image (delay + events) unless present on the node under `IfNotPresent`/`Never`.
    async fn pull(&mut self, c: &Value) -> bool {
        let image = c["image"].as_str().unwrap_or("").to_string();
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        let key = (self.node.clone(), image.clone());
        let present = self
            .sh
            .pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key);
        if present && policy != "Always" {
            self.event(
                "Normal",
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return true;
        }
        self.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
        let delay = self.sh.config.image_pull_delay;
        if !self.sleep(delay).await {
            return false;
        }
        self.sh
            .pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        let secs = delay.as_secs_f64();
        self.event(
            "Normal",
            "Pulled",
            &format!("Successfully pulled image \"{image}\" in {secs:.3}s ({secs:.3}s including waiting). Image size: 0 bytes."),
        );
        true
    }

    fn container_spec(&self, pod: &Value, c: &Value) -> Result<ContainerSpec, volumes::NotReady> {
        let pod_ip = self.pod_ip.clone().unwrap_or_default();
        // Virtual containers (no sandbox on this machine) run nothing: no service links.
        let env = volumes::env(&self.sh.store, pod, c, &pod_ip, self.sh.runtime.available())?;
        let mounts = volumes::mounts(c, &self.volumes, pod)?;
        let hostname = pod["spec"]["hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .unwrap_or(&self.name)
            .to_string();
        let fqdn = pod["spec"]["subdomain"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|sub| format!("{hostname}.{sub}.{}.svc.cluster.local", self.ns));
        let mut search = vec![
            format!("{}.svc.cluster.local", self.ns),
            "svc.cluster.local".to_string(),
            "cluster.local".to_string(),
        ];
        if let Some(extra) = pod["spec"]["dnsConfig"]["searches"].as_array() {
            search.extend(extra.iter().filter_map(|s| s.as_str().map(String::from)));
        }
        Ok(ContainerSpec {
            namespace: self.ns.clone(),
            pod_uid: self.uid.clone(),
            pod_name: self.name.clone(),
            hostname,
            container_name: c["name"].as_str().unwrap_or("").to_string(),
            image: c["image"].as_str().unwrap_or("").to_string(),
            env,
            mounts,
            working_dir: c["workingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .map(String::from),
            dns: Some(PodDns {
                pod_ip,
                fqdn,
                search,
                nameserver: "10.96.0.10".to_string(),
            }),
        })
    }

    /// Creates and starts a container; `None` (with the record updated) on failure.
    async fn create_container(
        &mut self,
        pod: &Value,
        c: &Value,
        init: bool,
        idx: usize,
    ) -> Option<ContainerId> {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        let spec = match self.container_spec(pod, c) {
            Ok(s) => s,
            Err(nr) => {
                let rec = if init {
                    &mut self.inits[idx]
                } else {
                    &mut self.apps[idx]
                };
                rec.state = json!({"waiting": {"reason": nr.reason, "message": nr.message}});
                self.event("Warning", "Failed", &format!("Error: {}", nr.message));
                self.publish();
                return None;
            }
        };
        let key = format!("{}/{}", self.ns, self.name);
        if !init && self.sh.store.faults().pod_faults().fail_start_pods.contains(&key) {
            let msg =
                "failed to create containerd task: failed to start shim: kubesim: injected start failure";
            self.apps[idx].state = json!({"waiting": {"reason": "RunContainerError", "message": msg}});
            self.event("Warning", "Failed", &format!("Error: {msg}"));
            self.publish();
            return None;
        }
        let started = self.sh.runtime.start_container(spec).await;
        let id = match started {
            Ok(id) => id,
            Err(e) => {
                let rec = if init {
                    &mut self.inits[idx]
                } else {
                    &mut self.apps[idx]
                };
                rec.state = json!({"waiting": {"reason": "RunContainerError", "message": e.to_string()}});
                self.event("Warning", "Failed", &format!("Error: {e}"));
                self.publish();
                return None;
            }
        };
        self.event("Normal", "Created", &format!("Created container: {cname}"));
        if !self.sleep(self.sh.config.container_start_delay).await {
            let _ = self.sh.runtime.stop_container(&id).await;
            return None;
        }
        self.event("Normal", "Started", &format!("Started container {cname}"));
        let rec = if init {
            &mut self.inits[idx]
        } else {
            &mut self.apps[idx]
        };
        rec.id = Some(id.to_string());
        rec.state = json!({"running": {"startedAt": now_rfc3339()}});
        rec.started = true;
        Some(id)
    }

    async fn log(&self, container: &str, stream: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Err(e) = self
            .sh
            .runtime
            .append_log(&self.uid, container, stream, text)
            .await
        {
            tracing::debug!(pod = %self.name, error = %e, "writing container log failed");
        }
    }

    /// Runs init container `i` to success; `false` when the pod cannot continue.
    async fn run_init(&mut self, i: usize, c: &Value) -> bool {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        loop {
            if !self.pull(c).await {
                return false;
            }
            let Some(pod) = self.pod() else {
                return false;
            };
            let Some(id) = self.create_container(&pod, c, true, i).await else {
                if self.terminate {
                    return false;
                }
                let d = self.next_backoff(&cname);
                if !self.sleep(d).await {
                    return false;
                }
                continue;
            };
            let started_at = self.inits[i].state["running"]["startedAt"].clone();
            self.publish();
            let command = argv(c);
            let exit = if command.is_empty() {
                0
            } else {
                let run = self.sh.runtime.run(&id, &command, None);
                let result = tokio::select! {
                    r = run => Some(r),
                    cmd = self.rx.recv() => {
                        if matches!(cmd, Some(Cmd::Terminate) | None) {
                            self.terminate = true;
                        }
                        None
                    }
                };
                match result {
                    None => {
                        // Terminate requested (other commands are dropped while initializing).
                        let _ = self.sh.runtime.stop_container(&id).await;
                        if self.terminate {
                            return false;
                        }
                        continue;
                    }
                    Some(Ok(out)) => {
                        self.log(&cname, "stdout", &String::from_utf8_lossy(&out.stdout))
                            .await;
                        self.log(&cname, "stderr", &String::from_utf8_lossy(&out.stderr))
                            .await;
                        out.exit_code
                    }
                    Some(Err(e @ (SandboxError::BwrapMissing | SandboxError::SandboxUnusable(_)))) => {
                        // No sandbox on this machine: the command cannot run; let the pod start.
                        self.log(&cname, "stderr", &format!("kubesim: command not run: {e}"))
                            .await;
                        0
                    }
                    Some(Err(e)) => {
                        self.log(&cname, "stderr", &e.to_string()).await;
                        128
                    }
                }
            };
            let _ = self.sh.runtime.stop_container(&id).await;
            let terminated = json!({"terminated": {
                "exitCode": exit, "reason": if exit == 0 { "Completed" } else { "Error" },
                "startedAt": started_at, "finishedAt": now_rfc3339(), "containerID": id.as_str()}});
            let rec = &mut self.inits[i];
            rec.state = terminated.clone();
            rec.ready = exit == 0;
            if exit == 0 {
                self.publish();
                return true;
            }
            let policy = self.pod().map(|p| {
                p["spec"]["restartPolicy"]
                    .as_str()
                    .unwrap_or("Always")
                    .to_string()
            });
            if policy.as_deref() == Some("Never") {
                self.failed = true;
                self.publish();
                return false;
            }
            let rec = &mut self.inits[i];
            rec.last_state = terminated;
            rec.restart_count += 1;
            let d = self.next_backoff(&cname);
            let msg = format!(
                "back-off {}s restarting failed container={cname} pod={}_{}({})",
                d.as_secs(),
                self.name,
                self.ns,
                self.uid
            );
            self.inits[i].state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
            self.publish();
            self.event(
                "Warning",
                "BackOff",
                &format!(
                    "Back-off restarting failed container {cname} in pod {}_{}({})",
                    self.name, self.ns, self.uid
                ),
            );
            if !self.sleep(d).await {
                return false;
            }
        }
    }

    /// Starts app container `i` (pull, create, start, postStart) until it runs; `false` on
    /// termination.
    async fn start_app(&mut self, i: usize, c: &Value) -> bool {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        loop {
            if !self.pull(c).await {
                return false;
            }
            let Some(pod) = self.pod() else {
                return false;
            };
            let Some(id) = self.create_container(&pod, c, false, i).await else {
                if self.terminate {
                    return false;
                }
                let d = self.next_backoff(&cname);
                let msg = format!(
                    "back-off {}s restarting failed container={cname} pod={}_{}({})",
                    d.as_secs(),
                    self.name,
                    self.ns,
                    self.uid
                );
                self.apps[i].state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
                self.publish();
                if !self.sleep(d).await {
                    return false;
                }
                continue;
            };
            self.log(
                &cname,
                "stdout",
                &format!(
                    "kubesim: container {cname} started from image {} as {id}",
                    c["image"].as_str().unwrap_or("")
                ),
            )
            .await;
            if let Some(hook) = c["lifecycle"]["postStart"]["exec"]["command"].as_array() {
                let hook: Vec<String> = hook.iter().filter_map(|s| s.as_str().map(String::from)).collect();
                let ok = match self.sh.runtime.run(&id, &hook, None).await {
                    Ok(out) if out.exit_code == 0 => true,
                    Ok(out) => {
                        tracing::debug!(pod = %self.name, code = out.exit_code, "postStart hook failed");
                        false
                    }
                    Err(SandboxError::BwrapMissing | SandboxError::SandboxUnusable(_)) => true,
                    Err(_) => false,
                };
                if !ok {
                    self.event("Warning", "FailedPostStartHook", "PostStartHook failed");
                    let _ = self.sh.runtime.stop_container(&id).await;
                    self.event(
                        "Normal",
                        "Killing",
                        &format!("FailedPostStartHook: Stopping container {cname}"),
                    );
                    let rec = &mut self.apps[i];
                    rec.last_state = json!({"terminated": {"exitCode": 137, "reason": "Error",
                        "startedAt": rec.state["running"]["startedAt"], "finishedAt": now_rfc3339(), "containerID": id.as_str()}});
                    rec.restart_count += 1;
                    rec.ready = false;
                    let d = self.next_backoff(&cname);
                    let msg = format!(
                        "back-off {}s restarting failed container={cname} pod={}_{}({})",
                        d.as_secs(),
                        self.name,
                        self.ns,
                        self.uid
                    );
                    self.apps[i].state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
                    self.publish();
                    if !self.sleep(d).await {
                        return false;
                    }
                    continue;
                }
            }
            let delay = c["readinessProbe"]["initialDelaySeconds"].as_u64().unwrap_or(0);
            if delay == 0 {
                self.apps[i].ready = true;
            } else {
                self.ready_at[i] = Some(Instant::now() + Duration::from_secs(delay));
            }
            self.backoff.remove(&cname);
            self.publish();
            return true;
        }
    }

    async fn serve(&mut self) {
        loop {
            let next_ready = self.ready_at.iter().flatten().min().copied();
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    None | Some(Cmd::Terminate) => {
                        self.terminate = true;
                        return self.finish().await;
                    }
                    Some(Cmd::Recheck) => {}
                    Some(Cmd::Fail) => self.fail().await,
                    Some(Cmd::Restart(which)) => {
                        if self.failed {
                            continue;
                        }
                        let names: Vec<String> = match which {
                            Some(n) => vec![n],
                            None => self.apps.iter().map(|c| c.name.clone()).collect(),
                        };
                        for n in names {
                            if !self.restart_app(&n).await {
                                return self.finish().await;
                            }
                        }
                    }
                },
                () = sleep_until_opt(next_ready) => {
                    let now = Instant::now();
                    for (i, at) in self.ready_at.iter_mut().enumerate() {
                        if at.is_some_and(|t| t <= now) {
                            *at = None;
                            self.apps[i].ready = true;
                        }
                    }
                    self.publish();
                }
            }
        }
    }

    async fn restart_app(&mut self, name: &str) -> bool {
        let Some(i) = self.apps.iter().position(|c| c.name == name) else {
            return true;
        };
        let Some(c) = self.pod_spec_container("containers", name) else {
            return true;
        };
        if let Some(old) = self.apps[i].id.clone().and_then(|s| ContainerId::parse(&s)) {
            let _ = self.sh.runtime.stop_container(&old).await;
        }
        logs::rotate(&self.sh.runtime, &self.uid, name).await;
        let rec = &mut self.apps[i];
        if rec.is_running() {
            rec.last_state = json!({"terminated": {"exitCode": 137, "reason": "Error",
                "startedAt": rec.state["running"]["startedAt"], "finishedAt": now_rfc3339(),
                "containerID": rec.id.clone().unwrap_or_default()}});
        }
        rec.restart_count += 1;
        rec.ready = false;
        rec.state = json!({"waiting": {"reason": "ContainerCreating"}});
        self.ready_at[i] = None;
        self.publish();
        let policy = self.pod().map(|p| {
            p["spec"]["restartPolicy"]
                .as_str()
                .unwrap_or("Always")
                .to_string()
        });
        if policy.as_deref() == Some("Never") {
            self.apps[i].state = self.apps[i].last_state.clone();
            self.apps[i].restart_count -= 1;
            if self.apps.iter().all(|c| !c.is_running()) {
                self.failed = true;
            }
            self.publish();
            return true;
        }
        self.start_app(i, &c).await
    }

    async fn fail(&mut self) {
        for (cname, id) in self.sh.runtime.pod_containers(&self.uid) {
            let _ = self.sh.runtime.stop_container(&id).await;
            if let Some(rec) = self.apps.iter_mut().find(|r| r.name == cname) {
                rec.state = json!({"terminated": {"exitCode": 137, "reason": "Error",
                    "startedAt": rec.state["running"]["startedAt"], "finishedAt": now_rfc3339(), "containerID": id.as_str()}});
                rec.ready = false;
            }
        }
        self.ready_at.iter_mut().for_each(|r| *r = None);
        self.failed = true;
        self.publish();
    }

    /// Stops everything, removes the sandbox and finishes the pod's deletion.
    async fn finish(&mut self) {
        let pod = self.pod();
        if let Some(pod) = &pod {
            let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30);
            for c in containers(pod, "containers") {
                let cname = c["name"].as_str().unwrap_or("").to_string();
                let Some(rec) = self.apps.iter().find(|r| r.name == cname && r.is_running()) else {
                    continue;
                };
                let Some(id) = rec.id.clone().and_then(|s| ContainerId::parse(&s)) else {
                    continue;
                };
                if let Some(hook) = c["lifecycle"]["preStop"]["exec"]["command"].as_array() {
                    let hook: Vec<String> =
                        hook.iter().filter_map(|s| s.as_str().map(String::from)).collect();
                    let run = self.sh.runtime.run(&id, &hook, None);
                    if tokio::time::timeout(Duration::from_secs(grace), run)
                        .await
                        .is_err()
                    {
                        self.event("Warning", "FailedPreStopHook", "PreStopHook failed");
                    }
                }
                self.event("Normal", "Killing", &format!("Stopping container {cname}"));
            }
        }
        let _ = self.sh.runtime.remove_pod(&self.uid).await;
        if self.terminate
            || pod
                .as_ref()
                .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string())
        {
            finish_deletion(&self.sh.store, &self.ns, &self.name, &self.uid);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
