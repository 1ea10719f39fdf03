//! The scheduler: binds pending pods (`schedulerName: default-scheduler`) to the simulated Nodes
//! with enough allocatable cpu, memory and pod slots (and a matching `nodeSelector`), spreading
//! by least allocation. A pod that fits nowhere gets `PodScheduled=False`, reason
//! `Unschedulable`, with the real scheduler's message, and a `FailedScheduling` event; it is
//! retried when nodes change or pods go away.
//!
//! The scheduler keeps its own cache, fed by the pod events it watches: what each node has
//! allocated (pods, cpu, memory) and which pods wait to be scheduled. Scheduling one pod costs
//! one pass over the nodes, never over the pods.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    event, is_terminating, key_of, name_of, parse_quantity, pods_key, uid_of, update_status_with, Key,
    Reconciler,
};
use crate::{
    resources::ResourceKey,
    store::{now_rfc3339, Store, WatchEvent},
};

/// Runs the scheduler until shutdown.
pub async fn run(store: Store, shutdown: CancellationToken) {
    super::run_reconciler(store, shutdown, Scheduler::default()).await;
}

/// What a node has allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct NodeUsage {
    pub(crate) pods: usize,
    pub(crate) cpu: f64,
    pub(crate) memory: f64,
}

/// Allocations by node, from the pods that occupy them.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// pod uid -> (node, cpu, memory) of pods that occupy a node.
    pods: HashMap<String, (String, f64, f64)>,
    nodes: HashMap<String, NodeUsage>,
}

impl Usage {
    /// Takes the current state of a pod (`deleted`: it is gone).
    pub(crate) fn observe(&mut self, pod: &Value, deleted: bool) {
        let uid = uid_of(pod);
        if let Some((node, cpu, mem)) = self.pods.remove(uid) {
            if let Some(u) = self.nodes.get_mut(&node) {
                u.pods = u.pods.saturating_sub(1);
                u.cpu -= cpu;
                u.memory -= mem;
                if u.pods == 0 {
                    self.nodes.remove(&node);
                }
            }
        }
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if deleted || node.is_empty() || !occupies_node(pod, node) {
            return;
        }
        let (cpu, mem) = pod_requests(pod);
        let u = self.nodes.entry(node.to_string()).or_default();
        u.pods += 1;
        u.cpu += cpu;
        u.memory += mem;
        self.pods.insert(uid.to_string(), (node.to_string(), cpu, mem));
    }

    /// What `node` has allocated.
    pub(crate) fn of(&self, node: &str) -> NodeUsage {
        self.nodes.get(node).copied().unwrap_or_default()
    }

    /// The usage of a set of pods.
    #[cfg(test)]
    pub(crate) fn of_pods(pods: &[Value]) -> Self {
        let mut u = Usage::default();
        for p in pods {
            u.observe(p, false);
        }
        u
    }
}

#[derive(Default)]
struct Scheduler {
    usage: Usage,
    /// Pods waiting for a node.
    pending: BTreeSet<Key>,
}

impl Scheduler {
    fn observe(&mut self, pod: &Value, deleted: bool) {
        self.usage.observe(pod, deleted);
        if !deleted && needs_scheduling(pod) {
            self.pending.insert(key_of(pod));
        } else {
            self.pending.remove(&key_of(pod));
        }
    }
}

fn needs_scheduling(pod: &Value) -> bool {
    pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
        && !is_terminating(pod)
        && pod["spec"]["schedulerName"]
            .as_str()
            .unwrap_or("default-scheduler")
            == "default-scheduler"
        && !matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

impl Reconciler for Scheduler {
    fn keys_for(&mut self, _store: &Store, ev: &WatchEvent) -> Vec<Key> {
        match (ev.gr.group.as_str(), ev.gr.resource.as_str()) {
            ("", "pods") => {
                let deleted = ev.kind == crate::store::EventKind::Deleted;
                let before = self
                    .usage
                    .of(ev.object["spec"]["nodeName"].as_str().unwrap_or(""));
                self.observe(&ev.object, deleted);
                let after = self
                    .usage
                    .of(ev.object["spec"]["nodeName"].as_str().unwrap_or(""));
                let freed = after.pods < before.pods;
                if freed {
                    self.pending.iter().cloned().collect()
                } else if !deleted && needs_scheduling(&ev.object) {
                    vec![(ev.namespace.clone(), ev.name.clone())]
                } else {
                    vec![]
                }
            }
            ("", "nodes") | ("", "persistentvolumeclaims") => self.pending.iter().cloned().collect(),
            _ => vec![],
        }
    }

    fn all_keys(&mut self, store: &Store) -> Vec<Key> {
        *self = Scheduler::default();
        for pod in store.list(&pods_key(), None).0 {
            self.observe(&pod, false);
        }
        self.pending.iter().cloned().collect()
    }

    fn reconcile(&mut self, store: &Store, key: &Key) {
        let Some(pod) = store.get(&pods_key(), Some(&key.0), &key.1) else {
            return;
        };
        if !needs_scheduling(&pod) {
            return;
        }
        // Shared pointers to the stored nodes (core kind: stored form = served form), not copies.
        let nodes = store
            .list_arcs(&crate::resources::GroupResource::new("", "nodes"), None)
            .0;
        let claims = pod_claims(store, &pod);
        // A node already selected for a claim (volume binding in progress) is kept.
        let selected = claims.iter().find_map(|c| {
            c["metadata"]["annotations"][SELECTED_NODE]
                .as_str()
                .map(String::from)
        });
        let chosen = match selected {
            Some(node) => Ok(node),
            None => choose_node(&pod, &nodes, &self.usage, |claim| {
                store
                    .get(&ResourceKey::core("persistentvolumeclaims"), Some(&key.0), claim)
                    .is_some()
            }),
        };
        match chosen {
            Ok(node) if !volumes_bound(store, &claims, &node) => {
                tracing::debug!(pod = %key.1, node = %node, "waiting for volume binding");
            }
            Ok(node) => match store.bind_pod(&key.0, &key.1, &node) {
                Ok(bound) => {
                    // The next pod of this batch must see this one's allocation.
                    self.observe(&bound, false);
                    let msg = format!("Successfully assigned {}/{} to {}", key.0, key.1, node);
                    event(store, &bound, "Normal", "Scheduled", &msg, "default-scheduler");
                }
                Err(e) => tracing::debug!(pod = %key.1, error = %e, "binding failed"),
            },
            Err(message) => {
                let mut changed = false;
                let _ = update_status_with(store, &pods_key(), Some(&key.0), &key.1, None, |status| {
                    let cond = json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null,
                        "lastTransitionTime": now_rfc3339(), "reason": "Unschedulable", "message": message});
                    let mut conds = status["conditions"].as_array().cloned().unwrap_or_default();
                    if let Some(c) = conds.iter_mut().find(|c| c["type"] == "PodScheduled") {
                        if c["reason"] == "Unschedulable" && c["message"] == message.as_str() {
                            return;
                        }
                        *c = cond;
                    } else {
                        conds.push(cond);
                    }
                    status["conditions"] = json!(conds);
                    status["phase"] = json!("Pending");
                    changed = true;
                });
                if changed {
                    event(
                        store,
                        &pod,
                        "Warning",
                        "FailedScheduling",
                        &message,
                        "default-scheduler",
                    );
                }
            }
        }
    }
}

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

fn pod_claims(store: &Store, pod: &Value) -> Vec<Value> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .filter_map(|c| store.get(&ResourceKey::core("persistentvolumeclaims"), Some(ns), c))
        .collect()
}

/// The volume-binding step of scheduling: unbound `WaitForFirstConsumer` claims get the
/// `volume.kubernetes.io/selected-node` annotation (which triggers provisioning); the pod is
/// bound only once all its claims are `Bound`.
fn volumes_bound(store: &Store, claims: &[Value], node: &str) -> bool {
    let mut all_bound = true;
    for claim in claims {
        if claim["status"]["phase"] == "Bound" {
            continue;
        }
        all_bound = false;
        let class = claim["spec"]["storageClassName"].as_str().unwrap_or("");
        let wffc = store
            .get(
                &ResourceKey::new("storage.k8s.io", "v1", "storageclasses"),
                None,
                class,
            )
            .is_some_and(|c| c["volumeBindingMode"] == "WaitForFirstConsumer");
        if wffc && claim["metadata"]["annotations"][SELECTED_NODE].is_null() {
            let mut updated = claim.clone();
            if !updated["metadata"]["annotations"].is_object() {
                updated["metadata"]["annotations"] = json!({});
            }
            updated["metadata"]["annotations"][SELECTED_NODE] = json!(node);
            let ns = claim["metadata"]["namespace"].as_str().unwrap_or("");
            if let Err(e) = store.update(&ResourceKey::core("persistentvolumeclaims"), Some(ns), updated) {
                tracing::debug!(claim = %name_of(claim), error = %e, "selecting node for claim failed");
            }
        }
    }
    all_bound
}

/// Resource requests of a pod: max(init containers) vs sum(containers), requests defaulting to
/// limits.
pub(crate) fn pod_requests(pod: &Value) -> (f64, f64) {
    let req = |c: &Value, r: &str| {
        parse_quantity(&c["resources"]["requests"][r])
            .or_else(|| parse_quantity(&c["resources"]["limits"][r]))
            .unwrap_or(0.0)
    };
    let sum = |field: &str, r: &str| -> f64 {
        pod["spec"][field]
            .as_array()
            .map(|cs| cs.iter().map(|c| req(c, r)).sum())
            .unwrap_or(0.0)
    };
    let max = |field: &str, r: &str| -> f64 {
        pod["spec"][field]
            .as_array()
            .map(|cs| cs.iter().map(|c| req(c, r)).fold(0.0, f64::max))
            .unwrap_or(0.0)
    };
    (
        sum("containers", "cpu").max(max("initContainers", "cpu")),
        sum("containers", "memory").max(max("initContainers", "memory")),
    )
}

fn occupies_node(p: &Value, node: &str) -> bool {
    p["spec"]["nodeName"] == node && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// Picks the node for a pod, or returns the `Unschedulable` message.
pub(crate) fn choose_node<N: std::borrow::Borrow<Value>>(
    pod: &Value,
    nodes: &[N],
    usage: &Usage,
    claim_exists: impl Fn(&str) -> bool,
) -> Result<String, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".to_string());
    }
    let total = nodes.len();
    if let Some(vols) = pod["spec"]["volumes"].as_array() {
        for v in vols {
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                if !claim_exists(claim) {
                    return Err(format!(
                        "0/{total} nodes are available: persistentvolumeclaim \"{claim}\" not found. \
                         preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
                    ));
                }
            }
        }
    }
    let (cpu, mem) = pod_requests(pod);
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut best: Option<(f64, String)> = None;
    for node in nodes {
        let node: &Value = std::borrow::Borrow::borrow(node);
        let name = name_of(node);
        if node["spec"]["unschedulable"] == json!(true) {
            *reasons.entry("node(s) were unschedulable").or_default() += 1;
            continue;
        }
        if let Some(sel) = pod["spec"]["nodeSelector"].as_object() {
            if sel.iter().any(|(k, v)| node["metadata"]["labels"][k] != *v) {
                *reasons
                    .entry("node(s) didn't match Pod's node affinity/selector")
                    .or_default() += 1;
                continue;
            }
        }
        let alloc = &node["status"]["allocatable"];
        let a_cpu = parse_quantity(&alloc["cpu"]).unwrap_or(f64::MAX);
        let a_mem = parse_quantity(&alloc["memory"]).unwrap_or(f64::MAX);
        let a_pods = parse_quantity(&alloc["pods"]).unwrap_or(110.0);
        let NodeUsage {
            pods: n_pods,
            cpu: u_cpu,
            memory: u_mem,
        } = usage.of(name);
        let mut fits = true;
        if (n_pods as f64) + 1.0 > a_pods {
            *reasons.entry("Too many pods").or_default() += 1;
            fits = false;
        }
        if u_cpu + cpu > a_cpu + 1e-9 {
            *reasons.entry("Insufficient cpu").or_default() += 1;
            fits = false;
        }
        if u_mem + mem > a_mem + 0.5 {
            *reasons.entry("Insufficient memory").or_default() += 1;
            fits = false;
        }
        if !fits {
            continue;
        }
        // Least allocated: the lowest resulting cpu+memory fraction wins (ties: first by name).
        let score = (u_cpu + cpu) / a_cpu.max(1e-9) + (u_mem + mem) / a_mem.max(1.0);
        if best
            .as_ref()
            .is_none_or(|(s, n)| score < *s - 1e-12 || (score <= *s + 1e-12 && name < n.as_str()))
        {
            best = Some((score, name.to_string()));
        }
    }
    if let Some((_, node)) = best {
        return Ok(node);
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    Err(format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} No preemption victims found for incoming pod.",
        parts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, mem: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
               "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}}})
    }

    fn pod(cpu: &str, mem: &str, node: &str) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": node,
            "containers": [{"name": "c", "resources": {"limits": {"cpu": cpu, "memory": mem}}}]},
            "status": {"phase": "Running"}})
    }

    #[test]
    fn picks_the_least_allocated_node() {
        let nodes = vec![node("n1", "4", "8Gi"), node("n2", "4", "8Gi")];
        let running = vec![pod("2", "1Gi", "n1")];
        assert_eq!(
            choose_node(&pod("1", "1Gi", ""), &nodes, &Usage::of_pods(&running), |_| true),
            Ok("n2".to_string())
        );
        assert_eq!(
            choose_node(&pod("1", "1Gi", ""), &nodes, &Usage::default(), |_| true),
            Ok("n1".to_string())
        );
    }

    #[test]
    fn unschedulable_message_matches_the_real_scheduler() {
        let nodes = vec![node("n1", "1", "8Gi"), node("n2", "1", "1Gi")];
        let err = choose_node(&pod("2", "2Gi", ""), &nodes, &Usage::default(), |_| true).unwrap_err();
        assert_eq!(
            err,
            "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu. preemption: 0/2 nodes are \
             available: 2 No preemption victims found for incoming pod."
        );
        assert_eq!(
            choose_node::<Value>(&pod("1", "1", ""), &[], &Usage::default(), |_| true).unwrap_err(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn missing_claims_block_scheduling() {
        let mut p = pod("1", "1Gi", "");
        p["spec"]["volumes"] = json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data-0"}}]);
        let err = choose_node(&p, &[node("n1", "4", "8Gi")], &Usage::default(), |_| false).unwrap_err();
        assert!(
            err.contains("persistentvolumeclaim \"data-0\" not found"),
            "{err}"
        );
    }

    #[test]
    fn requests_take_max_of_init_and_sum_of_app_containers() {
        let p = json!({"spec": {
            "initContainers": [{"resources": {"requests": {"cpu": "3"}}}],
            "containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                           {"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}]}});
        let (cpu, mem) = pod_requests(&p);
        assert_eq!(cpu, 3.0);
        assert_eq!(mem, 2.0 * 1024.0 * 1024.0 * 1024.0);
    }
}
