//! The garbage collector, namespace controller and CRD cleanup controller (the parts of
//! kube-controller-manager / apiextensions-apiserver that act on deletion), plus a fallback reaper
//! for gracefully deleted pods whose grace period expired.
//!
//! It sweeps the whole store after every deletion-related change (debounced) and once a second.

use super::{DeleteOptions, Propagation, Store};
use crate::resources::{GroupResource, ResourceKey};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Run until `shutdown` fires.
pub async fn run(store: Store, shutdown: CancellationToken) {
    let mut rx = store.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = store.inner.gc_wake.notified() => {}
            r = rx.recv() => match r {
                Ok(ev) => {
                    let refs = &ev.object["metadata"]["ownerReferences"];
                    let relevant = match ev.kind {
                        super::EventKind::Deleted => true,
                        super::EventKind::Added => refs.is_array(),
                        super::EventKind::Modified => {
                            ev.object["metadata"]["deletionTimestamp"].is_string()
                                || ev.old.as_ref().is_some_and(|o| &o["metadata"]["ownerReferences"] != refs)
                        }
                    };
                    if !relevant { continue; }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Debounce bursts.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(_ev) = rx.try_recv() {}
        sweep(&store);
    }
}

struct Item {
    gr: GroupResource,
    ns: String,
    name: String,
    obj: Arc<Value>,
}

fn deleting(o: &Value) -> bool {
    o["metadata"]["deletionTimestamp"].is_string()
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    o["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == f))
}

fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or_default()
}

fn key_of(store: &Store, gr: &GroupResource) -> Option<ResourceKey> {
    store.registry().get_gr(gr).map(|i| i.key())
}

fn ns_opt(ns: &str) -> Option<&str> {
    if ns.is_empty() {
        None
    } else {
        Some(ns)
    }
}

/// Edit an object with a closure and write it back (conflicts are retried by the next sweep).
fn edit(store: &Store, it: &Item, f: impl FnOnce(&mut Value)) {
    let Some(key) = key_of(store, &it.gr) else { return };
    let Some(mut cur) = store.get(&key, ns_opt(&it.ns), &it.name) else {
        return;
    };
    f(&mut cur);
    let opts = super::WriteOptions {
        field_manager: Some("kube-controller-manager".into()),
        dry_run: false,
    };
    if let Err(e) = store.update_with(&key, ns_opt(&it.ns), cur, &opts) {
        tracing::debug!(error = %e, name = %it.name, "gc edit");
    }
}

fn remove_finalizer(store: &Store, it: &Item, fin: &str) {
    edit(store, it, |o| {
        if let Some(a) = o["metadata"]["finalizers"].as_array_mut() {
            a.retain(|x| x != fin);
        }
    });
}

fn delete(store: &Store, it: &Item, prop: Propagation) {
    let Some(info) = store.registry().get_gr(&it.gr) else {
        return;
    };
    let opts = DeleteOptions {
        propagation: Some(prop),
        ..Default::default()
    };
    if let Err(e) = store.delete_info(&info, ns_opt(&it.ns), &it.name, &opts) {
        if e.code != 404 {
            tracing::debug!(error = %e, name = %it.name, "gc delete");
        }
    }
}

/// One full pass.
pub fn sweep(store: &Store) {
    let items: Vec<Item> = {
        let st = store.lock();
        st.objects
            .iter()
            .flat_map(|(gr, m)| {
                m.iter().map(move |((ns, name), o)| Item {
                    gr: gr.clone(),
                    ns: ns.clone(),
                    name: name.clone(),
                    obj: o.clone(),
                })
            })
            .collect()
    };
    let by_uid: HashMap<&str, &Item> = items.iter().map(|i| (uid(&i.obj), i)).collect();
    // dependents index: owner uid -> dependents
    let mut deps: HashMap<&str, Vec<&Item>> = HashMap::new();
    for it in &items {
        if let Some(refs) = it.obj["metadata"]["ownerReferences"].as_array() {
            for r in refs {
                if let Some(u) = r["uid"].as_str() {
                    deps.entry(u).or_default().push(it);
                }
            }
        }
    }
    let ns_gr = GroupResource::new("", "namespaces");
    let crd_gr = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let now = chrono::Utc::now();
    let mut done: HashSet<(GroupResource, String, String)> = HashSet::new();

    for it in items.iter().filter(|i| deleting(&i.obj)) {
        // Namespace controller.
        if it.gr == ns_gr {
            let content: Vec<&Item> = items
                .iter()
                .filter(|o| o.ns == it.name && o.gr != ns_gr)
                .collect();
            for c in &content {
                if !deleting(&c.obj) {
                    delete(store, c, Propagation::Background);
                }
            }
            if content.is_empty() {
                // The namespace controller finalizes (spec.finalizers); other finalizers still hold.
                if it.obj["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
                {
                    store.force_remove(&ns_gr, "", &it.name);
                } else if it.obj["spec"]["finalizers"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                {
                    edit(store, it, |o| {
                        crate::util::set_path(o, &["spec", "finalizers"], json!([]));
                    });
                }
            }
            continue;
        }
        // CRD cleanup.
        if it.gr == crd_gr && has_finalizer(&it.obj, crate::crd::CLEANUP_FINALIZER) {
            let group = it.obj["spec"]["group"].as_str().unwrap_or_default();
            let plural = it.obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let gr = GroupResource::new(group, plural);
            let instances: Vec<&Item> = items.iter().filter(|o| o.gr == gr).collect();
            for c in &instances {
                if !deleting(&c.obj) {
                    delete(store, c, Propagation::Background);
                }
            }
            if instances.is_empty() {
                remove_finalizer(store, it, crate::crd::CLEANUP_FINALIZER);
            }
            continue;
        }
        let owner_uid = uid(&it.obj);
        let dependents = deps.get(owner_uid).cloned().unwrap_or_default();
        if has_finalizer(&it.obj, "orphan") {
            for d in &dependents {
                edit(store, d, |o| {
                    if let Some(a) = o["metadata"]["ownerReferences"].as_array_mut() {
                        a.retain(|r| r["uid"].as_str() != Some(owner_uid));
                    }
                    if o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(Vec::is_empty)
                    {
                        if let Some(m) = o["metadata"].as_object_mut() {
                            m.remove("ownerReferences");
                        }
                    }
                });
                done.insert((d.gr.clone(), d.ns.clone(), d.name.clone()));
            }
            remove_finalizer(store, it, "orphan");
            continue;
        }
        if has_finalizer(&it.obj, "foregroundDeletion") {
            let mut blocking = 0;
            for d in &dependents {
                let blocks = d.obj["metadata"]["ownerReferences"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["uid"].as_str() == Some(owner_uid)))
                    .is_some_and(|r| r["blockOwnerDeletion"] == json!(true));
                if blocks {
                    blocking += 1;
                }
                if !deleting(&d.obj) && done.insert((d.gr.clone(), d.ns.clone(), d.name.clone())) {
                    let has_own_deps = deps.contains_key(uid(&d.obj));
                    let prop = if blocks && has_own_deps {
                        Propagation::Foreground
                    } else {
                        Propagation::Background
                    };
                    delete(store, d, prop);
                }
            }
            if blocking == 0 {
                remove_finalizer(store, it, "foregroundDeletion");
            }
            continue;
        }
        // Fallback reaper for gracefully deleted pods.
        if it.gr == GroupResource::new("", "pods")
            && it.obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            let expired = it.obj["metadata"]["deletionTimestamp"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|t| t.with_timezone(&chrono::Utc) <= now);
            if expired {
                store.force_remove(&it.gr, &it.ns, &it.name);
            }
        }
    }

    // Dependents whose owners are gone.
    for it in &items {
        if deleting(&it.obj) || done.contains(&(it.gr.clone(), it.ns.clone(), it.name.clone())) {
            continue;
        }
        let Some(refs) = it.obj["metadata"]["ownerReferences"].as_array() else {
            continue;
        };
        if refs.is_empty() {
            continue;
        }
        let mut solid = 0;
        let mut dangling = Vec::new();
        let mut waiting = false;
        for r in refs {
            let u = r["uid"].as_str().unwrap_or_default();
            match by_uid.get(u) {
                Some(owner) => {
                    if deleting(&owner.obj) && has_finalizer(&owner.obj, "foregroundDeletion") {
                        waiting = true;
                    } else {
                        solid += 1;
                    }
                }
                None => dangling.push(u.to_string()),
            }
        }
        if solid == 0 && !waiting {
            delete(store, it, Propagation::Background);
        } else if solid > 0 && !dangling.is_empty() {
            edit(store, it, |o| {
                if let Some(a) = o["metadata"]["ownerReferences"].as_array_mut() {
                    a.retain(|r| !dangling.iter().any(|d| r["uid"].as_str() == Some(d.as_str())));
                }
            });
        }
    }
}
