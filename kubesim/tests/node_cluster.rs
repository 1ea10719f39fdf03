//! The simulated node side end to end, through the real API server and real clients: the
//! scheduler, kubelet, StatefulSet controller, PVC binder and endpoints controllers, exec into
//! sandboxed containers. Skipped (with a printed notice) without bubblewrap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Endpoints, PersistentVolumeClaim, Pod},
};
use kube::{
    api::{Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{wait::await_condition, watcher},
    Client,
};
use kubesim::{
    controllers::{self, kubelet::KubeletControl, NodeConfig},
    exec::NodePodHandler,
    sandbox::{sandbox_available, Runtime},
    Sim, SimConfig,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

/// Upper bound for any wait, so a broken controller fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(90);

struct Cluster {
    sim: Sim,
    client: Client,
    control: KubeletControl,
    _state: tempfile::TempDir,
}

async fn cluster(nodes: usize) -> Option<Cluster> {
    if !sandbox_available() {
        common::skipped(&kubesim::sandbox::sandbox_unavailable_reason().unwrap_or_default());
        return None;
    }
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path()).unwrap();
    let config = NodeConfig {
        crash_backoff: Duration::from_millis(200),
        ..NodeConfig::default()
    };
    let (sim_config, control) = controllers::install(
        SimConfig {
            nodes,
            ..SimConfig::default()
        },
        runtime,
        config,
    );
    let sim = Sim::start(sim_config).await.unwrap();
    let client = Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    Some(Cluster {
        sim,
        client,
        control,
        _state: state,
    })
}

async fn wait_for<K, C>(api: &Api<K>, name: &str, what: &str, cond: C) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: kube::runtime::wait::Condition<K>,
{
    match tokio::time::timeout(GUARD, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(other) => panic!("waiting for {what}: {other:?}"),
        Err(_) => panic!("gave up waiting for {what}"),
    }
}

fn ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn exec_out(pods: &Api<Pod>, pod: &str, cmd: &[&str]) -> (String, String) {
    let mut p = pods
        .exec(
            pod,
            cmd.to_vec(),
            &AttachParams::default().stdout(true).stderr(false),
        )
        .await
        .unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    (out, status.status.unwrap_or_default())
}

fn statefulset(replicas: i32, policy: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas, "serviceName": "web-hs", "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "initContainers": [{"name": "init", "image": "kubesim/test:1",
                    "command": ["/bin/bash", "-c", "test -f /mnt/etc/kubedirector.init || (mkdir -p /mnt/etc && cp -a /etc/hostname /mnt/etc/from-init && touch /mnt/etc/kubedirector.init); echo init-done"],
                    "volumeMounts": [{"name": "p", "mountPath": "/mnt"}]}],
                "containers": [{"name": "app", "image": "kubesim/test:1",
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "lifecycle": {"postStart": {"exec": {"command": ["/bin/bash", "-c", "echo hook > /tmp/kd-postcluster.log"]}}},
                    "volumeMounts": [{"name": "p", "mountPath": "/etc", "subPath": "etc"},
                                     {"name": "p", "mountPath": "/data", "subPath": "data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "p"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_statefulset_starts_in_order_persists_claims_and_scales_down_from_the_top() {
    let Some(c) = cluster(2).await else { return };
    let ns = "default";
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(c.client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), ns);
    let eps: Api<Endpoints> = Api::namespaced(c.client.clone(), ns);
    let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.client.clone(), ns);
    svcs.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-hs"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}, "publishNotReadyAddresses": true,
                     "ports": [{"name": "port", "port": 8888}]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();

    // Record, for every pod creation and deletion, what the rest of the set looked like.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let watch_pods = pods.clone();
    let recorder = tokio::spawn(async move {
        let mut state: BTreeMap<String, Pod> = BTreeMap::new();
        let mut stream = watcher(watch_pods, watcher::Config::default()).boxed();
        while let Some(Ok(ev)) = stream.next().await {
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if !state.contains_key(&name) {
                        let prev_ready = match name.strip_prefix("web-").and_then(|o| o.parse::<usize>().ok())
                        {
                            Some(0) | None => true,
                            Some(o) => ready(state.get(&format!("web-{}", o - 1))),
                        };
                        log.lock()
                            .unwrap()
                            .push(format!("create {name} prev_ready={prev_ready}"));
                    }
                    state.insert(name, p);
                }
                watcher::Event::Delete(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    state.remove(&name);
                    log.lock().unwrap().push(format!("delete {name}"));
                }
                _ => {}
            }
        }
    });

    sets.create(&PostParams::default(), &statefulset(3, "OrderedReady"))
        .await
        .unwrap();
    wait_for(&sets, "web", "3 ready replicas", |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref()).and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;
    let set = sets.get("web").await.unwrap();
    let status = set.status.unwrap();
    assert_eq!(status.replicas, 3);
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.observed_generation, set.metadata.generation);

    let creations: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("create"))
        .cloned()
        .collect();
    assert_eq!(
        creations,
        vec![
            "create web-0 prev_ready=true",
            "create web-1 prev_ready=true",
            "create web-2 prev_ready=true"
        ]
    );

    // Pod identity.
    let web1 = pods.get("web-1").await.unwrap();
    let labels = web1.metadata.labels.clone().unwrap();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(
        Some(&labels["controller-revision-hash"]),
        status.update_revision.as_ref()
    );
    let spec = web1.spec.clone().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web-hs"));
    let owner = &web1.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("StatefulSet", "web", Some(true))
    );
    let st = web1.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert!(st.pod_ip.is_some() && st.host_ip.is_some() && st.start_time.is_some());
    let cs = &st.container_statuses.unwrap()[0];
    assert!(cs.container_id.as_deref().unwrap().starts_with("containerd://"));
    assert!(cs.state.as_ref().unwrap().running.is_some());
    let init = &st.init_container_statuses.unwrap()[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );

    // Claims from the templates: selector labels, no owner, bound.
    for i in 0..3 {
        let pvc = pvcs.get(&format!("p-web-{i}")).await.unwrap();
        assert_eq!(pvc.metadata.labels.as_ref().unwrap()["app"], "web");
        assert!(pvc.metadata.owner_references.is_none());
        assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    }

    // The init container really ran on the claim, the app sees its files through the subPath,
    // the postStart hook ran, and the hostname is the pod name.
    let (out, st) = exec_out(
        &pods,
        "web-1",
        &["cat", "/etc/from-init", "/tmp/kd-postcluster.log"],
    )
    .await;
    assert_eq!((out.as_str(), st.as_str()), ("web-1\nhook\n", "Success"));
    let (out, _) = exec_out(&pods, "web-1", &["hostname"]).await;
    assert_eq!(out, "web-1\n");
    let init_log = pods
        .logs(
            "web-1",
            &kube::api::LogParams {
                container: Some("init".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(init_log, "init-done\n");

    // Endpoints of the headless service list all three with hostnames.
    let ep = eps.get("web-hs").await.unwrap();
    let hosts: BTreeSet<String> = ep.subsets.unwrap()[0]
        .addresses
        .clone()
        .unwrap()
        .iter()
        .filter_map(|a| a.hostname.clone())
        .collect();
    assert_eq!(
        hosts,
        ["web-0", "web-1", "web-2"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // Scale down to 1: highest ordinal first, claims are kept.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_for(&sets, "web", "1 replica", |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|s| s.replicas == 1 && s.ready_replicas == Some(1))
    })
    .await;
    // The recorder's watch may trail the status update: let it catch up on the two deletions.
    let deletions = tokio::time::timeout(GUARD, async {
        loop {
            let d: Vec<String> = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("delete"))
                .cloned()
                .collect();
            if d.len() >= 2 {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("pod deletions observed");
    assert_eq!(deletions, vec!["delete web-2", "delete web-1"]);
    assert_eq!(pvcs.list(&ListParams::default()).await.unwrap().items.len(), 3);

    // A deleted pod is re-created with the same identity and sees its claim's data again.
    let (_, st) = exec_out(&pods, "web-0", &["bash", "-c", "echo kept > /data/file"]).await;
    assert_eq!(st, "Success");
    let old_uid = pods.get("web-0").await.unwrap().metadata.uid;
    pods.delete("web-0", &DeleteParams::default()).await.unwrap();
    wait_for(&pods, "web-0", "re-created web-0", move |p: Option<&Pod>| {
        p.is_some_and(|p| p.metadata.uid != old_uid) && ready(p)
    })
    .await;
    let (out, _) = exec_out(&pods, "web-0", &["cat", "/data/file"]).await;
    assert_eq!(out, "kept\n");
    recorder.abort();
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_restart_gives_a_new_id_and_loses_non_persistent_files() {
    let Some(c) = cluster(1).await else { return };
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    sets.create(&PostParams::default(), &statefulset(1, "Parallel"))
        .await
        .unwrap();
    let pod = wait_for(&pods, "web-0", "web-0 ready", ready).await;
    let first_id = pod.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let (_, st) = exec_out(
        &pods,
        "web-0",
        &[
            "bash",
            "-c",
            "echo a > /data/kept; echo b > /opt/lost; echo c > /etc/kept",
        ],
    )
    .await;
    assert_eq!(st, "Success");

    assert!(c.control.restart_container("default", "web-0", "app"));
    let pod = wait_for(&pods, "web-0", "restarted app", |p: Option<&Pod>| {
        ready(p)
            && p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs[0].restart_count == 1)
    })
    .await;
    let cs = &pod.status.unwrap().container_statuses.unwrap()[0];
    assert_ne!(cs.container_id.as_deref(), Some(first_id.as_str()));
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.container_id.as_deref(), Some(first_id.as_str()));
    let (out, _) = exec_out(
        &pods,
        "web-0",
        &[
            "bash",
            "-c",
            "cat /data/kept /etc/kept; test -f /opt/lost; echo $?",
        ],
    )
    .await;
    assert_eq!(out, "a\nc\n1\n");

    // The fault hook restarts once and is consumed.
    let faults = c.sim.faults();
    let mut pf = faults.pod_faults();
    pf.crash_pods = vec!["default/web-0".into()];
    faults.set_pod_faults(pf);
    wait_for(&pods, "web-0", "second restart", |p: Option<&Pod>| {
        ready(p)
            && p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs[0].restart_count == 2)
    })
    .await;
    assert!(faults.pod_faults().crash_pods.is_empty());

    // A failed pod is replaced by the StatefulSet controller (new uid), with its claim's data.
    let old_uid = pods.get("web-0").await.unwrap().metadata.uid;
    assert!(c.control.fail_pod("default", "web-0"));
    let failed_uid = old_uid.clone();
    wait_for(
        &pods,
        "web-0",
        "failed or replaced web-0",
        move |p: Option<&Pod>| {
            p.is_some_and(|p| {
                p.metadata.uid != failed_uid
                    || p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            })
        },
    )
    .await;
    let replaced = old_uid.clone();
    wait_for(&pods, "web-0", "replacement web-0", move |p: Option<&Pod>| {
        p.is_some_and(|p| p.metadata.uid != replaced) && ready(p)
    })
    .await;
    let (out, _) = exec_out(&pods, "web-0", &["cat", "/data/kept"]).await;
    assert_eq!(out, "a\n");
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_fit_nowhere_are_unschedulable() {
    let Some(c) = cluster(2).await else { return };
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": "img", "resources": {"requests": {"cpu": "100"}}}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = wait_for(&pods, "huge", "PodScheduled=False", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
    })
    .await;
    let cond = pod
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some(
            "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption \
             victims found for incoming pod."
        )
    );
    assert!(pod.spec.unwrap().node_name.is_none());
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_and_logs_work_against_the_simulator() {
    let Some(c) = cluster(1).await else { return };
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        common::skipped("kubectl not installed");
        return;
    }
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box"},
        "spec": {"containers": [{"name": "c", "image": "img"}]}}),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    c.sim.write_kubeconfig(&kubeconfig).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // kubectl itself waits for the kubelet to report the pod Ready (watch on the pod).
    let kc = kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["wait", "--for=condition=Ready", "pod/box", "--timeout=30s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/box condition met\n");
    wait_for(&pods, "box", "box ready", ready).await;
    let kc = kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["exec", "box", "--", "sh", "-c", "echo from-kubectl; exit 5"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-kubectl\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["logs", "box"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kubesim: container c started"),
        "{out:?}"
    );
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bubblewrap_pods_run_and_exec_explains_what_is_missing() {
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new_virtual(state.path()).unwrap();
    let sim = Sim::start(SimConfig {
        controllers: controllers::tasks(runtime.clone(), NodeConfig::default()),
        pod_handler: Some(Arc::new(NodePodHandler::new(runtime))),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let client = Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "v"},
        "spec": {"initContainers": [{"name": "init", "image": "img", "command": ["false"]}],
                 "containers": [{"name": "c", "image": "img"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for(&pods, "v", "virtual pod ready", ready).await;
    let mut p = pods
        .exec("v", vec!["true"], &AttachParams::default())
        .await
        .unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(status.reason.as_deref(), Some("InternalError"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("kubesim exec needs bubblewrap: apt-get install bubblewrap"),
        "{status:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiping_the_store_stops_the_sandboxes_of_vanished_pods() {
    if !sandbox_available() {
        common::skipped(&kubesim::sandbox::sandbox_unavailable_reason().unwrap_or_default());
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path()).unwrap();
    let (config, _control) =
        controllers::install(SimConfig::default(), runtime.clone(), NodeConfig::default());
    let sim = Sim::start(config).await.unwrap();
    let client = Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"},
        "spec": {"containers": [{"name": "c", "image": "img"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = wait_for(&pods, "w", "w ready", ready).await;
    let uid = pod.metadata.uid.unwrap();
    assert_eq!(runtime.pod_containers(&uid).len(), 1);
    sim.restart(false);
    let gone = tokio::time::timeout(GUARD, async {
        while !runtime.pod_containers(&uid).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "sandbox of the wiped pod still running");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_change_rolls_pods_from_the_highest_ordinal() {
    let Some(c) = cluster(1).await else { return };
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "roll"},
        "spec": {"replicas": 2, "serviceName": "roll", "selector": {"matchLabels": {"app": "roll"}},
                 "template": {"metadata": {"labels": {"app": "roll"}},
                              "spec": {"containers": [{"name": "app", "image": "img:1"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let first = wait_for(&sets, "roll", "2 ready", |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref()).and_then(|s| s.ready_replicas) == Some(2)
    })
    .await;
    let old_revision = first.status.unwrap().update_revision.unwrap();
    let uids: Vec<Option<String>> = vec![
        pods.get("roll-0").await.unwrap().metadata.uid,
        pods.get("roll-1").await.unwrap().metadata.uid,
    ];

    sets.patch(
        "roll",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "img:2"}]}}}}),
        ),
    )
    .await
    .unwrap();
    let rolled = wait_for(&sets, "roll", "rolled out", |s: Option<&StatefulSet>| {
        // As `kubectl rollout status` does: only a status that observed the new generation
        // counts (the old status also has current == update revision).
        let generation = s.and_then(|s| s.metadata.generation);
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.observed_generation == generation
                && st.updated_replicas == Some(2)
                && st.ready_replicas == Some(2)
                && st.current_revision == st.update_revision
        })
    })
    .await;
    let new_revision = rolled.status.unwrap().update_revision.unwrap();
    assert_ne!(new_revision, old_revision);
    for (i, old_uid) in uids.iter().enumerate() {
        let pod = pods.get(&format!("roll-{i}")).await.unwrap();
        assert_ne!(&pod.metadata.uid, old_uid);
        assert_eq!(
            pod.metadata.labels.unwrap()["controller-revision-hash"],
            new_revision
        );
        assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("img:2"));
    }
    let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::namespaced(c.client.clone(), "default");
    let names: BTreeSet<String> = revisions
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    assert!(
        names.contains(&old_revision) && names.contains(&new_revision),
        "{names:?}"
    );
    c.sim.shutdown().await;
}
