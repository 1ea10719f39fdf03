//! The final-state comparison every fault test ends with (issue 12): after a fault, the cluster
//! is converged exactly as it would be without it, nothing is duplicated or leaked, no foreign
//! object was touched, and (with a logging setup package) each container ran `--configure` once.
//!
//! It reads kubesim's store in-process, never over HTTP, so the injected API faults of the test
//! cannot disturb the check, and the check adds no request to the counts the test bounds.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

use std::collections::{BTreeMap, BTreeSet};

use kubesim::resources::ResourceKey;
use serde_json::{json, Value};

use super::Env;

/// Label every object the operator makes for a cluster carries.
pub const CLUSTER_LABEL: &str = "kubedirector.hpe.com/kdcluster";

fn key(kind: &str) -> ResourceKey {
    match kind {
        "statefulsets" => ResourceKey::apps("statefulsets"),
        "kubedirectorclusters" => ResourceKey::new("kubedirector.hpe.com", "v1beta1", "kubedirectorclusters"),
        "kubedirectorstatusbackups" => {
            ResourceKey::new("kubedirector.hpe.com", "v1beta1", "kubedirectorstatusbackups")
        }
        other => ResourceKey::core(other),
    }
}

/// Kinds the operator creates for a cluster (or kubesim's controllers create on its behalf).
const CHILD_KINDS: [&str; 4] = ["statefulsets", "services", "pods", "persistentvolumeclaims"];

/// Objects of `kind` in `ns`, straight from kubesim's store.
pub fn stored(env: &Env, kind: &str, ns: &str) -> Vec<Value> {
    env.sim
        .as_ref()
        .expect("kubesim running")
        .store()
        .list(&key(kind), Some(ns))
        .0
}

/// Operator requests so far, by `verb resource` (events, leases, lists and watches left out),
/// from kubesim's request counters (`User-Agent: kubedirector/...`).
pub fn operator_writes(env: &Env) -> BTreeMap<String, u64> {
    env.sim
        .as_ref()
        .expect("kubesim running")
        .metrics()
        .snapshot()
        .by_client_verb_resource
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("kubedirector ").map(|k| (k.to_string(), *v)))
        .filter(|(k, _)| {
            !k.ends_with(" events")
                && !k.ends_with(" leases")
                && !k.starts_with("list ")
                && !k.starts_with("watch ")
                && !k.starts_with("get ")
        })
        .collect()
}

/// The operator's `pods/exec` requests so far, from kubesim's request counters.
pub fn operator_execs(env: &Env) -> u64 {
    env.sim
        .as_ref()
        .expect("kubesim running")
        .metrics()
        .snapshot()
        .by_client_verb_resource
        .iter()
        .filter(|(k, _)| k.starts_with("kubedirector ") && k.ends_with(" pods/exec"))
        .map(|(_, v)| *v)
        .sum()
}

/// Foreign objects planted in a namespace before a fault test: a ConfigMap, a Service and a
/// StatefulSet that are not the operator's (one of them even carries the cluster label but no
/// owner reference, as a hand-made object would). The final check asserts each still exists
/// unchanged (same uid, metadata and spec; the status is the controllers').
pub struct Foreign {
    ns: String,
    objects: Vec<(String, String, String, Value)>, // kind, name, uid, fingerprint
}

/// What of a foreign object the operator must never change: everything but its status (which
/// kubesim's controllers maintain, as kube-controller-manager does) and the bookkeeping fields
/// that change with it.
fn fingerprint(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
    }
    o
}

/// Plants the foreign objects of [`Foreign`] in `ns`, named `foreign-*`, the Service labelled as
/// belonging to cluster `cluster`.
pub fn plant_foreign(env: &Env, ns: &str, cluster: &str) -> Foreign {
    let store = env.sim.as_ref().expect("kubesim running").store();
    let docs = [
        (
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "foreign-config", "namespace": ns},
                   "data": {"owner": "someone else"}}),
        ),
        (
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "foreign-svc", "namespace": ns,
                                "labels": {CLUSTER_LABEL: cluster}},
                   "spec": {"ports": [{"port": 80}], "selector": {"app": "foreign"}}}),
        ),
        (
            "statefulsets",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "foreign-sts", "namespace": ns},
                   "spec": {"replicas": 0, "serviceName": "foreign",
                            "selector": {"matchLabels": {"app": "foreign"}},
                            "template": {"metadata": {"labels": {"app": "foreign"}},
                                         "spec": {"containers": [{"name": "c", "image": "foreign:1"}]}}}}),
        ),
    ];
    let mut objects = Vec::new();
    for (kind, doc) in docs {
        let made = store
            .create(&key(kind), Some(ns), doc)
            .expect("foreign object created");
        objects.push((
            kind.to_string(),
            made["metadata"]["name"].as_str().unwrap().to_string(),
            made["metadata"]["uid"].as_str().unwrap().to_string(),
            fingerprint(&made),
        ));
    }
    Foreign {
        ns: ns.to_string(),
        objects,
    }
}

impl Foreign {
    /// Problems: foreign objects deleted, replaced or written to.
    pub fn problems(&self, env: &Env) -> Vec<String> {
        let store = env.sim.as_ref().expect("kubesim running").store();
        let mut out = Vec::new();
        for (kind, name, uid, print) in &self.objects {
            match store.get(&key(kind), Some(&self.ns), name) {
                None => out.push(format!("foreign {kind} {name} was deleted")),
                Some(o) if o["metadata"]["uid"] != uid.as_str() => {
                    out.push(format!("foreign {kind} {name} was replaced"))
                }
                Some(o) if fingerprint(&o) != *print => out.push(format!(
                    "foreign {kind} {name} was changed: {} (was {print})",
                    fingerprint(&o)
                )),
                Some(_) => {}
            }
        }
        out
    }
}

/// What a converged cluster looks like.
pub struct Expected<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// Members per role id (roles with 0 members may be left out).
    pub roles: &'a [(&'a str, usize)],
    /// Whether each member has a PVC (the role asks for persistent storage).
    pub pvcs: bool,
}

fn owner_uids(o: &Value) -> Vec<String> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(str::to_string))
        .collect()
}

fn name_of(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// Differences between the stored state and a converged `expected` cluster (empty: converged).
/// Checked: the cluster and every member `configured` with the expected member counts; exactly
/// one StatefulSet per role, with the final replicas; one headless Service and one Service per
/// member; one Running pod (and PVC) per member; every one of them controlled by the cluster
/// (owner reference to its uid); no other object labelled with the cluster (foreign ones aside).
pub fn problems(env: &Env, expected: &Expected<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let store = env.sim.as_ref().expect("kubesim running").store();
    let Some(cluster) = store.get(&key("kubedirectorclusters"), Some(expected.ns), expected.cluster) else {
        return vec![format!("cluster {} is missing", expected.cluster)];
    };
    let uid = cluster["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if cluster["status"]["state"] != "configured" {
        out.push(format!(
            "cluster state {} (want configured)",
            cluster["status"]["state"]
        ));
    }
    let want: BTreeMap<&str, usize> = expected.roles.iter().filter(|(_, n)| *n > 0).copied().collect();
    let mut members: BTreeSet<String> = BTreeSet::new();
    let mut member_services: BTreeSet<String> = BTreeSet::new();
    let mut got_roles: BTreeMap<String, usize> = BTreeMap::new();
    for role in cluster["status"]["roles"].as_array().into_iter().flatten() {
        let id = role["id"].as_str().unwrap_or_default().to_string();
        let ms = role["members"].as_array().cloned().unwrap_or_default();
        if !ms.is_empty() {
            got_roles.insert(id.clone(), ms.len());
        }
        for m in ms {
            let pod = m["pod"].as_str().unwrap_or_default().to_string();
            if m["state"] != "configured" {
                out.push(format!(
                    "member {pod} of role {id} is {} (want configured)",
                    m["state"]
                ));
            }
            if !members.insert(pod.clone()) {
                out.push(format!("member {pod} listed twice in the status"));
            }
            if let Some(s) = m["service"].as_str().filter(|s| !s.is_empty()) {
                member_services.insert(s.to_string());
            }
        }
    }
    let want_owned: BTreeMap<String, usize> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    if got_roles != want_owned {
        out.push(format!(
            "members per role in the status {got_roles:?} (want {want_owned:?})"
        ));
    }
    // Children: by label, by owner, or both.
    let foreign_name = |n: &str| n.starts_with("foreign-");
    for kind in CHILD_KINDS {
        let all = stored(env, kind, expected.ns);
        let ours: Vec<&Value> = all
            .iter()
            .filter(|o| !foreign_name(&name_of(o)))
            .filter(|o| {
                o["metadata"]["labels"][CLUSTER_LABEL] == expected.cluster || owner_uids(o).contains(&uid)
            })
            .collect();
        for o in &ours {
            // Pods are owned by their StatefulSet, PVCs by nobody (retained with the cluster).
            let owned_by_cluster = owner_uids(o).contains(&uid);
            if matches!(kind, "statefulsets" | "services") && !owned_by_cluster {
                out.push(format!(
                    "{kind} {} is labelled for the cluster but not owned by it",
                    name_of(o)
                ));
            }
        }
        let names: Vec<String> = ours.iter().map(|o| name_of(o)).collect();
        match kind {
            "statefulsets" => {
                let mut per_role: BTreeMap<String, Vec<i64>> = BTreeMap::new();
                for o in &ours {
                    let role = o["metadata"]["labels"]["kubedirector.hpe.com/role"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string();
                    per_role
                        .entry(role)
                        .or_default()
                        .push(o["spec"]["replicas"].as_i64().unwrap_or(-1));
                }
                for (role, n) in &want {
                    match per_role.get(*role).map(Vec::as_slice) {
                        Some([r]) if *r == *n as i64 => {}
                        other => out.push(format!(
                            "role {role}: StatefulSets with replicas {other:?} (want [{n}])"
                        )),
                    }
                }
                for (role, reps) in &per_role {
                    if !want.contains_key(role.as_str()) && reps.iter().any(|r| *r != 0) {
                        out.push(format!("StatefulSet of unexpected role {role}: {reps:?}"));
                    }
                }
            }
            "services" => {
                let headless: Vec<String> = ours
                    .iter()
                    .filter(|o| o["spec"]["clusterIP"] == "None")
                    .map(|o| name_of(o))
                    .collect();
                if headless.len() != 1 {
                    out.push(format!("headless Services {headless:?} (want exactly one)"));
                }
                let per_member: BTreeSet<String> = ours
                    .iter()
                    .filter(|o| o["spec"]["clusterIP"] != "None")
                    .map(|o| name_of(o))
                    .collect();
                if per_member != member_services {
                    out.push(format!(
                        "member Services {per_member:?} differ from the status's {member_services:?}"
                    ));
                }
            }
            "pods" => {
                let set: BTreeSet<String> = names.iter().cloned().collect();
                if set != members || names.len() != set.len() {
                    out.push(format!("pods {names:?} differ from the members {members:?}"));
                }
                for o in &ours {
                    if o["status"]["phase"] != "Running" || !o["metadata"]["deletionTimestamp"].is_null() {
                        out.push(format!(
                            "pod {} is {} (want Running)",
                            name_of(o),
                            o["status"]["phase"]
                        ));
                    }
                }
            }
            "persistentvolumeclaims" if expected.pvcs => {
                let want_n = members.len();
                if names.len() != want_n {
                    out.push(format!("PVCs {names:?} (want one per member, {want_n})"));
                }
            }
            _ => {}
        }
    }
    out
}

/// Differences from "cluster `name` is gone and left nothing behind": the cluster, its
/// StatefulSets, Services, pods and status backup are gone (PVCs are left to the test: upstream
/// keeps none, a restore keeps them).
pub fn gone_problems(env: &Env, ns: &str, name: &str, uid: &str) -> Vec<String> {
    let mut out = Vec::new();
    let store = env.sim.as_ref().expect("kubesim running").store();
    if store.get(&key("kubedirectorclusters"), Some(ns), name).is_some() {
        out.push(format!("cluster {name} still exists"));
    }
    if store
        .get(&key("kubedirectorstatusbackups"), Some(ns), name)
        .is_some()
    {
        out.push(format!("status backup {name} still exists"));
    }
    for kind in ["statefulsets", "services", "pods"] {
        for o in stored(env, kind, ns) {
            let n = name_of(&o);
            if n.starts_with("foreign-") {
                continue;
            }
            if o["metadata"]["labels"][CLUSTER_LABEL] == name || owner_uids(&o).iter().any(|u| u == uid) {
                out.push(format!("{kind} {n} of deleted cluster {name} left behind"));
            }
        }
    }
    out
}

/// `--configure` calls per member pod, given each pod's startscript call log (one line per call,
/// the arguments as the startscript got them). Problems: a pod with no or several `--configure`.
pub fn configure_once_problems(calls: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    calls
        .iter()
        .filter_map(|(pod, lines)| {
            let n = lines.iter().filter(|l| l.trim() == "--configure").count();
            (n != 1).then(|| format!("pod {pod} ran --configure {n} times (want once): {lines:?}"))
        })
        .collect()
}

/// Asserts [`problems`] is empty, with the harness's dump on failure.
pub fn assert_converged(env: &Env, expected: &Expected<'_>) {
    let p = problems(env, expected);
    assert!(
        p.is_empty(),
        "final state differs:\n  {}\n{}",
        p.join("\n  "),
        env.dump()
    );
}
