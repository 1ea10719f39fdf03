//! An in-memory "API server + StatefulSet controller + kubelet" behind the [`ClusterApi`] port.
//!
//! Every write is applied to an in-memory world and echoed to the WatcherActor as the watch
//! event a real API server would send, so the whole actor topology (watcher, cluster actors,
//! planner, role/member-service actors, status writer) runs closed-loop without kube. The
//! StatefulSet controller creates/removes pods `<sts>-<ordinal>` to match `spec.replicas`; pods
//! are immediately Running and Ready with an `app` container id. Garbage collection removes
//! owned objects when their owner goes away. Status writes honour the resourceVersion
//! precondition (409 on a stale one).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use actix::prelude::*;
use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetStatus},
        core::v1::{
            ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodStatus, Service,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{core::DeserializeGuard, runtime::watcher};
use kubedirector_actors::{
    cluster::ClusterSettings,
    metrics::Render,
    ports::{
        fake::FakeEventRecorder, ApiError, ClusterApi, MetadataPatch, ObjectKey, OwnedKind, PortFuture,
        Ports, SystemClock,
    },
    system::{self, Topology},
    watcher::{WatchEvent, WatcherActor},
};
use kubedirector_crds::{KubeDirectorApp, KubeDirectorCluster};

/// The simulated world.
#[derive(Default)]
pub struct World {
    rv: u64,
    uid: u64,
    container: u64,
    pub clusters: BTreeMap<ObjectKey, KubeDirectorCluster>,
    pub statefulsets: BTreeMap<ObjectKey, StatefulSet>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    /// Count of API writes by verb (create/apply/patch/delete/status).
    pub writes: BTreeMap<&'static str, u64>,
}

fn key_of(meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl World {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        format!("uid-{}", self.uid)
    }

    fn count(&mut self, verb: &'static str) {
        *self.writes.entry(verb).or_default() += 1;
    }

    /// StatefulSet controller + kubelet: make the pods of `key` match its replicas.
    fn sync_pods(&mut self, key: &ObjectKey, out: &mut Vec<WatchEvent>) {
        let Some(sts) = self.statefulsets.get(key).cloned() else {
            return;
        };
        let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0) as usize;
        let labels = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone());
        let mut existing: Vec<ObjectKey> = self
            .pods
            .keys()
            .filter(|k| {
                k.namespace == key.namespace
                    && k.name
                        .strip_prefix(&format!("{}-", key.name))
                        .is_some_and(|o| o.parse::<usize>().is_ok())
            })
            .cloned()
            .collect();
        existing.sort();
        for i in 0..replicas {
            let pk = ObjectKey::new(key.namespace.clone(), format!("{}-{i}", key.name));
            if self.pods.contains_key(&pk) {
                continue;
            }
            self.container += 1;
            let mut pod_labels = labels.clone().unwrap_or_default();
            pod_labels.insert("statefulset.kubernetes.io/pod-name".into(), pk.name.clone());
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(pk.name.clone()),
                    namespace: Some(pk.namespace.clone()),
                    uid: Some(self.next_uid()),
                    resource_version: Some(self.next_rv()),
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                },
                spec: None,
                status: Some(PodStatus {
                    phase: Some("Running".into()),
                    conditions: Some(vec![
                        PodCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            ..PodCondition::default()
                        },
                        PodCondition {
                            type_: "PodScheduled".into(),
                            status: "True".into(),
                            ..PodCondition::default()
                        },
                    ]),
                    container_statuses: Some(vec![ContainerStatus {
                        name: "app".into(),
                        container_id: Some(format!("containerd://c{}", self.container)),
                        ready: true,
                        state: Some(ContainerState {
                            running: Some(ContainerStateRunning { started_at: None }),
                            ..ContainerState::default()
                        }),
                        ..ContainerStatus::default()
                    }]),
                    ..PodStatus::default()
                }),
            };
            self.pods.insert(pk, pod.clone());
            out.push(WatchEvent::Pod(Box::new(watcher::Event::Apply(pod))));
        }
        for pk in existing {
            let ordinal: usize = pk
                .name
                .rsplit('-')
                .next()
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            if ordinal >= replicas {
                if let Some(p) = self.pods.remove(&pk) {
                    out.push(WatchEvent::Pod(Box::new(watcher::Event::Delete(p))));
                }
            }
        }
        let rv = self.next_rv();
        if let Some(s) = self.statefulsets.get_mut(key) {
            s.status = Some(StatefulSetStatus {
                replicas: replicas as i32,
                ready_replicas: Some(replicas as i32),
                ..StatefulSetStatus::default()
            });
            s.metadata.resource_version = Some(rv);
            out.push(WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(
                s.clone(),
            ))));
        }
    }

    /// Garbage collection of everything owned (by owner reference uid) by `owner_uid`.
    fn collect_garbage(&mut self, owner_uid: &str, out: &mut Vec<WatchEvent>) {
        let owned = |m: &ObjectMeta| {
            m.owner_references
                .as_ref()
                .is_some_and(|r| r.iter().any(|o| o.uid == owner_uid))
        };
        let sts: Vec<ObjectKey> = self
            .statefulsets
            .iter()
            .filter(|(_, s)| owned(&s.metadata))
            .map(|(k, _)| k.clone())
            .collect();
        for k in sts {
            self.delete_sts(&k, out);
        }
        let svcs: Vec<ObjectKey> = self
            .services
            .iter()
            .filter(|(_, s)| owned(&s.metadata))
            .map(|(k, _)| k.clone())
            .collect();
        for k in svcs {
            if let Some(s) = self.services.remove(&k) {
                out.push(WatchEvent::Service(Box::new(watcher::Event::Delete(s))));
            }
        }
    }

    fn delete_sts(&mut self, key: &ObjectKey, out: &mut Vec<WatchEvent>) {
        if let Some(s) = self.statefulsets.remove(key) {
            out.push(WatchEvent::StatefulSet(Box::new(watcher::Event::Delete(s))));
            let pods: Vec<ObjectKey> = self
                .pods
                .keys()
                .filter(|k| k.namespace == key.namespace && k.name.starts_with(&format!("{}-", key.name)))
                .cloned()
                .collect();
            for pk in pods {
                if let Some(p) = self.pods.remove(&pk) {
                    out.push(WatchEvent::Pod(Box::new(watcher::Event::Delete(p))));
                }
            }
        }
    }
}

/// The simulated API, shared by the port and the test.
#[derive(Clone, Default)]
pub struct SimApi {
    world: Arc<Mutex<World>>,
    watcher: Arc<OnceLock<Addr<WatcherActor>>>,
}

fn guarded(c: KubeDirectorCluster) -> WatchEvent {
    WatchEvent::Cluster(Box::new(watcher::Event::Apply(DeserializeGuard(Ok(c)))))
}

impl SimApi {
    /// Locks the world.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, events: Vec<WatchEvent>) {
        if let Some(w) = self.watcher.get() {
            for e in events {
                w.do_send(e);
            }
        }
    }

    /// Creates or updates a kdcluster as a user would (bumps generation on spec change).
    pub fn put_cluster(&self, mut c: KubeDirectorCluster) {
        let events = {
            let mut w = self.world();
            let key = key_of(&c.metadata);
            match w.clusters.get(&key).cloned() {
                Some(old) => {
                    c.metadata = old.metadata.clone();
                    c.status = old.status.clone();
                    c.metadata.generation = Some(old.metadata.generation.unwrap_or(1) + 1);
                }
                None => {
                    c.metadata.uid = Some(w.next_uid());
                    c.metadata.generation = Some(1);
                }
            }
            c.metadata.resource_version = Some(w.next_rv());
            w.clusters.insert(key, c.clone());
            vec![guarded(c)]
        };
        self.emit(events);
    }

    /// Deletes a kdcluster as a user would (waits for finalizers, then garbage-collects).
    pub fn delete_cluster(&self, key: &ObjectKey) {
        let events = {
            let mut w = self.world();
            let mut out = Vec::new();
            if let Some(mut c) = w.clusters.get(key).cloned() {
                if c.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
                    c.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
                    c.metadata.resource_version = Some(w.next_rv());
                    w.clusters.insert(key.clone(), c.clone());
                    out.push(guarded(c));
                } else {
                    w.clusters.remove(key);
                    let uid = c.metadata.uid.clone().unwrap_or_default();
                    out.push(WatchEvent::Cluster(Box::new(watcher::Event::Delete(
                        DeserializeGuard(Ok(c)),
                    ))));
                    w.collect_garbage(&uid, &mut out);
                }
            }
            out
        };
        self.emit(events);
    }

    /// Deletes a Service behind the operator's back.
    pub fn delete_service_by_hand(&self, key: &ObjectKey) -> bool {
        let events = {
            let mut w = self.world();
            match w.services.remove(key) {
                Some(s) => vec![WatchEvent::Service(Box::new(watcher::Event::Delete(s)))],
                None => return false,
            }
        };
        self.emit(events);
        true
    }

    /// Edits a StatefulSet behind the operator's back.
    pub fn edit_statefulset_by_hand(&self, key: &ObjectKey, f: impl FnOnce(&mut StatefulSet)) {
        let events = {
            let mut w = self.world();
            let rv = w.next_rv();
            let Some(s) = w.statefulsets.get_mut(key) else {
                return;
            };
            f(s);
            s.metadata.resource_version = Some(rv);
            vec![WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(
                s.clone(),
            )))]
        };
        self.emit(events);
    }

    /// Replays the whole world as a fresh watch (what a restarted operator sees).
    pub fn relist_into(&self, watcher_addr: &Addr<WatcherActor>) {
        let w = self.world();
        let mut events = vec![WatchEvent::Cluster(Box::new(watcher::Event::Init))];
        for c in w.clusters.values() {
            events.push(WatchEvent::Cluster(Box::new(watcher::Event::InitApply(
                DeserializeGuard(Ok(c.clone())),
            ))));
        }
        events.push(WatchEvent::Cluster(Box::new(watcher::Event::InitDone)));
        events.push(WatchEvent::StatefulSet(Box::new(watcher::Event::Init)));
        for s in w.statefulsets.values() {
            events.push(WatchEvent::StatefulSet(Box::new(watcher::Event::InitApply(
                s.clone(),
            ))));
        }
        events.push(WatchEvent::StatefulSet(Box::new(watcher::Event::InitDone)));
        events.push(WatchEvent::Service(Box::new(watcher::Event::Init)));
        for s in w.services.values() {
            events.push(WatchEvent::Service(Box::new(watcher::Event::InitApply(
                s.clone(),
            ))));
        }
        events.push(WatchEvent::Service(Box::new(watcher::Event::InitDone)));
        events.push(WatchEvent::Pod(Box::new(watcher::Event::Init)));
        for p in w.pods.values() {
            events.push(WatchEvent::Pod(Box::new(watcher::Event::InitApply(p.clone()))));
        }
        events.push(WatchEvent::Pod(Box::new(watcher::Event::InitDone)));
        drop(w);
        for e in events {
            watcher_addr.do_send(e);
        }
    }
}

fn done<T: Send + 'static>(res: Result<T, ApiError>) -> PortFuture<T> {
    Box::pin(async move { res })
}

impl ClusterApi for SimApi {
    // This simulated world holds no KubeDirectorConfig or KubeDirectorStatusBackup objects (its
    // clusters run without a kdconfig, so backups are never enabled).
    fn apply_status_backup(&self, backup: kubedirector_crds::KubeDirectorStatusBackup) -> PortFuture<()> {
        done(Err(ApiError::Rejected {
            code: 404,
            message: format!(
                "kdstatusbackups are not served in this world: {}",
                backup.metadata.name.unwrap_or_default()
            ),
        }))
    }

    fn delete_status_backup(&self, _key: ObjectKey) -> PortFuture<()> {
        done(Ok(()))
    }

    fn patch_config(&self, key: ObjectKey, _patch: serde_json::Value) -> PortFuture<String> {
        done(Err(ApiError::NotFound {
            kind: "KubeDirectorConfig".into(),
            key: key.to_string(),
        }))
    }

    fn write_config_status(
        &self,
        key: ObjectKey,
        _resource_version: String,
        _status: serde_json::Value,
    ) -> PortFuture<String> {
        done(Err(ApiError::NotFound {
            kind: "KubeDirectorConfig".into(),
            key: key.to_string(),
        }))
    }

    fn create_stateful_set(&self, mut sts: StatefulSet) -> PortFuture<StatefulSet> {
        let mut out = Vec::new();
        let res = {
            let mut w = self.world();
            w.count("create");
            let key = key_of(&sts.metadata);
            if let Some(existing) = w.statefulsets.get(&key) {
                Ok(existing.clone())
            } else {
                sts.metadata.uid = Some(w.next_uid());
                sts.metadata.resource_version = Some(w.next_rv());
                w.statefulsets.insert(key.clone(), sts.clone());
                out.push(WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(
                    sts.clone(),
                ))));
                w.sync_pods(&key, &mut out);
                Ok(sts)
            }
        };
        self.emit(out);
        done(res)
    }

    fn patch_stateful_set_metadata(&self, key: ObjectKey, metadata: ObjectMeta) -> PortFuture<()> {
        let mut out = Vec::new();
        let res = {
            let mut w = self.world();
            w.count("patch");
            let rv = w.next_rv();
            match w.statefulsets.get_mut(&key) {
                None => Err(ApiError::NotFound {
                    kind: "StatefulSet".into(),
                    key: key.to_string(),
                }),
                Some(s) => {
                    if let Some(l) = metadata.labels {
                        s.metadata.labels.get_or_insert_with(BTreeMap::new).extend(l);
                    }
                    if let Some(a) = metadata.annotations {
                        s.metadata.annotations.get_or_insert_with(BTreeMap::new).extend(a);
                    }
                    if metadata.owner_references.is_some() {
                        s.metadata.owner_references = metadata.owner_references;
                    }
                    s.metadata.resource_version = Some(rv);
                    out.push(WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(
                        s.clone(),
                    ))));
                    Ok(())
                }
            }
        };
        self.emit(out);
        done(res)
    }

    fn apply_service(&self, mut svc: Service) -> PortFuture<Service> {
        let mut out = Vec::new();
        let res = {
            let mut w = self.world();
            w.count("apply");
            let key = key_of(&svc.metadata);
            svc.metadata.uid = Some(
                w.services
                    .get(&key)
                    .and_then(|s| s.metadata.uid.clone())
                    .unwrap_or_else(|| w.next_uid()),
            );
            svc.metadata.resource_version = Some(w.next_rv());
            w.services.insert(key, svc.clone());
            out.push(WatchEvent::Service(Box::new(watcher::Event::Apply(svc.clone()))));
            Ok(svc)
        };
        self.emit(out);
        done(res)
    }

    fn set_replicas(&self, key: ObjectKey, replicas: i32) -> PortFuture<()> {
        let mut out = Vec::new();
        let res = {
            let mut w = self.world();
            w.count("patch");
            let rv = w.next_rv();
            match w.statefulsets.get_mut(&key) {
                None => Err(ApiError::NotFound {
                    kind: "StatefulSet".into(),
                    key: key.to_string(),
                }),
                Some(s) => {
                    s.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
                    s.metadata.resource_version = Some(rv);
                    out.push(WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(
                        s.clone(),
                    ))));
                    w.sync_pods(&key, &mut out);
                    Ok(())
                }
            }
        };
        self.emit(out);
        done(res)
    }

    fn delete(&self, kind: OwnedKind, key: ObjectKey, _uid: Option<String>) -> PortFuture<()> {
        let mut out = Vec::new();
        {
            let mut w = self.world();
            w.count("delete");
            match kind {
                OwnedKind::StatefulSet => w.delete_sts(&key, &mut out),
                OwnedKind::Service => {
                    if let Some(s) = w.services.remove(&key) {
                        out.push(WatchEvent::Service(Box::new(watcher::Event::Delete(s))));
                    }
                }
                OwnedKind::PersistentVolumeClaim => {}
            }
        }
        self.emit(out);
        done(Ok(()))
    }

    fn write_cluster_status(
        &self,
        key: ObjectKey,
        resource_version: String,
        status: serde_json::Value,
    ) -> PortFuture<String> {
        let mut out = Vec::new();
        let res = {
            let mut w = self.world();
            w.count("status");
            let rv = w.next_rv();
            match w.clusters.get_mut(&key) {
                None => Err(ApiError::NotFound {
                    kind: "KubeDirectorCluster".into(),
                    key: key.to_string(),
                }),
                Some(c) if c.metadata.resource_version.as_deref() != Some(resource_version.as_str()) => {
                    Err(ApiError::Conflict {
                        kind: "KubeDirectorCluster".into(),
                        key: key.to_string(),
                        message: "stale resourceVersion".into(),
                    })
                }
                Some(c) => match serde_json::from_value(status) {
                    Ok(s) => {
                        c.status = Some(s);
                        c.metadata.resource_version = Some(rv.clone());
                        out.push(guarded(c.clone()));
                        Ok(rv)
                    }
                    Err(e) => Err(ApiError::Rejected {
                        code: 422,
                        message: e.to_string(),
                    }),
                },
            }
        };
        self.emit(out);
        done(res)
    }

    fn patch_cluster_metadata(&self, key: ObjectKey, patch: MetadataPatch) -> PortFuture<String> {
        let mut out = Vec::new();
        let res = {
            let mut w = self.world();
            w.count("patch");
            let rv = w.next_rv();
            let Some(mut c) = w.clusters.get(&key).cloned() else {
                return done(Err(ApiError::NotFound {
                    kind: "KubeDirectorCluster".into(),
                    key: key.to_string(),
                }));
            };
            if patch.resource_version.is_some() && patch.resource_version != c.metadata.resource_version {
                return done(Err(ApiError::Conflict {
                    kind: "KubeDirectorCluster".into(),
                    key: key.to_string(),
                    message: "stale resourceVersion".into(),
                }));
            }
            if let Some(f) = patch.finalizers {
                c.metadata.finalizers = Some(f);
            }
            for (k, v) in patch.annotations {
                let ann = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
                match v {
                    Some(v) => {
                        ann.insert(k, v);
                    }
                    None => {
                        ann.remove(&k);
                    }
                }
            }
            c.metadata.resource_version = Some(rv.clone());
            let finalized = c.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty());
            if c.metadata.deletion_timestamp.is_some() && finalized {
                w.clusters.remove(&key);
                let uid = c.metadata.uid.clone().unwrap_or_default();
                out.push(WatchEvent::Cluster(Box::new(watcher::Event::Delete(
                    DeserializeGuard(Ok(c)),
                ))));
                w.collect_garbage(&uid, &mut out);
            } else {
                w.clusters.insert(key, c.clone());
                out.push(guarded(c));
            }
            Ok(rv)
        };
        self.emit(out);
        done(res)
    }
}

/// A running topology wired to a [`SimApi`].
pub struct SimOperator {
    pub topology: Topology,
    pub events: FakeEventRecorder,
}

/// Starts the actor topology against `sim` and publishes `apps` in the catalog.
pub async fn start_operator(sim: &SimApi, apps: &[KubeDirectorApp], kd_namespace: &str) -> SimOperator {
    let events = FakeEventRecorder::new();
    let ports = Ports {
        api: Arc::new(sim.clone()),
        events: Arc::new(events.clone()),
        clock: Arc::new(SystemClock),
        exec: None,
    };
    let mut settings = ClusterSettings::new(kd_namespace);
    settings.initial_sync = false;
    settings.retry_initial = Duration::from_millis(5);
    settings.retry_max = Duration::from_millis(50);
    let topology = system::start(ports, settings, prometheus::Registry::new()).unwrap();
    let _ = sim.watcher.set(topology.watcher.clone());
    for a in apps {
        topology
            .watcher
            .send(WatchEvent::App(Box::new(watcher::Event::Apply(a.clone()))))
            .await
            .unwrap();
    }
    SimOperator { topology, events }
}

impl SimApi {
    /// Points the echo at a new watcher (operator restart).
    pub fn fresh_echo(&self) -> Self {
        SimApi {
            world: Arc::clone(&self.world),
            watcher: Arc::new(OnceLock::new()),
        }
    }
}

impl SimOperator {
    /// Renders the metrics text.
    pub async fn metrics(&self) -> String {
        self.topology.metrics.send(Render).await.unwrap().unwrap()
    }
}

/// Polls `cond` (yielding to the actors) until it holds; panics after a generous bound.
pub async fn eventually<F>(what: &str, mut cond: F)
where
    F: FnMut() -> bool,
{
    for _ in 0..4000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}
