//! KubeDirectorConfig reconcile end to end (spec 3.16): the operator in-process against kubesim.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use operator_support::{owned, Env, ResourceKind, KD_NS, NS};
use serde_json::{json, Value};

fn kdconfigs(env: &Env) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<kubedirector_crds::KubeDirectorConfig>(&());
    Api::namespaced_with(env.client.clone(), KD_NS, &ar)
}

fn kdconfig(env: &Env) -> Option<Value> {
    env.rt
        .block_on(kdconfigs(env).get_opt("kd-global-config"))
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

/// A centos kdcluster that names no service type (the kdconfig default applies).
fn cluster(name: &str) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"app": "centos7x", "appCatalog": "local", "roles": [{"id": "vanilla_centos", "members": 1,
            "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}}]}
    })
}

/// The member Service of cluster `name`, once it exists.
fn member_service(env: &Env, name: &str) -> Option<Value> {
    owned(env, &ResourceKind::Service, name).into_iter().find(|s| {
        s["spec"]["clusterIP"] != "None" && s["metadata"]["labels"]["kubedirector.hpe.com/headless"].is_null()
    })
}

#[test]
fn kdconfig_gets_finalizer_key_and_ready_state_and_its_defaults_reach_new_clusters() {
    let env = Env::start();
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config", "namespace": KD_NS},
        "spec": {"defaultServiceType": "NodePort", "serviceLabels": {"team": "blue"}}
    }))
    .unwrap();
    env.rt
        .block_on(kdconfigs(&env).create(&PostParams::default(), &obj))
        .unwrap();
    env.eventually("kdconfig ready with finalizer and key", |e| {
        kdconfig(e).is_some_and(|c| {
            c["status"]["state"] == "ready"
                && c["metadata"]["finalizers"] == json!(["kubedirector.hpe.com/cleanup"])
                && c["spec"]["masterEncryptionKey"]
                    .as_str()
                    .is_some_and(|k| k.len() == 64 && hex::decode(k).is_ok())
        })
    });
    let c = kdconfig(&env).unwrap();
    let key = c["spec"]["masterEncryptionKey"].clone();
    assert_eq!(c["spec"]["defaultServiceType"], "NodePort", "user fields kept");
    assert_eq!(c["status"]["generationUID"].as_str().map(str::len), Some(36));

    // A new kdcluster gets the kdconfig's defaults.
    env.create(&ResourceKind::Cluster, NS, cluster("first"));
    env.eventually("first has a member service", |e| {
        member_service(e, "first").is_some()
    });
    let svc = member_service(&env, "first").unwrap();
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["metadata"]["labels"]["team"], "blue");

    // A changed default reaches the next new kdcluster; the key stays.
    env.rt
        .block_on(kdconfigs(&env).patch(
            "kd-global-config",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"defaultServiceType": "ClusterIP", "serviceLabels": {"team": "green"}}}),
            ),
        ))
        .unwrap();
    env.create(&ResourceKind::Cluster, NS, cluster("second"));
    env.eventually("second has a member service", |e| {
        member_service(e, "second").is_some()
    });
    let svc = member_service(&env, "second").unwrap();
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["metadata"]["labels"]["team"], "green");
    assert_eq!(kdconfig(&env).unwrap()["spec"]["masterEncryptionKey"], key);

    // Deletion is greenlit by removing the finalizer.
    env.rt
        .block_on(kdconfigs(&env).delete("kd-global-config", &DeleteParams::default()))
        .unwrap();
    env.eventually("kdconfig deleted", |e| kdconfig(e).is_none());
}

fn backup(env: &Env, name: &str) -> Option<Value> {
    let ar = ApiResource::erase::<kubedirector_crds::KubeDirectorStatusBackup>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), NS, &ar);
    env.rt
        .block_on(api.get_opt(name))
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

#[test]
fn with_backups_enabled_the_status_backup_follows_the_status_and_goes_with_the_cluster() {
    let env = Env::start();
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config", "namespace": KD_NS},
        "spec": {"backupClusterStatus": true}
    }))
    .unwrap();
    env.rt
        .block_on(kdconfigs(&env).create(&PostParams::default(), &obj))
        .unwrap();
    env.eventually("kdconfig ready", |e| {
        kdconfig(e).is_some_and(|c| c["status"]["state"] == "ready")
    });
    env.create(&ResourceKind::Cluster, NS, cluster("kept"));
    env.eventually("configured, backup equal to the status", |e| {
        let Some(c) = e.get(&ResourceKind::Cluster, NS, "kept") else {
            return false;
        };
        c["status"]["state"] == "configured"
            && backup(e, "kept").is_some_and(|b| b["spec"]["statusBackup"] == c["status"])
    });
    let c = env.get(&ResourceKind::Cluster, NS, "kept").unwrap();
    assert_eq!(
        c["metadata"]["annotations"]["kubedirector.hpe.com/status-backup-exists"],
        "true"
    );
    let b = backup(&env, "kept").unwrap();
    assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], c["metadata"]["uid"]);
    assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);

    env.delete(&ResourceKind::Cluster, NS, "kept");
    env.eventually("backup garbage-collected with the cluster", |e| {
        e.get(&ResourceKind::Cluster, NS, "kept").is_none() && backup(e, "kept").is_none()
    });
}
