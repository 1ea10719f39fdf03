//! Two `kubedirector run` processes against one kubesim: only the lease holder reconciles;
//! SIGKILLing it (no lease release) hands over to the other within the lease duration plus one
//! retry, which goes on converging the cluster (a scale-out) with no duplicate objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        coordination::v1::Lease,
        core::v1::{Namespace, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use operator_support::{centos_app, centos_cluster, KD_NS, NS};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_kubedirector");
/// The operator's lease duration and retry period (src/operator/leader.rs).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_secs(2);

struct Replica {
    identity: &'static str,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

fn spawn(kubeconfig: &std::path::Path, identity: &'static str) -> Replica {
    let child = Command::new(BIN)
        .arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--identity", identity, "--webhook", "false"])
        .args(["--metrics-addr", &free_addr(), "--admin-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Replica { identity, child }
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "never happened within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkilled_leader_hands_over_and_the_cluster_keeps_converging_without_duplicates() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (sim, client) = rt.block_on(async {
        let sim = kubesim::Sim::start(kubesim::SimConfig::default()).await.unwrap();
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let kc = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        let client = Client::try_from(cfg).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in kubedirector_crds::crds().unwrap() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        for ns in [KD_NS, NS] {
            let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &n)
                .await
                .unwrap();
        }
        (sim, client)
    });
    let kd = |kind: &str, plural: &str| {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubedirector.hpe.com", "v1beta1", kind),
            plural,
        );
        Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ar)
    };
    let create = |api: &Api<DynamicObject>, v: serde_json::Value| {
        rt.block_on(api.create(&PostParams::default(), &serde_json::from_value(v).unwrap()))
            .unwrap();
    };
    create(&kd("KubeDirectorApp", "kubedirectorapps"), centos_app(NS));

    let mut replicas = vec![spawn(&kubeconfig, "replica-a"), spawn(&kubeconfig, "replica-b")];
    let leases: Api<Lease> = Api::namespaced(client.clone(), KD_NS);
    let holder = || {
        rt.block_on(leases.get_opt("kubedirector-lock"))
            .unwrap()
            .and_then(|l| l.spec.and_then(|s| s.holder_identity))
    };
    let first = wait_for("a leader", Duration::from_secs(60), holder);

    let clusters = kd("KubeDirectorCluster", "kubedirectorclusters");
    create(&clusters, centos_cluster("ha", &[("vanilla_centos", 1)]));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let owned = ListParams::default().labels("kubedirector.hpe.com/kdcluster=ha");
    wait_for("the StatefulSet", Duration::from_secs(60), || {
        let l = rt.block_on(sets.list(&owned)).unwrap();
        (l.items.len() == 1).then_some(())
    });

    // SIGKILL the leader: no release, the other replica must wait for the lease to expire.
    let idx = replicas
        .iter()
        .position(|r| first.starts_with(r.identity))
        .expect("the holder is one of ours");
    let killed = replicas.remove(idx);
    let killed_at = Instant::now();
    drop(killed); // SIGKILL + reap
    let survivor = replicas[0].identity;
    wait_for("handover", LEASE_DURATION * 3, || {
        holder().filter(|h| h.starts_with(survivor)).map(|_| ())
    });
    let took = killed_at.elapsed();
    println!("handover {took:?} after SIGKILL of the leader");
    assert!(took <= LEASE_DURATION + RETRY * 2, "handover took {took:?}");

    // The new leader converges a change: scale out to 3 members.
    rt.block_on(clusters.patch(
        "ha",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 3,
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}})),
    ))
    .unwrap();
    wait_for("scale-out by the new leader", Duration::from_secs(60), || {
        let l = rt.block_on(sets.list(&owned)).unwrap();
        let replicas = l.items.first()?.spec.as_ref()?.replicas?;
        (replicas == 3).then_some(())
    });
    // No duplicates: one StatefulSet, one headless Service plus one per member (names unique).
    let l = rt.block_on(sets.list(&owned)).unwrap();
    assert_eq!(l.items.len(), 1);
    let svcs = wait_for("member services", Duration::from_secs(60), || {
        let s = rt.block_on(services.list(&owned)).unwrap();
        (s.items.len() >= 4).then_some(s)
    });
    assert_eq!(svcs.items.len(), 4, "headless + 3 members");
    drop(replicas);
    rt.block_on(sim.shutdown());
}
