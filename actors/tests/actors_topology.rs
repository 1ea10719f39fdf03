//! The actor topology driven with fake ports: routing, lifecycle, coalescing, the first pass of
//! a new cluster, and read-your-writes of the status token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{core::DeserializeGuard, runtime::watcher};
use kubedirector_actors::{
    caches::GuardedCluster,
    cluster::ClusterSettings,
    metrics::Render,
    ports::{
        fake::{self, ApiCall, FakeClusterApi, FakeEventRecorder},
        EventType, ObjectKey,
    },
    system::{self, Topology},
    watcher::{ListClusters, WatchEvent},
};
use kubedirector_crds::{
    wire::LABEL_CLUSTER, KubeDirectorApp, KubeDirectorCluster, KubeDirectorClusterStatus,
};
use tokio::sync::Semaphore;

const NS: &str = "team";
const KD_NS: &str = "kubedirector";

fn cluster(name: &str, uid: &str, rv: u64) -> KubeDirectorCluster {
    let mut c = KubeDirectorCluster::test(name, "centos")
        .with_namespace(NS)
        .with_uid(uid)
        .with_role("vanilla", 1);
    c.metadata.resource_version = Some(rv.to_string());
    c
}

fn guarded(c: KubeDirectorCluster) -> GuardedCluster {
    DeserializeGuard(Ok(c))
}

fn app() -> KubeDirectorApp {
    KubeDirectorApp::test("centos")
        .with_namespace(NS)
        .with_role("vanilla", "1+")
}

struct Harness {
    topology: Topology,
    api: FakeClusterApi,
    events: FakeEventRecorder,
}

fn start() -> Harness {
    start_with(false)
}

fn start_with(initial_sync: bool) -> Harness {
    let (ports, api, events) = fake::ports();
    let mut settings = ClusterSettings::new(KD_NS);
    settings.initial_sync = initial_sync;
    // Passes start at once: these tests count passes caused by the in-flight coalescing.
    settings.debounce = Duration::ZERO;
    // Retries never fire during a test: every pass is caused by the test itself.
    settings.retry_initial = Duration::from_secs(3600);
    settings.retry_max = Duration::from_secs(3600);
    let topology = system::start(ports, settings, prometheus::Registry::new()).unwrap();
    Harness {
        topology,
        api,
        events,
    }
}

impl Harness {
    async fn send(&self, ev: WatchEvent) {
        self.topology.watcher.send(ev).await.unwrap();
    }

    async fn apply_cluster(&self, c: KubeDirectorCluster) {
        self.send(WatchEvent::Cluster(Box::new(watcher::Event::Apply(guarded(c)))))
            .await;
    }

    async fn add_app(&self) {
        self.send(WatchEvent::App(Box::new(watcher::Event::Apply(app()))))
            .await;
        // The catalog applies app events in order; a round trip makes sure it did.
        let _ = self
            .topology
            .catalog
            .send(kubedirector_actors::catalog::DropInterest { uid: "none".into() })
            .await;
    }

    async fn reconciles(&self) -> u64 {
        let text = self.topology.metrics.send(Render).await.unwrap().unwrap();
        text.lines()
            .filter(|l| l.starts_with("controller_runtime_reconcile_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.topology.metrics.send(Render).await.unwrap().unwrap();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Feeds the last status write back into the cache, as the API server's watch would.
    async fn echo_last_status(&self, mut c: KubeDirectorCluster) -> KubeDirectorCluster {
        let writes = self.api.status_writes();
        let (_, _, status) = writes.last().cloned().unwrap();
        c.status = Some(serde_json::from_value::<KubeDirectorClusterStatus>(status).unwrap());
        let rv: u64 = c.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        c.metadata.resource_version = Some((rv + 100).to_string());
        c.metadata.finalizers = Some(vec!["kubedirector.hpe.com/cleanup".into()]);
        self.apply_cluster(c.clone()).await;
        c
    }
}

/// Polls `cond` (yielding to the actors) until it holds; panics after a generous bound.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..2000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

#[actix::test]
async fn one_cluster_actor_per_cluster_and_it_stops_after_deletion() {
    let h = start();
    h.apply_cluster(cluster("c1", "u1", 1)).await;
    h.apply_cluster(cluster("c2", "u2", 2)).await;
    h.apply_cluster(cluster("c1", "u1", 3)).await;
    let tracked = h.topology.watcher.send(ListClusters).await.unwrap();
    let names: Vec<_> = tracked.iter().map(|t| t.key.name.clone()).collect();
    assert_eq!(names, vec!["c1", "c2"]);
    let c1 = tracked[0].addr.clone();
    assert!(c1.connected());

    h.send(WatchEvent::Cluster(Box::new(watcher::Event::Delete(guarded(
        cluster("c1", "u1", 4),
    )))))
    .await;
    let tracked = h.topology.watcher.send(ListClusters).await.unwrap();
    assert_eq!(tracked.len(), 1);
    assert_eq!(tracked[0].key, ObjectKey::new(NS, "c2"));
    eventually("c1's actor stopped", || {
        let c1 = c1.clone();
        async move { !c1.connected() }
    })
    .await;
    assert_eq!(h.metric("kubedirector_cluster_actors").await, Some(1.0));
}

#[actix::test]
async fn a_recreated_cluster_with_the_same_name_gets_a_fresh_actor() {
    let h = start();
    h.apply_cluster(cluster("c1", "old", 1)).await;
    let old = h.topology.watcher.send(ListClusters).await.unwrap()[0]
        .addr
        .clone();
    h.apply_cluster(cluster("c1", "new", 5)).await;
    let tracked = h.topology.watcher.send(ListClusters).await.unwrap();
    assert_eq!(tracked.len(), 1);
    assert_eq!(tracked[0].uid, "new");
    eventually("old actor stopped", || {
        let old = old.clone();
        async move { !old.connected() }
    })
    .await;
}

#[actix::test]
async fn a_new_cluster_gets_the_finalizer_a_new_event_and_creating_status() {
    let h = start();
    h.add_app().await;
    h.apply_cluster(cluster("c1", "u1", 7)).await;
    eventually("status written", || {
        let api = h.api.clone();
        async move { !api.status_writes().is_empty() }
    })
    .await;
    let calls = h.api.calls();
    let patch = calls
        .iter()
        .find_map(|c| match c {
            ApiCall::PatchMetadata(k, p) => Some((k.clone(), p.clone())),
            _ => None,
        })
        .expect("metadata patch");
    assert_eq!(patch.0, ObjectKey::new(NS, "c1"));
    assert_eq!(
        patch.1.finalizers,
        Some(vec!["kubedirector.hpe.com/cleanup".to_string()])
    );
    assert_eq!(patch.1.resource_version.as_deref(), Some("7"));
    let (key, rv, status) = h.api.status_writes()[0].clone();
    assert_eq!(key, ObjectKey::new(NS, "c1"));
    // The status is written on top of the metadata patch's resourceVersion, not the stale one.
    assert_ne!(rv, "7");
    assert_eq!(status["state"], "creating");
    assert!(!status["generationUID"].as_str().unwrap_or_default().is_empty());
    let events = h.events.events();
    assert!(
        events
            .iter()
            .any(|e| e.message == "new" && e.event_type == EventType::Normal && e.reason == "Cluster"),
        "{events:?}"
    );
    assert_eq!(events[0].involved.uid.as_deref(), Some("u1"));
}

#[actix::test]
async fn a_cache_older_than_our_status_write_causes_no_side_effects() {
    let h = start();
    h.add_app().await;
    h.apply_cluster(cluster("c1", "u1", 7)).await;
    eventually("first pass done", || async { h.reconciles().await >= 1 }).await;
    let calls_after_first = h.api.calls().len();
    // An owned-object event arrives before the cache has our status: the pass must do nothing.
    let mut sts = StatefulSet::default();
    sts.metadata.name = Some("kdss-x".into());
    sts.metadata.namespace = Some(NS.into());
    sts.metadata.labels = Some([(LABEL_CLUSTER.to_string(), "c1".to_string())].into());
    h.send(WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(sts))))
        .await;
    eventually("second pass done", || async { h.reconciles().await >= 2 }).await;
    assert_eq!(
        h.api.calls().len(),
        calls_after_first,
        "stale pass wrote something"
    );

    // Once the cache shows our status, the next pass proceeds (role StatefulSet etc.).
    h.echo_last_status(cluster("c1", "u1", 7)).await;
    eventually("third pass wrote", || {
        let api = h.api.clone();
        async move { api.calls().len() > calls_after_first }
    })
    .await;
}

#[actix::test]
async fn bursts_of_events_coalesce_into_the_pass_in_flight_and_one_rerun() {
    let h = start();
    h.add_app().await;
    let gate = Arc::new(Semaphore::new(0));
    h.api.set_gate(gate.clone());
    h.apply_cluster(cluster("c1", "u1", 1)).await;
    // A burst of owned-object events (a cluster event at another resourceVersion would be a
    // write past ours that replaced our status: adopted, see the tracker).
    for i in 0..19 {
        let mut sts = StatefulSet::default();
        sts.metadata.name = Some(format!("kdss-{i}"));
        sts.metadata.namespace = Some(NS.into());
        sts.metadata.labels = Some([(LABEL_CLUSTER.to_string(), "c1".to_string())].into());
        h.send(WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(sts))))
            .await;
    }
    gate.add_permits(1000);
    eventually("two passes", || async { h.reconciles().await >= 2 }).await;
    // Give any (wrongly) queued passes a chance to run before counting.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.reconciles().await, 2, "20 events must coalesce into 2 passes");
    assert_eq!(h.api.status_writes().len(), 1);
}

#[actix::test]
async fn owned_objects_of_unknown_clusters_are_ignored() {
    let h = start();
    let mut sts = StatefulSet::default();
    sts.metadata.name = Some("kdss-orphan".into());
    sts.metadata.namespace = Some(NS.into());
    sts.metadata.labels = Some([(LABEL_CLUSTER.to_string(), "nobody".to_string())].into());
    h.send(WatchEvent::StatefulSet(Box::new(watcher::Event::Apply(sts))))
        .await;
    assert!(h.topology.watcher.send(ListClusters).await.unwrap().is_empty());
    assert_eq!(h.reconciles().await, 0);
    assert!(h.api.calls().is_empty());
}

#[actix::test]
async fn a_malformed_cluster_does_not_stall_the_watch() {
    let h = start();
    let bad: GuardedCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": { "name": "bad", "namespace": NS, "uid": "ub" },
        "spec": { "app": 42, "roles": "nope" }
    }))
    .unwrap();
    assert!(bad.0.is_err());
    h.send(WatchEvent::Cluster(Box::new(watcher::Event::Apply(bad))))
        .await;
    h.apply_cluster(cluster("good", "ug", 1)).await;
    let tracked = h.topology.watcher.send(ListClusters).await.unwrap();
    assert_eq!(tracked.len(), 1);
    assert_eq!(tracked[0].key.name, "good");
}

#[actix::test]
async fn no_pass_runs_before_every_watch_has_listed_once() {
    let h = start_with(true);
    // The cluster watch lists first; the app watch lists later: without the gate the first
    // pass would not find the app.
    h.send(WatchEvent::Cluster(Box::new(watcher::Event::Init))).await;
    h.send(WatchEvent::Cluster(Box::new(watcher::Event::InitApply(guarded(
        cluster("c1", "u1", 1),
    )))))
    .await;
    h.send(WatchEvent::Cluster(Box::new(watcher::Event::InitDone)))
        .await;
    assert_eq!(h.topology.watcher.send(ListClusters).await.unwrap().len(), 1);
    h.send(WatchEvent::App(Box::new(watcher::Event::Init))).await;
    h.send(WatchEvent::App(Box::new(watcher::Event::InitApply(app()))))
        .await;
    h.send(WatchEvent::App(Box::new(watcher::Event::InitDone))).await;
    h.send(WatchEvent::Config(Box::new(watcher::Event::InitDone)))
        .await;
    h.send(WatchEvent::StatefulSet(Box::new(watcher::Event::InitDone)))
        .await;
    h.send(WatchEvent::Service(Box::new(watcher::Event::InitDone)))
        .await;
    h.send(WatchEvent::Pod(Box::new(watcher::Event::InitDone))).await;
    h.send(WatchEvent::ConfigMap(Box::new(watcher::Event::InitDone)))
        .await;
    h.send(WatchEvent::Secret(Box::new(watcher::Event::InitDone)))
        .await;
    h.send(WatchEvent::StatusBackup(Box::new(watcher::Event::InitDone)))
        .await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.reconciles().await, 0, "a pass ran before the PVC watch listed");
    h.send(WatchEvent::Pvc(Box::new(watcher::Event::InitDone))).await;
    eventually("first pass after sync", || async { h.reconciles().await >= 1 }).await;
    assert!(
        !h.events
            .events()
            .iter()
            .any(|e| e.message == "app referenced by cluster does not exist"),
        "{:?}",
        h.events.events()
    );
}
