//! The operator under its own RBAC: kubesim authorizes by RBAC, deploy/kubedirector/10-rbac.yaml
//! is applied by the admin, and `kubedirector run` (in-process, with its admission webhook)
//! talks to kubesim with the `kubedirector` ServiceAccount's token. The example catalog's
//! clusters (setup packages included) must reach `configured`, a request outside the grants
//! must be refused with the API server's 403, and every grant of the manifest's ClusterRole
//! and Role must have been used during the lifecycle (kubesim's record of the requests RBAC
//! allowed), except the reads kept for work in progress, listed below with their reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;
mod skip_support;

use std::path::Path;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kubedirector::webhook::WebhookOptions;
use operator_support::{rbac_manifest, state_of, Env, ResourceKind, NS};
use serde_json::{json, Value};

const OPERATOR_USER: &str = "system:serviceaccount:kubedirector:kubedirector";

/// Grants the lifecycle below does not exercise, and why they stay.
const KEPT: &[(&str, &str, &str, &str)] = &[
    // (verb, group, resource, why)
    ("get", "", "configmaps", CONNECTIONS),
    ("get", "kubedirector.hpe.com", "kubedirectorconfigs", KDCONFIG),
    ("get", "kubedirector.hpe.com", "kubedirectorapps", STANDBY),
    ("patch", "kubedirector.hpe.com", "kubedirectorconfigs", KDCONFIG),
    ("update", "kubedirector.hpe.com", "kubedirectorconfigs/status", KDCONFIG),
    ("create", "kubedirector.hpe.com", "kubedirectorstatusbackups", BACKUP),
    ("patch", "kubedirector.hpe.com", "kubedirectorstatusbackups", BACKUP),
    ("delete", "kubedirector.hpe.com", "kubedirectorstatusbackups", BACKUP),
    (
        "get",
        "apps",
        "statefulsets",
        "create_stateful_set reads the existing one after AlreadyExists",
    ),
    ("delete", "apps", "statefulsets", SHRINK),
    (
        "patch",
        "apps",
        "statefulsets",
        "a role's replicas are merge-patched on scale-out and scale-in (StatefulSets are created with their final replicas, so not in this lifecycle)",
    ),
    ("delete", "", "services", SHRINK),
    (
        "get",
        "",
        "services",
        "apply_service reads the existing one after AlreadyExists (adopted only when the kdcluster controls it)",
    ),
    (
        "update",
        "",
        "services",
        "a drifted Service is repaired by a conditional replace (tests/operator_faults_node.rs)",
    ),
    ("delete", "", "persistentvolumeclaims", SHRINK),
    ("get", "", "serviceaccounts", ADMISSION),
    ("get", "storage.k8s.io", "storageclasses", ADMISSION),
    (
        "create",
        "authorization.k8s.io",
        "subjectaccessreviews",
        ADMISSION,
    ),
    (
        "update",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        ROTATION,
    ),
    (
        "update",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        ROTATION,
    ),
    ("update", "", "secrets", ROTATION),
    ("patch", "", "events", REPEATS),
];

/// Why the connection reads stay.
const CONNECTIONS: &str =
    "connections (spec 4.8) read configmaps/secrets (tests/operator_connections.rs; the examples have no connections)";
/// kdconfig reconcile.
const KDCONFIG: &str =
    "kdconfig reconcile (spec 3.16; tests/operator_kdconfig.rs) patches the KubeDirectorConfig and writes its status";
/// Reads whose use depends on timing (so they may or may not show up in one run).
const STANDBY: &str = "the webhook reads a kdapp directly while this replica's caches are not live \
                       (a standby replica, or a review arriving before the caches synced)";
/// Event folding: whether this lifecycle repeats an event depends on timing (e.g. `notify skipped
/// for members in role{…}` once per batch of members that finish setting up together).
const REPEATS: &str =
    "a repeated event is folded into the existing Event by a patch (tests/operator_events.rs)";
/// Status backups.
const BACKUP: &str = "status backups, only with backupClusterStatus (tests/operator_kdconfig.rs)";
/// Deletes.
const SHRINK: &str = "scale-down and role removal delete owned objects (not in this lifecycle)";
/// Admission checks.
const ADMISSION: &str =
    "admission checks of cluster specs naming storage classes, service accounts or secrets \
                         (src/webhook/resolve.rs; not triggered by the examples)";
/// Certificate rotation.
const ROTATION: &str = "webhook certificate rotation and CA rollover (tests/webhook_rotation.rs)";

fn examples(dir: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| serde_yaml::from_str::<Value>(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect()
}

fn operator_client(env: &Env) -> Client {
    let yaml = std::fs::read_to_string(&env.operator_kubeconfig).unwrap();
    env.rt.block_on(async {
        let kc = Kubeconfig::from_yaml(&yaml).unwrap();
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
    })
}

/// Every (verb, group, resource[/sub], resourceName) the manifest's roles grant.
fn grants() -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for doc in rbac_manifest() {
        if !matches!(doc["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            let names = list("resourceNames");
            for verb in list("verbs") {
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        if names.is_empty() {
                            out.push((verb.clone(), group.clone(), resource.clone(), None));
                        }
                        for n in &names {
                            out.push((verb.clone(), group.clone(), resource.clone(), Some(n.clone())));
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn operator_with_its_service_account_configures_the_examples_and_uses_every_grant() {
    if !kubesim::sandbox::sandbox_available() {
        skip_support::skipped("bubblewrap/nsenter not available, setup packages cannot run");
        return;
    }
    let mut env = Env::start_rbac(Some(WebhookOptions::default()));

    // A request outside the grants is refused with the API server's message.
    let op = operator_client(&env);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "not-mine"}})).unwrap();
    let e = env
        .rt
        .block_on(Api::<Namespace>::all(op.clone()).create(&PostParams::default(), &ns))
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!("{e:?}") };
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        format!("namespaces is forbidden: User \"{OPERATOR_USER}\" cannot create resource \"namespaces\" in API group \"\" at the cluster scope")
    );
    let e = env
        .rt
        .block_on(Api::<k8s_openapi::api::core::v1::Pod>::namespaced(op, NS).delete("x", &Default::default()))
        .unwrap_err();
    let kube::Error::Api(s) = e else { panic!("{e:?}") };
    assert_eq!(s.code, 403, "{}", s.message);

    // The example catalog and clusters, through the admission webhook.
    for mut app in examples("deploy/examples/catalog") {
        app["metadata"]["namespace"] = json!(NS);
        env.create(&ResourceKind::App, NS, app);
    }
    let clusters: Vec<Value> = examples("deploy/examples/clusters");
    let names: Vec<String> = clusters
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for mut c in clusters {
        c["metadata"]["namespace"] = json!(NS);
        env.create(&ResourceKind::Cluster, NS, c);
    }
    let auth = env.sim.as_ref().unwrap().auth();
    let mut polls = 0;
    for name in &names {
        env.eventually(&format!("{name} configured under RBAC"), |env| {
            let denied = auth.denied_to(OPERATOR_USER);
            assert!(denied.len() <= 2, "the operator was refused: {denied:#?}");
            let state = state_of(env, name);
            polls += 1;
            if state != "configured" && polls % 200 == 0 {
                let st = env
                    .get(&ResourceKind::Cluster, NS, name)
                    .map(|c| c["status"].clone());
                let pods: Vec<String> = env
                    .list(&ResourceKind::Pod, NS)
                    .iter()
                    .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]["phase"]))
                    .collect();
                eprintln!("{name}: {st:?}\npods: {pods:?}");
            }
            state == "configured"
        });
    }
    // Deletion: the operator sees it through (finalizer removed, owned objects collected).
    let first = &names[0];
    env.delete(&ResourceKind::Cluster, NS, first);
    env.eventually(&format!("{first} gone"), |env| {
        env.get(&ResourceKind::Cluster, NS, first).is_none()
    });
    env.stop_operator();

    // Every grant was used (or is kept for a stated reason).
    let used = env.sim.as_ref().unwrap().auth().used_by(OPERATOR_USER);
    assert!(!used.is_empty());
    let is_used = |verb: &str, group: &str, resource: &str, name: &Option<String>| {
        let (res, sub) = resource.split_once('/').unwrap_or((resource, ""));
        used.iter().any(|u| {
            u.verb == verb
                && u.group == group
                && u.resource == res
                && u.subresource == sub
                && name.as_ref().is_none_or(|n| &u.name == n)
        })
    };
    let mut unused = Vec::new();
    let mut stale = Vec::new();
    for (verb, group, resource, name) in grants() {
        let kept = KEPT
            .iter()
            .any(|(v, g, r, _)| *v == verb && *g == group && *r == resource);
        let used_now = is_used(&verb, &group, &resource, &name);
        let timing_dependent = KEPT.iter().any(|(v, g, r, why)| {
            *v == verb && *g == group && *r == resource && (*why == STANDBY || *why == REPEATS)
        });
        if kept && used_now && !timing_dependent {
            stale.push(format!("{verb} {group}/{resource}"));
        }
        if !kept && !used_now {
            unused.push(format!("{verb} {group}/{resource} {}", name.unwrap_or_default()));
        }
    }
    for (v, g, r, _) in KEPT {
        assert!(
            grants()
                .iter()
                .any(|(verb, group, res, _)| verb == v && group == g && res == r),
            "KEPT lists {v} {g}/{r}, which the manifest no longer grants"
        );
    }
    stale.dedup();
    assert!(stale.is_empty(), "used now, remove from KEPT: {stale:#?}");
    assert!(
        unused.is_empty(),
        "grants of deploy/kubedirector/10-rbac.yaml never used by the operator: {unused:#?}"
    );
}
