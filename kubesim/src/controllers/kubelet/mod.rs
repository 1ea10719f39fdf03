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
//!
//! LAYOUT: this file runs the node loop (pod events, commands, worker handles); `worker` is one
//! pod's worker (its life and status) with `worker::containers` (pulls, container specs, init and
//! app containers, restarts); `volumes`/`subpath` prepare volumes and mounts; `status` composes
//! the pod status.

pub(crate) mod status;
mod subpath;
mod volumes;
mod worker;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::Value;
use tokio::{
    sync::{broadcast::error::RecvError, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use self::worker::{finish_deletion, Cmd, Shared, Worker};
use super::{name_of, pods_key, uid_of, NodeConfig};
use crate::{
    faults::PodFaults,
    sandbox::Runtime,
    store::{EventKind, Store},
};

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
