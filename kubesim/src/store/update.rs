//! The update path: replacing an object or its status, building the stored object from the old
//! one, the optimistic commit (generation, no-op detection, last-finalizer removal), and pod
//! binding.

use serde_json::{json, Value};
use std::sync::Arc;

use super::create::check_type_meta;
use super::{alloc, check_object, comparable, convert, finalizers, generation_view, meta_mut, meta_str};
use super::{now_rfc3339, object_rv, EventKind, Store, WatchEvent, WriteOptions};
use crate::error::ApiError;
use crate::managed;
use crate::resources::{ResourceInfo, ResourceKey};

impl Store {
    /// Replace an object (internal path). `metadata.resourceVersion`, when set, must match.
    pub fn update(&self, res: &ResourceKey, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        self.update_with(res, ns, obj, &WriteOptions::default())
    }

    /// Replace with options.
    pub fn update_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.update_sub(res, ns, obj, opts, None)
    }

    /// Replace only `.status` (internal path).
    pub fn update_status(&self, res: &ResourceKey, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        self.update_status_with(res, ns, obj, &WriteOptions::default())
    }

    /// Replace only `.status`, with options.
    pub fn update_status_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.update_sub(res, ns, obj, opts, Some("status"))
    }

    fn update_sub(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let info = self.info(res)?;
        if let Some(sr) = sub {
            if !info.has_sub(sr) {
                return Err(ApiError::no_route());
            }
        }
        let name = meta_str(&obj, "name").to_string();
        let old = self.get_current(&info, ns, &name)?;
        let expected = object_rv(&obj);
        let new = self.prepare_update(&info, &old, obj, sub, ns, &name)?;
        self.validate_object(&info, &new, Some(&old))?;
        self.commit_update(&info, new, expected, opts, sub, "Update")
    }

    /// Build the object to store from the old one and the client's new one.
    pub(crate) fn prepare_update(
        &self,
        info: &ResourceInfo,
        old: &Value,
        mut new: Value,
        sub: Option<&str>,
        url_ns: Option<&str>,
        url_name: &str,
    ) -> Result<Value, ApiError> {
        check_object(&new)?;
        if sub != Some("status") {
            check_type_meta(info, &new)?;
        }
        let body_name = meta_str(&new, "name");
        if !body_name.is_empty() && body_name != url_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
        if info.namespaced {
            let body_ns = meta_str(&new, "namespace");
            if !body_ns.is_empty() && Some(body_ns) != url_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        if sub == Some("status") {
            let mut out = old.clone();
            match new.get("status") {
                Some(s) if !s.is_null() => out["status"] = s.clone(),
                _ => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(rv) = new["metadata"].get("resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            if let Some(mf) = new["metadata"].get("managedFields") {
                out["metadata"]["managedFields"] = mf.clone();
            }
            self.inner.hooks.default_object(info, &mut out);
            return Ok(out);
        }
        new["apiVersion"] = json!(info.api_version());
        new["kind"] = json!(info.kind);
        let om = old["metadata"].clone();
        if let Some(meta) = meta_mut(&mut new) {
            meta.insert("name".into(), json!(url_name));
            if info.namespaced {
                meta.insert("namespace".into(), om["namespace"].clone());
            } else {
                meta.remove("namespace");
            }
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(k) {
                    Some(v) => {
                        meta.insert(k.into(), v.clone());
                    }
                    None => {
                        meta.remove(k);
                    }
                }
            }
            meta.remove("selfLink");
            if !meta.contains_key("managedFields") {
                if let Some(v) = om.get("managedFields") {
                    meta.insert("managedFields".into(), v.clone());
                }
            }
        }
        if info.has_status() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        self.inner.hooks.default_object(info, &mut new);
        self.inner.hooks.preserve_on_update(info, old, &mut new);
        if info.converted() {
            new = convert::event_to_core(&new);
        }
        Ok(new)
    }

    /// Persist an update. `expected_rv`: optimistic concurrency precondition.
    pub(crate) fn commit_update(
        &self,
        info: &ResourceInfo,
        mut new: Value,
        expected_rv: Option<u64>,
        opts: &WriteOptions,
        sub: Option<&str>,
        operation: &str,
    ) -> Result<Value, ApiError> {
        let gr = info.group_resource();
        let ns = if info.namespaced {
            meta_str(&new, "namespace").to_string()
        } else {
            String::new()
        };
        let name = meta_str(&new, "name").to_string();
        let mut st = self.lock();
        let Some(old) = st
            .objects
            .get(&gr)
            .and_then(|m| m.get(&(ns.clone(), name.clone())))
            .cloned()
        else {
            return Err(ApiError::not_found(&info.group, &info.resource, &name));
        };
        let old_rv = object_rv(&old).unwrap_or(0);
        if let Some(exp) = expected_rv {
            if exp != old_rv {
                return Err(ApiError::conflict_modified(&info.group, &info.resource, &name));
            }
        }
        if meta_str(&new, "uid") != meta_str(&old, "uid") && !meta_str(&new, "uid").is_empty() {
            return Err(ApiError::conflict(
                &info.group,
                &info.resource,
                &name,
                "Precondition failed: UID in precondition does not match",
            ));
        }
        let now = now_rfc3339();
        managed::record_update(info, Some(&old), &mut new, opts.manager(), operation, sub, &now);
        new["metadata"]["resourceVersion"] = json!(old_rv.to_string());
        if info.has_generation {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let changed =
                generation_view(&old, info.has_status()) != generation_view(&new, info.has_status());
            new["metadata"]["generation"] = json!(if changed { g + 1 } else { g });
        }
        let old_versioned = Self::to_version(info, &old);
        let unchanged = if info.converted() {
            comparable(&old) == comparable(&new)
        } else {
            comparable(&old_versioned) == comparable(&new)
        };
        if unchanged {
            // No-op: no new resourceVersion, no event.
            return Ok(old_versioned);
        }
        if opts.dry_run {
            return Ok(new);
        }
        // Removing the last finalizer of an object being deleted deletes it.
        let remove_now = new["metadata"]["deletionTimestamp"].is_string()
            && finalizers(&new).is_empty()
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        st.rv += 1;
        let rv = st.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(new);
        if remove_now {
            if let Some(m) = st.objects.get_mut(&gr) {
                m.remove(&(ns.clone(), name.clone()));
            }
            alloc::release(info, &old, &mut st.alloc);
            self.emit(
                &mut st,
                WatchEvent {
                    kind: EventKind::Deleted,
                    gr,
                    namespace: ns,
                    name,
                    rv,
                    object: arc.clone(),
                    old: Some(old.clone()),
                },
            );
            drop(st);
            self.after_write(info, None, Some(&old));
        } else {
            st.objects
                .entry(gr.clone())
                .or_default()
                .insert((ns.clone(), name.clone()), arc.clone());
            self.emit(
                &mut st,
                WatchEvent {
                    kind: EventKind::Modified,
                    gr,
                    namespace: ns,
                    name,
                    rv,
                    object: arc.clone(),
                    old: Some(old.clone()),
                },
            );
            drop(st);
            self.after_write(info, Some(&arc), Some(&old));
        }
        Ok(Self::to_version(info, &arc))
    }
}

impl Store {
    /// Bind a pod to a node (what `pods/binding` does; the scheduler's way to set
    /// `spec.nodeName`, which a plain update may not change). 409 if already bound elsewhere.
    pub fn bind_pod(&self, ns: &str, name: &str, node: &str) -> Result<Value, ApiError> {
        let key = ResourceKey::core("pods");
        let info = self.info(&key)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cur = self.get_current(&info, Some(ns), name)?;
            let bound = cur["spec"]["nodeName"].as_str().unwrap_or_default();
            if !bound.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{bound}\""),
                ));
            }
            if cur["metadata"]["deletionTimestamp"].is_string() {
                return Err(ApiError::conflict("", "pods", name, "pod is being deleted"));
            }
            let mut new = cur.clone();
            crate::util::set_path(&mut new, &["spec", "nodeName"], json!(node));
            let conds = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != json!("PodScheduled"))
                .collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
            crate::util::set_path(&mut new, &["status", "conditions"], json!(conds));
            let opts = WriteOptions {
                field_manager: Some("kube-scheduler".into()),
                dry_run: false,
            };
            match self.commit_update(&info, new, object_rv(&cur), &opts, Some("binding"), "Update") {
                Err(e) if e.code == 409 && attempts < 5 => continue,
                r => return r,
            }
        }
    }
}
