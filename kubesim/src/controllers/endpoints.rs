//! The Endpoints and EndpointSlice controllers: for every Service with a selector, the pods it
//! selects that have an IP — ready ones as addresses, not-ready ones as `notReadyAddresses`
//! (all as addresses with `publishNotReadyAddresses`), terminating pods left out unless
//! `publishNotReadyAddresses` — plus one EndpointSlice `<service>-<suffix>` owned by the Service.
//!
//! The controller indexes what it watches: services by one pair of their selector, pods by label
//! pair, slices by service. A pod event looks only at the services its labels can match; a
//! service reconcile only at the pods carrying the rarest pair of its selector.

use std::collections::{BTreeSet, HashMap};

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
    super::run_reconciler(store, shutdown, EndpointsController::default()).await;
}

/// `(namespace, label key, label value)`.
type Pair = (String, String, String);

#[derive(Default)]
struct EndpointsController {
    /// Service -> its (non-empty) selector.
    selectors: HashMap<Key, Map<String, Value>>,
    /// One pair of each service's selector -> services.
    services_by_pair: HashMap<Pair, BTreeSet<String>>,
    /// Pod -> its labels.
    pod_labels: HashMap<Key, Map<String, Value>>,
    /// Label pair -> pods.
    pods_by_pair: HashMap<Pair, BTreeSet<String>>,
    /// Service -> the name of its EndpointSlice.
    slices: HashMap<Key, String>,
}

fn pairs<'a>(ns: &'a str, labels: &'a Map<String, Value>) -> impl Iterator<Item = Pair> + 'a {
    labels
        .iter()
        .filter_map(move |(k, v)| Some((ns.to_string(), k.clone(), v.as_str()?.to_string())))
}

fn remove_from(index: &mut HashMap<Pair, BTreeSet<String>>, pair: &Pair, name: &str) {
    if let Some(set) = index.get_mut(pair) {
        set.remove(name);
        if set.is_empty() {
            index.remove(pair);
        }
    }
}

impl EndpointsController {
    fn observe_service(&mut self, key: &Key, svc: Option<&Value>) {
        if let Some(old) = self.selectors.remove(key) {
            if let Some(p) = pairs(&key.0, &old).next() {
                remove_from(&mut self.services_by_pair, &p, &key.1);
            }
        }
        let Some(sel) = svc.and_then(|s| s["spec"]["selector"].as_object()) else {
            return;
        };
        if let Some(p) = pairs(&key.0, sel).next() {
            self.services_by_pair.entry(p).or_default().insert(key.1.clone());
            self.selectors.insert(key.clone(), sel.clone());
        }
    }

    fn observe_pod(&mut self, key: &Key, pod: Option<&Value>) {
        if let Some(old) = self.pod_labels.remove(key) {
            for p in pairs(&key.0, &old) {
                remove_from(&mut self.pods_by_pair, &p, &key.1);
            }
        }
        let Some(labels) = pod.and_then(|p| p["metadata"]["labels"].as_object()) else {
            return;
        };
        for p in pairs(&key.0, labels) {
            self.pods_by_pair.entry(p).or_default().insert(key.1.clone());
        }
        self.pod_labels.insert(key.clone(), labels.clone());
    }

    fn observe_slice(&mut self, slice: &Value, deleted: bool) {
        let Some(svc) = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str() else {
            return;
        };
        let key = (super::ns_of(slice).to_string(), svc.to_string());
        if deleted {
            if self.slices.get(&key).map(String::as_str) == Some(name_of(slice)) {
                self.slices.remove(&key);
            }
        } else {
            self.slices
                .entry(key)
                .or_insert_with(|| name_of(slice).to_string());
        }
    }

    /// Services whose selector matches `labels`.
    fn services_selecting(&self, ns: &str, labels: &Value) -> BTreeSet<String> {
        let Some(labels) = labels.as_object() else {
            return BTreeSet::new();
        };
        pairs(ns, labels)
            .filter_map(|p| self.services_by_pair.get(&p))
            .flatten()
            .filter(|svc| {
                self.selectors
                    .get(&(ns.to_string(), (*svc).clone()))
                    .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
            .cloned()
            .collect()
    }

    /// Names of the pods of `ns` carrying every pair of `selector`, by name.
    fn pods_selected(&self, ns: &str, selector: &Map<String, Value>) -> Vec<String> {
        let postings: Option<Vec<&BTreeSet<String>>> =
            pairs(ns, selector).map(|p| self.pods_by_pair.get(&p)).collect();
        let Some(mut postings) = postings else {
            return Vec::new();
        };
        postings.sort_by_key(|s| s.len());
        let Some((rarest, rest)) = postings.split_first() else {
            return Vec::new();
        };
        rarest
            .iter()
            .filter(|n| rest.iter().all(|s| s.contains(*n)))
            .cloned()
            .collect()
    }
}

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
    fn keys_for(&mut self, _store: &Store, ev: &WatchEvent) -> Vec<Key> {
        match (ev.gr.group.as_str(), ev.gr.resource.as_str()) {
            ("", "services") => {
                let key = (ev.namespace.clone(), ev.name.clone());
                let svc = (ev.kind != EventKind::Deleted).then_some(ev.object.as_ref());
                self.observe_service(&key, svc);
                vec![key]
            }
            ("discovery.k8s.io", "endpointslices") => {
                self.observe_slice(&ev.object, ev.kind == EventKind::Deleted);
                vec![]
            }
            ("", "pods") => {
                let key = (ev.namespace.clone(), ev.name.clone());
                let pod = (ev.kind != EventKind::Deleted).then_some(ev.object.as_ref());
                self.observe_pod(&key, pod);
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
                let mut names = self.services_selecting(&ev.namespace, &ev.object["metadata"]["labels"]);
                if let Some(old) = &ev.old {
                    names.extend(self.services_selecting(&ev.namespace, &old["metadata"]["labels"]));
                }
                names.into_iter().map(|n| (ev.namespace.clone(), n)).collect()
            }
            _ => vec![],
        }
    }

    fn all_keys(&mut self, store: &Store) -> Vec<Key> {
        *self = EndpointsController::default();
        for pod in store.list(&pods_key(), None).0 {
            self.observe_pod(&key_of(&pod), Some(&pod));
        }
        for slice in store.list(&slices(), None).0 {
            self.observe_slice(&slice, false);
        }
        let services = store.list(&services(), None).0;
        for svc in &services {
            self.observe_service(&key_of(svc), Some(svc));
        }
        services.iter().map(key_of).collect()
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
        let pods: Vec<Value> = self
            .pods_selected(ns, selector)
            .iter()
            .filter_map(|p| store.get(&pods_key(), Some(ns), p))
            .filter(|p| sel.matches(&p["metadata"]["labels"]))
            .collect();
        let desired = desired_endpoints(&svc, &pods);
        sync(store, &endpoints(), ns, name, desired);
        let slice_name = self
            .slices
            .entry(key.clone())
            .or_insert_with(|| format!("{name}-{}", suffix()))
            .clone();
        let slice = desired_slice(&svc, &pods, &slice_name);
        sync(store, &slices(), ns, &slice_name, slice);
    }
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
