//! Secondary indexes of the store, maintained on every committed change (in `Store::emit`, under
//! the store lock): objects by uid, dependents by owner uid (ownerReferences) and pods by node
//! (`spec.nodeName`). They let the garbage collector and the simulated controllers find the few
//! objects an event concerns without scanning every object.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::{EventKind, WatchEvent};
use crate::resources::GroupResource;

/// Where an object lives: group/resource, namespace (`""` for cluster-scoped), name.
pub type ObjectRef = (GroupResource, String, String);

/// The indexes.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// uid -> object.
    by_uid: HashMap<String, ObjectRef>,
    /// owner uid -> objects with an ownerReference to it.
    dependents: HashMap<String, BTreeSet<ObjectRef>>,
    /// node name -> pods bound to it (`(namespace, name)`).
    pods_by_node: HashMap<String, BTreeSet<(String, String)>>,
}

fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or_default()
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

fn node_of(obj: &Value) -> &str {
    obj["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn is_pods(gr: &GroupResource) -> bool {
    gr.group.is_empty() && gr.resource == "pods"
}

impl Index {
    /// Applies one committed change.
    pub(crate) fn apply(&mut self, ev: &WatchEvent) {
        let r: ObjectRef = (ev.gr.clone(), ev.namespace.clone(), ev.name.clone());
        match (&ev.kind, &ev.old) {
            (EventKind::Deleted, old) => self.remove(&r, old.as_deref().unwrap_or(&ev.object)),
            (_, Some(old)) => {
                self.remove(&r, old);
                self.insert(&r, &ev.object);
            }
            (_, None) => self.insert(&r, &ev.object),
        }
    }

    fn insert(&mut self, r: &ObjectRef, obj: &Value) {
        let u = uid(obj);
        if !u.is_empty() {
            self.by_uid.insert(u.to_string(), r.clone());
        }
        for o in owner_uids(obj) {
            self.dependents
                .entry(o.to_string())
                .or_default()
                .insert(r.clone());
        }
        if is_pods(&r.0) {
            let node = node_of(obj);
            if !node.is_empty() {
                self.pods_by_node
                    .entry(node.to_string())
                    .or_default()
                    .insert((r.1.clone(), r.2.clone()));
            }
        }
    }

    fn remove(&mut self, r: &ObjectRef, obj: &Value) {
        let u = uid(obj);
        if self.by_uid.get(u) == Some(r) {
            self.by_uid.remove(u);
        }
        for o in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(o) {
                set.remove(r);
                if set.is_empty() {
                    self.dependents.remove(o);
                }
            }
        }
        if is_pods(&r.0) {
            let node = node_of(obj);
            if let Some(set) = self.pods_by_node.get_mut(node) {
                set.remove(&(r.1.clone(), r.2.clone()));
                if set.is_empty() {
                    self.pods_by_node.remove(node);
                }
            }
        }
    }

    /// Forgets everything (store wipe).
    pub(crate) fn clear(&mut self) {
        *self = Index::default();
    }

    /// The object with this uid.
    pub(crate) fn by_uid(&self, uid: &str) -> Option<&ObjectRef> {
        self.by_uid.get(uid)
    }

    /// Objects that name `owner_uid` in their ownerReferences.
    pub(crate) fn dependents(&self, owner_uid: &str) -> impl Iterator<Item = &ObjectRef> {
        self.dependents.get(owner_uid).into_iter().flatten()
    }

    /// Pods bound to `node`.
    pub(crate) fn pods_on_node(&self, node: &str) -> impl Iterator<Item = &(String, String)> {
        self.pods_by_node.get(node).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn ev(kind: EventKind, name: &str, obj: Value, old: Option<Value>) -> WatchEvent {
        WatchEvent {
            kind,
            gr: GroupResource::new("", "pods"),
            namespace: "ns".into(),
            name: name.into(),
            rv: 1,
            object: Arc::new(obj),
            old: old.map(Arc::new),
        }
    }

    fn pod(uid: &str, owner: Option<&str>, node: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"uid": uid}, "spec": {}});
        if let Some(o) = owner {
            p["metadata"]["ownerReferences"] = json!([{"uid": o}]);
        }
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    }

    #[test]
    fn index_follows_owner_and_node_changes_and_deletion() {
        let mut ix = Index::default();
        ix.apply(&ev(EventKind::Added, "a", pod("u1", Some("s1"), None), None));
        assert_eq!(ix.dependents("s1").count(), 1);
        assert_eq!(ix.by_uid("u1").map(|r| r.2.as_str()), Some("a"));
        assert_eq!(ix.pods_on_node("n1").count(), 0);

        ix.apply(&ev(
            EventKind::Modified,
            "a",
            pod("u1", Some("s2"), Some("n1")),
            Some(pod("u1", Some("s1"), None)),
        ));
        assert_eq!(ix.dependents("s1").count(), 0);
        assert_eq!(ix.dependents("s2").count(), 1);
        assert_eq!(ix.pods_on_node("n1").count(), 1);

        ix.apply(&ev(
            EventKind::Deleted,
            "a",
            pod("u1", Some("s2"), Some("n1")),
            Some(pod("u1", Some("s2"), Some("n1"))),
        ));
        assert_eq!(ix.dependents("s2").count(), 0);
        assert_eq!(ix.pods_on_node("n1").count(), 0);
        assert!(ix.by_uid("u1").is_none());
    }
}
