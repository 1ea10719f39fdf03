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

pub mod alloc;
pub mod controller_admission;
pub mod convert;
pub mod gc;
mod index;
mod snapshot;

pub use index::ObjectRef;

use crate::error::{ApiError, Cause};
use crate::faults::{Faults, Metrics};
use crate::managed;
use crate::resources::{GroupResource, Registry, ResourceInfo, ResourceKey};
use crate::validation;
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

/// A watch on the store: backlog first, then live events.
#[derive(Debug)]
pub struct Watch {
    backlog: VecDeque<Arc<WatchEvent>>,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    filter: Option<GroupResource>,
    last_rv: u64,
}

impl Watch {
    /// Next event; `None` when the watcher fell too far behind (or the store was dropped): the
    /// caller should re-list.
    pub async fn next(&mut self) -> Option<Arc<WatchEvent>> {
        if let Some(e) = self.backlog.pop_front() {
            self.last_rv = e.rv;
            return Some(e);
        }
        loop {
            match self.rx.recv().await {
                Ok(e) => {
                    if e.rv <= self.last_rv {
                        continue;
                    }
                    if let Some(f) = &self.filter {
                        if &e.gr != f {
                            continue;
                        }
                    }
                    self.last_rv = e.rv;
                    return Some(e);
                }
                Err(_) => return None,
            }
        }
    }

    /// The resourceVersion of the last delivered event (or the start point).
    pub fn last_rv(&self) -> u64 {
        self.last_rv
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

    /// Get one object.
    pub fn get(&self, res: &ResourceKey, ns: Option<&str>, name: &str) -> Option<Value> {
        let info = self.registry().get(res)?;
        let arc = self.get_arc(&info.group_resource(), &Self::ns_key(&info, ns), name)?;
        Some(Self::to_version(&info, &arc))
    }

    /// Get one object or a NotFound error.
    pub fn get_or_404(&self, res: &ResourceKey, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let info = self.info(res)?;
        self.get(res, ns, name)
            .ok_or_else(|| ApiError::not_found(&info.group, &info.resource, name))
    }

    pub(crate) fn get_arc(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.visit(1);
        self.lock()
            .objects
            .get(gr)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// List objects (all namespaces when `ns` is None); returns the list resourceVersion.
    pub fn list(&self, res: &ResourceKey, ns: Option<&str>) -> (Vec<Value>, u64) {
        let Some(info) = self.registry().get(res) else {
            return (Vec::new(), self.current_rv());
        };
        // Copy the (shared) pointers under the lock, convert outside it.
        let ns = if info.namespaced { ns } else { None };
        let (arcs, rv) = self.list_arcs(&info.group_resource(), ns);
        (arcs.iter().map(|o| Self::to_version(&info, o)).collect(), rv)
    }

    /// Like [`Store::list`], but only the objects `keep` accepts are converted (copied): the
    /// controllers use it to pick a few objects out of a namespace without copying all of it.
    /// `keep` sees the stored form, which for the core and apps kinds is the served form.
    pub fn list_where(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let Some(info) = self.registry().get(res) else {
            return Vec::new();
        };
        let ns = if info.namespaced { ns } else { None };
        let (arcs, _) = self.list_arcs(&info.group_resource(), ns);
        arcs.iter()
            .filter(|o| keep(o))
            .map(|o| Self::to_version(&info, o))
            .collect()
    }

    /// Raw (shared) objects of a group/resource at the current rv, optionally one namespace.
    pub(crate) fn list_arcs(&self, gr: &GroupResource, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let st = self.lock();
        let items: Vec<Arc<Value>> = st
            .objects
            .get(gr)
            .map(|m| match ns {
                None => m.values().cloned().collect(),
                // Keys are (namespace, name): one namespace is one contiguous range.
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, o)| o.clone())
                    .collect(),
            })
            .unwrap_or_default();
        let rv = st.rv;
        drop(st);
        self.visit(items.len());
        (items, rv)
    }

    fn visit(&self, n: usize) {
        self.inner
            .visited
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many stored objects reads have looked at so far (gets, lists, including the ones a
    /// `list_where` filter rejects, dependents): a cost counter for tests that check that the
    /// simulated controllers do not scan every object per event.
    pub fn objects_visited(&self) -> u64 {
        self.inner.visited.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one subscriber (a simulated controller, the garbage collector, a watch stream) that
    /// fell behind the event stream by more than the buffer and had to re-list or close.
    pub(crate) fn note_lag(&self) {
        self.inner.lags.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times a subscriber of the event stream (simulated controller, garbage collector,
    /// watch stream) fell behind it so far: each one costs a full re-list (controllers) or a
    /// closed watch (the client resumes or re-lists). A cost counter, like
    /// [`Store::objects_visited`].
    pub fn stream_lags(&self) -> u64 {
        self.inner.lags.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Objects of `res` that have an ownerReference to `owner_uid` (found through the store's
    /// owner index, without looking at other objects).
    pub fn list_dependents(&self, res: &ResourceKey, owner_uid: &str) -> Vec<Value> {
        let Some(info) = self.registry().get(res) else {
            return Vec::new();
        };
        let gr = info.group_resource();
        let arcs: Vec<Arc<Value>> = {
            let st = self.lock();
            let objs = st.objects.get(&gr);
            st.index
                .dependents(owner_uid)
                .filter(|(g, _, _)| *g == gr)
                .filter_map(|(_, ns, name)| objs?.get(&(ns.clone(), name.clone())).cloned())
                .collect()
        };
        self.visit(arcs.len());
        arcs.iter().map(|o| Self::to_version(&info, o)).collect()
    }

    /// Where the object with this uid is, if it exists.
    pub fn locate_uid(&self, uid: &str) -> Option<ObjectRef> {
        self.lock().index.by_uid(uid).cloned()
    }

    /// Every object with an ownerReference to `owner_uid`.
    pub fn dependents_of(&self, owner_uid: &str) -> Vec<ObjectRef> {
        self.lock().index.dependents(owner_uid).cloned().collect()
    }

    /// `(namespace, name)` of the pods bound to `node` (`spec.nodeName`).
    pub fn pods_on_node(&self, node: &str) -> Vec<(String, String)> {
        self.lock().index.pods_on_node(node).cloned().collect()
    }

    /// Subscribe to every future event (all resources).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.inner.tx.subscribe()
    }

    /// Watch one resource (or all with `None`) from `from_rv` (exclusive). 410 if compacted.
    pub fn watch(&self, res: Option<&ResourceKey>, from_rv: u64) -> Result<Watch, ApiError> {
        let gr = res.map(ResourceKey::group_resource);
        let (backlog, rx) = self.watch_from(gr.as_ref(), from_rv)?;
        Ok(Watch {
            backlog: backlog.into(),
            rx,
            filter: gr,
            last_rv: from_rv,
        })
    }

    /// Backlog of events after `from_rv` plus a live receiver, atomically.
    pub(crate) fn watch_from(&self, gr: Option<&GroupResource>, from_rv: u64) -> Result<Backlog, ApiError> {
        let st = self.lock();
        if from_rv < st.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {} ({})",
                from_rv, st.compacted
            )));
        }
        let start = st.history.partition_point(|e| e.rv <= from_rv);
        let backlog = st
            .history
            .iter()
            .skip(start)
            .filter(|e| gr.is_none_or(|g| &e.gr == g))
            .cloned()
            .collect();
        let rx = self.inner.tx.subscribe();
        Ok((backlog, rx))
    }

    /// Current objects of a resource plus a live receiver, atomically (for rv=0/unset watches).
    pub(crate) fn snapshot_and_subscribe(
        &self,
        gr: &GroupResource,
    ) -> (Vec<Arc<Value>>, u64, broadcast::Receiver<Arc<WatchEvent>>) {
        let st = self.lock();
        let items = st
            .objects
            .get(gr)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let rx = self.inner.tx.subscribe();
        (items, st.rv, rx)
    }

    fn emit(&self, st: &mut State, ev: WatchEvent) {
        st.index.apply(&ev);
        let ev = Arc::new(ev);
        st.history.push_back(ev.clone());
        while st.history.len() > self.inner.config.history {
            if let Some(old) = st.history.pop_front() {
                st.compacted = old.rv;
            }
        }
        let _ = self.inner.tx.send(ev);
    }

    pub(crate) fn wake_gc(&self) {
        self.inner.gc_wake.notify_one();
    }

    // ------------------------------------------------------------------ create

    /// Create an object (internal path: no admission webhooks).
    pub fn create(&self, res: &ResourceKey, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        self.create_with(res, ns, obj, &WriteOptions::default())
    }

    /// Create with options.
    pub fn create_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let info = self.info(res)?;
        let obj = self.prepare_create(&info, ns, obj)?;
        self.validate_object(&info, &obj, None)?;
        self.commit_create(&info, obj, opts, "Update")
    }

    /// Defaulting and normalisation of a new object (before admission).
    pub(crate) fn prepare_create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        check_object(&obj)?;
        check_type_meta(info, &obj)?;
        if obj["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        obj["apiVersion"] = json!(info.api_version());
        obj["kind"] = json!(info.kind);
        let url_ns = ns.unwrap_or_default();
        if let Some(meta) = meta_mut(&mut obj) {
            if info.namespaced {
                let body_ns = meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if !body_ns.is_empty() && !url_ns.is_empty() && body_ns != url_ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                let eff = if url_ns.is_empty() {
                    body_ns
                } else {
                    url_ns.to_string()
                };
                if eff.is_empty() {
                    return Err(ApiError::bad_request(
                        "an empty namespace may not be set during creation",
                    ));
                }
                meta.insert("namespace".into(), json!(eff));
            } else {
                meta.remove("namespace");
            }
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "generation",
            ] {
                meta.remove(k);
            }
            let name = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if name.is_empty() {
                let gen = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if !gen.is_empty() {
                    meta.insert("name".into(), json!(validation::generate_name(&gen)));
                }
            }
        }
        if info.has_status() && !(info.group.is_empty() && info.resource == "nodes") {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.inner.hooks.default_object(info, &mut obj);
        if info.converted() {
            obj = convert::event_to_core(&obj);
        }
        Ok(obj)
    }

    /// Schema / semantic validation (after mutating admission).
    pub(crate) fn validate_object(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name");
        let mut causes = Vec::new();
        if name.is_empty() {
            causes.push(Cause::required(
                "metadata.name",
                "name or generateName is required",
            ));
        } else {
            causes.extend(validation::validate_name(
                validation::name_rule(&info.group, &info.resource),
                name,
            ));
        }
        if old.is_none() {
            let gen = meta_str(obj, "generateName");
            if !gen.is_empty() && meta_str(obj, "name").is_empty() {
                causes.extend(validation::validate_name(
                    validation::name_rule(&info.group, &info.resource),
                    gen,
                ));
            }
        }
        causes.extend(validation::validate_meta(obj));
        if let Some(o) = old {
            if o["metadata"]["deletionTimestamp"].is_string() {
                let old_f = finalizers(o);
                let new_f: Vec<String> = finalizers(obj)
                    .into_iter()
                    .filter(|f| !old_f.contains(f))
                    .collect();
                if !new_f.is_empty() {
                    causes.push(Cause::forbidden(
                        "metadata.finalizers",
                        &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}", new_f.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")),
                    ));
                }
            }
        }
        causes.extend(self.inner.hooks.validate(info, obj, old));
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&info.group, &info.kind, name, causes))
        }
    }

    /// Persist a prepared, validated new object.
    pub(crate) fn commit_create(
        &self,
        info: &ResourceInfo,
        mut obj: Value,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Value, ApiError> {
        let gr = info.group_resource();
        let ns = if info.namespaced {
            meta_str(&obj, "namespace").to_string()
        } else {
            String::new()
        };
        let name = meta_str(&obj, "name").to_string();
        let mut st = self.lock();
        if info.namespaced {
            let nsobj = st
                .objects
                .get(&GroupResource::new("", "namespaces"))
                .and_then(|m| m.get(&(String::new(), ns.clone())));
            match nsobj {
                None => return Err(ApiError::not_found("", "namespaces", &ns)),
                Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                        crate::error::qualified(&info.group, &info.resource),
                        name,
                        ns
                    )))
                }
                _ => {}
            }
        }
        if st
            .objects
            .get(&gr)
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
        {
            return Err(ApiError::already_exists(&info.group, &info.resource, &name));
        }
        // ServiceAccount admission: a pod's service account must exist.
        if info.group.is_empty() && info.resource == "pods" {
            let sa = obj["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let exists = st
                .objects
                .get(&GroupResource::new("", "serviceaccounts"))
                .is_some_and(|m| m.contains_key(&(ns.clone(), sa.clone())));
            if !exists {
                return Err(ApiError::forbidden(format!(
                    "pods \"{name}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
                )));
            }
            crate::util::set_path(&mut obj, &["spec", "serviceAccount"], json!(sa));
        }
        alloc::allocate(info, &mut obj, &mut st.alloc, opts.dry_run)?;
        let now = now_rfc3339();
        if let Some(meta) = meta_mut(&mut obj) {
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now));
            if info.has_generation {
                meta.insert("generation".into(), json!(1));
            }
        }
        managed::record_update(info, None, &mut obj, opts.manager(), operation, None, &now);
        if opts.dry_run {
            return Ok(obj);
        }
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(obj);
        st.objects
            .entry(gr.clone())
            .or_default()
            .insert((ns.clone(), name.clone()), arc.clone());
        self.emit(
            &mut st,
            WatchEvent {
                kind: EventKind::Added,
                gr,
                namespace: ns,
                name,
                rv,
                object: arc.clone(),
                old: None,
            },
        );
        drop(st);
        self.after_write(info, Some(&arc), None);
        Ok(Self::to_version(info, &arc))
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

    /// What the serviceaccount and root-CA-publisher controllers create in every namespace.
    fn namespace_defaults(&self, ns: &str) {
        let opts = WriteOptions {
            field_manager: Some("kube-controller-manager".into()),
            dry_run: false,
        };
        let _ = self.create_with(
            &ResourceKey::core("serviceaccounts"),
            Some(ns),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}),
            &opts,
        );
        let _ = self.create_with(
            &ResourceKey::core("configmaps"),
            Some(ns),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                    "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": KUBESIM_CA_PLACEHOLDER}}),
            &opts,
        );
    }

    // ------------------------------------------------------------------ update

    /// Replace an object (internal path). `metadata.resourceVersion`, when set, must match.
    pub fn update(&self, res: &ResourceKey, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        self.update_with(res, ns, obj, &WriteOptions::default())
    }

    /// Replace with options.
    pub fn update_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.update_sub(res, ns, obj, opts, None)
    }

    /// Replace only `.status` (internal path).
    pub fn update_status(&self, res: &ResourceKey, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        self.update_status_with(res, ns, obj, &WriteOptions::default())
    }

    /// Replace only `.status`, with options.
    pub fn update_status_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.update_sub(res, ns, obj, opts, Some("status"))
    }

    fn update_sub(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let info = self.info(res)?;
        if let Some(sr) = sub {
            if !info.has_sub(sr) {
                return Err(ApiError::no_route());
            }
        }
        let name = meta_str(&obj, "name").to_string();
        let old = self.get_current(&info, ns, &name)?;
        let expected = object_rv(&obj);
        let new = self.prepare_update(&info, &old, obj, sub, ns, &name)?;
        self.validate_object(&info, &new, Some(&old))?;
        self.commit_update(&info, new, expected, opts, sub, "Update")
    }

    /// The current stored object or 404.
    pub(crate) fn get_current(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_arc(&info.group_resource(), &Self::ns_key(info, ns), name)
            .map(|a| Self::to_version(info, &a))
            .ok_or_else(|| ApiError::not_found(&info.group, &info.resource, name))
    }

    /// Build the object to store from the old one and the client's new one.
    pub(crate) fn prepare_update(
        &self,
        info: &ResourceInfo,
        old: &Value,
        mut new: Value,
        sub: Option<&str>,
        url_ns: Option<&str>,
        url_name: &str,
    ) -> Result<Value, ApiError> {
        check_object(&new)?;
        if sub != Some("status") {
            check_type_meta(info, &new)?;
        }
        let body_name = meta_str(&new, "name");
        if !body_name.is_empty() && body_name != url_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
        if info.namespaced {
            let body_ns = meta_str(&new, "namespace");
            if !body_ns.is_empty() && Some(body_ns) != url_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        if sub == Some("status") {
            let mut out = old.clone();
            match new.get("status") {
                Some(s) if !s.is_null() => out["status"] = s.clone(),
                _ => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(rv) = new["metadata"].get("resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            if let Some(mf) = new["metadata"].get("managedFields") {
                out["metadata"]["managedFields"] = mf.clone();
            }
            self.inner.hooks.default_object(info, &mut out);
            return Ok(out);
        }
        new["apiVersion"] = json!(info.api_version());
        new["kind"] = json!(info.kind);
        let om = old["metadata"].clone();
        if let Some(meta) = meta_mut(&mut new) {
            meta.insert("name".into(), json!(url_name));
            if info.namespaced {
                meta.insert("namespace".into(), om["namespace"].clone());
            } else {
                meta.remove("namespace");
            }
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(k) {
                    Some(v) => {
                        meta.insert(k.into(), v.clone());
                    }
                    None => {
                        meta.remove(k);
                    }
                }
            }
            meta.remove("selfLink");
            if !meta.contains_key("managedFields") {
                if let Some(v) = om.get("managedFields") {
                    meta.insert("managedFields".into(), v.clone());
                }
            }
        }
        if info.has_status() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        self.inner.hooks.default_object(info, &mut new);
        self.inner.hooks.preserve_on_update(info, old, &mut new);
        if info.converted() {
            new = convert::event_to_core(&new);
        }
        Ok(new)
    }

    /// Persist an update. `expected_rv`: optimistic concurrency precondition.
    pub(crate) fn commit_update(
        &self,
        info: &ResourceInfo,
        mut new: Value,
        expected_rv: Option<u64>,
        opts: &WriteOptions,
        sub: Option<&str>,
        operation: &str,
    ) -> Result<Value, ApiError> {
        let gr = info.group_resource();
        let ns = if info.namespaced {
            meta_str(&new, "namespace").to_string()
        } else {
            String::new()
        };
        let name = meta_str(&new, "name").to_string();
        let mut st = self.lock();
        let Some(old) = st
            .objects
            .get(&gr)
            .and_then(|m| m.get(&(ns.clone(), name.clone())))
            .cloned()
        else {
            return Err(ApiError::not_found(&info.group, &info.resource, &name));
        };
        let old_rv = object_rv(&old).unwrap_or(0);
        if let Some(exp) = expected_rv {
            if exp != old_rv {
                return Err(ApiError::conflict_modified(&info.group, &info.resource, &name));
            }
        }
        if meta_str(&new, "uid") != meta_str(&old, "uid") && !meta_str(&new, "uid").is_empty() {
            return Err(ApiError::conflict(
                &info.group,
                &info.resource,
                &name,
                "Precondition failed: UID in precondition does not match",
            ));
        }
        let now = now_rfc3339();
        managed::record_update(info, Some(&old), &mut new, opts.manager(), operation, sub, &now);
        new["metadata"]["resourceVersion"] = json!(old_rv.to_string());
        if info.has_generation {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let changed =
                generation_view(&old, info.has_status()) != generation_view(&new, info.has_status());
            new["metadata"]["generation"] = json!(if changed { g + 1 } else { g });
        }
        let old_versioned = Self::to_version(info, &old);
        let unchanged = if info.converted() {
            comparable(&old) == comparable(&new)
        } else {
            comparable(&old_versioned) == comparable(&new)
        };
        if unchanged {
            // No-op: no new resourceVersion, no event.
            return Ok(old_versioned);
        }
        if opts.dry_run {
            return Ok(new);
        }
        // Removing the last finalizer of an object being deleted deletes it.
        let remove_now = new["metadata"]["deletionTimestamp"].is_string()
            && finalizers(&new).is_empty()
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        st.rv += 1;
        let rv = st.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(new);
        if remove_now {
            if let Some(m) = st.objects.get_mut(&gr) {
                m.remove(&(ns.clone(), name.clone()));
            }
            alloc::release(info, &old, &mut st.alloc);
            self.emit(
                &mut st,
                WatchEvent {
                    kind: EventKind::Deleted,
                    gr,
                    namespace: ns,
                    name,
                    rv,
                    object: arc.clone(),
                    old: Some(old.clone()),
                },
            );
            drop(st);
            self.after_write(info, None, Some(&old));
        } else {
            st.objects
                .entry(gr.clone())
                .or_default()
                .insert((ns.clone(), name.clone()), arc.clone());
            self.emit(
                &mut st,
                WatchEvent {
                    kind: EventKind::Modified,
                    gr,
                    namespace: ns,
                    name,
                    rv,
                    object: arc.clone(),
                    old: Some(old.clone()),
                },
            );
            drop(st);
            self.after_write(info, Some(&arc), Some(&old));
        }
        Ok(Self::to_version(info, &arc))
    }

    // ------------------------------------------------------------------ delete

    /// Delete an object. `Ok(Some(obj))` when it still exists afterwards (finalizers, graceful
    /// pod deletion, foreground/orphan propagation), `Ok(None)` when it is gone.
    pub fn delete(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Option<Value>, ApiError> {
        let info = self.info(res)?;
        self.delete_info(&info, ns, name, opts)
            .map(|(o, gone)| if gone { None } else { Some(o) })
    }

    /// Delete; returns (object, deleted-now).
    pub(crate) fn delete_info(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let gr = info.group_resource();
        let nsk = Self::ns_key(info, ns);
        let mut st = self.lock();
        let Some(old) = st
            .objects
            .get(&gr)
            .and_then(|m| m.get(&(nsk.clone(), name.to_string())))
            .cloned()
        else {
            return Err(ApiError::not_found(&info.group, &info.resource, name));
        };
        if let Some(uid) = &opts.precondition_uid {
            if meta_str(&old, "uid") != uid {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        uid,
                        meta_str(&old, "uid")
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if meta_str(&old, "resourceVersion") != rv {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.resource,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                        rv,
                        meta_str(&old, "resourceVersion")
                    ),
                ));
            }
        }
        let mut new = (*old).clone();
        let mut fins = finalizers(&new);
        let being_deleted = new["metadata"]["deletionTimestamp"].is_string();
        match opts.propagation {
            Some(Propagation::Foreground) if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.retain(|f| f != "orphan");
                fins.push("foregroundDeletion".into());
            }
            Some(Propagation::Orphan) if !fins.iter().any(|f| f == "orphan") => {
                fins.retain(|f| f != "foregroundDeletion");
                fins.push("orphan".into());
            }
            _ => {}
        }
        // Namespaces are finalized by the namespace controller.
        let is_ns = info.group.is_empty() && info.resource == "namespaces";
        let graceful = graceful_seconds(info, &old, opts);
        if fins.is_empty() && !is_ns && graceful.is_none() {
            if opts.dry_run {
                return Ok((Self::to_version(info, &old), true));
            }
            st.rv += 1;
            let rv = st.rv;
            if let Some(m) = st.objects.get_mut(&gr) {
                m.remove(&(nsk.clone(), name.to_string()));
            }
            alloc::release(info, &old, &mut st.alloc);
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            let arc = Arc::new(new);
            self.emit(
                &mut st,
                WatchEvent {
                    kind: EventKind::Deleted,
                    gr,
                    namespace: nsk,
                    name: name.to_string(),
                    rv,
                    object: arc.clone(),
                    old: Some(old.clone()),
                },
            );
            drop(st);
            self.after_write(info, None, Some(&old));
            return Ok((Self::to_version(info, &arc), true));
        }
        // Graceful: set deletionTimestamp (once) and finalizers.
        if let Some(meta) = meta_mut(&mut new) {
            if !fins.is_empty() {
                meta.insert("finalizers".into(), json!(fins));
            }
            if !being_deleted {
                let secs = graceful.unwrap_or(0);
                let ts = chrono::Utc::now() + chrono::Duration::seconds(secs);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(secs));
                if info.has_generation {
                    let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
                    meta.insert("generation".into(), json!(g + 1));
                }
            } else if let Some(secs) = graceful {
                // A shorter grace period may be requested later (e.g. force delete).
                let cur = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX);
                if secs < cur {
                    let ts = chrono::Utc::now() + chrono::Duration::seconds(secs);
                    meta.insert(
                        "deletionTimestamp".into(),
                        json!(ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    meta.insert("deletionGracePeriodSeconds".into(), json!(secs));
                }
            }
        }
        if is_ns {
            crate::util::set_path(&mut new, &["status", "phase"], json!("Terminating"));
        }
        if comparable(&new) == comparable(&old) {
            return Ok((Self::to_version(info, &old), false));
        }
        if opts.dry_run {
            return Ok((Self::to_version(info, &new), false));
        }
        st.rv += 1;
        let rv = st.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(new);
        st.objects
            .entry(gr.clone())
            .or_default()
            .insert((nsk.clone(), name.to_string()), arc.clone());
        self.emit(
            &mut st,
            WatchEvent {
                kind: EventKind::Modified,
                gr,
                namespace: nsk,
                name: name.to_string(),
                rv,
                object: arc.clone(),
                old: Some(old.clone()),
            },
        );
        drop(st);
        self.after_write(info, Some(&arc), Some(&old));
        Ok((Self::to_version(info, &arc), false))
    }

    /// Delete an object right now regardless of finalizers (namespace controller, GC, reaper).
    pub(crate) fn force_remove(&self, gr: &GroupResource, ns: &str, name: &str) -> bool {
        let mut st = self.lock();
        let Some(old) = st
            .objects
            .get_mut(gr)
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())))
        else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        let mut new = (*old).clone();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let info = self.registry().get_gr(gr);
        if let Some(i) = &info {
            alloc::release(i, &old, &mut st.alloc);
        }
        self.emit(
            &mut st,
            WatchEvent {
                kind: EventKind::Deleted,
                gr: gr.clone(),
                namespace: ns.into(),
                name: name.into(),
                rv,
                object: Arc::new(new),
                old: Some(old.clone()),
            },
        );
        drop(st);
        if let Some(i) = info {
            self.after_write(&i, None, Some(&old));
        }
        true
    }

    /// Record a core/v1 Event about an object (as the controllers do).
    pub fn record_event(&self, involved: &Value, type_: &str, reason: &str, message: &str, component: &str) {
        let ns = involved["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let iname = involved["metadata"]["name"].as_str().unwrap_or_default();
        let now = now_rfc3339();
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", iname, rand::random::<u64>() & 0xffff_ffff_ffff), "namespace": ns},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": iname,
                "namespace": involved["metadata"]["namespace"],
                "uid": involved["metadata"]["uid"],
                "resourceVersion": involved["metadata"]["resourceVersion"],
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": "",
        });
        let _ = self.create(&ResourceKey::core("events"), Some(&ns), ev);
    }

    /// Exact snapshot of one resource at `rv` (reconstructed from the history), for consistent
    /// paging and `resourceVersionMatch=Exact`.
    pub(crate) fn snapshot_at(&self, gr: &GroupResource, rv: u64) -> Result<Objects, ApiError> {
        snapshot::at(self, gr, rv)
    }
}

fn check_type_meta(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    if !kind.is_empty() && kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    if !av.is_empty() && av != info.api_version() {
        // Another served version of the same resource is fine (None conversion); anything else
        // is rejected like the real server does.
        let same_group = match av.split_once('/') {
            Some((g, _)) => g == info.group,
            None => info.group.is_empty(),
        };
        if !same_group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
    }
    Ok(())
}

/// Grace period for pods bound to a node and not terminated; `None` = delete immediately.
fn graceful_seconds(info: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> Option<i64> {
    if !(info.group.is_empty() && info.resource == "pods") {
        return None;
    }
    let bound = obj["spec"]["nodeName"].as_str().is_some_and(|s| !s.is_empty());
    let phase = obj["status"]["phase"].as_str().unwrap_or_default();
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let secs = opts
        .grace_period_seconds
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if secs <= 0 {
        None
    } else {
        Some(secs)
    }
}

/// kube-root-ca.crt content (kubesim serves plain HTTP; this is a syntactically valid placeholder).
const KUBESIM_CA_PLACEHOLDER: &str = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAXMRUwEwYDVQQDDAxrdWJlc2ltLWNh\n-----END CERTIFICATE-----\n";

/// Effective field-manager name the real server derives from a user agent.
pub fn manager_from_user_agent(ua: &str) -> String {
    ua.split('/').next().unwrap_or(ua).to_string()
}

impl Store {
    /// Bind a pod to a node (what `pods/binding` does; the scheduler's way to set
    /// `spec.nodeName`, which a plain update may not change). 409 if already bound elsewhere.
    pub fn bind_pod(&self, ns: &str, name: &str, node: &str) -> Result<Value, ApiError> {
        let key = ResourceKey::core("pods");
        let info = self.info(&key)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cur = self.get_current(&info, Some(ns), name)?;
            let bound = cur["spec"]["nodeName"].as_str().unwrap_or_default();
            if !bound.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{bound}\""),
                ));
            }
            if cur["metadata"]["deletionTimestamp"].is_string() {
                return Err(ApiError::conflict("", "pods", name, "pod is being deleted"));
            }
            let mut new = cur.clone();
            crate::util::set_path(&mut new, &["spec", "nodeName"], json!(node));
            let conds = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != json!("PodScheduled"))
                .collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
            crate::util::set_path(&mut new, &["status", "conditions"], json!(conds));
            let opts = WriteOptions {
                field_manager: Some("kube-scheduler".into()),
                dry_run: false,
            };
            match self.commit_update(&info, new, object_rv(&cur), &opts, Some("binding"), "Update") {
                Err(e) if e.code == 409 && attempts < 5 => continue,
                r => return r,
            }
        }
    }
}
