//! Which cached objects belong to which kdcluster, kept beside a reflector store.
//!
//! Written by the WatcherActor's [`crate::caches::ScopedWriter`] as it applies each watch event
//! (so an object is indexed before the event that mentions it is routed); read by every
//! ClusterActor pass through [`crate::caches::Indexed::owned`]. Without it a pass filtered every
//! cached pod, Service, StatefulSet and PVC of every kdcluster: O(all objects) per pass, which at
//! 1,000 kdclusters was the operator's largest cost (issue 13). With it a pass reads only its own
//! objects.
//!
//! Ownership is [`crate::caches::belongs_to`]'s: any owner reference with the kdcluster's uid, or
//! the [`LABEL_CLUSTER`] label naming it in the same namespace. The index only narrows the
//! candidates; the reader re-checks each object it gets from the store, so a reader racing the
//! writer never sees a foreign object.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, PoisonError, RwLock},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubedirector_crds::wire::LABEL_CLUSTER;

/// One way an object can belong to a kdcluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Owner {
    /// An owner reference with this uid.
    Uid(String),
    /// The cluster label naming this kdcluster, in this namespace.
    Label { namespace: String, name: String },
}

/// An object's place in its store: namespace and name.
type Place = (String, String);

#[derive(Default)]
struct Inner {
    objects: HashMap<Owner, BTreeSet<Place>>,
    owners: HashMap<Place, Vec<Owner>>,
}

/// A shared index from kdcluster to the names of the objects that belong to it.
#[derive(Clone, Default)]
pub struct OwnerIndex(Arc<RwLock<Inner>>);

fn owners(meta: &ObjectMeta) -> Vec<Owner> {
    let mut out: Vec<Owner> = meta
        .owner_references
        .iter()
        .flatten()
        .map(|o| Owner::Uid(o.uid.clone()))
        .collect();
    if let (Some(ns), Some(name)) = (
        &meta.namespace,
        meta.labels.as_ref().and_then(|l| l.get(LABEL_CLUSTER)),
    ) {
        out.push(Owner::Label {
            namespace: ns.clone(),
            name: name.clone(),
        });
    }
    out.dedup();
    out
}

fn place(meta: &ObjectMeta) -> Option<Place> {
    Some((meta.namespace.clone().unwrap_or_default(), meta.name.clone()?))
}

impl Inner {
    fn forget(&mut self, at: &Place) {
        for owner in self.owners.remove(at).unwrap_or_default() {
            if let Some(set) = self.objects.get_mut(&owner) {
                set.remove(at);
                if set.is_empty() {
                    self.objects.remove(&owner);
                }
            }
        }
    }
}

impl OwnerIndex {
    /// Records the object `meta` as added or modified: its owners replace the ones it had.
    pub fn put(&self, meta: &ObjectMeta) {
        let Some(at) = place(meta) else { return };
        let owners = owners(meta);
        let mut inner = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if inner.owners.get(&at) == Some(&owners) {
            return;
        }
        inner.forget(&at);
        if owners.is_empty() {
            return;
        }
        for owner in &owners {
            inner.objects.entry(owner.clone()).or_default().insert(at.clone());
        }
        inner.owners.insert(at, owners);
    }

    /// Forgets the deleted object `meta`.
    pub fn remove(&self, meta: &ObjectMeta) {
        let Some(at) = place(meta) else { return };
        self.0.write().unwrap_or_else(PoisonError::into_inner).forget(&at);
    }

    /// The names of the objects in `namespace` owned by uid `uid` or labelled with the cluster
    /// `name`: a superset of those [`crate::caches::belongs_to`] accepts.
    pub fn candidates(&self, namespace: &str, name: &str, uid: &str) -> BTreeSet<String> {
        let inner = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let by_uid = inner.objects.get(&Owner::Uid(uid.to_string()));
        let by_label = inner.objects.get(&Owner::Label {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
        by_uid
            .into_iter()
            .chain(by_label)
            .flatten()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// How many objects are indexed (for tests and debugging).
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).owners.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn meta(ns: &str, name: &str, label: Option<&str>, owner_uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: label.map(|l| [(LABEL_CLUSTER.to_string(), l.to_string())].into()),
            owner_references: owner_uid.map(|u| {
                vec![OwnerReference {
                    kind: "KubeDirectorCluster".into(),
                    uid: u.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn objects_are_found_by_owner_uid_or_by_cluster_label_in_the_namespace() {
        let idx = OwnerIndex::default();
        idx.put(&meta("ns", "by-uid", None, Some("u1")));
        idx.put(&meta("ns", "by-label", Some("c1"), None));
        idx.put(&meta("other", "label-elsewhere", Some("c1"), None));
        idx.put(&meta("ns", "someone-else", Some("c2"), Some("u2")));
        idx.put(&meta("ns", "unowned", None, None));
        assert_eq!(idx.candidates("ns", "c1", "u1"), names(&["by-label", "by-uid"]));
        assert_eq!(idx.candidates("other", "c1", "u9"), names(&["label-elsewhere"]));
        assert_eq!(idx.candidates("ns", "c2", "u2"), names(&["someone-else"]));
        assert_eq!(idx.len(), 4, "an object without owner or label is not indexed");
    }

    #[test]
    fn a_relabelled_object_moves_and_a_deleted_one_is_forgotten() {
        let idx = OwnerIndex::default();
        idx.put(&meta("ns", "pod", Some("c1"), None));
        idx.put(&meta("ns", "pod", Some("c2"), None));
        assert!(idx.candidates("ns", "c1", "u1").is_empty());
        assert_eq!(idx.candidates("ns", "c2", "u2"), names(&["pod"]));
        idx.put(&meta("ns", "pod", None, None));
        assert!(idx.candidates("ns", "c2", "u2").is_empty());
        assert!(idx.is_empty());
        idx.put(&meta("ns", "svc", Some("c1"), Some("u1")));
        idx.remove(&meta("ns", "svc", None, None));
        assert!(idx.candidates("ns", "c1", "u1").is_empty());
        assert!(
            idx.0.read().unwrap().objects.is_empty(),
            "no empty sets are left behind"
        );
    }
}
