//! Someone else's objects under our names: left untouched and explained; the API ports
//! against kubesim.

use kube::api::{Api, DeleteParams, Preconditions};
use kubedirector_actors::plan::names::{member_service_name, pod_name, statefulset_name, NamingScheme};
use kubesim::resources::ResourceKey;
use serde_json::{json, Value};

use super::*;
use crate::operator_support::{
    self, centos_cluster, configured_with, final_state, members, Env, ResourceKind, NS,
};

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
