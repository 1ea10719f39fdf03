//! Reads: single objects, lists (whole or one namespace, filtered before copying), owner and
//! node lookups through the index, and the cost counter of what reads looked at.

use serde_json::Value;
use std::sync::Arc;

use super::{ObjectRef, Store};
use crate::error::ApiError;
use crate::resources::{GroupResource, ResourceInfo, ResourceKey};

impl Store {
    /// Get one object.
    pub fn get(&self, res: &ResourceKey, ns: Option<&str>, name: &str) -> Option<Value> {
        let info = self.registry().get(res)?;
        let arc = self.get_arc(&info.group_resource(), &Self::ns_key(&info, ns), name)?;
        Some(Self::to_version(&info, &arc))
    }

    /// Get one object or a NotFound error.
    pub fn get_or_404(&self, res: &ResourceKey, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let info = self.info(res)?;
        self.get(res, ns, name)
            .ok_or_else(|| ApiError::not_found(&info.group, &info.resource, name))
    }

    pub(crate) fn get_arc(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.visit(1);
        self.lock()
            .objects
            .get(gr)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// List objects (all namespaces when `ns` is None); returns the list resourceVersion.
    pub fn list(&self, res: &ResourceKey, ns: Option<&str>) -> (Vec<Value>, u64) {
        let Some(info) = self.registry().get(res) else {
            return (Vec::new(), self.current_rv());
        };
        // Copy the (shared) pointers under the lock, convert outside it.
        let ns = if info.namespaced { ns } else { None };
        let (arcs, rv) = self.list_arcs(&info.group_resource(), ns);
        (arcs.iter().map(|o| Self::to_version(&info, o)).collect(), rv)
    }

    /// Like [`Store::list`], but only the objects `keep` accepts are converted (copied): the
    /// controllers use it to pick a few objects out of a namespace without copying all of it.
    /// `keep` sees the stored form, which for the core and apps kinds is the served form.
    pub fn list_where(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let Some(info) = self.registry().get(res) else {
            return Vec::new();
        };
        let ns = if info.namespaced { ns } else { None };
        let (arcs, _) = self.list_arcs(&info.group_resource(), ns);
        arcs.iter()
            .filter(|o| keep(o))
            .map(|o| Self::to_version(&info, o))
            .collect()
    }

    /// Raw (shared) objects of a group/resource at the current rv, optionally one namespace.
    pub(crate) fn list_arcs(&self, gr: &GroupResource, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let st = self.lock();
        let items: Vec<Arc<Value>> = st
            .objects
            .get(gr)
            .map(|m| match ns {
                None => m.values().cloned().collect(),
                // Keys are (namespace, name): one namespace is one contiguous range.
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, o)| o.clone())
                    .collect(),
            })
            .unwrap_or_default();
        let rv = st.rv;
        drop(st);
        self.visit(items.len());
        (items, rv)
    }

    pub(super) fn visit(&self, n: usize) {
        self.inner
            .visited
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many stored objects reads have looked at so far (gets, lists, including the ones a
    /// `list_where` filter rejects, dependents): a cost counter for tests that check that the
    /// simulated controllers do not scan every object per event.
    pub fn objects_visited(&self) -> u64 {
        self.inner.visited.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Objects of `res` that have an ownerReference to `owner_uid` (found through the store's
    /// owner index, without looking at other objects).
    pub fn list_dependents(&self, res: &ResourceKey, owner_uid: &str) -> Vec<Value> {
        let Some(info) = self.registry().get(res) else {
            return Vec::new();
        };
        let gr = info.group_resource();
        let arcs: Vec<Arc<Value>> = {
            let st = self.lock();
            let objs = st.objects.get(&gr);
            st.index
                .dependents(owner_uid)
                .filter(|(g, _, _)| *g == gr)
                .filter_map(|(_, ns, name)| objs?.get(&(ns.clone(), name.clone())).cloned())
                .collect()
        };
        self.visit(arcs.len());
        arcs.iter().map(|o| Self::to_version(&info, o)).collect()
    }

    /// Where the object with this uid is, if it exists.
    pub fn locate_uid(&self, uid: &str) -> Option<ObjectRef> {
        self.lock().index.by_uid(uid).cloned()
    }

    /// Every object with an ownerReference to `owner_uid`.
    pub fn dependents_of(&self, owner_uid: &str) -> Vec<ObjectRef> {
        self.lock().index.dependents(owner_uid).cloned().collect()
    }

    /// `(namespace, name)` of the pods bound to `node` (`spec.nodeName`).
    pub fn pods_on_node(&self, node: &str) -> Vec<(String, String)> {
        self.lock().index.pods_on_node(node).cloned().collect()
    }

    /// The current stored object or 404.
    pub(crate) fn get_current(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_arc(&info.group_resource(), &Self::ns_key(info, ns), name)
            .map(|a| Self::to_version(info, &a))
            .ok_or_else(|| ApiError::not_found(&info.group, &info.resource, name))
    }
}
