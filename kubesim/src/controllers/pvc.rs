//! The persistent-volume controller with a local provisioner (like kind's local-path):
//!
//! * PVCs get the `kubernetes.io/pvc-protection` finalizer; a claim without a class gets the
//!   default StorageClass (annotation `storageclass.kubernetes.io/is-default-class: "true"`).
//! * A claim of an existing class is provisioned — immediately for `Immediate` classes, once a
//!   pod using it is scheduled for `WaitForFirstConsumer` ones (event `WaitForFirstConsumer`
//!   until then; the scheduler's `volume.kubernetes.io/selected-node` annotation names the
//!   node) — as PV `pvc-<claim uid>` (hostPath into the sandbox state dir) and bound
//!   (`Bound` phase on both, `spec.volumeName`, the `pv.kubernetes.io/*` annotations).
//! * An unknown class: `ProvisioningFailed` warning, the claim stays `Pending`.
//! * A deleted claim: its PV is deleted with its data (`Delete` policy) or `Released`
//!   (`Retain`); a terminating claim loses its protection finalizer once no pod uses it.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    event, is_terminating, key_of, name_of, ns_of, pods_key, uid_of, update_status_with, Key, Reconciler,
};
use crate::{
    resources::ResourceKey,
    sandbox::Runtime,
    store::{DeleteOptions, EventKind, Store, WatchEvent},
};

const PROTECTION: &str = "kubernetes.io/pvc-protection";
const PROVISIONER: &str = "kubesim.io/local";

/// Runs the binder until shutdown.
pub async fn run(store: Store, runtime: Runtime, shutdown: CancellationToken) {
    super::run_reconciler(store, shutdown, Binder { runtime }).await;
}

struct Binder {
    runtime: Runtime,
}

fn pvcs() -> ResourceKey {
    ResourceKey::core("persistentvolumeclaims")
}

fn pvs() -> ResourceKey {
    ResourceKey::core("persistentvolumes")
}

fn classes() -> ResourceKey {
    ResourceKey::new("storage.k8s.io", "v1", "storageclasses")
}

fn claims_of_pod(pod: &Value) -> Vec<String> {
    pod["spec"]["volumes"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Marker namespace for keys that name a PV (cluster-scoped) rather than a claim.
const PV_KEY: &str = "\u{0}pv";

impl Reconciler for Binder {
    fn keys_for(&mut self, store: &Store, ev: &WatchEvent) -> Vec<Key> {
        match (ev.gr.group.as_str(), ev.gr.resource.as_str()) {
            ("", "persistentvolumeclaims") => {
                let mut keys = vec![(ev.namespace.clone(), ev.name.clone())];
                if ev.kind == EventKind::Deleted {
                    if let Some(pv) = ev.object["spec"]["volumeName"].as_str() {
                        keys.push((PV_KEY.to_string(), pv.to_string()));
                    }
                }
                keys
            }
            ("", "pods") => {
                let mut keys: Vec<Key> = claims_of_pod(&ev.object)
                    .into_iter()
                    .map(|c| (ev.namespace.clone(), c))
                    .collect();
                if let Some(old) = &ev.old {
                    keys.extend(claims_of_pod(old).into_iter().map(|c| (ev.namespace.clone(), c)));
                }
                keys
            }
            ("storage.k8s.io", "storageclasses") => self.all_keys(store),
            _ => vec![],
        }
    }

    fn all_keys(&mut self, store: &Store) -> Vec<Key> {
        let mut keys: Vec<Key> = store.list(&pvcs(), None).0.iter().map(key_of).collect();
        keys.extend(
            store
                .list(&pvs(), None)
                .0
                .iter()
                .map(|pv| (PV_KEY.to_string(), name_of(pv).to_string())),
        );
        keys
    }

    fn reconcile(&mut self, store: &Store, key: &Key) {
        if key.0 == PV_KEY {
            self.reconcile_pv(store, &key.1);
            return;
        }
        let Some(pvc) = store.get(&pvcs(), Some(&key.0), &key.1) else {
            return;
        };
        if is_terminating(&pvc) {
            self.release_protection(store, &pvc);
            return;
        }
        let Some(pvc) = self.ensure_metadata(store, pvc) else {
            return;
        };
        if pvc["status"]["phase"] == "Bound" {
            return;
        }
        let class_name = pvc["spec"]["storageClassName"].as_str().unwrap_or("").to_string();
        if class_name.is_empty() {
            // No class and no default class: waits for a matching PV (none are pre-created).
            return;
        }
        let Some(class) = store.get(&classes(), None, &class_name) else {
            let msg = format!("storageclass.storage.k8s.io \"{class_name}\" not found");
            self.warn_once(store, &pvc, "ProvisioningFailed", &msg);
            return;
        };
        let mut node = None;
        if class["volumeBindingMode"] == "WaitForFirstConsumer" {
            // The scheduler picks the node (annotation) once a pod using the claim is scheduled.
            match pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].as_str() {
                Some(n) => node = Some(n.to_string()),
                None => {
                    self.note_once(
                        store,
                        &pvc,
                        "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding",
                    );
                    return;
                }
            }
        }
        self.provision(store, &pvc, &class, node.as_deref());
    }
}

impl Binder {
    /// Adds the protection finalizer and the default class; returns the current claim.
    fn ensure_metadata(&self, store: &Store, pvc: Value) -> Option<Value> {
        let mut updated = pvc.clone();
        let finalizers = updated["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == PROTECTION) {
            let mut f = finalizers;
            f.push(json!(PROTECTION));
            updated["metadata"]["finalizers"] = json!(f);
        }
        if updated["spec"]["storageClassName"].is_null() {
            let default = store.list(&classes(), None).0.into_iter().find(|c| {
                c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
            });
            if let Some(class) = default {
                updated["spec"]["storageClassName"] = json!(name_of(&class));
            }
        }
        if updated == pvc {
            return Some(pvc);
        }
        match store.update(&pvcs(), Some(ns_of(&pvc)), updated) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(pvc = %name_of(&pvc), error = %e, "pvc metadata update failed");
                None
            }
        }
    }

    fn provision(&self, store: &Store, pvc: &Value, class: &Value, node: Option<&str>) {
        let ns = ns_of(pvc);
        let name = name_of(pvc);
        let pv_name = format!("pvc-{}", uid_of(pvc));
        let dir = match self.runtime.pvc_dir(ns, name) {
            Ok(d) => d,
            Err(e) => {
                self.warn_once(store, pvc, "ProvisioningFailed", &e.to_string());
                return;
            }
        };
        let storage = pvc["spec"]["resources"]["requests"]["storage"].clone();
        let access_modes = if pvc["spec"]["accessModes"].is_array() {
            pvc["spec"]["accessModes"].clone()
        } else {
            json!(["ReadWriteOnce"])
        };
        let reclaim = class["reclaimPolicy"].as_str().unwrap_or("Delete");
        if store.get(&pvs(), None, &pv_name).is_none() {
            event(
                store,
                pvc,
                "Normal",
                "Provisioning",
                &format!("External provisioner is provisioning volume for claim \"{ns}/{name}\""),
                &format!("{PROVISIONER}_kubesim"),
            );
            let mut pv = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": pv_name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                    "finalizers": ["kubernetes.io/pv-protection"],
                },
                "spec": {
                    "accessModes": access_modes,
                    "capacity": {"storage": storage},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": name,
                                 "namespace": ns, "uid": uid_of(pvc),
                                 "resourceVersion": pvc["metadata"]["resourceVersion"]},
                    "hostPath": {"path": dir.to_string_lossy(), "type": ""},
                    "persistentVolumeReclaimPolicy": reclaim,
                    "storageClassName": name_of(class),
                    "volumeMode": pvc["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
                },
            });
            if let Some(node) = node {
                pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}});
            }
            if let Err(e) = store.create(&pvs(), None, pv) {
                if e.code != 409 {
                    self.warn_once(store, pvc, "ProvisioningFailed", &e.message);
                    return;
                }
            }
            event(
                store,
                pvc,
                "Normal",
                "ProvisioningSucceeded",
                &format!("Successfully provisioned volume {pv_name}"),
                &format!("{PROVISIONER}_kubesim"),
            );
        }
        let _ = update_status_with(store, &pvs(), None, &pv_name, None, |s| {
            s["phase"] = json!("Bound");
        });
        // Bind the claim: spec + annotations, then status.
        let mut claim = pvc.clone();
        claim["spec"]["volumeName"] = json!(pv_name);
        let ann = &mut claim["metadata"]["annotations"];
        if !ann.is_object() {
            *ann = json!({});
        }
        ann["pv.kubernetes.io/bind-completed"] = json!("yes");
        ann["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        ann["volume.beta.kubernetes.io/storage-provisioner"] = json!(PROVISIONER);
        ann["volume.kubernetes.io/storage-provisioner"] = json!(PROVISIONER);
        if let Some(node) = node {
            ann["volume.kubernetes.io/selected-node"] = json!(node);
        }
        if claim != *pvc {
            if let Err(e) = store.update(&pvcs(), Some(ns), claim) {
                tracing::debug!(pvc = %name, error = %e, "binding claim failed");
                return;
            }
        }
        let _ = update_status_with(store, &pvcs(), Some(ns), name, Some(uid_of(pvc)), |s| {
            s["phase"] = json!("Bound");
            s["accessModes"] = access_modes.clone();
            s["capacity"] = json!({"storage": storage});
        });
    }

    fn reconcile_pv(&self, store: &Store, name: &str) {
        let Some(pv) = store.get(&pvs(), None, name) else {
            return;
        };
        let claim = &pv["spec"]["claimRef"];
        let (Some(ns), Some(cname)) = (claim["namespace"].as_str(), claim["name"].as_str()) else {
            return;
        };
        let alive = store
            .get(&pvcs(), Some(ns), cname)
            .is_some_and(|c| uid_of(&c) == claim["uid"].as_str().unwrap_or(""));
        if alive {
            return;
        }
        if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
            if let Err(e) = self.runtime.delete_pvc_data(ns, cname) {
                tracing::warn!(pv = %name, error = %e, "deleting volume data failed");
            }
            let mut cleared = pv.clone();
            cleared["metadata"]["finalizers"] = json!([]);
            let _ = store.update(&pvs(), None, cleared);
            let _ = store.delete(&pvs(), None, name, &DeleteOptions::default());
        } else {
            let _ = update_status_with(store, &pvs(), None, name, None, |s| {
                s["phase"] = json!("Released")
            });
        }
    }

    fn release_protection(&self, store: &Store, pvc: &Value) {
        let ns = ns_of(pvc);
        let in_use = !store
            .list_where(&pods_key(), Some(ns), |p| {
                claims_of_pod(p).iter().any(|c| c == name_of(pvc))
                    && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
            })
            .is_empty();
        if in_use {
            return;
        }
        let finalizers = pvc["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == PROTECTION) {
            return;
        }
        let mut updated = pvc.clone();
        updated["metadata"]["finalizers"] = json!(finalizers
            .into_iter()
            .filter(|f| f != PROTECTION)
            .collect::<Vec<_>>());
        let _ = store.update(&pvcs(), Some(ns), updated);
    }

    /// Records an event unless the last one recorded for the object has the same reason.
    fn note_once(&self, store: &Store, pvc: &Value, reason: &str, message: &str) {
        self.event_once(store, pvc, "Normal", reason, message);
    }

    fn warn_once(&self, store: &Store, pvc: &Value, reason: &str, message: &str) {
        self.event_once(store, pvc, "Warning", reason, message);
    }

    fn event_once(&self, store: &Store, pvc: &Value, type_: &str, reason: &str, message: &str) {
        let seen = !store
            .list_where(&ResourceKey::core("events"), Some(ns_of(pvc)), |e| {
                e["involvedObject"]["uid"] == pvc["metadata"]["uid"]
                    && e["reason"] == reason
                    && e["message"] == message
            })
            .is_empty();
        if !seen {
            event(store, pvc, type_, reason, message, "persistentvolume-controller");
        }
    }
}
