//! Node, drift and ownership faults (issue 12): the operator in-process against kubesim, whose
//! simulated kubelet crashes, evicts, fails to start and hangs what the test asks. Every test
//! ends in the final-state comparison of `operator_support::final_state` (converged as without
//! the fault, nothing duplicated or leaked, foreign objects untouched, `--configure` once per
//! container) and a bound on the operator's writes, printed as `writes <test>: {...}`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;
mod skip_support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, Preconditions};
use kubedirector_actors::plan::names::{member_service_name, pod_name, statefulset_name, NamingScheme};
use kubesim::{faults::PodFaults, resources::ResourceKey};
use operator_support::{
    centos_cluster, configured_with, final_state, members, serve_files, setup_package, Env, ResourceKind, NS,
};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

const ROLE: &str = "node";

fn sandbox_available() -> bool {
    let ok =
        kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available());
    if !ok {
        skip_support::skipped("bubblewrap/nsenter not available, in-pod exec cannot run");
    }
    ok
}

/// A kdapp whose startscript logs each call to /var/log/kdtest/calls.log (inside the container,
/// so a fresh container starts a fresh log) and takes a moment on `--configure`.
fn logging_app(env: &Env, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let script = "#!/bin/sh\nmkdir -p /var/log/kdtest\necho \"$*\" >> /var/log/kdtest/calls.log\n\
                  if [ \"$1\" = --configure ]; then sleep 1; fi\nexit 0\n";
    let base = serve_files(vec![("/p.tgz", setup_package(dir.path(), "p", script))]);
    env.create(
        &ResourceKind::App,
        NS,
        json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1",
            "kind": "KubeDirectorApp",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "label": {"name": name},
                "distroID": format!("kdtest/{name}"),
                "version": "1.0",
                "configSchemaVersion": 7,
                "defaultImageRepoTag": "docker.io/library/debian:12-slim",
                "defaultConfigPackage": {"packageURL": format!("{base}/p.tgz"), "useNewSetupLayout": true},
                "services": [{"id": "api", "label": {"name": "API"}, "endpoint": {"port": 7000}}],
                "roles": [{"id": ROLE, "cardinality": "1+"}],
                "config": {"roleServices": [{"roleID": ROLE, "serviceIDs": ["api"]}], "selectedRoles": [ROLE]}
            }
        }),
    );
}

/// A kdcluster of `app` with `n` members of role [`ROLE`].
fn cluster(name: &str, app: &str, n: i64) -> Value {
    let small = json!({"cpu": "200m", "memory": "256Mi"});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"app": app, "roles": [{"id": ROLE, "members": n, "resources": {"limits": small, "requests": small}}]}
    })
}

/// stdout of `sh -c script` in the pod's `app` container.
fn exec(env: &Env, pod: &str, script: &str) -> String {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    env.rt.block_on(async {
        let mut p = api
            .exec(
                pod,
                vec!["sh", "-c", script],
                &AttachParams::default().container("app").stderr(false),
            )
            .await
            .unwrap();
        let mut out = String::new();
        p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
        p.join().await.unwrap();
        out
    })
}

/// Each member pod's startscript calls (one line per call).
fn calls(env: &Env, name: &str) -> BTreeMap<String, Vec<String>> {
    pods_of(env, name)
        .into_iter()
        .map(|pod| {
            let lines = exec(env, &pod, "cat /var/log/kdtest/calls.log 2>/dev/null");
            (pod, lines.lines().map(str::to_string).collect())
        })
        .collect()
}

fn pods_of(env: &Env, name: &str) -> Vec<String> {
    members(env, name)
        .iter()
        .map(|m| m["pod"].as_str().unwrap().to_string())
        .collect()
}

fn last_container(env: &Env, name: &str, i: usize) -> Value {
    members(env, name)[i]["stateDetail"]["lastConfiguredContainer"].clone()
}

fn uid_of(env: &Env, kind: &ResourceKind, name: &str) -> Option<String> {
    env.get(kind, NS, name)
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
}

fn set_pod_faults(env: &Env, faults: PodFaults) {
    env.sim.as_ref().unwrap().faults().set_pod_faults(faults);
}

/// Operator writes since `before` (only the counts that moved).
fn writes_since(env: &Env, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    final_state::operator_writes(env)
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0);
            (d > 0).then_some((k, d))
        })
        .collect()
}

fn count(w: &BTreeMap<String, u64>, k: &str) -> u64 {
    w.get(k).copied().unwrap_or(0)
}

fn status_writes(w: &BTreeMap<String, u64>) -> u64 {
    count(w, "update kubedirectorclusters/status")
}

fn events(env: &Env) -> Vec<(String, String)> {
    env.list(&ResourceKind::Event, NS)
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn expected<'a>(cluster: &'a str, roles: &'a [(&'a str, usize)], pvcs: bool) -> final_state::Expected<'a> {
    final_state::Expected {
        ns: NS,
        cluster,
        roles,
        pvcs,
    }
}

fn assert_configured_once(env: &Env, name: &str) {
    let calls = calls(env, name);
    assert_eq!(final_state::configure_once_problems(&calls), Vec::<String>::new());
}

#[test]
fn crashed_and_evicted_members_are_set_up_again_once_per_new_container() {
    if !sandbox_available() {
        return;
    }
    let env = Env::start();
    let foreign = final_state::plant_foreign(&env, NS, "crash");
    logging_app(&env, "kdlog");
    env.create(&ResourceKind::Cluster, NS, cluster("crash", "kdlog", 2));
    env.eventually("configured", |e| configured_with(e, "crash", 2));
    assert_configured_once(&env, "crash");
    let before = final_state::operator_writes(&env);
    let pods = pods_of(&env, "crash");

    // A container crash: the kubelet restarts it in the same pod; the fresh container is set up.
    let old = last_container(&env, "crash", 0);
    set_pod_faults(
        &env,
        PodFaults {
            crash_pods: vec![format!("{NS}/{}", pods[0])],
            ..PodFaults::default()
        },
    );
    env.eventually("crashed member set up again", |e| {
        configured_with(e, "crash", 2) && last_container(e, "crash", 0) != old
    });

    // An eviction: the pod is deleted, its StatefulSet makes a new one, which is set up.
    let old_uid = uid_of(&env, &ResourceKind::Pod, &pods[1]).unwrap();
    let old = last_container(&env, "crash", 1);
    env.delete(&ResourceKind::Pod, NS, &pods[1]);
    env.eventually("evicted member back and set up", |e| {
        uid_of(e, &ResourceKind::Pod, &pods[1]).is_some_and(|u| u != old_uid)
            && configured_with(e, "crash", 2)
            && last_container(e, "crash", 1) != old
    });

    final_state::assert_converged(&env, &expected("crash", &[(ROLE, 2)], false));
    assert_eq!(foreign.problems(&env), Vec::<String>::new());
    assert_configured_once(&env, "crash");
    let w = writes_since(&env, &before);
    eprintln!("writes crash+eviction: {w:?}");
    assert_eq!(
        status_writes(&w) + count(&w, "patch kubedirectorclusters"),
        w.values().sum::<u64>(),
        "nothing but the cluster's status is written: {w:?}"
    );
    assert!(status_writes(&w) <= 16, "{w:?}");
}

#[test]
fn a_member_whose_pod_fails_to_start_is_set_up_once_it_recovers() {
    if !sandbox_available() {
        return;
    }
    let mut env = Env::start();
    logging_app(&env, "kdlog");
    // The pod name is known before the operator makes it: it derives from the kdcluster uid.
    env.stop_operator();
    env.create(&ResourceKind::Cluster, NS, cluster("late", "kdlog", 1));
    let uid = uid_of(&env, &ResourceKind::Cluster, "late").unwrap();
    let pod = pod_name(&statefulset_name(NamingScheme::Uid, "late", &uid, ROLE, 0), 0);
    set_pod_faults(
        &env,
        PodFaults {
            fail_start_pods: vec![format!("{NS}/{pod}")],
            ..PodFaults::default()
        },
    );
    env.start_operator();
    env.eventually("the member's container fails to start", |e| {
        e.get(&ResourceKind::Pod, NS, &pod).is_some_and(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    let reason = &c["state"]["waiting"]["reason"];
                    reason == "RunContainerError" || reason == "CrashLoopBackOff"
                })
        }) && members(e, "late")
            .first()
            .is_some_and(|m| m["state"] == "create pending")
    });
    let before = final_state::operator_writes(&env);
    set_pod_faults(&env, PodFaults::default());
    env.eventually("configured after the recovery", |e| configured_with(e, "late", 1));
    final_state::assert_converged(&env, &expected("late", &[(ROLE, 1)], false));
    assert_configured_once(&env, "late");
    let w = writes_since(&env, &before);
    eprintln!("writes failed start: {w:?}");
    assert_eq!(
        count(&w, "create statefulsets") + count(&w, "create services"),
        0,
        "{w:?}"
    );
    assert!(status_writes(&w) <= 8, "{w:?}");
}

#[test]
fn claims_pending_on_a_missing_storage_class_hold_members_until_it_exists() {
    let env = Env::start();
    let foreign = final_state::plant_foreign(&env, NS, "pvcs");
    let mut c = centos_cluster("pvcs", &[("vanilla_centos", 2)]);
    c["spec"]["roles"][0]["storage"] = json!({"size": "1Gi", "storageClassName": "late-class"});
    env.create(&ResourceKind::Cluster, NS, c);
    env.eventually("claims pending, members waiting", |e| {
        let claims = final_state::stored(e, "persistentvolumeclaims", NS);
        claims.len() == 2
            && claims.iter().all(|c| c["status"]["phase"] == "Pending")
            && members(e, "pvcs").len() == 2
            && members(e, "pvcs").iter().all(|m| m["state"] == "create pending")
    });
    let before = final_state::operator_writes(&env);
    env.sim
        .as_ref()
        .unwrap()
        .store()
        .create(
            &ResourceKey::new("storage.k8s.io", "v1", "storageclasses"),
            None,
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "late-class"}, "provisioner": "kubesim.io/local",
                   "volumeBindingMode": "Immediate"}),
        )
        .unwrap();
    env.eventually("configured once the claims bind", |e| {
        configured_with(e, "pvcs", 2)
    });
    final_state::assert_converged(&env, &expected("pvcs", &[("vanilla_centos", 2)], true));
    assert_eq!(foreign.problems(&env), Vec::<String>::new());
    let w = writes_since(&env, &before);
    eprintln!("writes pending claims: {w:?}");
    assert_eq!(
        count(&w, "create statefulsets") + count(&w, "delete persistentvolumeclaims"),
        0,
        "{w:?}"
    );
    assert!(status_writes(&w) <= 8, "{w:?}");
}

#[test]
fn failed_and_hung_execs_are_retried_without_a_second_configure() {
    if !sandbox_available() {
        return;
    }
    let mut env = Env::start();
    logging_app(&env, "kdlog");
    // Setup execs wait 1 s in the guest and are abandoned 2 s later (defaults: 30 + 60 s).
    env.stop_operator();
    env.exec_timeouts = Some((1, 2));
    // The first exec hangs, the next two fail to start; every exec after runs.
    set_pod_faults(
        &env,
        PodFaults {
            exec_hangs: 1,
            exec_failures: 2,
            ..PodFaults::default()
        },
    );
    env.start_operator();
    let before = final_state::operator_writes(&env);
    env.create(&ResourceKind::Cluster, NS, cluster("flaky", "kdlog", 1));
    env.eventually("configured despite the exec faults", |e| {
        configured_with(e, "flaky", 1)
    });
    let left = env.sim.as_ref().unwrap().faults().pod_faults();
    assert_eq!(
        (left.exec_hangs, left.exec_failures),
        (0, 0),
        "every fault was hit"
    );
    final_state::assert_converged(&env, &expected("flaky", &[(ROLE, 1)], false));
    assert_configured_once(&env, "flaky");
    let w = writes_since(&env, &before);
    eprintln!("writes exec faults: {w:?}");
    assert_eq!(count(&w, "create statefulsets"), 1, "{w:?}");
    assert!(status_writes(&w) <= 12, "{w:?}");
}

fn sts_of(env: &Env, name: &str) -> Value {
    let all: Vec<Value> = final_state::stored(env, "statefulsets", NS)
        .into_iter()
        .filter(|s| s["metadata"]["labels"][final_state::CLUSTER_LABEL] == name)
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].clone()
}

fn running(env: &Env, name: &str) -> usize {
    final_state::stored(env, "pods", NS)
        .iter()
        .filter(|p| {
            p["metadata"]["labels"][final_state::CLUSTER_LABEL] == name
                && p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}

#[test]
fn statefulsets_and_services_changed_by_hand_are_repaired_with_few_writes() {
    let env = Env::start();
    let foreign = final_state::plant_foreign(&env, NS, "drift");
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("drift", &[("vanilla_centos", 2)]),
    );
    env.eventually("configured", |e| configured_with(e, "drift", 2));
    let settled = |e: &Env| configured_with(e, "drift", 2) && running(e, "drift") == 2;
    let sts = sts_of(&env, "drift")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // Scaled by hand: scaled back.
    let before = final_state::operator_writes(&env);
    env.merge_patch(
        &ResourceKind::StatefulSet,
        NS,
        &sts,
        json!({"spec": {"replicas": 3}}),
    );
    env.eventually("replicas restored", |e| {
        sts_of(e, "drift")["spec"]["replicas"] == 2 && settled(e)
    });
    let w = writes_since(&env, &before);
    eprintln!("writes scaled by hand: {w:?}");
    // One patch; a second only when a pass ran before the watch showed the first.
    assert!((1..=2).contains(&count(&w, "patch statefulsets")), "{w:?}");

    // Deleted by hand: created again under its name; its members, gone with it, are replaced
    // by new ones (fresh node ids, spec 3.6), each with its Service.
    let before = final_state::operator_writes(&env);
    let old_uid = uid_of(&env, &ResourceKind::StatefulSet, &sts).unwrap();
    env.delete(&ResourceKind::StatefulSet, NS, &sts);
    env.eventually("statefulset restored", |e| {
        uid_of(e, &ResourceKind::StatefulSet, &sts).is_some_and(|u| u != old_uid) && settled(e)
    });
    let w = writes_since(&env, &before);
    eprintln!("writes statefulset deleted: {w:?}");
    assert_eq!(count(&w, "create statefulsets"), 1, "{w:?}");
    assert_eq!(count(&w, "delete services"), 2, "{w:?}");
    assert_eq!(count(&w, "create services"), 2, "{w:?}");
    assert!(status_writes(&w) <= 10, "{w:?}");

    // A member Service edited by hand: replaced once; deleted by hand: created once.
    let svc = members(&env, "drift")[0]["service"].as_str().unwrap().to_string();
    let before = final_state::operator_writes(&env);
    env.merge_patch(
        &ResourceKind::Service,
        NS,
        &svc,
        json!({"spec": {"ports": [{"name": "hacked", "port": 9999, "targetPort": 9999}],
                        "selector": {"app": "elsewhere"}}}),
    );
    env.eventually("member service repaired", |e| {
        let s = e.get(&ResourceKind::Service, NS, &svc).unwrap();
        s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["port"] == 22)
            && s["spec"]["selector"]["app"].is_null()
    });
    let w = writes_since(&env, &before);
    eprintln!("writes service edited: {w:?}");
    // One replace; a second (refused: stale version) only when a pass ran before the watch
    // showed the first.
    assert!((1..=2).contains(&count(&w, "update services")), "{w:?}");
    let before = final_state::operator_writes(&env);
    let old_uid = uid_of(&env, &ResourceKind::Service, &svc).unwrap();
    env.delete(&ResourceKind::Service, NS, &svc);
    env.eventually("member service re-created", |e| {
        uid_of(e, &ResourceKind::Service, &svc).is_some_and(|u| u != old_uid)
    });
    let w = writes_since(&env, &before);
    eprintln!("writes service deleted: {w:?}");
    assert_eq!(count(&w, "create services"), 1, "{w:?}");

    final_state::assert_converged(&env, &expected("drift", &[("vanilla_centos", 2)], false));
    assert_eq!(foreign.problems(&env), Vec::<String>::new());
}

#[test]
fn deleted_mid_setup_or_recreated_at_once_a_cluster_never_mixes_with_its_predecessor() {
    if !sandbox_available() {
        return;
    }
    let env = Env::start();
    let foreign = final_state::plant_foreign(&env, NS, "race");
    logging_app(&env, "kdlog");

    // Deleted while its members are being set up: nothing is left behind.
    env.create(&ResourceKind::Cluster, NS, cluster("race", "kdlog", 2));
    env.eventually("a member is being set up", |e| {
        members(e, "race").iter().any(|m| m["state"] == "creating")
    });
    let first = uid_of(&env, &ResourceKind::Cluster, "race").unwrap();
    env.delete(&ResourceKind::Cluster, NS, "race");
    env.eventually("the first cluster is gone", |e| {
        final_state::gone_problems(e, NS, "race", &first).is_empty()
    });

    // Configured, deleted and created again under the same name the moment the old one is
    // gone (its children may still be collected): the new one adopts and deletes nothing of the
    // old one's, and the old one's objects all go.
    env.create(&ResourceKind::Cluster, NS, cluster("race", "kdlog", 1));
    env.eventually("second configured", |e| configured_with(e, "race", 1));
    let second = uid_of(&env, &ResourceKind::Cluster, "race").unwrap();
    env.delete(&ResourceKind::Cluster, NS, "race");
    env.eventually("second cluster object gone", |e| {
        e.get(&ResourceKind::Cluster, NS, "race").is_none()
    });
    let before = final_state::operator_writes(&env);
    env.create(&ResourceKind::Cluster, NS, cluster("race", "kdlog", 1));
    env.eventually("third configured", |e| configured_with(e, "race", 1));
    final_state::assert_converged(&env, &expected("race", &[(ROLE, 1)], false));
    let leftovers: Vec<String> = ["statefulsets", "services", "pods"]
        .iter()
        .flat_map(|k| final_state::stored(&env, k, NS))
        .filter(|o| o.to_string().contains(&second) || o.to_string().contains(&first))
        .map(|o| o["metadata"]["name"].to_string())
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "objects of the earlier clusters");
    assert_eq!(foreign.problems(&env), Vec::<String>::new());
    assert_configured_once(&env, "race");
    let w = writes_since(&env, &before);
    eprintln!("writes re-created cluster: {w:?}");
    assert_eq!(count(&w, "create statefulsets"), 1, "{w:?}");
    assert_eq!(count(&w, "create services"), 2, "{w:?}");
    let deletes: u64 = w
        .iter()
        .filter(|(k, _)| k.starts_with("delete "))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(deletes, 0, "the new cluster deletes nothing: {w:?}");
}

#[test]
fn spec_edits_racing_the_operators_status_writes_all_take_effect() {
    let env = Env::start();
    let before = final_state::operator_writes(&env);
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("edits", &[("vanilla_centos", 1)]),
    );
    let res = json!({"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}});
    // Each edit lands while the operator is busy writing the status of the previous one.
    for n in [2, 3, 2, 3] {
        env.eventually("the operator wrote a status since the last edit", |e| {
            e.get(&ResourceKind::Cluster, NS, "edits").unwrap()["status"]["specGenerationToProcess"]
                .is_number()
        });
        env.merge_patch(
            &ResourceKind::Cluster,
            NS,
            "edits",
            json!({"spec": {"roles": [{"id": "vanilla_centos", "members": n, "resources": res.clone()}]}}),
        );
    }
    env.eventually("configured with the last edit", |e| {
        configured_with(e, "edits", 3)
    });
    final_state::assert_converged(&env, &expected("edits", &[("vanilla_centos", 3)], false));
    let c = env.get(&ResourceKind::Cluster, NS, "edits").unwrap();
    assert_eq!(c["spec"]["roles"][0]["members"], 3, "the user's last edit stands");
    let w = writes_since(&env, &before);
    eprintln!("writes racing edits: {w:?}");
    assert_eq!(count(&w, "create statefulsets"), 1, "{w:?}");
    assert!(status_writes(&w) <= 20, "{w:?}");
}

#[test]
fn objects_of_someone_else_with_our_names_are_left_alone_and_explained() {
    let mut env = Env::start();
    let store = env.sim.as_ref().unwrap().store();
    // An undecodable kdapp must not stop the catalog. It passes a looser CRD schema (as an
    // older or hand-edited CRD would have: spec preserved as is).
    let crds = ResourceKey::new("apiextensions.k8s.io", "v1", "customresourcedefinitions");
    let mut crd = store
        .get(&crds, None, "kubedirectorapps.kubedirector.hpe.com")
        .unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    store.update(&crds, None, crd).unwrap();
    let apps = ResourceKey::new("kubedirector.hpe.com", "v1beta1", "kubedirectorapps");
    let mut bad = operator_support::centos_app(NS);
    bad["metadata"]["name"] = json!("undecodable");
    bad["spec"]["roles"] = json!("not a list");
    store.create(&apps, Some(NS), bad).unwrap();
    // Names derive from the kdcluster uid: known before the operator writes anything.
    env.stop_operator();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("own-a", &[("vanilla_centos", 1)]),
    );
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("own-b", &[("vanilla_centos", 1)]),
    );
    let (a, b) = (
        uid_of(&env, &ResourceKind::Cluster, "own-a").unwrap(),
        uid_of(&env, &ResourceKind::Cluster, "own-b").unwrap(),
    );
    let taken_sts = statefulset_name(NamingScheme::Uid, "own-a", &a, "vanilla_centos", 0);
    let b_pod = pod_name(
        &statefulset_name(NamingScheme::Uid, "own-b", &b, "vanilla_centos", 0),
        0,
    );
    let taken_svc = member_service_name(NamingScheme::Uid, &b_pod);
    let sts = store
        .create(
            &ResourceKey::apps("statefulsets"),
            Some(NS),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": taken_sts},
                   "spec": {"replicas": 0, "serviceName": "x", "selector": {"matchLabels": {"app": "x"}},
                            "template": {"metadata": {"labels": {"app": "x"}},
                                         "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}),
        )
        .unwrap();
    let svc = store
        .create(
            &ResourceKey::core("services"),
            Some(NS),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": taken_svc},
                   "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}}),
        )
        .unwrap();
    env.start_operator();

    // own-a: the StatefulSet name is taken; a Warning says so and the next name is used.
    env.eventually("own-a configured beside the foreign StatefulSet", |e| {
        configured_with(e, "own-a", 1)
    });
    final_state::assert_converged(&env, &expected("own-a", &[("vanilla_centos", 1)], false));
    assert_ne!(sts_of(&env, "own-a")["metadata"]["name"], json!(taken_sts));
    // own-b: the member Service name is taken; a Warning says so, own-b waits.
    env.eventually("Warnings explain both conflicts", |e| {
        let ev = events(e);
        let warned = |name: &str| {
            ev.iter()
                .any(|(t, m)| t == "Warning" && m.contains(name) && m.contains("not owned by this kdcluster"))
        };
        warned(&taken_sts) && warned(&taken_svc)
    });
    for (kind, before) in [("statefulsets", &sts), ("services", &svc)] {
        let key = if kind == "services" {
            ResourceKey::core(kind)
        } else {
            ResourceKey::apps(kind)
        };
        let now = store
            .get(&key, Some(NS), before["metadata"]["name"].as_str().unwrap())
            .unwrap();
        // (Its status is kubesim's controllers'.)
        for part in [
            "/metadata/labels",
            "/metadata/annotations",
            "/metadata/ownerReferences",
            "/spec",
        ] {
            assert_eq!(
                now.pointer(part),
                before.pointer(part),
                "{kind} {part} left untouched"
            );
        }
    }
    assert!(
        members(&env, "own-b").iter().all(|m| m["state"] != "configured"),
        "own-b cannot finish without its member Service"
    );
    let w = final_state::operator_writes(&env);
    eprintln!("writes foreign objects: {w:?}");
    // own-a: headless + member Service; own-b: headless + one attempt per minute at most.
    assert!(count(&w, "create services") <= 5, "{w:?}");
    assert_eq!(
        count(&w, "create statefulsets"),
        3,
        "one refused, two created: {w:?}"
    );

    // kubesim refuses a delete whose UID precondition is stale, as the API server does.
    let own = members(&env, "own-a")[0]["service"].as_str().unwrap().to_string();
    let uid = uid_of(&env, &ResourceKind::Service, &own).unwrap();
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(env.client.clone(), NS);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("stale-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match env.rt.block_on(api.delete(&own, &dp)) {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                format!(
                    "Operation cannot be fulfilled on services \"{own}\": Precondition failed: \
                     UID in precondition: stale-uid, UID in object meta: {uid}"
                )
            );
        }
        other => panic!("a stale uid precondition was not refused: {other:?}"),
    }
    assert_eq!(uid_of(&env, &ResourceKind::Service, &own), Some(uid));
}

#[test]
fn the_api_ports_never_write_to_or_delete_an_object_that_is_not_the_clusters() {
    use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
    use kubedirector::operator::kube_ports::KubeClusterApi;
    use kubedirector_actors::ports::{ApiError, ClusterApi, ObjectKey, OwnedKind};
    let env = Env::start();
    let api = KubeClusterApi::new(env.client.clone());
    // The owner must exist (or the garbage collector takes what it owns): a ConfigMap stands in
    // for the kdcluster, the ports only compare the controller's uid.
    let cm = env
        .sim
        .as_ref()
        .unwrap()
        .store()
        .create(
            &ResourceKey::core("configmaps"),
            Some(NS),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}),
        )
        .unwrap();
    let owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                        "uid": cm["metadata"]["uid"], "controller": true}]);
    let svc = |name: &str, owned: bool| -> Service {
        let mut v = json!({"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": name, "namespace": NS},
                           "spec": {"ports": [{"port": 80}], "selector": {"app": name}}});
        if owned {
            v["metadata"]["ownerReferences"] = owner.clone();
        }
        serde_json::from_value(v).unwrap()
    };
    let create = |s: Service| env.create(&ResourceKind::Service, NS, serde_json::to_value(s).unwrap());
    let rv = |name: &str| {
        env.get(&ResourceKind::Service, NS, name).unwrap()["metadata"]["resourceVersion"].clone()
    };

    // Create over someone else's Service: refused, nothing written.
    create(svc("theirs", false));
    let before = rv("theirs");
    match env.rt.block_on(api.apply_service(svc("theirs", true))) {
        Err(ApiError::AlreadyExists { .. }) => {}
        other => panic!("someone else's Service was not refused: {other:?}"),
    }
    assert_eq!(rv("theirs"), before);
    // One this kdcluster controls is adopted as stored (a retried create).
    create(svc("ours", true));
    let adopted = env.rt.block_on(api.apply_service(svc("ours", true))).unwrap();
    assert_eq!(
        adopted.metadata.resource_version.clone().map(Value::from),
        Some(rv("ours"))
    );
    // A repair conditional on a version that is no longer current is refused.
    let mut stale = adopted.clone();
    stale.metadata.resource_version = Some("1".into());
    assert!(matches!(
        env.rt.block_on(api.apply_service(stale)),
        Err(ApiError::Conflict { .. })
    ));

    // Same for a StatefulSet.
    let sts = |owned: bool| -> StatefulSet {
        let mut v = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "theirs-sts", "namespace": NS},
               "spec": {"replicas": 0, "serviceName": "x", "selector": {"matchLabels": {"app": "x"}},
                        "template": {"metadata": {"labels": {"app": "x"}},
                                     "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        if owned {
            v["metadata"]["ownerReferences"] = owner.clone();
        }
        serde_json::from_value(v).unwrap()
    };
    env.create(
        &ResourceKind::StatefulSet,
        NS,
        serde_json::to_value(sts(false)).unwrap(),
    );
    let before = env.get(&ResourceKind::StatefulSet, NS, "theirs-sts").unwrap();
    match env.rt.block_on(api.create_stateful_set(sts(true))) {
        Err(ApiError::AlreadyExists { .. }) => {}
        other => panic!("someone else's StatefulSet was not refused: {other:?}"),
    }
    let after = env.get(&ResourceKind::StatefulSet, NS, "theirs-sts").unwrap();
    assert_eq!(
        after["metadata"]["ownerReferences"],
        before["metadata"]["ownerReferences"]
    );
    assert_eq!(after["spec"], before["spec"]);

    // A delete naming the uid it observed leaves a same-named successor alone.
    let key = ObjectKey::new(NS, "ours");
    let first = uid_of(&env, &ResourceKind::Service, "ours");
    env.delete(&ResourceKind::Service, NS, "ours");
    create(svc("ours", false));
    let second = uid_of(&env, &ResourceKind::Service, "ours");
    assert_ne!(first, second);
    env.rt
        .block_on(api.delete(OwnedKind::Service, key.clone(), first))
        .unwrap();
    assert_eq!(
        uid_of(&env, &ResourceKind::Service, "ours"),
        second,
        "the successor is kept"
    );
    env.rt
        .block_on(api.delete(OwnedKind::Service, key, second))
        .unwrap();
    assert_eq!(uid_of(&env, &ResourceKind::Service, "ours"), None);
}
