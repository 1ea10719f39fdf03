//! WatcherActor: the front door. It owns every cache writer and routes watch events.
//!
//! Who sends: the root crate's watch tasks (kube-runtime `watcher` streams, one per kind,
//! forwarded with `addr.send(WatchEvent::…).await` from `tokio::spawn`ed tasks, which gives
//! backpressure and keeps `StreamHandler::finished` from stopping this actor, ACTIX.md 6.8).
//! What it owns: the reflector writers ([`CacheWriters`]) and one [`ClusterActor`] per
//! KubeDirectorCluster uid.
//! What it emits: [`Trigger`]s to cluster actors (coalesced: a cluster that already has a
//! trigger queued does not get another), app events to the CatalogActor, [`ClusterGone`] when a
//! cluster is deleted.
//!
//! Routing: a kdcluster event goes to its own actor (spawned on first sight); an owned object
//! goes to the cluster named by its controller owner reference (uid) or its
//! `kubedirector.hpe.com/kdcluster` label; a kdconfig change triggers every cluster; a re-list
//! (`InitDone`) triggers every cluster of that kind's cache and, for kdclusters, stops the
//! actors of clusters that vanished while the watch was down. Malformed kdclusters
//! (`DeserializeGuard` errors) are logged and skipped without stalling the watch.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use actix::prelude::*;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{runtime::watcher, Resource};
use kubedirector_crds::{KubeDirectorApp, KubeDirectorConfig, KubeDirectorStatusBackup, GLOBAL_CONFIG_NAME};

use crate::{
    caches::{owner_of, Applied, CacheWriters, GuardedCluster},
    catalog::{AppsChanged, CatalogActor, CatalogWriter},
    cluster::{ClusterActor, ClusterDeps, ClusterGone},
    connections::{connecting_clusters, ConnectedKind},
    kdconfig::{ConfigActor, ReconcileConfig},
    messages::{OwnedDeleted, Ping, Shutdown, Trigger, TriggerReason},
    metrics::MetricEvent,
    ports::ObjectKey,
    tracker::OverlayKind,
};

/// One watch event of any watched kind (boxed: the objects are large).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum WatchEvent {
    /// KubeDirectorCluster (decoding guarded).
    Cluster(Box<watcher::Event<GuardedCluster>>),
    /// KubeDirectorApp.
    App(Box<watcher::Event<KubeDirectorApp>>),
    /// KubeDirectorConfig.
    Config(Box<watcher::Event<KubeDirectorConfig>>),
    /// Owned StatefulSet.
    StatefulSet(Box<watcher::Event<StatefulSet>>),
    /// Owned Service.
    Service(Box<watcher::Event<Service>>),
    /// Owned Pod.
    Pod(Box<watcher::Event<Pod>>),
    /// Owned PVC.
    Pvc(Box<watcher::Event<PersistentVolumeClaim>>),
    /// ConfigMap labelled `kubedirector.hpe.com/cmType` (connections).
    ConfigMap(Box<watcher::Event<ConfigMap>>),
    /// Secret labelled `kubedirector.hpe.com/secretType` (connections).
    Secret(Box<watcher::Event<Secret>>),
    /// KubeDirectorStatusBackup (routed to its owner, else to the kdcluster of its name).
    StatusBackup(Box<watcher::Event<KubeDirectorStatusBackup>>),
}

/// A watch event from the stream watching `scope` (a namespace, or `None` for all namespaces).
/// A bare [`WatchEvent`] is the same with scope `None`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Watched {
    /// The namespace the stream watches (`None`: all).
    pub scope: Option<String>,
    /// The event.
    pub event: WatchEvent,
}

/// The tracked cluster actors (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<TrackedCluster>")]
pub struct ListClusters;

/// One tracked cluster.
#[derive(Debug, Clone)]
pub struct TrackedCluster {
    /// Cluster uid.
    pub uid: String,
    /// Namespace and name.
    pub key: ObjectKey,
    /// Its actor.
    pub addr: Addr<ClusterActor>,
}

struct Handle {
    addr: Addr<ClusterActor>,
    key: ObjectKey,
    pending: Arc<AtomicBool>,
}

/// The watched kinds (for the initial-sync gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchedKind {
    /// KubeDirectorCluster.
    Cluster,
    /// KubeDirectorApp.
    App,
    /// KubeDirectorConfig.
    Config,
    /// StatefulSet.
    StatefulSet,
    /// Service.
    Service,
    /// Pod.
    Pod,
    /// PersistentVolumeClaim.
    Pvc,
    /// Connectable ConfigMap.
    ConfigMap,
    /// Connectable Secret.
    Secret,
    /// KubeDirectorStatusBackup.
    StatusBackup,
}

const ALL: [WatchedKind; 10] = [
    WatchedKind::Cluster,
    WatchedKind::App,
    WatchedKind::Config,
    WatchedKind::StatefulSet,
    WatchedKind::Service,
    WatchedKind::Pod,
    WatchedKind::Pvc,
    WatchedKind::ConfigMap,
    WatchedKind::Secret,
    WatchedKind::StatusBackup,
];

/// The watcher actor.
pub struct WatcherActor {
    writers: CacheWriters,
    catalog_writer: CatalogWriter,
    catalog: Addr<CatalogActor>,
    deps: ClusterDeps,
    clusters: HashMap<String, Handle>,
    by_key: HashMap<ObjectKey, String>,
    synced: std::collections::HashSet<(WatchedKind, Option<String>)>,
    /// The kdconfig reconciler (spec 3.16), started on the first kdconfig event.
    config_actor: Option<Addr<ConfigActor>>,
}

impl WatcherActor {
    /// A watcher feeding `writers` (whose read handles are in `deps.caches`), forwarding app
    /// events to `catalog` and spawning cluster actors with `deps`.
    pub fn new(writers: CacheWriters, catalog: Addr<CatalogActor>, deps: ClusterDeps) -> Self {
        Self {
            writers,
            catalog_writer: CatalogWriter::new(deps.caches.catalog.clone()),
            catalog,
            deps,
            clusters: HashMap::new(),
            by_key: HashMap::new(),
            synced: std::collections::HashSet::new(),
            config_actor: None,
        }
    }

    /// True once every watch has listed (or when the gate is disabled).
    pub fn is_synced(&self) -> bool {
        !self.deps.settings.initial_sync || ALL.iter().all(|k| self.kind_synced(*k))
    }

    fn kind_synced(&self, kind: WatchedKind) -> bool {
        let expected = match kind {
            WatchedKind::App => self.deps.settings.app_scopes,
            WatchedKind::Config => 1,
            _ => self.deps.settings.watch_scopes,
        };
        self.synced.iter().filter(|(k, _)| *k == kind).count() >= expected.max(1)
    }

    fn init_done(&mut self, kind: WatchedKind, scope: Option<&str>) {
        let was = self.is_synced();
        self.synced.insert((kind, scope.map(str::to_string)));
        if !was && self.is_synced() {
            tracing::info!(
                clusters = self.clusters.len(),
                "caches synced; starting reconciliation"
            );
            self.trigger_all(TriggerReason::Relist);
        }
    }

    fn metric(&self, ev: MetricEvent) {
        if let Some(m) = &self.deps.metrics {
            m.do_send(ev);
        }
    }

    fn ensure_cluster(&mut self, uid: &str, key: &ObjectKey) {
        if let Some(h) = self.clusters.get(uid) {
            if h.addr.connected() {
                return;
            }
        }
        // Same name, new uid: the old incarnation is gone.
        if let Some(old_uid) = self.by_key.get(key).cloned() {
            if old_uid != uid {
                self.remove_cluster(&old_uid);
            }
        }
        let pending = Arc::new(AtomicBool::new(false));
        let addr = ClusterActor::new(
            uid.to_string(),
            key.clone(),
            self.deps.clone(),
            Arc::clone(&pending),
        )
        .start();
        tracing::info!(k8s.namespace = %key.namespace, k8s.name = %key.name, k8s.uid = %uid, "tracking cluster");
        self.clusters.insert(
            uid.to_string(),
            Handle {
                addr,
                key: key.clone(),
                pending,
            },
        );
        self.by_key.insert(key.clone(), uid.to_string());
        self.metric(MetricEvent::ClusterActors(
            i64::try_from(self.clusters.len()).unwrap_or(i64::MAX),
        ));
    }

    fn remove_cluster(&mut self, uid: &str) {
        if let Some(h) = self.clusters.remove(uid) {
            tracing::info!(k8s.namespace = %h.key.namespace, k8s.name = %h.key.name, k8s.uid = %uid, "cluster gone");
            h.addr.do_send(ClusterGone);
            if self.by_key.get(&h.key).is_some_and(|u| u == uid) {
                self.by_key.remove(&h.key);
            }
            self.metric(MetricEvent::ClusterActors(
                i64::try_from(self.clusters.len()).unwrap_or(i64::MAX),
            ));
        }
    }

    fn trigger(&self, uid: &str, reason: TriggerReason) {
        if !self.is_synced() {
            // Deferred: the end of the initial sync triggers every cluster.
            return;
        }
        let Some(h) = self.clusters.get(uid) else {
            return;
        };
        if h.pending.swap(true, Ordering::SeqCst) {
            // Already queued: the pass will read the latest cache anyway.
            return;
        }
        self.metric(MetricEvent::MailboxAdd { actor: "cluster" });
        if let Err(e) = h.addr.try_send(Trigger::new(reason)) {
            h.pending.store(false, Ordering::SeqCst);
            let reason = match e {
                SendError::Full(_) => "full",
                SendError::Closed(_) => "closed",
            };
            self.metric(MetricEvent::MailboxDropped {
                actor: "cluster",
                reason,
            });
            // A full mailbox already holds work for this cluster; a closed one is being replaced.
        }
    }

    fn trigger_all(&self, reason: TriggerReason) {
        for uid in self.clusters.keys() {
            self.trigger(uid, reason);
        }
    }

    fn cluster_seen(&mut self, obj: &GuardedCluster, reason: TriggerReason) {
        let meta = obj.meta();
        let (Some(uid), Some(name), Some(ns)) = (&meta.uid, &meta.name, &meta.namespace) else {
            return;
        };
        if let Err(invalid) = &obj.0 {
            tracing::warn!(k8s.namespace = %ns, k8s.name = %name, error = %invalid.error,
                "KubeDirectorCluster cannot be decoded; skipped until it changes");
            self.metric(MetricEvent::ApiError { category: "decode" });
            return;
        }
        let key = ObjectKey::new(ns.clone(), name.clone());
        self.ensure_cluster(uid, &key);
        self.trigger(uid, reason);
    }

    /// Triggers the kdclusters connected to the object `meta` of `kind` (spec 4.8, 3.17).
    fn route_connected(&self, kind: ConnectedKind, meta: &ObjectMeta) {
        let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
            return;
        };
        for uid in connecting_clusters(&self.deps.caches, ns, kind, name) {
            self.trigger(&uid, TriggerReason::OwnedObjectChanged);
        }
    }

    fn connected_event<K: Resource>(
        &mut self,
        kind: WatchedKind,
        connected: ConnectedKind,
        scope: Option<&str>,
        out: &Applied<K>,
    ) {
        if out.init_done {
            if self.kind_synced(kind) {
                self.trigger_all(TriggerReason::Relist);
            } else {
                self.init_done(kind, scope);
            }
            return;
        }
        for o in out.applied.iter().chain(&out.deleted) {
            self.route_connected(connected, o.meta());
        }
    }

    fn route_owned(&self, meta: &ObjectMeta) {
        self.route_owned_or_named(meta, false);
    }

    /// As [`Self::route_owned`]; with `by_name`, an object whose owner is not a known kdcluster
    /// and that has no cluster label goes to the kdcluster of its own namespace and name (a
    /// kdstatusbackup restored by a backup tool or orphaned, spec 3.15).
    fn route_owned_or_named(&self, meta: &ObjectMeta, by_name: bool) {
        let (uid, mut key) = owner_of(meta);
        if by_name && key.is_none() {
            key = meta
                .namespace
                .clone()
                .zip(meta.name.clone())
                .map(|(ns, name)| ObjectKey::new(ns, name));
        }
        let uid = uid
            .filter(|u| self.clusters.contains_key(u))
            .or_else(|| key.and_then(|k| self.by_key.get(&k).cloned()));
        if let Some(uid) = uid {
            self.trigger(&uid, TriggerReason::OwnedObjectChanged);
        }
    }

    /// Tells the cluster owning `meta` that the watch saw it deleted (its overlay forgets it).
    fn owned_deleted(&self, kind: WatchedKind, meta: &ObjectMeta) {
        let kind = match kind {
            WatchedKind::StatefulSet => OverlayKind::StatefulSet,
            WatchedKind::Service => OverlayKind::Service,
            _ => return,
        };
        let (uid, key) = owner_of(meta);
        let owner = uid
            .filter(|u| self.clusters.contains_key(u))
            .or_else(|| key.and_then(|k| self.by_key.get(&k).cloned()));
        if let (Some(h), Some(name)) = (owner.and_then(|u| self.clusters.get(&u)), &meta.name) {
            h.addr.do_send(OwnedDeleted {
                kind,
                name: name.clone(),
                uid: meta.uid.clone(),
            });
        }
    }

    fn owned_event<K: Resource>(&mut self, kind: WatchedKind, scope: Option<&str>, out: &Applied<K>) {
        if out.init_done {
            if self.kind_synced(kind) {
                self.trigger_all(TriggerReason::Relist);
            } else {
                self.init_done(kind, scope);
            }
            return;
        }
        for o in &out.deleted {
            self.owned_deleted(kind, o.meta());
        }
        for o in out.applied.iter().chain(&out.deleted) {
            self.route_owned(o.meta());
        }
    }
}

impl Actor for WatcherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        for h in self.clusters.values() {
            h.addr.do_send(Shutdown);
        }
        Running::Stop
    }
}

impl Handler<WatchEvent> for WatcherActor {
    type Result = ();

    fn handle(&mut self, msg: WatchEvent, ctx: &mut Self::Context) {
        self.handle(
            Watched {
                scope: None,
                event: msg,
            },
            ctx,
        );
    }
}

impl Handler<Watched> for WatcherActor {
    type Result = ();

    fn handle(&mut self, msg: Watched, _ctx: &mut Self::Context) {
        let scope = msg.scope.as_deref();
        match msg.event {
            WatchEvent::Cluster(ev) => {
                let out = self.writers.clusters.apply(scope, *ev);
                for obj in &out.deleted {
                    if let Some(uid) = obj.meta().uid.clone() {
                        self.remove_cluster(&uid);
                    }
                }
                if !out.init_done {
                    for obj in out.applied.iter().chain(&out.deleted) {
                        self.route_connected(ConnectedKind::Cluster, obj.meta());
                    }
                }
                if out.init_done {
                    let present = self.deps.caches.clusters.state();
                    let live: std::collections::HashSet<String> =
                        present.iter().filter_map(|c| c.meta().uid.clone()).collect();
                    let vanished: Vec<String> = self
                        .clusters
                        .keys()
                        .filter(|u| !live.contains(*u))
                        .cloned()
                        .collect();
                    for uid in vanished {
                        self.remove_cluster(&uid);
                    }
                    for c in present {
                        self.cluster_seen(&c, TriggerReason::Relist);
                    }
                    self.init_done(WatchedKind::Cluster, scope);
                } else {
                    for obj in &out.applied {
                        self.cluster_seen(obj, TriggerReason::ClusterChanged);
                    }
                }
            }
            WatchEvent::App(ev) => {
                let ev = *ev;
                let init_done = matches!(ev, watcher::Event::InitDone);
                let changed = self.catalog_writer.apply_scoped(scope, ev);
                if !changed.is_empty() {
                    self.catalog.do_send(AppsChanged(changed));
                }
                if init_done {
                    self.init_done(WatchedKind::App, scope);
                }
            }
            WatchEvent::Config(ev) => {
                let out = self.writers.configs.apply(scope, *ev);
                let kd_ns = self.deps.settings.kd_namespace.as_str();
                let relevant = out.init_done
                    || out.applied.iter().chain(&out.deleted).any(|c| {
                        c.metadata.name.as_deref() == Some(GLOBAL_CONFIG_NAME)
                            && c.metadata.namespace.as_deref() == Some(kd_ns)
                    });
                if out.init_done {
                    self.init_done(WatchedKind::Config, scope);
                }
                if relevant {
                    self.trigger_all(TriggerReason::ConfigChanged);
                    let (ports, caches) = (self.deps.ports.clone(), self.deps.caches.clone());
                    let kd_ns = self.deps.settings.kd_namespace.clone();
                    self.config_actor
                        .get_or_insert_with(|| ConfigActor::new(ports, caches, &kd_ns).start())
                        .do_send(ReconcileConfig);
                }
            }
            WatchEvent::StatefulSet(ev) => {
                let out = self.writers.statefulsets.apply(scope, *ev);
                self.owned_event(WatchedKind::StatefulSet, scope, &out);
            }
            WatchEvent::Service(ev) => {
                let out = self.writers.services.apply(scope, *ev);
                self.owned_event(WatchedKind::Service, scope, &out);
            }
            WatchEvent::Pod(ev) => {
                let out = self.writers.pods.apply(scope, *ev);
                self.owned_event(WatchedKind::Pod, scope, &out);
            }
            WatchEvent::Pvc(ev) => {
                let out = self.writers.pvcs.apply(scope, *ev);
                self.owned_event(WatchedKind::Pvc, scope, &out);
            }
            WatchEvent::ConfigMap(ev) => {
                let out = self.writers.configmaps.apply(scope, *ev);
                self.connected_event(WatchedKind::ConfigMap, ConnectedKind::ConfigMap, scope, &out);
            }
            WatchEvent::StatusBackup(ev) => {
                let out = self.writers.status_backups.apply(scope, *ev);
                if out.init_done {
                    self.owned_event(WatchedKind::StatusBackup, scope, &out);
                } else {
                    for o in out.applied.iter().chain(&out.deleted) {
                        self.route_owned_or_named(o.meta(), true);
                    }
                }
            }
            WatchEvent::Secret(ev) => {
                let out = self.writers.secrets.apply(scope, *ev);
                self.connected_event(WatchedKind::Secret, ConnectedKind::Secret, scope, &out);
            }
        }
    }
}

impl Handler<ListClusters> for WatcherActor {
    type Result = MessageResult<ListClusters>;

    fn handle(&mut self, _msg: ListClusters, _ctx: &mut Self::Context) -> Self::Result {
        let mut v: Vec<TrackedCluster> = self
            .clusters
            .iter()
            .map(|(u, h)| TrackedCluster {
                uid: u.clone(),
                key: h.key.clone(),
                addr: h.addr.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        MessageResult(v)
    }
}

impl Handler<Shutdown> for WatcherActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        for h in self.clusters.values() {
            h.addr.do_send(Shutdown);
        }
        ctx.stop();
    }
}

impl Handler<Ping> for WatcherActor {
    type Result = ();

    fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {}
}
