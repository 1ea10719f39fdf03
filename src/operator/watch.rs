//! The watch streams: one kube-runtime `watcher` per kind (and per watched namespace), each in
//! its own `tokio::spawn`ed task that forwards events to the WatcherActor with
//! `send(..).await` (backpressure; a finished stream never stops the actor, ACTIX.md 6.8).
//! Owned kinds are label-selected (`kubedirector.hpe.com/kdcluster`), so unrelated objects
//! are neither transferred nor cached; so are connectable ConfigMaps and Secrets
//! (`kubedirector.hpe.com/cmType` / `…/secretType`, spec 4.8, R22). kdclusters, kdapps and
//! kdconfigs are decoded guarded: one undecodable object is logged and skipped, the stream goes on.

use std::{
    fmt::Debug,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{
    api::Api,
    core::DeserializeGuard,
    runtime::{watcher, WatchStreamExt},
    Client, Resource,
};
use kubedirector_actors::{handle::ActorSystem, watcher::WatchEvent};

use super::lean_pod::LeanPod;
use kubedirector_crds::{
    wire::{LABEL_CLUSTER, LABEL_CM_TYPE, LABEL_SECRET_TYPE},
    KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig, KubeDirectorStatusBackup,
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// Default server-side watch timeout (kube-runtime's and client-go's order of magnitude): the
/// watcher also restarts a watch silent for this long plus 5 s.
pub const DEFAULT_WATCH_TIMEOUT_SECONDS: u32 = 290;

/// Counts streams that finished their initial list (for `/readyz`).
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    expected: Arc<AtomicUsize>,
    synced: Arc<AtomicUsize>,
}

impl SyncState {
    /// True when every stream has listed once.
    pub fn all_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst) >= self.expected.load(Ordering::SeqCst)
    }

    /// True when the watch streams have been started (this replica leads) and every one has
    /// listed once: the reflector caches may then answer the webhook's questions.
    pub fn live(&self) -> bool {
        self.expected.load(Ordering::SeqCst) > 0 && self.all_synced()
    }
}

fn forward<K>(
    api: Api<K>,
    scope: Option<String>,
    config: watcher::Config,
    actors: ActorSystem,
    wrap: fn(watcher::Event<K>) -> Option<WatchEvent>,
    trim: fn(&mut K),
    sync: SyncState,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    sync.expected.fetch_add(1, Ordering::SeqCst);
    let kind = std::any::type_name::<K>();
    async move {
        let mut synced_once = false;
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            match item {
                Ok(mut ev) => {
                    match &mut ev {
                        watcher::Event::Apply(o)
                        | watcher::Event::InitApply(o)
                        | watcher::Event::Delete(o) => trim(o),
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                    let init_done = matches!(ev, watcher::Event::InitDone);
                    let Some(ev) = wrap(ev) else { continue };
                    if actors.route(scope.clone(), ev).await.is_err() {
                        tracing::debug!(kind, "watcher actor gone; stopping stream");
                        return;
                    }
                    if init_done && !synced_once {
                        synced_once = true;
                        sync.synced.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(error) => tracing::warn!(kind, %error, "watch error; retrying with backoff"),
            }
        }
    }
}

/// What the caches keep of every watched object but pods: all of it but `metadata.managedFields`,
/// which nothing here reads and which is the largest part of most objects. As
/// controller-runtime's `TransformStripManagedFields`. Pods, the most numerous and most often
/// updated, are not even decoded in full ([`LeanPod`]).
fn strip_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// A pod event as the caches take it: the pod decoded lean ([`LeanPod`]) unwrapped.
fn pod_event(e: watcher::Event<LeanPod>) -> watcher::Event<Pod> {
    match e {
        watcher::Event::Apply(p) => watcher::Event::Apply(p.0),
        watcher::Event::Delete(p) => watcher::Event::Delete(p.0),
        watcher::Event::InitApply(p) => watcher::Event::InitApply(p.0),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Nothing to trim (an object decoded lean).
fn keep<K>(_: &mut K) {}

/// The event without its undecodable object: one object that does not decode (a kdapp or
/// kdconfig written against a looser schema) is logged and skipped until it changes, instead of
/// failing the whole stream (which would re-list, fail again and starve the catalog). Its
/// last decodable version, if any, stays cached.
fn decoded<K: Resource>(ev: watcher::Event<DeserializeGuard<K>>) -> Option<watcher::Event<K>> {
    fn valid<K: Resource>(g: DeserializeGuard<K>) -> Option<K> {
        match g.0 {
            Ok(k) => Some(k),
            Err(invalid) => {
                tracing::warn!(kind = std::any::type_name::<K>(),
                    k8s.namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
                    k8s.name = invalid.metadata.name.as_deref().unwrap_or_default(),
                    error = %invalid.error, "object cannot be decoded; skipped until it changes");
                None
            }
        }
    }
    match ev {
        watcher::Event::Apply(g) => valid(g).map(watcher::Event::Apply),
        watcher::Event::Delete(g) => valid(g).map(watcher::Event::Delete),
        watcher::Event::InitApply(g) => valid(g).map(watcher::Event::InitApply),
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

/// Number of watch streams per namespaced kind and of kdapp streams that [`spawn_all`] starts
/// for `namespaces` (for the WatcherActor's initial-sync gate).
pub fn scope_counts(namespaces: &[String], kd_namespace: &str) -> (usize, usize) {
    let mut ns: Vec<&String> = namespaces.iter().collect();
    ns.sort();
    ns.dedup();
    if ns.is_empty() {
        (1, 1)
    } else if ns.iter().any(|n| n.as_str() == kd_namespace) {
        (ns.len(), ns.len())
    } else {
        (ns.len(), ns.len() + 1)
    }
}

/// Spawns every watch. `namespaces` empty = all namespaces. kdapps and kdconfigs are also
/// watched in `kd_namespace` (the system catalog and the global config live there). Every
/// watch request asks the server to end it after `watch_timeout_seconds` (0: the server's
/// default and no client-side idle limit); kube-runtime's watcher resumes it and also restarts
/// one that delivered nothing for that long plus 5 s.
pub fn spawn_all(
    client: &Client,
    namespaces: &[String],
    kd_namespace: &str,
    watch_timeout_seconds: u32,
    actors: &ActorSystem,
    sync: &SyncState,
) -> Vec<JoinHandle<()>> {
    let base = watcher::Config::default().timeout(watch_timeout_seconds);
    let owned = base.clone().labels(LABEL_CLUSTER);
    let plain = base.clone();
    let mut tasks = Vec::new();
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        let mut v: Vec<Option<String>> = namespaces.iter().cloned().map(Some).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut catalog_scopes = scopes.clone();
    if !namespaces.is_empty() && !namespaces.iter().any(|n| n == kd_namespace) {
        catalog_scopes.push(Some(kd_namespace.to_string()));
    }
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    for ns in &scopes {
        tasks.push(tokio::spawn(forward(
            api::<DeserializeGuard<KubeDirectorCluster>>(client, ns),
            ns.clone(),
            plain.clone(),
            actors.clone(),
            |e| Some(WatchEvent::Cluster(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
        tasks.push(tokio::spawn(forward(
            api::<StatefulSet>(client, ns),
            ns.clone(),
            owned.clone(),
            actors.clone(),
            |e| Some(WatchEvent::StatefulSet(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
        tasks.push(tokio::spawn(forward(
            api::<Service>(client, ns),
            ns.clone(),
            owned.clone(),
            actors.clone(),
            |e| Some(WatchEvent::Service(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
        tasks.push(tokio::spawn(forward(
            api::<LeanPod>(client, ns),
            ns.clone(),
            owned.clone(),
            actors.clone(),
            |e| Some(WatchEvent::Pod(Box::new(pod_event(e)))),
            keep,
            sync.clone(),
        )));
        tasks.push(tokio::spawn(forward(
            api::<PersistentVolumeClaim>(client, ns),
            ns.clone(),
            owned.clone(),
            actors.clone(),
            |e| Some(WatchEvent::Pvc(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
        // Status backups (spec 3.13), routed to their owner kdcluster.
        tasks.push(tokio::spawn(forward(
            api::<KubeDirectorStatusBackup>(client, ns),
            ns.clone(),
            plain.clone(),
            actors.clone(),
            |e| Some(WatchEvent::StatusBackup(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
        // Connections (spec 4.8, 3.17): only labelled ConfigMaps and Secrets (R22).
        tasks.push(tokio::spawn(forward(
            api::<ConfigMap>(client, ns),
            ns.clone(),
            base.clone().labels(LABEL_CM_TYPE),
            actors.clone(),
            |e| Some(WatchEvent::ConfigMap(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
        tasks.push(tokio::spawn(forward(
            api::<Secret>(client, ns),
            ns.clone(),
            base.clone().labels(LABEL_SECRET_TYPE),
            actors.clone(),
            |e| Some(WatchEvent::Secret(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
    }
    for ns in &catalog_scopes {
        tasks.push(tokio::spawn(forward(
            api::<DeserializeGuard<KubeDirectorApp>>(client, ns),
            ns.clone(),
            plain.clone(),
            actors.clone(),
            |e| decoded(e).map(|e| WatchEvent::App(Box::new(e))),
            strip_managed_fields,
            sync.clone(),
        )));
    }
    // The global config lives in the KubeDirector namespace only (spec R26).
    tasks.push(tokio::spawn(forward(
        Api::<DeserializeGuard<KubeDirectorConfig>>::namespaced(client.clone(), kd_namespace),
        Some(kd_namespace.to_string()),
        plain,
        actors.clone(),
        |e| decoded(e).map(|e| WatchEvent::Config(Box::new(e))),
        strip_managed_fields,
        sync.clone(),
    )));
    tasks
}

/// Compile-time check (STYLE R19): the forwarding futures given to `tokio::spawn` are `Send`.
#[allow(dead_code)]
fn assert_forward_is_send(client: Client, actors: ActorSystem) {
    fn assert_send<T: Send>(_: T) {}
    assert_send(forward(
        Api::<LeanPod>::all(client),
        None,
        watcher::Config::default(),
        actors,
        |e| Some(WatchEvent::Pod(Box::new(pod_event(e)))),
        keep,
        SyncState::default(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(spec: serde_json::Value) -> DeserializeGuard<KubeDirectorApp> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
            "metadata": {"name": "a", "namespace": "ns"}, "spec": spec
        }))
        .unwrap_or_else(|e| unreachable!("a guard always decodes: {e}"))
    }

    #[test]
    fn undecodable_objects_are_skipped_and_the_stream_events_kept() {
        let bad = guard(serde_json::json!({"roles": "nope"}));
        assert!(bad.0.is_err());
        assert!(decoded(watcher::Event::Apply(bad)).is_none());
        assert!(decoded(watcher::Event::<DeserializeGuard<KubeDirectorApp>>::InitDone).is_some());
        let good = guard(serde_json::json!({
            "label": {"name": "x"}, "distroID": "d", "version": "1", "configSchemaVersion": 7,
            "roles": [], "services": [], "config": {"roleServices": [], "selectedRoles": []}
        }));
        if let Err(e) = &good.0 {
            unreachable!("a valid kdapp: {}", e.error);
        }
        assert!(matches!(
            decoded(watcher::Event::InitApply(good)),
            Some(watcher::Event::InitApply(_))
        ));
    }
}
