//! The reflector caches every read comes from.
//!
//! The WatcherActor owns the writers ([`CacheWriters`]) and applies every watch event to them
//! before routing it; everyone else holds cloneable read handles ([`Caches`]). Nothing in the
//! actors ever polls the API server.

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    core::DeserializeGuard,
    runtime::{
        reflector::{self, Lookup as _, ObjectRef, Store},
        watcher,
    },
    Resource,
};
use kubedirector_crds::{
    wire::LABEL_CLUSTER, KubeDirectorCluster, KubeDirectorConfig, KubeDirectorStatusBackup,
    GLOBAL_CONFIG_NAME,
};

use crate::{catalog::Catalog, ports::ObjectKey, tokens::StatusTokens};

/// A kdcluster as watched: decoding failures are kept instead of stalling the watch.
pub type GuardedCluster = DeserializeGuard<KubeDirectorCluster>;

/// Read handles on every cache.
#[derive(Clone)]
pub struct Caches {
    /// KubeDirectorClusters.
    pub clusters: Store<GuardedCluster>,
    /// KubeDirectorConfigs.
    pub configs: Store<KubeDirectorConfig>,
    /// StatefulSets labelled with [`LABEL_CLUSTER`].
    pub statefulsets: Store<StatefulSet>,
    /// Services labelled with [`LABEL_CLUSTER`].
    pub services: Store<Service>,
    /// Pods labelled with [`LABEL_CLUSTER`].
    pub pods: Store<Pod>,
    /// PVCs labelled with [`LABEL_CLUSTER`].
    pub pvcs: Store<PersistentVolumeClaim>,
    /// ConfigMaps labelled `kubedirector.hpe.com/cmType` (connections, spec 4.8, R22).
    pub configmaps: Store<ConfigMap>,
    /// KubeDirectorStatusBackups (spec 3.13).
    pub status_backups: Store<KubeDirectorStatusBackup>,
    /// Secrets labelled `kubedirector.hpe.com/secretType` (connections, spec 4.8, R22).
    pub secrets: Store<Secret>,
    /// KubeDirectorApps.
    pub catalog: Catalog,
    /// Status anti-tamper tokens written by the reconciler, read by the admission webhook.
    pub tokens: StatusTokens,
}

/// The writing side of [`Caches`], owned by the WatcherActor.
pub struct CacheWriters {
    /// KubeDirectorClusters.
    pub clusters: ScopedWriter<GuardedCluster>,
    /// KubeDirectorConfigs.
    pub configs: ScopedWriter<KubeDirectorConfig>,
    /// StatefulSets.
    pub statefulsets: ScopedWriter<StatefulSet>,
    /// Services.
    pub services: ScopedWriter<Service>,
    /// Pods.
    pub pods: ScopedWriter<Pod>,
    /// PVCs.
    pub pvcs: ScopedWriter<PersistentVolumeClaim>,
    /// ConfigMaps.
    pub configmaps: ScopedWriter<ConfigMap>,
    /// KubeDirectorStatusBackups.
    pub status_backups: ScopedWriter<KubeDirectorStatusBackup>,
    /// Secrets.
    pub secrets: ScopedWriter<Secret>,
}

/// A reflector writer fed by several watch streams, one per *scope* (a namespace, or `None`
/// for all namespaces). A re-list of one scope replaces only that scope's objects: kube's
/// `Writer` alone would replace the whole store on any stream's `InitDone`.
pub struct ScopedWriter<K: 'static + Resource<DynamicType = ()> + Clone> {
    writer: reflector::store::Writer<K>,
    store: Store<K>,
    relists: std::collections::HashMap<Option<String>, Vec<K>>,
}

/// What applying one event changed.
pub struct Applied<K> {
    /// Objects added or modified.
    pub applied: Vec<K>,
    /// Objects deleted (including those a re-list found gone).
    pub deleted: Vec<K>,
    /// The event ended a (re-)list of its scope.
    pub init_done: bool,
}

impl<K> ScopedWriter<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(writer: reflector::store::Writer<K>) -> Self {
        let store = writer.as_reader();
        Self {
            writer,
            store,
            relists: std::collections::HashMap::new(),
        }
    }

    /// Applies one event of the stream watching `scope`.
    pub fn apply(&mut self, scope: Option<&str>, event: watcher::Event<K>) -> Applied<K> {
        let mut out = Applied {
            applied: Vec::new(),
            deleted: Vec::new(),
            init_done: false,
        };
        match event {
            watcher::Event::Apply(o) => {
                self.writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
                out.applied.push(o);
            }
            watcher::Event::Delete(o) => {
                self.writer
                    .apply_watcher_event(&watcher::Event::Delete(o.clone()));
                out.deleted.push(o);
            }
            watcher::Event::Init => {
                self.relists.insert(scope.map(str::to_string), Vec::new());
            }
            watcher::Event::InitApply(o) => {
                self.relists.entry(scope.map(str::to_string)).or_default().push(o);
            }
            watcher::Event::InitDone => {
                let listed = self
                    .relists
                    .remove(&scope.map(str::to_string))
                    .unwrap_or_default();
                let keys: std::collections::HashSet<ObjectRef<K>> =
                    listed.iter().map(|o| o.to_object_ref(())).collect();
                let gone = self.store.state_filter(|o| {
                    scope.is_none_or(|ns| o.meta().namespace.as_deref() == Some(ns))
                        && !keys.contains(&o.to_object_ref(()))
                });
                for o in gone {
                    let o = (*o).clone();
                    self.writer
                        .apply_watcher_event(&watcher::Event::Delete(o.clone()));
                    out.deleted.push(o);
                }
                for o in listed {
                    self.writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
                    out.applied.push(o);
                }
                out.init_done = true;
            }
        }
        out
    }
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("clusters", &self.clusters.len())
            .field("statefulsets", &self.statefulsets.len())
            .field("services", &self.services.len())
            .field("pods", &self.pods.len())
            .field("pvcs", &self.pvcs.len())
            .field("apps", &self.catalog.len())
            .finish()
    }
}

/// Empty caches and their writers.
pub fn caches(kd_namespace: &str) -> (Caches, CacheWriters) {
    let (clusters, cw) = reflector::store();
    let (configs, cfw) = reflector::store();
    let (statefulsets, sw) = reflector::store();
    let (services, svw) = reflector::store();
    let (pods, pw) = reflector::store();
    let (pvcs, pvw) = reflector::store();
    let (configmaps, cmw) = reflector::store();
    let (status_backups, sbw) = reflector::store();
    let (secrets, sew) = reflector::store();
    (
        Caches {
            clusters,
            configs,
            statefulsets,
            services,
            pods,
            pvcs,
            configmaps,
            status_backups,
            secrets,
            catalog: Catalog::new(kd_namespace),
            tokens: StatusTokens::default(),
        },
        CacheWriters {
            clusters: ScopedWriter::new(cw),
            configs: ScopedWriter::new(cfw),
            statefulsets: ScopedWriter::new(sw),
            services: ScopedWriter::new(svw),
            pods: ScopedWriter::new(pw),
            pvcs: ScopedWriter::new(pvw),
            configmaps: ScopedWriter::new(cmw),
            status_backups: ScopedWriter::new(sbw),
            secrets: ScopedWriter::new(sew),
        },
    )
}

/// True when `meta` belongs to the kdcluster `name`/`uid` in `namespace`: by controller owner
/// reference, or by the [`LABEL_CLUSTER`] label (pods and PVCs are owned indirectly).
pub fn belongs_to(meta: &ObjectMeta, namespace: &str, name: &str, uid: &str) -> bool {
    if meta.namespace.as_deref() != Some(namespace) {
        return false;
    }
    let by_owner = meta
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|o| o.uid == uid));
    let by_label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_CLUSTER))
        .is_some_and(|v| v == name);
    by_owner || by_label
}

/// Which kdcluster an owned object belongs to: (owner uid, if any) and (namespace/name from the
/// label, if any).
pub fn owner_of(meta: &ObjectMeta) -> (Option<String>, Option<ObjectKey>) {
    let uid = meta.owner_references.as_ref().and_then(|refs| {
        refs.iter()
            .find(|o| o.kind == "KubeDirectorCluster")
            .map(|o| o.uid.clone())
    });
    let key = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_CLUSTER))
        .zip(meta.namespace.as_ref())
        .map(|(name, ns)| ObjectKey::new(ns.clone(), name.clone()));
    (uid, key)
}

impl Caches {
    /// The cached kdcluster at `key`.
    pub fn cluster(&self, key: &ObjectKey) -> Option<std::sync::Arc<GuardedCluster>> {
        self.clusters
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// The global kdconfig (`kd-global-config` in the KubeDirector namespace, spec R26).
    pub fn global_config(&self) -> Option<KubeDirectorConfig> {
        self.configs
            .get(&ObjectRef::new(GLOBAL_CONFIG_NAME).within(self.catalog.kd_namespace()))
            .map(|c| (*c).clone())
    }

    /// Objects of `store` that belong to the given cluster, by name.
    pub fn owned<K>(
        store: &Store<K>,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> std::collections::BTreeMap<String, K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store
            .state_filter(|o| belongs_to(o.meta(), namespace, name, uid))
            .into_iter()
            .filter_map(|o| o.meta().name.clone().map(|n| (n, (*o).clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn svc(ns: &str, name: &str) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s
    }

    fn names(store: &Store<Service>) -> Vec<String> {
        let mut v: Vec<String> = store
            .state()
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref().unwrap_or(""),
                    s.metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_relist_of_one_namespace_replaces_only_that_namespace() {
        let (caches, mut writers) = caches("kd");
        let w = &mut writers.services;
        for (ns, name) in [("a", "one"), ("a", "two"), ("b", "three")] {
            w.apply(Some(ns), watcher::Event::Apply(svc(ns, name)));
        }
        w.apply(Some("a"), watcher::Event::Init);
        w.apply(Some("a"), watcher::Event::InitApply(svc("a", "two")));
        w.apply(Some("a"), watcher::Event::InitApply(svc("a", "four")));
        let out = w.apply(Some("a"), watcher::Event::InitDone);
        assert!(out.init_done);
        assert_eq!(out.deleted.len(), 1);
        assert_eq!(out.deleted[0].metadata.name.as_deref(), Some("one"));
        assert_eq!(names(&caches.services), vec!["a/four", "a/two", "b/three"]);
        // An all-namespaces stream re-lists everything.
        w.apply(None, watcher::Event::Init);
        w.apply(None, watcher::Event::InitApply(svc("b", "three")));
        w.apply(None, watcher::Event::InitDone);
        assert_eq!(names(&caches.services), vec!["b/three"]);
    }

    #[test]
    fn ownership_is_decided_by_owner_uid_or_cluster_label_within_the_namespace() {
        let mut meta = ObjectMeta {
            namespace: Some("ns".into()),
            ..Default::default()
        };
        assert!(!belongs_to(&meta, "ns", "c1", "u1"));
        meta.labels = Some([(LABEL_CLUSTER.to_string(), "c1".to_string())].into());
        assert!(belongs_to(&meta, "ns", "c1", "u1"));
        assert!(!belongs_to(&meta, "other", "c1", "u1"));
        assert!(!belongs_to(&meta, "ns", "c2", "u2"));
        meta.owner_references = Some(vec![OwnerReference {
            kind: "KubeDirectorCluster".into(),
            uid: "u2".into(),
            ..Default::default()
        }]);
        assert!(belongs_to(&meta, "ns", "c2", "u2"));
        assert_eq!(
            owner_of(&meta),
            (Some("u2".into()), Some(ObjectKey::new("ns", "c1")))
        );
    }
}
