//! The garbage collector, namespace controller and CRD cleanup controller (the parts of
//! kube-controller-manager / apiextensions-apiserver that act on deletion), plus a fallback reaper
//! for gracefully deleted pods whose grace period expired.
//!
//! Driven by the store's changes: each event marks the few objects it concerns (the object
//! itself, its dependents and owners through the store's owner index, its namespace or CRD when
//! those are being deleted) and only those are looked at. A full pass runs at start and after
//! falling behind the event stream; the pod reaper wakes at the next grace-period expiry. Nothing
//! runs while nothing changes.

use super::{DeleteOptions, EventKind, ObjectRef, Propagation, Store, WatchEvent};
use crate::resources::{GroupResource, ResourceKey};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

/// The finalizer the real server puts on CRDs: the CRD cleanup controller deletes the CRD's
/// objects, then removes it.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// What the next pass looks at.
#[derive(Default)]
struct Work {
    /// Everything (start, lag).
    full: bool,
    /// These objects.
    dirty: BTreeSet<ObjectRef>,
}

/// Run until `shutdown` fires.
pub async fn run(store: Store, shutdown: CancellationToken) {
    let mut rx = store.subscribe();
    let mut work = Work {
        full: true,
        ..Work::default()
    };
    // Gracefully deleted pods, by the time their grace period ends.
    let mut reap: BTreeMap<chrono::DateTime<chrono::Utc>, BTreeSet<ObjectRef>> = BTreeMap::new();
    loop {
        if work.full || !work.dirty.is_empty() {
            let due = if work.full {
                sweep(&store)
            } else {
                sweep_refs(&store, std::mem::take(&mut work.dirty))
            };
            work = Work::default();
            for (at, r) in due {
                reap.entry(at).or_default().insert(r);
            }
        }
        let next_reap = reap.keys().next().map(|at| {
            let wait = (*at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
            // deletionTimestamp has second precision: look just after it.
            tokio::time::Instant::now() + wait + Duration::from_millis(50)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.recv() => match r {
                Ok(ev) => mark(&store, &ev, &mut work),
                Err(RecvError::Lagged(_)) => {
                    store.note_lag();
                    work.full = true;
                }
                Err(RecvError::Closed) => return,
            },
            () = sleep_until_opt(next_reap) => {
                let now = chrono::Utc::now();
                while let Some(entry) = reap.first_entry() {
                    if *entry.key() > now {
                        break;
                    }
                    work.dirty.extend(entry.remove());
                }
            }
        }
        // Take the rest of a burst in the same pass (a short debounce, as before).
        if work.full || !work.dirty.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            match rx.try_recv() {
                Ok(ev) => mark(&store, &ev, &mut work),
                Err(TryRecvError::Lagged(_)) => {
                    store.note_lag();
                    work.full = true;
                }
                Err(_) => break,
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn owner_uids(o: &Value) -> impl Iterator<Item = &str> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

/// Marks what an event concerns.
fn mark(store: &Store, ev: &WatchEvent, work: &mut Work) {
    if work.full {
        return;
    }
    let me: ObjectRef = (ev.gr.clone(), ev.namespace.clone(), ev.name.clone());
    let obj = &ev.object;
    let refs_changed = ev
        .old
        .as_ref()
        .is_none_or(|o| o["metadata"]["ownerReferences"] != obj["metadata"]["ownerReferences"]);
    match ev.kind {
        EventKind::Deleted => {
            // Dependents may now dangle.
            work.dirty.extend(store.dependents_of(uid(obj)));
            // A foreground-deleting owner may be unblocked.
            for o in owner_uids(obj) {
                work.dirty.extend(store.locate_uid(o));
            }
            // A terminating namespace or CRD may now be empty.
            if !ev.namespace.is_empty() {
                let ns = store
                    .lock()
                    .objects
                    .get(&GroupResource::new("", "namespaces"))
                    .and_then(|m| m.get(&(String::new(), ev.namespace.clone())).map(|n| deleting(n)));
                if ns == Some(true) {
                    work.dirty.insert((
                        GroupResource::new("", "namespaces"),
                        String::new(),
                        ev.namespace.clone(),
                    ));
                }
            }
            let crd = (
                GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions"),
                String::new(),
                format!("{}.{}", ev.gr.resource, ev.gr.group),
            );
            if !ev.gr.group.is_empty() && store.get_arc(&crd.0, "", &crd.2).is_some_and(|c| deleting(&c)) {
                work.dirty.insert(crd);
            }
        }
        EventKind::Added | EventKind::Modified => {
            if deleting(obj) {
                work.dirty.insert(me.clone());
            }
            if refs_changed {
                if obj["metadata"]["ownerReferences"].is_array() {
                    work.dirty.insert(me);
                }
                // Owners it no longer (or newly) names: their blocking count changed.
                for o in owner_uids(obj).chain(ev.old.iter().flat_map(|o| owner_uids(o))) {
                    work.dirty.extend(store.locate_uid(o));
                }
            }
        }
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

fn item(store: &Store, r: ObjectRef) -> Option<Item> {
    let obj = store.get_arc(&r.0, &r.1, &r.2)?;
    Some(Item {
        gr: r.0,
        ns: r.1,
        name: r.2,
        obj,
    })
}

/// The objects with an ownerReference to `owner_uid`.
fn dependents(store: &Store, owner_uid: &str) -> Vec<Item> {
    store
        .dependents_of(owner_uid)
        .into_iter()
        .filter_map(|r| item(store, r))
        .collect()
}

/// Everything in a namespace (but namespaces).
fn namespace_content(store: &Store, ns: &str) -> Vec<Item> {
    let grs: Vec<GroupResource> = store.lock().objects.keys().cloned().collect();
    grs.into_iter()
        .filter(|gr| !(gr.group.is_empty() && gr.resource == "namespaces"))
        .flat_map(|gr| {
            let (objs, _) = store.list_arcs(&gr, Some(ns));
            objs.into_iter().map(move |obj| Item {
                gr: gr.clone(),
                ns: ns.to_string(),
                name: obj["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                obj,
            })
        })
        .collect()
}

/// One full pass over every object. Returns the gracefully deleted pods to look at again when
/// their grace period ends.
pub fn sweep(store: &Store) -> Vec<(chrono::DateTime<chrono::Utc>, ObjectRef)> {
    let all: BTreeSet<ObjectRef> = {
        let st = store.lock();
        st.objects
            .iter()
            .flat_map(|(gr, m)| {
                m.keys()
                    .map(move |(ns, name)| (gr.clone(), ns.clone(), name.clone()))
            })
            .collect()
    };
    sweep_refs(store, all)
}

/// A pass over some objects (see [`sweep`]).
fn sweep_refs(store: &Store, refs: BTreeSet<ObjectRef>) -> Vec<(chrono::DateTime<chrono::Utc>, ObjectRef)> {
    let items: Vec<Item> = refs.into_iter().filter_map(|r| item(store, r)).collect();
    let mut due = Vec::new();
    let ns_gr = GroupResource::new("", "namespaces");
    let crd_gr = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let now = chrono::Utc::now();
    let mut done: HashSet<(GroupResource, String, String)> = HashSet::new();

    for it in items.iter().filter(|i| deleting(&i.obj)) {
        // Namespace controller.
        if it.gr == ns_gr {
            let content = namespace_content(store, &it.name);
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
        if it.gr == crd_gr && has_finalizer(&it.obj, CRD_CLEANUP_FINALIZER) {
            let group = it.obj["spec"]["group"].as_str().unwrap_or_default();
            let plural = it.obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let gr = GroupResource::new(group, plural);
            let (instances, _) = store.list_arcs(&gr, None);
            for obj in &instances {
                if !deleting(obj) {
                    let c = Item {
                        gr: gr.clone(),
                        ns: obj["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        name: obj["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        obj: obj.clone(),
                    };
                    delete(store, &c, Propagation::Background);
                }
            }
            if instances.is_empty() {
                remove_finalizer(store, it, CRD_CLEANUP_FINALIZER);
            }
            continue;
        }
        let owner_uid = uid(&it.obj);
        let dependents = dependents(store, owner_uid);
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
                    let has_own_deps = !store.dependents_of(uid(&d.obj)).is_empty();
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
            match it.obj["metadata"]["deletionTimestamp"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            {
                _ if expired => {
                    store.force_remove(&it.gr, &it.ns, &it.name);
                }
                Some(at) => due.push((
                    at.with_timezone(&chrono::Utc),
                    (it.gr.clone(), it.ns.clone(), it.name.clone()),
                )),
                None => {}
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
            match store.locate_uid(u).and_then(|r| item(store, r)) {
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
    due
}
