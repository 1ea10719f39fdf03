//! The simulated control plane and nodes: scheduler, kubelet, StatefulSet controller, PVC
//! binder (persistent-volume controller with a local provisioner) and the Endpoints /
//! EndpointSlice controllers.
//!
//! Every controller is a tokio task fed by the store's event stream ([`Store::subscribe`]): it
//! lists once, then reconciles the keys each event touches (re-listing everything when it fell
//! behind). Writes are skipped when nothing changed, so the loops converge. Delays (image pull,
//! container start) are timers inside the kubelet's per-pod workers, not polling.
//!
//! Wiring:
//! ```text
//! let runtime = kubesim::sandbox::Runtime::new(state_dir)?;   // or Runtime::new_virtual
//! let (config, kubelet) = kubesim::controllers::install(SimConfig::default(), runtime, NodeConfig::default());
//! let sim = kubesim::Sim::start(config).await?;
//! ```
//! or [`tasks`] / [`tasks_with_control`] for `SimConfig::controllers` plus
//! `exec::NodePodHandler` for `SimConfig::pod_handler`, or [`spawn_all`] on an existing store.

pub mod endpoints;
pub mod kubelet;
pub mod pvc;
pub mod scheduler;
pub mod statefulset;

use std::{collections::BTreeSet, time::Duration};

use serde_json::{json, Value};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    error::ApiError,
    resources::ResourceKey,
    sandbox::Runtime,
    store::{Store, WatchEvent},
    ControllerTask,
};

/// Settings of the simulated nodes.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Time an image pull takes (the first time an image is used on a node).
    pub image_pull_delay: Duration,
    /// Time between creating and starting a container.
    pub container_start_delay: Duration,
    /// First back-off after a failed container start or init container (doubles, capped at 5 min).
    pub crash_backoff: Duration,
    /// How often the kubelet looks at the pod fault hooks (`crashPods`, `failStartPods`).
    pub fault_check_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            image_pull_delay: Duration::ZERO,
            container_start_delay: Duration::ZERO,
            crash_backoff: Duration::from_secs(10),
            fault_check_interval: Duration::from_millis(500),
        }
    }
}

/// The objects the node side needs at start: Nodes `kubesim-node-<i>` and the default
/// StorageClass `standard`. (`kubesim::bootstrap` already creates them; this is for embedders
/// that assemble their own store.)
pub fn bootstrap_objects(nodes: usize) -> Vec<(ResourceKey, Value)> {
    let mut v: Vec<(ResourceKey, Value)> = (1..=nodes)
        .map(|i| {
            let name = format!("kubesim-node-{i}");
            (
                ResourceKey::core("nodes"),
                json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
                    "spec": {"podCIDR": format!("10.244.{i}.0/24"), "podCIDRs": [format!("10.244.{i}.0/24")]},
                    "status": {"capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                               "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                               "addresses": [{"type": "InternalIP", "address": format!("172.18.0.{}", i + 1)},
                                             {"type": "Hostname", "address": name}]}}),
            )
        })
        .collect();
    v.push((
        ResourceKey::new("storage.k8s.io", "v1", "storageclasses"),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubesim.io/local", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"}),
    ));
    v
}

/// The controller tasks, for `SimConfig::controllers`.
pub fn tasks(runtime: Runtime, config: NodeConfig) -> Vec<ControllerTask> {
    let mut v: Vec<ControllerTask> = Vec::new();
    v.push(Box::new(|store, sd| Box::pin(scheduler::run(store, sd))));
    let rt = runtime.clone();
    v.push(Box::new(move |store, sd| Box::pin(pvc::run(store, rt, sd))));
    v.push(Box::new(|store, sd| Box::pin(statefulset::run(store, sd))));
    v.push(Box::new(|store, sd| Box::pin(endpoints::run(store, sd))));
    v.push(Box::new(move |store, sd| {
        Box::pin(kubelet::run(store, runtime, config, sd))
    }));
    v
}

/// The controller tasks plus a handle to command the kubelet directly (restart a container,
/// fail a pod).
pub fn tasks_with_control(
    runtime: Runtime,
    config: NodeConfig,
) -> (Vec<ControllerTask>, kubelet::KubeletControl) {
    let (control, commands) = kubelet::KubeletControl::new();
    let mut v = tasks(runtime.clone(), config.clone());
    v.pop();
    v.push(Box::new(move |store, sd| {
        Box::pin(kubelet::run_with_control(
            store,
            runtime,
            config,
            Some(commands),
            sd,
        ))
    }));
    (v, control)
}

/// Adds the node side to a simulator configuration: the controllers and the `pods/exec` /
/// `pods/log` handler, all on `runtime`. Returns the kubelet's control handle.
pub fn install(
    mut sim: crate::SimConfig,
    runtime: Runtime,
    config: NodeConfig,
) -> (crate::SimConfig, kubelet::KubeletControl) {
    let (tasks, control) = tasks_with_control(runtime.clone(), config);
    sim.controllers.extend(tasks);
    sim.pod_handler = Some(std::sync::Arc::new(crate::exec::NodePodHandler::new(runtime)));
    (sim, control)
}

/// Spawns every controller on an existing store.
pub fn spawn_all(
    store: &Store,
    runtime: &Runtime,
    config: &NodeConfig,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    tasks(runtime.clone(), config.clone())
        .into_iter()
        .map(|t| tokio::spawn(t(store.clone(), shutdown.child_token())))
        .collect()
}

/// `(namespace, name)`.
pub(crate) type Key = (String, String);

/// A level-triggered controller over the store's event stream.
pub(crate) trait Reconciler: Send {
    /// Keys an event makes dirty (a controller may also update its own indexes here).
    fn keys_for(&mut self, store: &Store, ev: &WatchEvent) -> Vec<Key>;
    /// Every key (start and resync after falling behind; indexes are rebuilt here).
    fn all_keys(&mut self, store: &Store) -> Vec<Key>;
    /// Brings one key to its desired state.
    fn reconcile(&mut self, store: &Store, key: &Key);
}

/// Runs a [`Reconciler`] until shutdown.
///
/// Keys are reconciled one at a time; between two reconciles the events that arrived meanwhile
/// are taken in (cheap: `keys_for` only looks at the event), so a long queue never lets the
/// event stream overflow the subscriber's buffer, which would cost a full re-list.
pub(crate) async fn run_reconciler<R: Reconciler>(store: Store, shutdown: CancellationToken, mut r: R) {
    let mut rx = store.subscribe();
    let mut queue: BTreeSet<Key> = r.all_keys(&store).into_iter().collect();
    loop {
        while let Some(key) = queue.pop_first() {
            r.reconcile(&store, &key);
            if !drain(&store, &mut rx, &mut r, &mut queue) {
                return;
            }
            // Reconciles are synchronous; yield between keys so a long queue never starves the
            // API server's request handlers on the same worker threads.
            tokio::task::yield_now().await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => queue.extend(r.keys_for(&store, &ev)),
                Err(RecvError::Lagged(_)) => {
                    store.note_lag();
                    queue.extend(r.all_keys(&store));
                }
                Err(RecvError::Closed) => return,
            },
        }
        if !drain(&store, &mut rx, &mut r, &mut queue) {
            return;
        }
    }
}

/// Takes in every event already received; `false` when the stream is closed.
fn drain<R: Reconciler>(
    store: &Store,
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<WatchEvent>>,
    r: &mut R,
    queue: &mut BTreeSet<Key>,
) -> bool {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match rx.try_recv() {
            Ok(ev) => queue.extend(r.keys_for(store, &ev)),
            Err(TryRecvError::Lagged(_)) => {
                store.note_lag();
                queue.extend(r.all_keys(store));
            }
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Closed) => return false,
        }
    }
}

pub(crate) fn pods_key() -> ResourceKey {
    ResourceKey::core("pods")
}

pub(crate) fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

pub(crate) fn ns_of(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

pub(crate) fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

pub(crate) fn key_of(obj: &Value) -> Key {
    (ns_of(obj).to_string(), name_of(obj).to_string())
}

pub(crate) fn is_terminating(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// The controller owner reference of an object, if it is of `kind`.
pub(crate) fn controller_owner<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == json!(true) && o["kind"] == kind)
}

/// A controller owner reference to `owner`.
pub(crate) fn controller_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The `Ready` condition of a pod is `True`.
pub(crate) fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

pub(crate) fn pod_running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && pod_ready(pod) && !is_terminating(pod)
}

/// Updates the status of an object from a fresh read, retrying on conflicts; skips the write
/// when `f` leaves the status unchanged. `Ok(None)`: the object is gone (or has another uid).
pub(crate) fn update_status_with(
    store: &Store,
    key: &ResourceKey,
    ns: Option<&str>,
    name: &str,
    uid: Option<&str>,
    mut f: impl FnMut(&mut Value),
) -> Result<Option<Value>, ApiError> {
    for _ in 0..5 {
        let Some(mut obj) = store.get(key, ns, name) else {
            return Ok(None);
        };
        if uid.is_some_and(|u| u != uid_of(&obj)) {
            return Ok(None);
        }
        let before = obj["status"].clone();
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        f(&mut obj["status"]);
        if obj["status"] == before {
            return Ok(Some(obj));
        }
        match store.update_status(key, ns, obj) {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.code == 409 => continue,
            Err(e) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        409,
        "Conflict",
        format!("status of {name} kept changing"),
    ))
}

/// Parses a Kubernetes quantity to a float in base units (cores, bytes).
pub(crate) fn parse_quantity(q: &Value) -> Option<f64> {
    let s = match q {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => return n.as_f64(),
        _ => return None,
    };
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0f64.powi(5)),
        ("Ei", 1024.0f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, mult) in suffixes {
        if let Some(num) = s.strip_suffix(suffix) {
            return num.parse::<f64>().ok().map(|n| n * mult);
        }
    }
    s.parse::<f64>().ok()
}

/// Records an Event (never fails).
pub(crate) fn event(store: &Store, obj: &Value, type_: &str, reason: &str, message: &str, component: &str) {
    store.record_event(obj, type_, reason, message, component);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_base_units() {
        assert_eq!(parse_quantity(&json!("500m")), Some(0.5));
        assert_eq!(parse_quantity(&json!("2")), Some(2.0));
        assert_eq!(parse_quantity(&json!("1Gi")), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity(&json!("4G")), Some(4e9));
        assert_eq!(parse_quantity(&json!(3)), Some(3.0));
        assert_eq!(parse_quantity(&json!("x")), None);
    }

    #[test]
    fn bootstrap_has_nodes_and_a_default_storage_class() {
        let objs = bootstrap_objects(2);
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[1].1["metadata"]["name"], "kubesim-node-2");
        assert_eq!(
            objs[2].1["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
    }
}
