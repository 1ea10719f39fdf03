//! Restore from a status backup end to end (spec 3.13, 3.15, feature F74): the operator
//! in-process against kubesim with its admission webhook, status backups on (kdconfig
//! `backupClusterStatus`), a setup package whose startscript logs every call on the member's
//! persistent volume.
//!
//! The test plays the backup tool: it saves the kdcluster, its kdstatusbackup, StatefulSet and
//! Services, deletes the kdcluster orphaning its dependents (`propagationPolicy: Orphan`, so the
//! PVCs survive), deletes the saved objects and one member's PVC (storage that did not survive),
//! then re-creates everything from the saved copies, the kdcluster first. The webhook labels it
//! `restoring` (C-5); the operator restores its status from the backup, waits for the
//! components, removes the label and resumes: the member whose volume survived is `configured`
//! again without a second `--configure`, the other one is set up from scratch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;
mod skip_support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kubedirector::webhook::WebhookOptions;
use operator_support::final_state::{assert_converged, configure_once_problems, Expected};
use operator_support::{
    configured_with, members, owned, serve_files, setup_package, Env, ResourceKind, KD_NS, NS,
};
use serde_json::{json, Value};

const LOG: &str = "/var/log/kdtest/calls.log";
const RESTORING: &str = "kubedirector.hpe.com/restoring";

fn dynamic(env: &Env, ar: &ApiResource, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(env.client.clone(), ns, ar)
}

fn backups(env: &Env) -> Api<DynamicObject> {
    dynamic(
        env,
        &ApiResource::erase::<kubedirector_crds::KubeDirectorStatusBackup>(&()),
        NS,
    )
}

fn backup(env: &Env, name: &str) -> Option<Value> {
    env.rt
        .block_on(backups(env).get_opt(name))
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

fn app(url: &str) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "kdlog", "namespace": NS},
        "spec": {
            "label": {"name": "kdlog"},
            "distroID": "kdtest/kdlog",
            "version": "1.0",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": "docker.io/library/debian:12-slim",
            "defaultConfigPackage": {"packageURL": url, "useNewSetupLayout": true},
            "services": [{"id": "api", "label": {"name": "API"}, "endpoint": {"port": 7000, "urlScheme": "http"}}],
            "roles": [{"id": "node", "cardinality": "1+", "persistDirs": ["/var/log/kdtest"]}],
            "config": {
                "roleServices": [{"roleID": "node", "serviceIDs": ["api"]}],
                "selectedRoles": ["node"]
            }
        }
    })
}

fn cluster() -> Value {
    let res = json!({"limits": {"memory": "512Mi", "cpu": "1"}, "requests": {"memory": "512Mi", "cpu": "1"}});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": "keep", "namespace": NS},
        "spec": {"app": "kdlog", "serviceType": "ClusterIP", "roles": [
            {"id": "node", "members": 2, "resources": res,
             "storage": {"size": "1Gi", "storageClassName": "standard"}}
        ]}
    })
}

/// Runs `sh -c script` in the pod's `app` container; its stdout.
fn exec(env: &Env, pod: &str, script: &str) -> String {
    env.exec_sh(NS, pod, script)
}

fn calls(env: &Env, pods: &[String]) -> BTreeMap<String, Vec<String>> {
    pods.iter()
        .map(|p| {
            let lines = exec(env, p, &format!("cat {LOG} 2>/dev/null"));
            (p.clone(), lines.lines().map(str::to_string).collect())
        })
        .collect()
}

/// What a backup tool keeps of an object and gives back to `create`: no server-set metadata,
/// no owner references (the owner's uid will not exist), no status; Services without their
/// allocated addresses.
fn restorable(mut o: Value) -> Value {
    let meta = o["metadata"].as_object_mut().unwrap();
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "ownerReferences",
        "finalizers",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(k);
    }
    o.as_object_mut().unwrap().remove("status");
    if o["kind"] == "Service" && o["spec"]["clusterIP"] != "None" {
        let spec = o["spec"].as_object_mut().unwrap();
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    o
}

fn create_raw(env: &Env, ar: &ApiResource, obj: Value) {
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    env.rt
        .block_on(dynamic(env, ar, NS).create(&PostParams::default(), &obj))
        .unwrap();
}

/// Messages of the Events on the kdcluster with uid `uid`.
fn event_messages(env: &Env, uid: &str) -> Vec<String> {
    env.list(&ResourceKind::Event, NS)
        .iter()
        .filter(|e| e["involvedObject"]["uid"] == uid)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_cluster_recreated_from_its_backup_resumes_without_configuring_surviving_members_again() {
    if !kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available()) {
        skip_support::skipped("bubblewrap/nsenter not available, in-pod exec cannot run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = serve_files(vec![(
        "/log.tgz",
        setup_package(
            dir.path(),
            "log",
            &format!("#!/bin/sh\nmkdir -p /var/log/kdtest\necho \"$*\" >> {LOG}\nexit 0\n"),
        ),
    )]);
    let env = Env::start_with_webhook(WebhookOptions::default());
    let kdconfig = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config", "namespace": KD_NS},
        "spec": {"backupClusterStatus": true}
    });
    let kdconfigs = ApiResource::erase::<kubedirector_crds::KubeDirectorConfig>(&());
    env.rt
        .block_on(
            dynamic(&env, &kdconfigs, KD_NS)
                .create(&PostParams::default(), &serde_json::from_value(kdconfig).unwrap()),
        )
        .unwrap();
    env.create(&ResourceKind::App, NS, app(&format!("{base}/log.tgz")));
    env.create(&ResourceKind::Cluster, NS, cluster());
    env.eventually("configured, with its backup equal to the status", |e| {
        configured_with(e, "keep", 2)
            && backup(e, "keep").is_some_and(|b| {
                e.get(&ResourceKind::Cluster, NS, "keep")
                    .is_some_and(|c| b["spec"]["statusBackup"] == c["status"])
            })
    });
    let before = members(&env, "keep");
    let pods: Vec<String> = before
        .iter()
        .map(|m| m["pod"].as_str().unwrap().to_string())
        .collect();
    let first_calls = calls(&env, &pods);
    assert!(
        configure_once_problems(&first_calls).is_empty(),
        "{first_calls:?}"
    );
    let old_container = |i: usize| {
        before[i]["stateDetail"]["lastConfiguredContainer"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The backup tool saves the objects ...
    let original = env.get(&ResourceKind::Cluster, NS, "keep").unwrap();
    let old_uid = original["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        original["metadata"]["annotations"]["kubedirector.hpe.com/status-backup-exists"],
        "true"
    );
    let saved_backup = backup(&env, "keep").unwrap();
    let saved_sts = owned(&env, &ResourceKind::StatefulSet, "keep");
    let saved_svc = owned(&env, &ResourceKind::Service, "keep");
    assert_eq!(
        (saved_sts.len(), saved_svc.len()),
        (1, 3),
        "one StatefulSet, headless + 2 member Services"
    );

    // ... the cluster goes away, orphaning its dependents (PVCs included) ...
    let clusters = ApiResource::erase::<kubedirector_crds::KubeDirectorCluster>(&());
    env.rt
        .block_on(dynamic(&env, &clusters, NS).delete("keep", &DeleteParams::orphan()))
        .unwrap();
    env.eventually("cluster gone", |e| {
        e.get(&ResourceKind::Cluster, NS, "keep").is_none()
    });
    // ... and so does everything but the first member's volume.
    for s in &saved_sts {
        env.delete(
            &ResourceKind::StatefulSet,
            NS,
            s["metadata"]["name"].as_str().unwrap(),
        );
    }
    for s in &saved_svc {
        env.delete(
            &ResourceKind::Service,
            NS,
            s["metadata"]["name"].as_str().unwrap(),
        );
    }
    env.rt
        .block_on(backups(&env).delete("keep", &DeleteParams::background()))
        .unwrap();
    env.eventually("pods gone", |e| owned(e, &ResourceKind::Pod, "keep").is_empty());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), NS);
    let lost = format!("p-{}", pods[1]);
    env.rt
        .block_on(pvcs.delete(&lost, &DeleteParams::background()))
        .unwrap();
    env.eventually("second member's PVC gone", |e| {
        e.rt.block_on(pvcs.get_opt(&lost)).unwrap().is_none()
    });
    let kept = env.rt.block_on(pvcs.get(&format!("p-{}", pods[0]))).unwrap();
    assert!(
        kept.metadata.owner_references.unwrap_or_default().is_empty(),
        "orphaned"
    );

    // The restore: the kdcluster first, as saved (its annotation says a backup exists).
    env.create(&ResourceKind::Cluster, NS, restorable(original.clone()));
    let restored = env.get(&ResourceKind::Cluster, NS, "keep").unwrap();
    assert_eq!(restored["metadata"]["labels"][RESTORING], "", "webhook rule C-5");
    let new_uid = restored["metadata"]["uid"].as_str().unwrap().to_string();
    assert_ne!(new_uid, old_uid);
    env.eventually("waiting for the kdstatusbackup", |e| {
        e.get(&ResourceKind::Cluster, NS, "keep")
            .is_some_and(|c| c["status"]["restoreProgress"]["awaitingStatus"] == true)
            && event_messages(e, &new_uid).contains(&"being restored: awaiting kdstatusbackup".to_string())
    });
    let backup_ar = ApiResource::erase::<kubedirector_crds::KubeDirectorStatusBackup>(&());
    create_raw(&env, &backup_ar, restorable(saved_backup.clone()));
    env.eventually("status restored, waiting for the components", |e| {
        e.get(&ResourceKind::Cluster, NS, "keep").is_some_and(|c| {
            c["status"]["restoreProgress"]["awaitingStatus"] == false
                && c["status"]["restoreProgress"]["awaitingResources"] == true
                && c["status"]["roles"] == saved_backup["spec"]["statusBackup"]["roles"]
        })
    });
    assert!(
        owned(&env, &ResourceKind::StatefulSet, "keep").is_empty(),
        "the restore creates nothing"
    );
    let sts_ar = ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&());
    let svc_ar = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
    for s in &saved_svc {
        create_raw(&env, &svc_ar, restorable(s.clone()));
    }
    for s in &saved_sts {
        create_raw(&env, &sts_ar, restorable(s.clone()));
    }

    // The label goes, normal passes resume and both members are configured again.
    env.eventually("restored and configured", |e| {
        let Some(c) = e.get(&ResourceKind::Cluster, NS, "keep") else {
            return false;
        };
        c["metadata"]["labels"][RESTORING].is_null()
            && c["status"]["restoreProgress"].is_null()
            && configured_with(e, "keep", 2)
            && members(e, "keep")
                .iter()
                .enumerate()
                .all(|(i, m)| m["stateDetail"]["lastConfiguredContainer"] != old_container(i).as_str())
    });
    let after = members(&env, "keep");
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(
            (&a["pod"], &a["nodeID"], &a["pvc"]),
            (&b["pod"], &b["nodeID"], &b["pvc"])
        );
    }
    let second_calls = calls(&env, &pods);
    assert_eq!(
        second_calls[&pods[0]],
        ["--configure"],
        "the surviving volume's log: the one --configure of the original member, none since"
    );
    assert_eq!(
        exec(&env, &pods[0], "cat /opt/guestconfig/configure.status"),
        format!("{}=0", old_container(0)),
        "its setup was recognised from the surviving configure.status, not run again"
    );
    assert_eq!(
        second_calls[&pods[1]],
        ["--configure"],
        "a fresh volume: set up from scratch, once"
    );
    assert_eq!(
        exec(&env, &pods[1], "cat /opt/guestconfig/configure.status"),
        format!(
            "{}=0",
            after[1]["stateDetail"]["lastConfiguredContainer"]
                .as_str()
                .unwrap()
        )
    );
    assert!(configure_once_problems(&second_calls).is_empty());

    let events = event_messages(&env, &new_uid);
    for want in [
        "being restored: setting initial restore-progress flags",
        "being restored: kdapp kdlog (local catalog) is present",
        "being restored: kdstatusbackup is present",
        "being restored: awaiting component resources",
        "being restored: component resources are present",
        "resuming reconciliation",
    ] {
        assert!(
            events.iter().any(|m| m == want),
            "no event {want:?} in {events:?}"
        );
    }
    assert!(
        !events.iter().any(|m| m == "new"),
        "a restored cluster is not new"
    );

    // Converged: children owned by the restored cluster (owner references repaired), the
    // backup too, and equal to the status.
    assert_converged(
        &env,
        &Expected {
            ns: NS,
            cluster: "keep",
            roles: &[("node", 2)],
            pvcs: true,
        },
    );
    env.eventually(
        "backup owned by the restored cluster and equal to its status",
        |e| {
            let (Some(b), Some(c)) = (backup(e, "keep"), e.get(&ResourceKind::Cluster, NS, "keep")) else {
                return false;
            };
            b["metadata"]["ownerReferences"][0]["uid"] == new_uid.as_str()
                && b["spec"]["statusBackup"] == c["status"]
        },
    );
}
