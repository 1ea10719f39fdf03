//! The simulated control plane at scale: 1,000 StatefulSets of 3 replicas (3,000 pods), each
//! with a ClusterIP Service selecting its pods (1,000 Services in the namespace), on the virtual
//! container runtime. Once they run, bringing up one more set (and deleting one pod) must cost
//! the controllers, the kubelet and the garbage collector work proportional to the few objects
//! involved, not a scan of the 3,000 pods or of the 1,000 Services per event (a container start
//! that read every Service for its service-link variables did); and nothing may be read while
//! nothing changes. Measured with the store's `objects_visited` counter (every object a get, a
//! list or a list filter looks at).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kubesim::{
    controllers::{self, NodeConfig},
    sandbox::Runtime,
    store::Store,
    ResourceKey, Sim, SimConfig,
};
use serde_json::{json, Value};

const SETS: usize = 1000;
const REPLICAS: usize = 3;
const NS: &str = "scale";

fn set(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": REPLICAS, "serviceName": name, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"set": name}},
                 "template": {"metadata": {"labels": {"set": name}},
                              "spec": {"containers": [{"name": "c", "image": "img",
                                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}})
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"set": name}, "ports": [{"port": 80}]}})
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Waits (polling the few pods by name) until pods `<set>-0..REPLICAS` of `set` are Ready.
async fn wait_set_ready(store: &Store, set: &str) {
    let pods = ResourceKey::core("pods");
    for _ in 0..1200 {
        let n = (0..REPLICAS)
            .filter(|i| {
                store
                    .get(&pods, Some(NS), &format!("{set}-{i}"))
                    .is_some_and(|p| ready(&p) && p["metadata"]["deletionTimestamp"].is_null())
            })
            .count();
        if n == REPLICAS {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pods of {set} never became Ready");
}

/// Waits until neither the store's resourceVersion nor its visit counter moves for a second
/// (reading only the two counters, never an object).
async fn wait_quiet(store: &Store) {
    let mut last = (store.current_rv(), store.objects_visited());
    let mut quiet_ticks = 0;
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (store.current_rv(), store.objects_visited());
        if now == last {
            quiet_ticks += 1;
            if quiet_ticks >= 10 {
                return;
            }
        } else {
            quiet_ticks = 0;
            last = now;
        }
    }
    panic!("the control plane never went quiet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_pods_cost_per_event_not_per_pod() {
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new_virtual(state.path()).unwrap();
    let (config, _control) = controllers::install(
        SimConfig {
            nodes: 30,
            ..SimConfig::default()
        },
        runtime,
        NodeConfig::default(),
    );
    let sim = Sim::start(config).await.unwrap();
    let store = sim.store();
    let sets = ResourceKey::new("apps", "v1", "statefulsets");
    let pods = ResourceKey::core("pods");
    store
        .create(
            &ResourceKey::core("namespaces"),
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .unwrap();
    let services = ResourceKey::core("services");
    for i in 0..SETS {
        store
            .create(&services, Some(NS), service(&format!("s{i:04}")))
            .unwrap();
        store.create(&sets, Some(NS), set(&format!("s{i:04}"))).unwrap();
    }
    // All 3,000 pods Ready (counted in place, without copying them).
    let mut all = false;
    for _ in 0..3000 {
        let n = std::sync::atomic::AtomicUsize::new(0);
        store.list_where(&pods, Some(NS), |p| {
            if ready(p) {
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            false
        });
        if n.into_inner() == SETS * REPLICAS {
            all = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all, "the 3,000 pods never all became Ready");
    // The controllers may still be catching up (StatefulSet status, events) after the last pod
    // turned Ready, more so on a loaded machine: measure from a quiet store, or that backlog is
    // counted as the cost of the next set.
    wait_quiet(&store).await;

    // One more set: create, schedule, start, become Ready, status; plus the events.
    let before = store.objects_visited();
    store.create(&services, Some(NS), service("extra")).unwrap();
    store.create(&sets, Some(NS), set("extra")).unwrap();
    wait_set_ready(&store, "extra").await;
    let one_set = store.objects_visited() - before;
    println!(
        "objects visited to bring up one set of {REPLICAS} pods and its Service beside 3,000 pods and {SETS} Services: {one_set}"
    );
    assert!(
        one_set < SETS as u64,
        "bringing up one set looked at {one_set} objects: a scan of the 3,000 pods or the {SETS} Services"
    );

    // Delete a pod: graceful deletion, kubelet, GC, StatefulSet re-creation.
    let before = store.objects_visited();
    let uid = store.get(&pods, Some(NS), "s0500-1").unwrap()["metadata"]["uid"].clone();
    store
        .delete(
            &pods,
            Some(NS),
            "s0500-1",
            &kubesim::store::DeleteOptions::default(),
        )
        .unwrap();
    let mut replaced = false;
    for _ in 0..600 {
        if store
            .get(&pods, Some(NS), "s0500-1")
            .is_some_and(|p| p["metadata"]["uid"] != uid && ready(&p))
        {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replaced, "the deleted pod was not replaced");
    let one_pod = store.objects_visited() - before;
    println!("objects visited to replace one deleted pod beside 3,000: {one_pod}");
    assert!(
        one_pod < SETS as u64,
        "replacing one pod looked at {one_pod} objects: a scan of the 3,000 pods or the {SETS} Services"
    );

    // Idle: nothing changes, nothing is read. Once the replacement's trailing work is done (the
    // StatefulSet status, on a loaded machine well after the pod turned Ready), watch the counter
    // and the store's resourceVersion over a window longer than any controller period.
    wait_quiet(&store).await;
    let (rv, visited) = (store.current_rv(), store.objects_visited());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.current_rv(), rv, "the store changed while idle");
    assert_eq!(
        store.objects_visited(),
        visited,
        "controllers read objects while nothing changed"
    );
    sim.shutdown().await;
}
