//! The StatefulSet controller: stable pods `<set>-<ordinal>` (labels
//! `statefulset.kubernetes.io/pod-name`, `controller-revision-hash`, `apps.kubernetes.io/pod-index`,
//! hostname = pod name, subdomain = `serviceName`, controller owner reference), PVCs
//! `<claim>-<set>-<ordinal>` from `volumeClaimTemplates` (created before the pod, labelled with
//! the selector, owned per `persistentVolumeClaimRetentionPolicy`), `OrderedReady` (one pod at a
//! time, each waiting for its predecessors to be Running and Ready; scale-down from the highest
//! ordinal) and `Parallel` management, replacement of deleted or failed pods, RollingUpdate of
//! pods whose revision is outdated (highest ordinal first, down to the partition),
//! ControllerRevisions and the status block.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    controller_owner, controller_ref, event, is_terminating, key_of, name_of, pod_running_and_ready,
    pods_key, uid_of, update_status_with, Key, Reconciler,
};
use crate::{
    resources::ResourceKey,
    store::{DeleteOptions, EventKind, Store, WatchEvent},
};

const COMPONENT: &str = "statefulset-controller";

/// Runs the controller until shutdown.
pub async fn run(store: Store, shutdown: CancellationToken) {
    super::run_reconciler(store, shutdown, StatefulSetController).await;
}

struct StatefulSetController;

fn sets() -> ResourceKey {
    ResourceKey::apps("statefulsets")
}

fn revisions() -> ResourceKey {
    ResourceKey::apps("controllerrevisions")
}

fn pvcs() -> ResourceKey {
    ResourceKey::core("persistentvolumeclaims")
}

impl Reconciler for StatefulSetController {
    fn keys_for(&mut self, store: &Store, ev: &WatchEvent) -> Vec<Key> {
        match (ev.gr.group.as_str(), ev.gr.resource.as_str()) {
            ("apps", "statefulsets") => vec![(ev.namespace.clone(), ev.name.clone())],
            ("", "pods") => std::iter::once(&ev.object)
                .chain(ev.old.iter())
                .filter_map(|obj| {
                    controller_owner(obj, "StatefulSet")?["name"]
                        .as_str()
                        .map(String::from)
                })
                .map(|n| (ev.namespace.clone(), n))
                .collect(),
            // A deleted claim is re-created; a created one (admitted in the background, see
            // `ensure_claims`) lets its pod be created.
            ("", "persistentvolumeclaims") if matches!(ev.kind, EventKind::Deleted | EventKind::Added) => {
                // Claims carry the selector labels of their set (and usually no owner).
                let labels = &ev.object["metadata"]["labels"];
                store
                    .list(&sets(), Some(&ev.namespace))
                    .0
                    .iter()
                    .filter(|set| {
                        set["spec"]["selector"]["matchLabels"]
                            .as_object()
                            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v))
                    })
                    .map(key_of)
                    .collect()
            }
            _ => vec![],
        }
    }

    fn all_keys(&mut self, store: &Store) -> Vec<Key> {
        store.list(&sets(), None).0.iter().map(key_of).collect()
    }

    fn reconcile(&mut self, store: &Store, key: &Key) {
        let Some(set) = store.get(&sets(), Some(&key.0), &key.1) else {
            return;
        };
        if is_terminating(&set) {
            return;
        }
        sync_set(store, &set);
    }
}

/// `fnv32a` of the template, rendered like `rand.SafeEncodeString(fmt.Sprint(hash))`.
pub(crate) fn template_hash(template: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Ordinal of a pod of `set` (`<set>-<n>`).
pub(crate) fn ordinal(set_name: &str, pod_name: &str) -> Option<i64> {
    let rest = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok()
}

fn claim_name(template: &Value, set_name: &str, ord: i64) -> String {
    format!("{}-{}-{}", name_of(template), set_name, ord)
}

/// Builds pod `<set>-<ord>` from the template.
pub(crate) fn new_pod(set: &Value, ord: i64, revision: &str) -> Value {
    let set_name = name_of(set);
    let pod_name = format!("{set_name}-{ord}");
    let template = &set["spec"]["template"];
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(pod_name));
    labels.insert("controller-revision-hash".into(), json!(revision));
    labels.insert("apps.kubernetes.io/pod-index".into(), json!(ord.to_string()));
    let mut spec = template["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    if let Some(vcts) = set["spec"]["volumeClaimTemplates"].as_array() {
        let mut volumes: Vec<Value> = spec["volumes"].as_array().cloned().unwrap_or_default();
        for t in vcts {
            let vname = name_of(t);
            volumes.retain(|v| v["name"] != vname);
            volumes.push(
                json!({"name": vname, "persistentVolumeClaim": {"claimName": claim_name(t, set_name, ord)}}),
            );
        }
        spec["volumes"] = json!(volumes);
    }
    spec["hostname"] = json!(pod_name);
    if let Some(svc) = set["spec"]["serviceName"].as_str().filter(|s| !s.is_empty()) {
        spec["subdomain"] = json!(svc);
    }
    let mut metadata = json!({
        "name": pod_name,
        "generateName": format!("{set_name}-"),
        "namespace": set["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [controller_ref(set, "apps/v1", "StatefulSet")],
    });
    if let Some(ann) = template["metadata"]["annotations"].as_object() {
        metadata["annotations"] = json!(ann);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

fn new_claim(set: &Value, template: &Value, ord: i64) -> Value {
    let mut claim = template.clone();
    let name = claim_name(template, name_of(set), ord);
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(sel) = set["spec"]["selector"]["matchLabels"].as_object() {
        for (k, v) in sel {
            labels.insert(k.clone(), v.clone());
        }
    }
    let mut metadata = json!({"name": name, "namespace": set["metadata"]["namespace"], "labels": labels});
    if let Some(ann) = template["metadata"]["annotations"].as_object() {
        metadata["annotations"] = json!(ann);
    }
    if set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete" {
        metadata["ownerReferences"] = json!([controller_ref(set, "apps/v1", "StatefulSet")]);
    }
    claim["metadata"] = metadata;
    claim["apiVersion"] = json!("v1");
    claim["kind"] = json!("PersistentVolumeClaim");
    if let Value::Object(m) = &mut claim {
        m.remove("status");
    }
    claim
}

fn ensure_revision(store: &Store, set: &Value, hash: &str) -> String {
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("");
    let name = format!("{}-{}", name_of(set), hash);
    if store.get(&revisions(), Some(ns), &name).is_some() {
        return name;
    }
    let existing = store.list_dependents(&revisions(), uid_of(set));
    let next = existing
        .iter()
        .filter(|r| controller_owner(r, "StatefulSet").is_some_and(|o| o["uid"] == set["metadata"]["uid"]))
        .filter_map(|r| r["revision"].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    let mut labels = set["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert("controller.kubernetes.io/hash".into(), json!(hash));
    let mut template = set["spec"]["template"].clone();
    template["$patch"] = json!("replace");
    let rev = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
                     "ownerReferences": [controller_ref(set, "apps/v1", "StatefulSet")]},
        "data": {"spec": {"template": template}},
        "revision": next,
    });
    if let Err(e) = store.create(&revisions(), Some(ns), rev) {
        if e.code != 409 {
            tracing::debug!(set = %name_of(set), error = %e, "creating controller revision failed");
        }
    }
    name
}

fn owned_pods(store: &Store, set: &Value) -> Vec<Value> {
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("");
    let mut pods = store.list_dependents(&pods_key(), uid_of(set));
    pods.retain(|p| {
        crate::controllers::ns_of(p) == ns
            && controller_owner(p, "StatefulSet").is_some_and(|o| o["uid"] == set["metadata"]["uid"])
    });
    // The order of a namespace listing (by name).
    pods.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    pods
}

fn delete_pod(store: &Store, set: &Value, pod: &Value) {
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("");
    let opts = DeleteOptions {
        precondition_uid: Some(uid_of(pod).to_string()),
        ..DeleteOptions::default()
    };
    match store.delete(&pods_key(), Some(ns), name_of(pod), &opts) {
        Ok(_) => event(
            store,
            set,
            "Normal",
            "SuccessfulDelete",
            &format!(
                "delete Pod {} in StatefulSet {} successful",
                name_of(pod),
                name_of(set)
            ),
            COMPONENT,
        ),
        Err(e) => tracing::debug!(pod = %name_of(pod), error = %e, "deleting pod failed"),
    }
}

/// The user kube-controller-manager's StatefulSet controller writes as.
const CONTROLLER_USER: &str = "system:serviceaccount:kube-system:statefulset-controller";

fn claim_event(
    store: &Store,
    set: &Value,
    set_name: &str,
    name: &str,
    pod_name: &str,
    result: Result<Value, crate::error::ApiError>,
) {
    match result {
        Ok(_) => event(
            store,
            set,
            "Normal",
            "SuccessfulCreate",
            &format!("create Claim {name} Pod {pod_name} in StatefulSet {set_name} success"),
            COMPONENT,
        ),
        Err(e) if e.code == 409 => {}
        Err(e) => event(
            store,
            set,
            "Warning",
            "FailedCreate",
            &format!(
                "create Claim {name} for Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                e.message
            ),
            COMPONENT,
        ),
    }
}

/// Creates the missing claims of an ordinal; `false` when the pod must wait (a claim is being
/// deleted or could not be created).
fn ensure_claims(store: &Store, set: &Value, ord: i64) -> bool {
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("");
    let Some(templates) = set["spec"]["volumeClaimTemplates"].as_array() else {
        return true;
    };
    let pod_name = format!("{}-{}", name_of(set), ord);
    for t in templates {
        let name = claim_name(t, name_of(set), ord);
        match store.get(&pvcs(), Some(ns), &name) {
            Some(c) if is_terminating(&c) => return false,
            Some(_) => {}
            None if store.has_controller_admission() => {
                // Through the admission webhooks, like kube-controller-manager's writes; the
                // claim's Added event brings the set back here.
                let set_name = name_of(set).to_string();
                let set_obj = set.clone();
                store.spawn_create_admitted(
                    &pvcs(),
                    ns,
                    new_claim(set, t, ord),
                    CONTROLLER_USER,
                    move |store, result| claim_event(store, &set_obj, &set_name, &name, &pod_name, result),
                );
                return false;
            }
            None => match store.create(&pvcs(), Some(ns), new_claim(set, t, ord)) {
                Ok(_) => event(
                    store,
                    set,
                    "Normal",
                    "SuccessfulCreate",
                    &format!(
                        "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                        name_of(set)
                    ),
                    COMPONENT,
                ),
                Err(e) => {
                    event(
                        store,
                        set,
                        "Warning",
                        "FailedCreate",
                        &format!(
                            "create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {}",
                            name_of(set),
                            e.message
                        ),
                        COMPONENT,
                    );
                    return false;
                }
            },
        }
    }
    true
}

/// With `whenScaled: Delete`, a condemned pod becomes the owner of its claims so they go with it.
fn hand_claims_to_pod(store: &Store, set: &Value, pod: &Value, ord: i64) {
    if set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] != "Delete" {
        return;
    }
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("");
    for t in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = claim_name(t, name_of(set), ord);
        if let Some(mut claim) = store.get(&pvcs(), Some(ns), &name) {
            let pod_ref = json!({"apiVersion": "v1", "kind": "Pod", "name": name_of(pod), "uid": uid_of(pod),
                                 "controller": false, "blockOwnerDeletion": true});
            let refs = claim["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if refs.iter().any(|r| r["uid"] == pod["metadata"]["uid"]) {
                continue;
            }
            let mut refs: Vec<Value> = refs.into_iter().filter(|r| r["kind"] != "Pod").collect();
            refs.push(pod_ref);
            claim["metadata"]["ownerReferences"] = json!(refs);
            let _ = store.update(&pvcs(), Some(ns), claim);
        }
    }
}

fn sync_set(store: &Store, set: &Value) {
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let set_name = name_of(set).to_string();
    let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let start = set["spec"]["ordinals"]["start"].as_i64().unwrap_or(0).max(0);
    let monotonic = set["spec"]["podManagementPolicy"]
        .as_str()
        .unwrap_or("OrderedReady")
        != "Parallel";
    let hash = template_hash(&set["spec"]["template"]);
    let update_revision = ensure_revision(store, set, &hash);

    let pods = owned_pods(store, set);
    let by_ord = |o: i64| pods.iter().find(|p| ordinal(&set_name, name_of(p)) == Some(o));
    let mut condemned: Vec<(i64, &Value)> = pods
        .iter()
        .filter_map(|p| {
            let o = ordinal(&set_name, name_of(p));
            match o {
                Some(o) if o >= start && o < start + replicas => None,
                Some(o) => Some((o, p)),
                None => Some((i64::MAX, p)),
            }
        })
        .collect();
    condemned.sort_by_key(|c| std::cmp::Reverse(c.0));

    let mut all_healthy = true;
    for ord in start..start + replicas {
        match by_ord(ord) {
            None => {
                all_healthy = false;
                if !ensure_claims(store, set, ord) {
                    if monotonic {
                        break;
                    }
                    continue;
                }
                let pod = new_pod(set, ord, &update_revision);
                let pod_name = name_of(&pod).to_string();
                match store.create(&pods_key(), Some(&ns), pod) {
                    Ok(_) => event(
                        store,
                        set,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                        COMPONENT,
                    ),
                    Err(e) if e.code == 409 => {}
                    Err(e) => event(
                        store,
                        set,
                        "Warning",
                        "FailedCreate",
                        &format!(
                            "create Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                            e.message
                        ),
                        COMPONENT,
                    ),
                }
                if monotonic {
                    break;
                }
            }
            Some(pod) => {
                if matches!(pod["status"]["phase"].as_str(), Some("Failed" | "Succeeded"))
                    && !is_terminating(pod)
                {
                    all_healthy = false;
                    delete_pod(store, set, pod);
                    if monotonic {
                        break;
                    }
                    continue;
                }
                if !pod_running_and_ready(pod) {
                    all_healthy = false;
                    if monotonic {
                        break;
                    }
                }
            }
        }
    }

    if all_healthy || !monotonic {
        for (ord, pod) in &condemned {
            if is_terminating(pod) {
                if monotonic {
                    break;
                }
                continue;
            }
            hand_claims_to_pod(store, set, pod, *ord);
            delete_pod(store, set, pod);
            if monotonic {
                break;
            }
        }
    }

    // RollingUpdate: replace outdated pods from the highest ordinal down to the partition, one at
    // a time, once everything else is healthy.
    let rolling = set["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling && all_healthy && condemned.is_empty() {
        let partition = set["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
            .as_i64()
            .unwrap_or(0);
        for ord in (start..start + replicas).rev() {
            if ord < start + partition {
                break;
            }
            if let Some(pod) = by_ord(ord) {
                if pod["metadata"]["labels"]["controller-revision-hash"] != update_revision.as_str() {
                    delete_pod(store, set, pod);
                    break;
                }
            }
        }
    }

    write_status(store, set, &update_revision);
}

fn write_status(store: &Store, set: &Value, update_revision: &str) {
    let pods = owned_pods(store, set);
    let replicas = pods.len();
    let ready = pods.iter().filter(|p| pod_running_and_ready(p)).count();
    let revision_of = |p: &Value| {
        p["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let updated = pods
        .iter()
        .filter(|p| !is_terminating(p) && revision_of(p) == update_revision)
        .count();
    let previous = set["status"]["currentRevision"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let desired = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    // The current revision advances once every desired pod runs the update revision.
    let current_revision = if previous.is_empty() || (updated as i64 == desired && ready as i64 == desired) {
        update_revision.to_string()
    } else {
        previous
    };
    let current = pods
        .iter()
        .filter(|p| !is_terminating(p) && revision_of(p) == current_revision)
        .count();
    let generation = set["metadata"]["generation"].clone();
    let ns = set["metadata"]["namespace"].as_str().unwrap_or("");
    let _ = update_status_with(store, &sets(), Some(ns), name_of(set), Some(uid_of(set)), |s| {
        s["observedGeneration"] = generation.clone();
        s["replicas"] = json!(replicas);
        s["availableReplicas"] = json!(ready);
        s["currentRevision"] = json!(current_revision);
        s["updateRevision"] = json!(update_revision);
        s["collisionCount"] = json!(0);
        for (field, n) in [
            ("readyReplicas", ready),
            ("currentReplicas", current),
            ("updatedReplicas", updated),
        ] {
            if n == 0 {
                if let Value::Object(m) = s {
                    m.remove(field);
                }
            } else {
                s[field] = json!(n);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid"},
            "spec": {"replicas": 2, "serviceName": "web-hs",
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": "img"}],
                                           "volumes": [{"name": "p", "emptyDir": {}}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "p"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
                     "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"}}})
    }

    #[test]
    fn ordinals_parse_only_canonical_numbers() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "webx-1"), None);
        assert_eq!(ordinal("web", "web-"), None);
    }

    #[test]
    fn pods_get_identity_labels_owner_and_claim_volumes() {
        let pod = new_pod(&set(), 1, "web-abc");
        assert_eq!(pod["metadata"]["name"], "web-1");
        assert_eq!(
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            "web-1"
        );
        assert_eq!(pod["metadata"]["labels"]["controller-revision-hash"], "web-abc");
        assert_eq!(pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(pod["spec"]["hostname"], "web-1");
        assert_eq!(pod["spec"]["subdomain"], "web-hs");
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 1);
        assert_eq!(vols[0]["persistentVolumeClaim"]["claimName"], "p-web-1");
    }

    #[test]
    fn claims_carry_selector_labels_and_no_owner_by_default() {
        let s = set();
        let claim = new_claim(&s, &s["spec"]["volumeClaimTemplates"][0], 0);
        assert_eq!(claim["metadata"]["name"], "p-web-0");
        assert_eq!(claim["metadata"]["labels"]["app"], "web");
        assert!(claim["metadata"]["ownerReferences"].is_null());
        let mut deleting = s.clone();
        deleting["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] = json!("Delete");
        let claim = new_claim(&deleting, &deleting["spec"]["volumeClaimTemplates"][0], 0);
        assert_eq!(claim["metadata"]["ownerReferences"][0]["name"], "web");
    }

    #[test]
    fn template_hash_is_stable_and_template_sensitive() {
        let a = template_hash(&set()["spec"]["template"]);
        assert_eq!(a, template_hash(&set()["spec"]["template"]));
        let mut other = set();
        other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2");
        assert_ne!(a, template_hash(&other["spec"]["template"]));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
