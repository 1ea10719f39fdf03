//! Node, drift and ownership faults (issue 12): the operator in-process against kubesim, whose
//! simulated kubelet crashes, evicts, fails to start and hangs what the test asks. Every test
//! ends in the final-state comparison of `operator_support::final_state` (converged as without
//! the fault, nothing duplicated or leaked, foreign objects untouched, `--configure` once per
//! container) and a bound on the operator's writes, printed as `writes <test>: {...}`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod faults_node;
mod operator_support;
mod skip_support;

use faults_node::*;
use kubedirector_actors::plan::names::{pod_name, statefulset_name, NamingScheme};
use kubesim::{faults::PodFaults, resources::ResourceKey};
use operator_support::{centos_cluster, configured_with, final_state, members, Env, ResourceKind, NS};
use serde_json::json;

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
