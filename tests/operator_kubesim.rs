//! `kubedirector run` in-process against kubesim over real HTTP: create, scale, roles, drift
//! repair, deletion and restart, observed only through the Kubernetes API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use operator_support::{
    centos_cluster, configured_with, final_state, http_request, members, owned, stop, Env, ResourceKind, NS,
};
use serde_json::json;

fn running_pods(env: &Env, name: &str) -> usize {
    owned(env, &ResourceKind::Pod, name)
        .iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .count()
}

#[test]
fn a_cluster_is_created_scaled_repaired_and_deleted() {
    let env = Env::start();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c1", &[("vanilla_centos", 2)]),
    );
    env.eventually("configured with 2 members", |e| configured_with(e, "c1", 2));

    let cluster = env.get(&ResourceKind::Cluster, NS, "c1").unwrap();
    let uid = cluster["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        cluster["metadata"]["finalizers"],
        json!(["kubedirector.hpe.com/cleanup"])
    );
    let sts = owned(&env, &ResourceKind::StatefulSet, "c1");
    assert_eq!(sts.len(), 1);
    let labels = &sts[0]["metadata"]["labels"];
    assert_eq!(labels["kubedirector.hpe.com/role"], "vanilla_centos");
    assert_eq!(labels["kubedirector.hpe.com/kdapp"], "centos7x");
    assert_eq!(labels["kubedirector.hpe.com/headless"], "c1");
    assert_eq!(sts[0]["metadata"]["ownerReferences"][0]["uid"], json!(uid));
    assert_eq!(sts[0]["spec"]["replicas"], 2);
    assert!(sts[0]["metadata"]["name"].as_str().unwrap().starts_with("kdss-"));
    assert_eq!(running_pods(&env, "c1"), 2);
    let svcs = owned(&env, &ResourceKind::Service, "c1");
    assert_eq!(svcs.len(), 3, "headless + one per member");
    let status = env.get(&ResourceKind::Cluster, NS, "c1").unwrap()["status"].clone();
    let headless = status["clusterService"].as_str().unwrap().to_string();
    assert!(headless.starts_with("kdhs-"));
    for m in members(&env, "c1") {
        let pod = m["pod"].as_str().unwrap();
        assert_eq!(m["service"], json!(format!("s-{pod}")));
    }

    // Scale up.
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "c1",
        json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 3,
            "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}}]}}),
    );
    env.eventually("configured with 3 members", |e| {
        configured_with(e, "c1", 3) && running_pods(e, "c1") == 3
    });
    assert_eq!(owned(&env, &ResourceKind::Service, "c1").len(), 4);

    // Scale down.
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "c1",
        json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 1,
            "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}}]}}),
    );
    env.eventually("configured with 1 member", |e| {
        configured_with(e, "c1", 1)
            && running_pods(e, "c1") == 1
            && owned(e, &ResourceKind::Service, "c1").len() == 2
    });

    // A member Service deleted by hand comes back.
    let svc = members(&env, "c1")[0]["service"].as_str().unwrap().to_string();
    env.delete(&ResourceKind::Service, NS, &svc);
    env.eventually("member service restored", |e| {
        e.get(&ResourceKind::Service, NS, &svc).is_some()
    });

    // StatefulSet metadata edited by hand is restored.
    let sts_name = owned(&env, &ResourceKind::StatefulSet, "c1")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    env.merge_patch(
        &ResourceKind::StatefulSet,
        NS,
        &sts_name,
        json!({"metadata": {"labels": {"kubedirector.hpe.com/role": "hacked"}}}),
    );
    env.eventually("statefulset labels restored", |e| {
        e.get(&ResourceKind::StatefulSet, NS, &sts_name).unwrap()["metadata"]["labels"]
            ["kubedirector.hpe.com/role"]
            == "vanilla_centos"
    });

    // Deletion: the finalizer is released and garbage collection removes the owned objects.
    env.delete(&ResourceKind::Cluster, NS, "c1");
    env.eventually("cluster and owned objects gone", |e| {
        e.get(&ResourceKind::Cluster, NS, "c1").is_none()
            && owned(e, &ResourceKind::StatefulSet, "c1").is_empty()
            && owned(e, &ResourceKind::Service, "c1").is_empty()
    });
}

#[test]
fn roles_are_added_and_removed() {
    let env = Env::start();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c2", &[("vanilla_centos", 1)]),
    );
    env.eventually("configured with 1", |e| configured_with(e, "c2", 1));
    let res = json!({"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}});
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "c2",
        json!({"spec": {"roles": [
            {"id": "vanilla_centos", "members": 1, "resources": res.clone()},
            {"id": "extra", "members": 2, "resources": res.clone()}
        ]}}),
    );
    env.eventually("two roles configured", |e| {
        configured_with(e, "c2", 3) && owned(e, &ResourceKind::StatefulSet, "c2").len() == 2
    });
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "c2",
        json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 1, "resources": res}]}}),
    );
    env.eventually("extra role removed", |e| {
        configured_with(e, "c2", 1)
            && owned(e, &ResourceKind::StatefulSet, "c2").len() == 1
            && running_pods(e, "c2") == 1
    });
}

#[test]
fn an_operator_restarted_mid_way_converges_without_duplicates() {
    let mut env = Env::start();
    let foreign = final_state::plant_foreign(&env, NS, "c3");
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c3", &[("vanilla_centos", 3)]),
    );
    env.eventually("statefulset created", |e| {
        !owned(e, &ResourceKind::StatefulSet, "c3").is_empty()
    });
    env.stop_operator();
    env.start_operator();
    env.eventually("configured after restart", |e| configured_with(e, "c3", 3));
    final_state::assert_converged(
        &env,
        &final_state::Expected {
            ns: NS,
            cluster: "c3",
            roles: &[("vanilla_centos", 3)],
            pvcs: false,
        },
    );
    assert_eq!(foreign.problems(&env), Vec::<String>::new());
    assert_eq!(running_pods(&env, "c3"), 3);
}

#[test]
fn a_converged_operator_makes_no_api_requests_while_idle_except_lease_renewals() {
    let env = Env::start();
    let metrics = env.sim.as_ref().unwrap().metrics();
    metrics.reset();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c4", &[("vanilla_centos", 4)]),
    );
    env.eventually("configured with 4", |e| configured_with(e, "c4", 4));
    // Barriers instead of fixed sleeps: the leader renews its Lease every 2 s, so "n more
    // renewals" is a window of n renewal periods measured by the operator's own clock.
    let renewals = || {
        metrics
            .snapshot()
            .by_client_verb_resource
            .iter()
            .filter(|(k, _)| k.as_str() == "kubedirector update leases")
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    let after_renewals = |n: u64| {
        let start = renewals();
        env.eventually(&format!("{n} more lease renewals"), |_| renewals() >= start + n);
    };
    // Trailing status writes and events land within a renewal period of convergence.
    after_renewals(1);
    let converged = metrics.snapshot();
    let operator_writes: u64 = converged
        .by_field_manager
        .iter()
        .filter(|(m, _)| m.as_str() == "kubedirector.hpe.com")
        .map(|(_, n)| n)
        .sum();
    eprintln!("requests to converge 4 members: {:?}", converged.by_verb_resource);
    assert!(operator_writes > 0);
    // Idle for two renewal periods.
    after_renewals(2);
    let idle = metrics.snapshot();
    // Leader-lease renewals (every 2 s) are the only requests allowed while idle.
    let without_leases = |counts: &std::collections::BTreeMap<String, u64>| {
        counts
            .iter()
            .filter(|(k, _)| !k.ends_with(" leases"))
            .map(|(k, v)| (k.clone(), *v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        without_leases(&idle.by_verb_resource),
        without_leases(&converged.by_verb_resource),
        "requests while idle"
    );
}

#[test]
fn metrics_and_health_are_served_over_http() {
    let env = Env::start();
    env.eventually("ready", |e| e.http_get("/readyz").0 == 200);
    assert_eq!(env.http_get("/healthz"), (200, "ok".to_string()));
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c5", &[("vanilla_centos", 1)]),
    );
    env.eventually("configured", |e| configured_with(e, "c5", 1));
    env.eventually("metrics show the configured cluster", |e| {
        let (code, body) = e.http_get("/metrics");
        code == 200
            && body.contains("kubedirector_clusters{state=\"configured\"} 1")
            && body.contains(
                "controller_runtime_reconcile_total{controller=\"kubedirectorcluster\",result=\"success\"}",
            )
    });
    let (_, body) = env.http_get("/metrics");
    assert!(
        body.contains("kubedirector_members{state=\"configured\"} 1"),
        "{body}"
    );
    // Per-cluster series carry the cluster's name; members and pods never become labels.
    assert!(
        body.contains(
            "kubedirector_cluster_state{app=\"centos7x\",cluster=\"c5\",namespace=\"team\",state=\"configured\"} 1"
        ),
        "{body}"
    );
    let pods = owned(&env, &ResourceKind::Pod, "c5");
    assert!(!pods.is_empty());
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(!body.contains(name), "pod {name} must not be a metric label");
    }
    // The log level is not changeable through the metrics port, only on the loopback admin port.
    let (code, _) = env.http("PUT", "/log-level", "debug");
    assert_eq!(code, 404, "PUT /log-level must not be served on the metrics port");
    let (code, body) = http_request(env.admin_addr, "PUT", "/log-level", "kubedirector=loud");
    assert_eq!(code, 400);
    assert!(body.starts_with("invalid log level/filter"), "{body}");
}

#[test]
fn a_second_replica_waits_for_the_lease_and_takes_over() {
    let mut env = Env::start();
    env.eventually("first replica leads", |e| {
        e.lease_holder().is_some_and(|h| h.starts_with("op_"))
    });
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let second = env.spawn_operator("standby", free);
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c6", &[("vanilla_centos", 1)]),
    );
    env.eventually("configured by the leader", |e| configured_with(e, "c6", 1));
    assert!(env.lease_holder().unwrap().starts_with("op_"));

    env.stop_operator();
    env.eventually("standby takes over", |e| {
        e.lease_holder().is_some_and(|h| h.starts_with("standby_"))
    });
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "c6",
        json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 2,
            "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}}]}}),
    );
    env.eventually("scaled by the new leader", |e| configured_with(e, "c6", 2));
    stop(second);
}

#[test]
fn injected_api_errors_and_conflicts_are_retried_until_converged() {
    let env = Env::start();
    let faults = env.sim.as_ref().unwrap().faults();
    let rule = |verb: &str, resource: &str, code: u16, count: u64| kubesim::faults::ErrorRule {
        verb: verb.into(),
        resource: resource.into(),
        rate: 1.0,
        code,
        count: Some(count),
    };
    faults.add_error(rule("create", "statefulsets", 503, 2));
    faults.add_error(rule("update", "kubedirectorclusters/status", 409, 2));
    faults.add_error(rule("create", "services", 429, 2));
    faults.add_error(rule("patch", "kubedirectorclusters", 500, 1));
    // No StatefulSet patch to fail: the StatefulSet is created with its final replicas.
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c7", &[("vanilla_centos", 2)]),
    );
    env.eventually("configured despite faults", |e| configured_with(e, "c7", 2));
    assert_eq!(owned(&env, &ResourceKind::StatefulSet, "c7").len(), 1);
    assert_eq!(owned(&env, &ResourceKind::Service, "c7").len(), 3);
    assert_eq!(running_pods(&env, "c7"), 2);
    let rules = faults.config().errors;
    assert!(
        rules.iter().all(|r| r.count == Some(0)),
        "every fault was hit: {rules:?}"
    );
}

#[test]
fn dropped_watches_and_410_gone_are_recovered() {
    let env = Env::start();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("c8", &[("vanilla_centos", 1)]),
    );
    env.eventually("configured", |e| configured_with(e, "c8", 1));
    let faults = env.sim.as_ref().unwrap().faults();
    faults.force_gone_next_watch();
    faults.drop_watches();
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "c8",
        json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 2,
            "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}}]}}),
    );
    env.eventually("scaled after the watches came back", |e| {
        configured_with(e, "c8", 2)
    });
    assert_eq!(owned(&env, &ResourceKind::StatefulSet, "c8").len(), 1);
    assert_eq!(owned(&env, &ResourceKind::Service, "c8").len(), 3);
}

#[test]
fn with_namespace_only_the_watched_namespaces_are_reconciled() {
    let env = Env::start_watching(&[NS]);
    env.create(
        &ResourceKind::Cluster,
        operator_support::OTHER_NS,
        operator_support::centos_cluster_in(operator_support::OTHER_NS, "outside", &[("vanilla_centos", 1)]),
    );
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("inside", &[("vanilla_centos", 1)]),
    );
    env.eventually("watched cluster configured", |e| configured_with(e, "inside", 1));
    let outside = env
        .get(&ResourceKind::Cluster, operator_support::OTHER_NS, "outside")
        .unwrap();
    assert!(outside["status"].is_null(), "{outside}");
    assert!(outside["metadata"]["finalizers"].is_null());
}

/// DESIGN.md section 6: creating clusters costs the operator at most `2 + (3+R)/M` API requests
/// per member (Events, leader-election Leases and the start-up lists and watches not counted):
/// per cluster one headless Service, one StatefulSet per role created with its final replicas,
/// one finalizer patch, one Service and about one status write per member.
#[test]
fn creating_clusters_costs_at_most_the_design_bound_of_requests_per_member() {
    const CLUSTERS: usize = 5;
    const MEMBERS: usize = 3;
    let mut env = Env::start();
    // Progress-only status changes are held until the next real change however slowly the pods
    // start on a loaded machine (with the default 5 s, each 5 s of slowness adds a status write),
    // so the count below depends on the work, not on the machine's speed.
    env.stop_operator();
    env.status_detail_window_seconds = Some(600);
    env.start_operator();
    let metrics = env.sim.as_ref().unwrap().metrics();
    metrics.reset();
    for i in 0..CLUSTERS {
        let mut cluster = centos_cluster(&format!("b{i}"), &[("vanilla_centos", MEMBERS as i64)]);
        // Small members, so all 15 fit on kubesim's one 8-cpu node.
        let small = json!({"cpu": "100m", "memory": "128Mi"});
        cluster["spec"]["roles"][0]["resources"] = json!({"limits": small, "requests": small});
        env.create(&ResourceKind::Cluster, NS, cluster);
    }
    env.eventually("every cluster configured", |e| {
        (0..CLUSTERS).all(|i| configured_with(e, &format!("b{i}"), MEMBERS))
    });
    let counts = metrics.snapshot().by_client_verb_resource;
    let operator: std::collections::BTreeMap<&str, u64> = counts
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("kubedirector ").map(|k| (k, *v)))
        .filter(|(k, _)| {
            !k.ends_with(" events")
                && !k.ends_with(" leases")
                && !k.starts_with("list ")
                && !k.starts_with("watch ")
        })
        .collect();
    let total: u64 = operator.values().sum();
    let members = (CLUSTERS * MEMBERS) as f64;
    let per_member = total as f64 / members;
    let bound = 2.0 + (3.0 + 1.0) / MEMBERS as f64;
    eprintln!("operator requests: {operator:?}; {per_member:.2} per member, bound {bound:.2}");
    let count = |k: &str| operator.get(k).copied().unwrap_or(0);
    assert_eq!(
        count("create statefulsets"),
        CLUSTERS as u64,
        "one create per role"
    );
    assert_eq!(
        count("patch statefulsets"),
        0,
        "created with the final replicas, never scaled up"
    );
    assert_eq!(
        count("create services"),
        (CLUSTERS * (MEMBERS + 1)) as u64,
        "each Service written once"
    );
    assert_eq!(
        count("get services") + count("patch services") + count("update services"),
        0,
        "no read or rewrite of a Service in the normal path"
    );
    // total / (C * M) <= 2 + (3+R)/M, in integers: total <= C * (2M + 3 + R).
    let limit = (CLUSTERS * (2 * MEMBERS + 3 + 1)) as u64;
    assert!(
        total <= limit,
        "{per_member:.2} requests per member > bound {bound:.2}: {operator:?}"
    );
}
