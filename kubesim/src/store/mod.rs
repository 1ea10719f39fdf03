//! The object store: every API object, the global resourceVersion, the watch history.
//!
//! INTERFACE FOR CONTROLLERS
//! =========================
//! Simulated controllers (kubelet, scheduler, StatefulSet controller...) talk to the API through
//! this in-process handle; it is the same storage the HTTP API serves, minus admission webhooks,
//! fault injection and request accounting.
//!
//! ```text
//! let store: Store = sim.store();                // cheap to clone (Arc inside)
//! let pods = ResourceKey::core("pods");
//! store.get(&pods, Some("ns"), "web-0") -> Option<Value>
//! store.list(&pods, Some("ns")) -> (Vec<Value>, u64)        // None = all namespaces; u64 = list rv
//! store.create(&pods, Some("ns"), obj) -> Result<Value, ApiError>
//! store.update(&pods, Some("ns"), obj) -> Result<Value, ApiError>        // 409 if metadata.resourceVersion is stale
//! store.update_status(&pods, Some("ns"), obj) -> Result<Value, ApiError> // only .status is taken
//! store.delete(&pods, Some("ns"), "web-0", &DeleteOptions::default()) -> Result<Option<Value>, ApiError>
//!        // Ok(Some(obj)): still present (finalizers / graceful pod deletion); Ok(None): gone
//! store.watch(Some(&pods), rv) -> Result<Watch, ApiError>    // events with rv > `rv`; 410 if compacted
//! store.subscribe() -> broadcast::Receiver<Arc<WatchEvent>>  // every event of every resource, live only
//! store.faults() / store.metrics()                          // fault hooks (PodFaults for kubelet/exec)
//! store.events(): store.record_event(...)                   // core/v1 Event helper
//! ```
//! Writes through this interface use field manager `kube-controller-manager` unless
//! [`WriteOptions`] names another (`create_with` / `update_with` / `update_status_with`).
//!
//! Pod deletion is graceful like the real server: deleting a pod that is bound to a node
//! (`spec.nodeName` set) and not terminated only sets `deletionTimestamp` (now + grace) and
//! `deletionGracePeriodSeconds`. The simulated kubelet must finish it by deleting with
//! `grace_period_seconds: Some(0)` once the containers have stopped. A fallback reaper in the
//! garbage collector deletes such pods when their grace period has expired.
//!
//! LAYOUT: this file holds the types, the shared state and the hooks ([`KindHooks`]); `reads`,
//! `create`, `update` and `delete` the verbs; `watch_fanout` the event history and its
//! subscribers; `gc` the controllers that act on deletion; `alloc` ClusterIP/NodePort
//! allocation; `convert` Event storage conversion; `index` the owner/uid/node indexes; `snapshot`
//! past states for paging. None of them imports the layers the store serves (built-in kinds,
//! CRDs, admission, the HTTP server): those plug in through [`KindHooks`] and
//! [`controller_admission::ControllerAdmission`].

pub mod alloc;
pub mod controller_admission;
pub mod convert;
mod create;
mod delete;
pub mod gc;
mod index;
mod reads;
mod snapshot;
mod update;
mod watch_fanout;

pub use index::ObjectRef;
pub use watch_fanout::Watch;

use crate::error::{ApiError, Cause};
use crate::faults::{Faults, Metrics};
use crate::resources::{GroupResource, Registry, ResourceInfo, ResourceKey};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, Notify};

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object deleted.
    Deleted,
}

impl EventKind {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change in the store.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// Kind of change.
    pub kind: EventKind,
    /// Which resource.
    pub gr: GroupResource,
    /// Namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// resourceVersion of this change.
    pub rv: u64,
    /// The object after the change (for DELETED: the last state, with the deletion rv).
    pub object: Arc<Value>,
    /// The object before the change (MODIFIED/DELETED).
    pub old: Option<Arc<Value>>,
}

/// How dependents are handled on delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete now, GC deletes dependents afterwards.
    Background,
    /// Owner stays (foregroundDeletion finalizer) until blocking dependents are gone.
    Foreground,
    /// Dependents lose their owner reference (orphan finalizer).
    Orphan,
}

/// Delete options.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// propagationPolicy.
    pub propagation: Option<Propagation>,
    /// gracePeriodSeconds (pods).
    pub grace_period_seconds: Option<i64>,
    /// preconditions.uid.
    pub precondition_uid: Option<String>,
    /// preconditions.resourceVersion.
    pub precondition_rv: Option<String>,
    /// dryRun=All.
    pub dry_run: bool,
}

/// Write options.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Field manager recorded in managedFields (default `kube-controller-manager`).
    pub field_manager: Option<String>,
    /// dryRun=All: validate and return, do not persist.
    pub dry_run: bool,
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("kube-controller-manager")
    }
}

/// Store configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Number of events kept for watch resumption; older resume points get 410 Gone.
    pub history: usize,
    /// Broadcast buffer per watcher; a watcher that falls further behind is closed.
    pub watch_buffer: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history: 10_000,
            watch_buffer: 10_000,
        }
    }
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

/// Backlog events plus the live receiver of a watch.
pub(crate) type Backlog = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>);

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) rv: u64,
    pub(crate) objects: HashMap<GroupResource, Objects>,
    pub(crate) history: VecDeque<Arc<WatchEvent>>,
    pub(crate) compacted: u64,
    pub(crate) alloc: alloc::Allocations,
    pub(crate) index: index::Index,
}

/// What the layers the store serves (built-in kinds, custom resources) add to writes: defaults,
/// validation, reactions to committed writes. The store calls them through this trait, given to
/// [`Store::new`], and does not depend on those layers (`kubesim::kinds::ApiKinds` is the
/// implementation the API server uses).
pub trait KindHooks: Send + Sync {
    /// Fills in defaults (on create and on update).
    fn default_object(&self, info: &ResourceInfo, obj: &mut Value);
    /// Keeps server-set values an update may omit (a Service's clusterIP...).
    fn preserve_on_update(&self, info: &ResourceInfo, old: &Value, new: &mut Value);
    /// Kind-specific validation: the causes of an `Invalid` error.
    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<Cause>;
    /// Reacts to a committed write (`new` None: deleted; `old` None: created).
    fn after_write(&self, store: &Store, info: &ResourceInfo, new: Option<&Value>, old: Option<&Value>);
}

pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) state: Mutex<State>,
    pub(crate) tx: broadcast::Sender<Arc<WatchEvent>>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: StoreConfig,
    pub(crate) gc_wake: Notify,
    pub(crate) controller_admission: controller_admission::Slot,
    /// What the kinds above the storage add to writes.
    pub(crate) hooks: Arc<dyn KindHooks>,
    /// Objects looked at by in-process reads (see [`Store::objects_visited`]).
    pub(crate) visited: std::sync::atomic::AtomicU64,
    /// Times a subscriber fell behind the event stream (see [`Store::stream_lags`]).
    pub(crate) lags: std::sync::atomic::AtomicU64,
}

/// The store handle (cheap to clone).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Current time in the API's RFC 3339 second format.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parse an object's `metadata.resourceVersion`.
pub fn object_rv(obj: &Value) -> Option<u64> {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

/// `metadata` as a map, created when missing (`None` only if the object is not an object or
/// metadata has a non-object value, which entry points reject with 400 before we get here).
fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let o = obj.as_object_mut()?;
    o.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

fn check_object(obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is unrecognized (must be a JSON object)",
        ));
    }
    match obj.get("metadata") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "Object 'metadata' is invalid: json: cannot unmarshal into Go struct field of type v1.ObjectMeta",
        )),
    }
}

/// Strip `time` from managedFields entries (no-op detection ignores timestamps).
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(Value::Array(mf)) = o.get_mut("metadata").and_then(|m| m.get_mut("managedFields")) {
        for e in mf.iter_mut() {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    o
}

/// Everything except metadata (and status when it is a subresource).
fn generation_view(obj: &Value, has_status: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if has_status {
            m.remove("status");
        }
    }
    o
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

impl Store {
    /// A new, empty store with the built-in resources registered.
    pub fn new(
        config: StoreConfig,
        faults: Arc<Faults>,
        metrics: Arc<Metrics>,
        hooks: Arc<dyn KindHooks>,
    ) -> Self {
        let (tx, _) = broadcast::channel(config.watch_buffer.max(16));
        Store {
            inner: Arc::new(Shared {
                registry: Registry::with_builtins(),
                state: Mutex::new(State::default()),
                tx,
                faults,
                metrics,
                config,
                gc_wake: Notify::new(),
                controller_admission: controller_admission::Slot::default(),
                hooks,
                visited: std::sync::atomic::AtomicU64::new(0),
                lags: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource registry (built-ins + CRDs).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Fault configuration.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.inner.faults
    }

    /// Request counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Oldest resourceVersion a watch can resume from.
    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted
    }

    /// Drop the watch history up to the current rv: any resume from an older rv gets 410.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.history.clear();
        st.compacted = st.rv;
    }

    /// Compact the history and end every open watch with a 410 `Expired` ERROR event, as the
    /// API server does when etcd compacts the revisions a watch was streaming from.
    pub fn expire_watches(&self) {
        self.compact();
        self.faults().expire_watches();
    }

    /// Remove every object (keeps the rv counter monotonic), then re-run `bootstrap`.
    pub fn wipe(&self) {
        let mut st = self.lock();
        st.objects.clear();
        st.index.clear();
        st.history.clear();
        // Every resume point from before the loss must get 410 (clients relist).
        st.rv += 1;
        st.compacted = st.rv;
        st.alloc = alloc::Allocations::default();
        drop(st);
        for i in self.registry().all() {
            if let Some(c) = &i.crd {
                self.registry().set_crd(c, Vec::new());
            }
        }
    }

    pub(crate) fn info(&self, res: &ResourceKey) -> Result<Arc<ResourceInfo>, ApiError> {
        self.registry().get(res).ok_or_else(ApiError::no_route)
    }

    fn ns_key(info: &ResourceInfo, ns: Option<&str>) -> String {
        if info.namespaced {
            ns.unwrap_or_default().to_string()
        } else {
            String::new()
        }
    }

    /// Convert a stored object to the requested version (CRDs: `None` conversion).
    pub(crate) fn to_version(info: &ResourceInfo, obj: &Value) -> Value {
        if info.converted() {
            return convert::event_from_core(obj);
        }
        let mut o = obj.clone();
        if o["apiVersion"].as_str() != Some(info.api_version().as_str()) {
            o["apiVersion"] = json!(info.api_version());
        }
        o
    }

    pub(crate) fn wake_gc(&self) {
        self.inner.gc_wake.notify_one();
    }

    /// Hooks after a committed write (CRD registration, GC wakeups).
    fn after_write(&self, info: &ResourceInfo, new: Option<&Arc<Value>>, old: Option<&Arc<Value>>) {
        self.inner
            .hooks
            .after_write(self, info, new.map(|a| a.as_ref()), old.map(|a| a.as_ref()));
        if info.group.is_empty() && info.resource == "namespaces" && old.is_none() {
            if let Some(ns) = new.and_then(|n| n["metadata"]["name"].as_str()) {
                self.namespace_defaults(ns);
            }
        }
        let deleting = new.is_some_and(|n| n["metadata"]["deletionTimestamp"].is_string());
        if new.is_none() || deleting {
            self.wake_gc();
        }
    }

    /// Exact snapshot of one resource at `rv` (reconstructed from the history), for consistent
    /// paging and `resourceVersionMatch=Exact`.
    pub(crate) fn snapshot_at(&self, gr: &GroupResource, rv: u64) -> Result<Objects, ApiError> {
        snapshot::at(self, gr, rv)
    }
}

/// Effective field-manager name the real server derives from a user agent.
pub fn manager_from_user_agent(ua: &str) -> String {
    ua.split('/').next().unwrap_or(ua).to_string()
}
