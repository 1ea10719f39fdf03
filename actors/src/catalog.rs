//! CatalogActor: the KubeDirectorApp cache.
//!
//! Who sends: the WatcherActor forwards every kdapp watch event ([`AppWatchEvent`]); every
//! ClusterActor registers the app keys it depends on ([`RegisterInterest`]) and drops them when
//! it stops ([`DropInterest`]).
//! What it owns: the apps, in a [`Catalog`] (a `DashMap` snapshot that any actor reads without
//! messaging or locking the actor), and the interest table.
//! What it emits: a [`Trigger`] with [`TriggerReason::AppChanged`] to every cluster interested
//! in an app that appeared, changed or disappeared.
//!
//! Lookup follows spec 3.14: `local` → the cluster's namespace, `system` → the KubeDirector
//! namespace, unset → local first, then the KubeDirector namespace.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use actix::prelude::*;
use dashmap::DashMap;
use kube::runtime::watcher;
use kubedirector_crds::{AppCatalog, KubeDirectorApp};

use crate::{
    messages::{Trigger, TriggerReason},
    ports::ObjectKey,
};

/// A kdapp watch event.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AppWatchEvent(pub watcher::Event<KubeDirectorApp>);

/// A cluster depends on these app keys (replaces its previous registration).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterInterest {
    /// Cluster uid.
    pub uid: String,
    /// App keys (namespace/name) the cluster's lookup may resolve to.
    pub keys: Vec<ObjectKey>,
    /// Where to send the trigger.
    pub recipient: Recipient<Trigger>,
}

/// A cluster no longer depends on any app.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct DropInterest {
    /// Cluster uid.
    pub uid: String,
}

/// Lock-free, cloneable read handle on the app cache.
#[derive(Clone, Debug)]
pub struct Catalog {
    apps: Arc<DashMap<ObjectKey, Arc<KubeDirectorApp>>>,
    kd_namespace: Arc<str>,
}

impl Catalog {
    /// An empty catalog; `kd_namespace` is the `system` catalog namespace.
    pub fn new(kd_namespace: &str) -> Self {
        Self {
            apps: Arc::new(DashMap::new()),
            kd_namespace: Arc::from(kd_namespace),
        }
    }

    /// The KubeDirector namespace.
    pub fn kd_namespace(&self) -> &str {
        &self.kd_namespace
    }

    /// The app at exactly this key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<KubeDirectorApp>> {
        self.apps.get(key).map(|r| Arc::clone(r.value()))
    }

    /// The keys a cluster in `cluster_namespace` using `app` from `catalog` may resolve to, in
    /// lookup order (spec 3.14).
    pub fn candidate_keys(
        &self,
        cluster_namespace: &str,
        app: &str,
        catalog: Option<&AppCatalog>,
    ) -> Vec<ObjectKey> {
        let local = ObjectKey::new(cluster_namespace, app);
        let system = ObjectKey::new(self.kd_namespace.as_ref(), app);
        match catalog {
            Some(AppCatalog::Local) => vec![local],
            Some(AppCatalog::System) => vec![system],
            // Unset (or an unknown value from an object that bypassed the webhook): local, then
            // system.
            _ if local == system => vec![local],
            _ => vec![local, system],
        }
    }

    /// Resolves the app of a cluster (spec 3.14).
    pub fn lookup(
        &self,
        cluster_namespace: &str,
        app: &str,
        catalog: Option<&AppCatalog>,
    ) -> Option<Arc<KubeDirectorApp>> {
        self.candidate_keys(cluster_namespace, app, catalog)
            .iter()
            .find_map(|k| self.get(k))
    }

    /// Number of cached apps.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// True when no app is cached.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    fn key_of(app: &KubeDirectorApp) -> Option<ObjectKey> {
        let name = app.metadata.name.clone()?;
        let ns = app.metadata.namespace.clone().unwrap_or_default();
        Some(ObjectKey::new(ns, name))
    }

    fn insert(&self, app: KubeDirectorApp) -> Option<(ObjectKey, bool)> {
        let key = Self::key_of(&app)?;
        let app = Arc::new(app);
        let changed = match self.apps.insert(key.clone(), Arc::clone(&app)) {
            Some(old) => old.spec != app.spec || old.metadata.uid != app.metadata.uid,
            None => true,
        };
        Some((key, changed))
    }

    fn remove(&self, app: &KubeDirectorApp) -> Option<ObjectKey> {
        let key = Self::key_of(app)?;
        self.apps.remove(&key).map(|_| key)
    }
}

/// Applies kdapp watch events to a [`Catalog`]. The WatcherActor owns one, so the cache is
/// updated before any cluster is triggered by a later event.
#[derive(Debug)]
pub struct CatalogWriter {
    catalog: Catalog,
    relists: HashMap<Option<String>, Vec<KubeDirectorApp>>,
}

impl CatalogWriter {
    /// A writer of `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            relists: HashMap::new(),
        }
    }

    /// Applies one event of a stream watching all namespaces.
    pub fn apply(&mut self, event: watcher::Event<KubeDirectorApp>) -> HashSet<ObjectKey> {
        self.apply_scoped(None, event)
    }

    /// Applies one event of the stream watching `scope` (a namespace, `None` = all); a
    /// re-list replaces only that scope's apps. Returns the app keys whose spec appeared,
    /// changed or disappeared.
    pub fn apply_scoped(
        &mut self,
        scope: Option<&str>,
        event: watcher::Event<KubeDirectorApp>,
    ) -> HashSet<ObjectKey> {
        let mut changed = HashSet::new();
        match event {
            watcher::Event::Apply(app) => {
                if let Some((key, true)) = self.catalog.insert(app) {
                    changed.insert(key);
                }
            }
            watcher::Event::Delete(app) => {
                if let Some(key) = self.catalog.remove(&app) {
                    changed.insert(key);
                }
            }
            watcher::Event::Init => {
                self.relists.insert(scope.map(str::to_string), Vec::new());
            }
            watcher::Event::InitApply(app) => {
                self.relists
                    .entry(scope.map(str::to_string))
                    .or_default()
                    .push(app);
            }
            watcher::Event::InitDone => {
                let listed = self
                    .relists
                    .remove(&scope.map(str::to_string))
                    .unwrap_or_default();
                let mut seen = HashSet::new();
                for app in listed {
                    if let Some((key, was_changed)) = self.catalog.insert(app) {
                        if was_changed {
                            changed.insert(key.clone());
                        }
                        seen.insert(key);
                    }
                }
                let gone: Vec<ObjectKey> = self
                    .catalog
                    .apps
                    .iter()
                    .map(|r| r.key().clone())
                    .filter(|k| scope.is_none_or(|ns| k.namespace == ns) && !seen.contains(k))
                    .collect();
                for key in gone {
                    self.catalog.apps.remove(&key);
                    changed.insert(key);
                }
            }
        }
        changed
    }
}

/// These app keys changed (sent by the WatcherActor after applying the events itself).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct AppsChanged(pub HashSet<ObjectKey>);

/// The catalog actor.
pub struct CatalogActor {
    writer: CatalogWriter,
    interest: HashMap<String, (Vec<ObjectKey>, Recipient<Trigger>)>,
}

impl CatalogActor {
    /// An actor notifying about changes of `catalog` (and, for [`AppWatchEvent`]s sent to it
    /// directly, maintaining it).
    pub fn new(catalog: Catalog) -> Self {
        Self {
            writer: CatalogWriter::new(catalog),
            interest: HashMap::new(),
        }
    }

    fn notify(&self, changed: &HashSet<ObjectKey>) {
        if changed.is_empty() {
            return;
        }
        for (keys, recipient) in self.interest.values() {
            if keys.iter().any(|k| changed.contains(k)) {
                // Tiny, rate-bounded control message; the cluster coalesces it.
                recipient.do_send(Trigger::new(TriggerReason::AppChanged));
            }
        }
    }
}

impl Actor for CatalogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<AppWatchEvent> for CatalogActor {
    type Result = ();

    fn handle(&mut self, msg: AppWatchEvent, _ctx: &mut Self::Context) {
        let changed = self.writer.apply(msg.0);
        self.notify(&changed);
    }
}

impl Handler<AppsChanged> for CatalogActor {
    type Result = ();

    fn handle(&mut self, msg: AppsChanged, _ctx: &mut Self::Context) {
        self.notify(&msg.0);
    }
}

impl Handler<RegisterInterest> for CatalogActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterInterest, _ctx: &mut Self::Context) {
        self.interest.insert(msg.uid, (msg.keys, msg.recipient));
    }
}

impl Handler<DropInterest> for CatalogActor {
    type Result = ();

    fn handle(&mut self, msg: DropInterest, _ctx: &mut Self::Context) {
        self.interest.remove(&msg.uid);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    fn app(ns: &str, name: &str, version: &str) -> KubeDirectorApp {
        let mut v = serde_json::json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1",
            "kind": "KubeDirectorApp",
            "metadata": { "name": name, "namespace": ns, "uid": format!("{ns}-{name}") },
            "spec": {
                "label": { "name": "X" },
                "distroID": "d",
                "version": version,
                "configSchemaVersion": 7,
                "roles": [ { "id": "r", "cardinality": "1", "imageRepoTag": "img" } ],
                "config": { "roleServices": [], "selectedRoles": ["r"] }
            }
        });
        v["metadata"]["name"] = serde_json::json!(name);
        serde_json::from_value(v).unwrap()
    }

    struct Counter(Arc<AtomicUsize>);
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    impl Handler<Trigger> for Counter {
        type Result = ();
        fn handle(&mut self, _: Trigger, _: &mut Self::Context) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn lookup_follows_the_catalog_rules() {
        let c = Catalog::new("kd");
        c.insert(app("kd", "spark", "sys"));
        c.insert(app("team", "spark", "local"));
        c.insert(app("kd", "only-system", "sys"));
        let version = |a: Option<Arc<KubeDirectorApp>>| a.map(|a| a.spec.version.clone());
        assert_eq!(
            version(c.lookup("team", "spark", Some(&AppCatalog::Local))),
            Some("local".into())
        );
        assert_eq!(
            version(c.lookup("team", "spark", Some(&AppCatalog::System))),
            Some("sys".into())
        );
        assert_eq!(version(c.lookup("team", "spark", None)), Some("local".into()));
        assert_eq!(version(c.lookup("team", "only-system", None)), Some("sys".into()));
        assert_eq!(
            version(c.lookup("team", "only-system", Some(&AppCatalog::Local))),
            None
        );
        assert_eq!(version(c.lookup("other", "missing", None)), None);
    }

    #[actix::test]
    async fn interested_clusters_are_told_about_changes_to_their_app_only() {
        let catalog = Catalog::new("kd");
        let actor = CatalogActor::new(catalog.clone()).start();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Counter(hits.clone()).start();
        actor
            .send(RegisterInterest {
                uid: "c1".into(),
                keys: catalog.candidate_keys("team", "spark", None),
                recipient: counter.clone().recipient(),
            })
            .await
            .unwrap();
        actor
            .send(AppWatchEvent(watcher::Event::Apply(app("kd", "spark", "1"))))
            .await
            .unwrap();
        actor
            .send(AppWatchEvent(watcher::Event::Apply(app("kd", "other", "1"))))
            .await
            .unwrap();
        // Same spec again: metadata-only change, no trigger.
        actor
            .send(AppWatchEvent(watcher::Event::Apply(app("kd", "spark", "1"))))
            .await
            .unwrap();
        actor
            .send(AppWatchEvent(watcher::Event::Delete(app("kd", "spark", "1"))))
            .await
            .unwrap();
        // Let the counter drain its mailbox.
        counter.send(Trigger::new(TriggerReason::Resync)).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3, "2 app changes + 1 direct trigger");
        assert!(catalog.get(&ObjectKey::new("kd", "spark")).is_none());
        assert!(catalog.get(&ObjectKey::new("kd", "other")).is_some());
    }

    #[actix::test]
    async fn a_relist_replaces_the_cache_and_drops_vanished_apps() {
        let catalog = Catalog::new("kd");
        let actor = CatalogActor::new(catalog.clone()).start();
        actor
            .send(AppWatchEvent(watcher::Event::Apply(app("kd", "a", "1"))))
            .await
            .unwrap();
        actor.send(AppWatchEvent(watcher::Event::Init)).await.unwrap();
        actor
            .send(AppWatchEvent(watcher::Event::InitApply(app("kd", "b", "1"))))
            .await
            .unwrap();
        actor.send(AppWatchEvent(watcher::Event::InitDone)).await.unwrap();
        assert!(catalog.get(&ObjectKey::new("kd", "a")).is_none());
        assert!(catalog.get(&ObjectKey::new("kd", "b")).is_some());
        assert_eq!(catalog.len(), 1);
    }
}
