//! The delete path: preconditions, propagation finalizers, graceful pod deletion, namespace
//! termination, and the forced removal the namespace controller and GC use.

use serde_json::{json, Value};
use std::sync::Arc;

use super::{
    alloc, comparable, finalizers, meta_mut, meta_str, DeleteOptions, EventKind, Propagation, Store,
    WatchEvent,
};
use crate::error::ApiError;
use crate::resources::{GroupResource, ResourceInfo, ResourceKey};

impl Store {
    /// Delete an object. `Ok(Some(obj))` when it still exists afterwards (finalizers, graceful
    /// pod deletion, foreground/orphan propagation), `Ok(None)` when it is gone.
    pub fn delete(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Option<Value>, ApiError> {
        let info = self.info(res)?;
        self.delete_info(&info, ns, name, opts)
            .map(|(o, gone)| if gone { None } else { Some(o) })
    }

    /// Delete; returns (object, deleted-now).
    pub(crate) fn delete_info(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let gr = info.group_resource();
        let nsk = Self::ns_key(info, ns);
        let mut st = self.lock();
        let Some(old) = st
            .objects
            .get(&gr)
            .and_then(|m| m.get(&(nsk.clone(), name.to_string())))
            .cloned()
        else {
            return Err(ApiError::not_found(&info.group, &info.resource, name));
        };
        if let Some(uid) = &opts.precondition_uid {
            if meta_str(&old, "uid") != uid {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        uid,
                        meta_str(&old, "uid")
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if meta_str(&old, "resourceVersion") != rv {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.resource,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                        rv,
                        meta_str(&old, "resourceVersion")
                    ),
                ));
            }
        }
        let mut new = (*old).clone();
        let mut fins = finalizers(&new);
        let being_deleted = new["metadata"]["deletionTimestamp"].is_string();
        match opts.propagation {
            Some(Propagation::Foreground) if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.retain(|f| f != "orphan");
                fins.push("foregroundDeletion".into());
            }
            Some(Propagation::Orphan) if !fins.iter().any(|f| f == "orphan") => {
                fins.retain(|f| f != "foregroundDeletion");
                fins.push("orphan".into());
            }
            _ => {}
        }
        // Namespaces are finalized by the namespace controller.
        let is_ns = info.group.is_empty() && info.resource == "namespaces";
        let graceful = graceful_seconds(info, &old, opts);
        if fins.is_empty() && !is_ns && graceful.is_none() {
            if opts.dry_run {
                return Ok((Self::to_version(info, &old), true));
            }
            st.rv += 1;
            let rv = st.rv;
            if let Some(m) = st.objects.get_mut(&gr) {
                m.remove(&(nsk.clone(), name.to_string()));
            }
            alloc::release(info, &old, &mut st.alloc);
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            let arc = Arc::new(new);
            self.emit(
                &mut st,
                WatchEvent {
                    kind: EventKind::Deleted,
                    gr,
                    namespace: nsk,
                    name: name.to_string(),
                    rv,
                    object: arc.clone(),
                    old: Some(old.clone()),
                },
            );
            drop(st);
            self.after_write(info, None, Some(&old));
            return Ok((Self::to_version(info, &arc), true));
        }
        // Graceful: set deletionTimestamp (once) and finalizers.
        if let Some(meta) = meta_mut(&mut new) {
            if !fins.is_empty() {
                meta.insert("finalizers".into(), json!(fins));
            }
            if !being_deleted {
                let secs = graceful.unwrap_or(0);
                let ts = chrono::Utc::now() + chrono::Duration::seconds(secs);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(secs));
                if info.has_generation {
                    let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
                    meta.insert("generation".into(), json!(g + 1));
                }
            } else if let Some(secs) = graceful {
                // A shorter grace period may be requested later (e.g. force delete).
                let cur = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX);
                if secs < cur {
                    let ts = chrono::Utc::now() + chrono::Duration::seconds(secs);
                    meta.insert(
                        "deletionTimestamp".into(),
                        json!(ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    meta.insert("deletionGracePeriodSeconds".into(), json!(secs));
                }
            }
        }
        if is_ns {
            crate::util::set_path(&mut new, &["status", "phase"], json!("Terminating"));
        }
        if comparable(&new) == comparable(&old) {
            return Ok((Self::to_version(info, &old), false));
        }
        if opts.dry_run {
            return Ok((Self::to_version(info, &new), false));
        }
        st.rv += 1;
        let rv = st.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(new);
        st.objects
            .entry(gr.clone())
            .or_default()
            .insert((nsk.clone(), name.to_string()), arc.clone());
        self.emit(
            &mut st,
            WatchEvent {
                kind: EventKind::Modified,
                gr,
                namespace: nsk,
                name: name.to_string(),
                rv,
                object: arc.clone(),
                old: Some(old.clone()),
            },
        );
        drop(st);
        self.after_write(info, Some(&arc), Some(&old));
        Ok((Self::to_version(info, &arc), false))
    }

    /// Delete an object right now regardless of finalizers (namespace controller, GC, reaper).
    pub(crate) fn force_remove(&self, gr: &GroupResource, ns: &str, name: &str) -> bool {
        let mut st = self.lock();
        let Some(old) = st
            .objects
            .get_mut(gr)
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())))
        else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        let mut new = (*old).clone();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let info = self.registry().get_gr(gr);
        if let Some(i) = &info {
            alloc::release(i, &old, &mut st.alloc);
        }
        self.emit(
            &mut st,
            WatchEvent {
                kind: EventKind::Deleted,
                gr: gr.clone(),
                namespace: ns.into(),
                name: name.into(),
                rv,
                object: Arc::new(new),
                old: Some(old.clone()),
            },
        );
        drop(st);
        if let Some(i) = info {
            self.after_write(&i, None, Some(&old));
        }
        true
    }
}

/// Grace period for pods bound to a node and not terminated; `None` = delete immediately.
fn graceful_seconds(info: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> Option<i64> {
    if !(info.group.is_empty() && info.resource == "pods") {
        return None;
    }
    let bound = obj["spec"]["nodeName"].as_str().is_some_and(|s| !s.is_empty());
    let phase = obj["status"]["phase"].as_str().unwrap_or_default();
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let secs = opts
        .grace_period_seconds
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if secs <= 0 {
        None
    } else {
        Some(secs)
    }
}
