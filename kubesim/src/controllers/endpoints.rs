//! The Endpoints and EndpointSlice controllers: for every Service with a selector, the pods it
//! selects that have an IP — ready ones as addresses, not-ready ones as `notReadyAddresses`
//! (all as addresses with `publishNotReadyAddresses`), terminating pods left out unless
//! `publishNotReadyAddresses` — plus one EndpointSlice `<service>-<suffix>` owned by the Service.

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::{controller_ref, is_terminating, key_of, name_of, pod_ready, pods_key, uid_of, Key, Reconciler};
use crate::{
    resources::ResourceKey,
    selectors::LabelSelector,
    store::{DeleteOptions, EventKind, Store, WatchEvent},
};

/// Runs the controllers until shutdown.
pub async fn run(store: Store, shutdown: CancellationToken) {
    super::run_reconciler(store, shutdown, EndpointsController).await;
}

struct EndpointsController;

fn services() -> ResourceKey {
    ResourceKey::core("services")
}

fn endpoints() -> ResourceKey {
    ResourceKey::core("endpoints")
}

fn slices() -> ResourceKey {
    ResourceKey::new("discovery.k8s.io", "v1", "endpointslices")
}

impl Reconciler for EndpointsController {
    fn keys_for(&self, store: &Store, ev: &WatchEvent) -> Vec<Key> {
        match (ev.gr.group.as_str(), ev.gr.resource.as_str()) {
            ("", "services") => vec![(ev.namespace.clone(), ev.name.clone())],
            ("", "pods") => {
                // Only IP, readiness, labels, hostname and deletion matter.
                if ev.kind == EventKind::Modified {
                    if let Some(old) = &ev.old {
                        let relevant = |p: &Value| {
                            (
                                p["status"]["podIP"].clone(),
                                pod_ready(p),
                                p["metadata"]["labels"].clone(),
                                is_terminating(p),
                                p["spec"]["nodeName"].clone(),
                            )
                        };
                        if relevant(old) == relevant(&ev.object) {
                            return vec![];
                        }
                    }
                }
                // Only the services selecting the pod (before or after the change).
                let label_sets: Vec<&Value> = std::iter::once(ev.object.as_ref())
                    .chain(ev.old.iter().map(|o| o.as_ref()))
                    .map(|p| &p["metadata"]["labels"])
                    .collect();
                store
                    .list_where(&services(), Some(&ev.namespace), |svc| {
                        svc["spec"]["selector"].as_object().is_some_and(|sel| {
                            !sel.is_empty()
                                && label_sets
                                    .iter()
                                    .any(|labels| sel.iter().all(|(k, v)| labels[k] == *v))
                        })
                    })
                    .iter()
                    .map(key_of)
                    .collect()
            }
            _ => vec![],
        }
    }

    fn all_keys(&self, store: &Store) -> Vec<Key> {
        store.list(&services(), None).0.iter().map(key_of).collect()
    }

    fn reconcile(&mut self, store: &Store, key: &Key) {
        let (ns, name) = (key.0.as_str(), key.1.as_str());
        let Some(svc) = store.get(&services(), Some(ns), name) else {
            if store.get(&endpoints(), Some(ns), name).is_some() {
                let _ = store.delete(&endpoints(), Some(ns), name, &DeleteOptions::default());
            }
            return;
        };
        let Some(selector) = svc["spec"]["selector"].as_object().filter(|s| !s.is_empty()) else {
            return;
        };
        let Ok(sel) = LabelSelector::from_structured(&json!({"matchLabels": selector})) else {
            return;
        };
        let pods: Vec<Value> =
            store.list_where(&pods_key(), Some(ns), |p| sel.matches(&p["metadata"]["labels"]));
        let desired = desired_endpoints(&svc, &pods);
        sync(store, &endpoints(), ns, name, desired);
        let slice_name = match existing_slice(store, ns, name) {
            Some(n) => n,
            None => format!("{name}-{}", suffix()),
        };
        let slice = desired_slice(&svc, &pods, &slice_name);
        sync(store, &slices(), ns, &slice_name, slice);
    }
}

fn existing_slice(store: &Store, ns: &str, svc: &str) -> Option<String> {
    store
        .list(&slices(), Some(ns))
        .0
        .iter()
        .find(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
        .map(|s| name_of(s).to_string())
}

fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Creates or updates `desired` (its metadata name/labels/ownerReferences, and everything else
/// at top level) when it differs from the stored object.
fn sync(store: &Store, res: &ResourceKey, ns: &str, name: &str, desired: Value) {
    match store.get(res, Some(ns), name) {
        None => {
            if let Err(e) = store.create(res, Some(ns), desired) {
                tracing::debug!(object = %name, error = %e, "creating endpoints failed");
            }
        }
        Some(current) => {
            let mut updated = current.clone();
            if let Value::Object(d) = &desired {
                for (k, v) in d {
                    if k == "metadata" {
                        for mk in ["labels", "ownerReferences"] {
                            if !v[mk].is_null() {
                                updated["metadata"][mk] = v[mk].clone();
                            }
                        }
                    } else {
                        updated[k] = v.clone();
                    }
                }
                if let Value::Object(u) = &mut updated {
                    u.retain(|k, _| k == "metadata" || d.contains_key(k));
                }
            }
            if updated != current {
                if let Err(e) = store.update(res, Some(ns), updated) {
                    tracing::debug!(object = %name, error = %e, "updating endpoints failed");
                }
            }
        }
    }
}

fn include(pod: &Value, publish_not_ready: bool) -> bool {
    pod["status"]["podIP"].as_str().is_some_and(|ip| !ip.is_empty())
        && (!is_terminating(pod) || publish_not_ready)
        && !matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": pod["metadata"]["namespace"], "name": name_of(pod), "uid": uid_of(pod)})
}

fn hostname_for(svc: &Value, pod: &Value) -> Option<String> {
    let host = pod["spec"]["hostname"].as_str()?;
    (pod["spec"]["subdomain"] == svc["metadata"]["name"]).then(|| host.to_string())
}

/// Resolves a service port's targetPort against a pod (named ports look up container ports).
fn resolve_port(port: &Value, pod: Option<&Value>) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            if let Ok(n) = s.parse::<i64>() {
                return Some(n);
            }
            pod?["spec"]["containers"].as_array()?.iter().find_map(|c| {
                c["ports"]
                    .as_array()?
                    .iter()
                    .find(|p| p["name"] == s.as_str())
                    .and_then(|p| p["containerPort"].as_i64())
            })
        }
        _ => port["port"].as_i64(),
    }
}

fn endpoint_ports(svc: &Value, pod: Option<&Value>) -> Vec<Value> {
    svc["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let mut m = Map::new();
                    if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
                        m.insert("name".into(), json!(n));
                    }
                    m.insert("port".into(), json!(resolve_port(p, pod)?));
                    m.insert("protocol".into(), json!(p["protocol"].as_str().unwrap_or("TCP")));
                    Some(Value::Object(m))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn service_labels(svc: &Value) -> Map<String, Value> {
    let mut labels = svc["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    if svc["spec"]["clusterIP"] == "None" {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    labels
}

pub(crate) fn desired_endpoints(svc: &Value, pods: &[Value]) -> Value {
    let publish = svc["spec"]["publishNotReadyAddresses"] == json!(true);
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let mut sorted: Vec<&Value> = pods.iter().filter(|p| include(p, publish)).collect();
    sorted.sort_by_key(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string());
    for pod in &sorted {
        let mut addr = json!({"ip": pod["status"]["podIP"]});
        if let Some(h) = hostname_for(svc, pod) {
            addr["hostname"] = json!(h);
        }
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            addr["nodeName"] = json!(node);
        }
        addr["targetRef"] = target_ref(pod);
        if publish || (pod_ready(pod) && !is_terminating(pod)) {
            ready.push(addr);
        } else {
            not_ready.push(addr);
        }
    }
    let mut ep = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name_of(svc), "namespace": svc["metadata"]["namespace"], "labels": service_labels(svc)},
    });
    if !ready.is_empty() || !not_ready.is_empty() {
        let mut subset = Map::new();
        if !ready.is_empty() {
            subset.insert("addresses".into(), json!(ready));
        }
        if !not_ready.is_empty() {
            subset.insert("notReadyAddresses".into(), json!(not_ready));
        }
        let ports = endpoint_ports(svc, sorted.first().copied());
        if !ports.is_empty() {
            subset.insert("ports".into(), json!(ports));
        }
        ep["subsets"] = json!([subset]);
    }
    ep
}

pub(crate) fn desired_slice(svc: &Value, pods: &[Value], slice_name: &str) -> Value {
    let publish = svc["spec"]["publishNotReadyAddresses"] == json!(true);
    let mut sorted: Vec<&Value> = pods.iter().filter(|p| include(p, publish)).collect();
    sorted.sort_by_key(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string());
    let eps: Vec<Value> = sorted
        .iter()
        .map(|pod| {
            let terminating = is_terminating(pod);
            let serving = pod_ready(pod);
            let mut e = json!({
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": (serving && !terminating) || publish, "serving": serving || publish, "terminating": terminating},
                "targetRef": target_ref(pod),
            });
            if let Some(h) = hostname_for(svc, pod) {
                e["hostname"] = json!(h);
            }
            if let Some(node) = pod["spec"]["nodeName"].as_str() {
                e["nodeName"] = json!(node);
            }
            e
        })
        .collect();
    let mut labels = service_labels(svc);
    labels.insert("kubernetes.io/service-name".into(), json!(name_of(svc)));
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        json!("endpointslice-controller.k8s.io"),
    );
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name,
            "namespace": svc["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [controller_ref(svc, "v1", "Service")],
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": endpoint_ports(svc, sorted.first().copied()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "labels": {"app": "x"}},
               "spec": {"hostname": name, "subdomain": "svc", "nodeName": "n1",
                        "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]},
               "status": {"phase": "Running", "podIP": ip,
                          "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn svc(publish: bool) -> Value {
        json!({"metadata": {"name": "svc", "namespace": "ns", "uid": "s1"},
               "spec": {"selector": {"app": "x"}, "clusterIP": "None", "publishNotReadyAddresses": publish,
                        "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}})
    }

    #[test]
    fn ready_and_not_ready_pods_are_split() {
        let pods = vec![pod("a", "10.0.0.2", true), pod("b", "10.0.0.3", false)];
        let ep = desired_endpoints(&svc(false), &pods);
        let subset = &ep["subsets"][0];
        assert_eq!(subset["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subset["addresses"][0]["hostname"], "a");
        assert_eq!(subset["notReadyAddresses"][0]["ip"], "10.0.0.3");
        assert_eq!(
            subset["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(ep["metadata"]["labels"]["service.kubernetes.io/headless"], "");
    }

    #[test]
    fn publish_not_ready_addresses_lists_everything_as_ready() {
        let pods = vec![
            pod("a", "10.0.0.2", true),
            pod("b", "10.0.0.3", false),
            pod("c", "", false),
        ];
        let ep = desired_endpoints(&svc(true), &pods);
        assert_eq!(ep["subsets"][0]["addresses"].as_array().unwrap().len(), 2);
        assert!(ep["subsets"][0]["notReadyAddresses"].is_null());
        let slice = desired_slice(&svc(true), &pods, "svc-abcde");
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], true);
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "svc");
    }

    #[test]
    fn no_pods_means_no_subsets() {
        assert!(desired_endpoints(&svc(false), &[])["subsets"].is_null());
    }
}
