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

use crate::{catalog::Catalog, owner_index::OwnerIndex, ports::ObjectKey, tokens::StatusTokens};

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
    pub statefulsets: Indexed<StatefulSet>,
    /// Services labelled with [`LABEL_CLUSTER`].
    pub services: Indexed<Service>,
    /// Pods labelled with [`LABEL_CLUSTER`].
    pub pods: Indexed<Pod>,
    /// PVCs labelled with [`LABEL_CLUSTER`].
    pub pvcs: Indexed<PersistentVolumeClaim>,
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
    index: OwnerIndex,
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
            index: OwnerIndex::default(),
            relists: std::collections::HashMap::new(),
        }
    }

    /// The store with its owner index, for readers.
    fn indexed(&self) -> Indexed<K> {
        Indexed {
            store: self.store.clone(),
            index: self.index.clone(),
        }
    }

    fn put(&mut self, o: &K) {
        self.writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
        self.index.put(o.meta());
    }

    fn delete(&mut self, o: &K) {
        self.writer
            .apply_watcher_event(&watcher::Event::Delete(o.clone()));
        self.index.remove(o.meta());
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
                self.put(&o);
                out.applied.push(o);
            }
            watcher::Event::Delete(o) => {
                self.delete(&o);
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
                    self.delete(&o);
                    out.deleted.push(o);
                }
                for o in listed {
                    self.put(&o);
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
    let sw = ScopedWriter::new(reflector::store().1);
    let svw = ScopedWriter::new(reflector::store().1);
    let pw = ScopedWriter::new(reflector::store().1);
    let pvw = ScopedWriter::new(reflector::store().1);
    let (configmaps, cmw) = reflector::store();
    let (status_backups, sbw) = reflector::store();
    let (secrets, sew) = reflector::store();
    (
        Caches {
            clusters,
            configs,
            statefulsets: sw.indexed(),
            services: svw.indexed(),
            pods: pw.indexed(),
            pvcs: pvw.indexed(),
            configmaps,
            status_backups,
            secrets,
            catalog: Catalog::new(kd_namespace),
            tokens: StatusTokens::default(),
        },
        CacheWriters {
            clusters: ScopedWriter::new(cw),
            configs: ScopedWriter::new(cfw),
            statefulsets: sw,
            services: svw,
            pods: pw,
            pvcs: pvw,
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
}

/// A reflector store with an index of the objects each kdcluster owns. Derefs to the store.
#[derive(Clone)]
pub struct Indexed<K: 'static + Resource<DynamicType = ()> + Clone> {
    store: Store<K>,
    index: OwnerIndex,
}

impl<K: 'static + Resource<DynamicType = ()> + Clone> std::ops::Deref for Indexed<K> {
    type Target = Store<K>;

    fn deref(&self) -> &Store<K> {
        &self.store
    }
}

impl<K> Indexed<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The objects that belong to the given cluster ([`belongs_to`]), by name; reads only the
    /// cluster's own objects (through the owner index), not the whole store.
    pub fn owned(&self, namespace: &str, name: &str, uid: &str) -> std::collections::BTreeMap<String, K> {
        self.index
            .candidates(namespace, name, uid)
            .into_iter()
            .filter_map(|n| {
                let o = self.store.get(&ObjectRef::new(&n).within(namespace))?;
                belongs_to(o.meta(), namespace, name, uid).then(|| (n, (*o).clone()))
            })
            .collect()
    }

    /// The owner index (for tests).
    pub fn index(&self) -> &OwnerIndex {
        &self.index
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
    fn owned_reads_a_clusters_objects_through_the_index_and_follows_relists() {
        let (caches, mut writers) = caches("kd");
        let w = &mut writers.services;
        let labelled = |ns: &str, name: &str, cluster: &str| {
            let mut s = svc(ns, name);
            s.metadata.labels = Some([(LABEL_CLUSTER.to_string(), cluster.to_string())].into());
            s
        };
        w.apply(Some("a"), watcher::Event::Apply(labelled("a", "c1-0", "c1")));
        w.apply(Some("a"), watcher::Event::Apply(labelled("a", "c1-1", "c1")));
        w.apply(Some("a"), watcher::Event::Apply(labelled("a", "c2-0", "c2")));
        w.apply(Some("a"), watcher::Event::Apply(svc("a", "plain")));
        let owned = |c: &str| {
            caches
                .services
                .owned("a", c, "no-uid")
                .into_keys()
                .collect::<Vec<_>>()
        };
        assert_eq!(owned("c1"), vec!["c1-0", "c1-1"]);
        assert_eq!(owned("c2"), vec!["c2-0"]);
        w.apply(Some("a"), watcher::Event::Delete(labelled("a", "c1-0", "c1")));
        assert_eq!(owned("c1"), vec!["c1-1"]);
        // A re-list that no longer has c1-1 and moved c2-0 to c1.
        w.apply(Some("a"), watcher::Event::Init);
        w.apply(Some("a"), watcher::Event::InitApply(labelled("a", "c2-0", "c1")));
        w.apply(Some("a"), watcher::Event::InitDone);
        assert_eq!(owned("c1"), vec!["c2-0"]);
        assert!(owned("c2").is_empty());
        assert_eq!(caches.services.index().len(), 1);
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
