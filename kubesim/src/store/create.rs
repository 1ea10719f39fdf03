//! The create path: normalisation and defaulting of a new object, validation, the commit
//! (namespace, uniqueness and service-account checks, allocation, managedFields), what every new
//! namespace gets, and the Event helper of the controllers.

use serde_json::{json, Value};
use std::sync::Arc;

use super::{alloc, check_object, convert, finalizers, meta_mut, meta_str, now_rfc3339};
use super::{EventKind, Store, WatchEvent, WriteOptions};
use crate::error::{ApiError, Cause};
use crate::resources::{GroupResource, ResourceInfo, ResourceKey};
use crate::{managed, validation};

impl Store {
    /// Create an object (internal path: no admission webhooks).
    pub fn create(&self, res: &ResourceKey, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        self.create_with(res, ns, obj, &WriteOptions::default())
    }

    /// Create with options.
    pub fn create_with(
        &self,
        res: &ResourceKey,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let info = self.info(res)?;
        let obj = self.prepare_create(&info, ns, obj)?;
        self.validate_object(&info, &obj, None)?;
        self.commit_create(&info, obj, opts, "Update")
    }

    /// Defaulting and normalisation of a new object (before admission).
    pub(crate) fn prepare_create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        check_object(&obj)?;
        check_type_meta(info, &obj)?;
        if obj["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        obj["apiVersion"] = json!(info.api_version());
        obj["kind"] = json!(info.kind);
        let url_ns = ns.unwrap_or_default();
        if let Some(meta) = meta_mut(&mut obj) {
            if info.namespaced {
                let body_ns = meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if !body_ns.is_empty() && !url_ns.is_empty() && body_ns != url_ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                let eff = if url_ns.is_empty() {
                    body_ns
                } else {
                    url_ns.to_string()
                };
                if eff.is_empty() {
                    return Err(ApiError::bad_request(
                        "an empty namespace may not be set during creation",
                    ));
                }
                meta.insert("namespace".into(), json!(eff));
            } else {
                meta.remove("namespace");
            }
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "generation",
            ] {
                meta.remove(k);
            }
            let name = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if name.is_empty() {
                let gen = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if !gen.is_empty() {
                    meta.insert("name".into(), json!(validation::generate_name(&gen)));
                }
            }
        }
        if info.has_status() && !(info.group.is_empty() && info.resource == "nodes") {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.inner.hooks.default_object(info, &mut obj);
        if info.converted() {
            obj = convert::event_to_core(&obj);
        }
        Ok(obj)
    }

    /// Schema / semantic validation (after mutating admission).
    pub(crate) fn validate_object(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name");
        let mut causes = Vec::new();
        if name.is_empty() {
            causes.push(Cause::required(
                "metadata.name",
                "name or generateName is required",
            ));
        } else {
            causes.extend(validation::validate_name(
                validation::name_rule(&info.group, &info.resource),
                name,
            ));
        }
        if old.is_none() {
            let gen = meta_str(obj, "generateName");
            if !gen.is_empty() && meta_str(obj, "name").is_empty() {
                causes.extend(validation::validate_name(
                    validation::name_rule(&info.group, &info.resource),
                    gen,
                ));
            }
        }
        causes.extend(validation::validate_meta(obj));
        if let Some(o) = old {
            if o["metadata"]["deletionTimestamp"].is_string() {
                let old_f = finalizers(o);
                let new_f: Vec<String> = finalizers(obj)
                    .into_iter()
                    .filter(|f| !old_f.contains(f))
                    .collect();
                if !new_f.is_empty() {
                    causes.push(Cause::forbidden(
                        "metadata.finalizers",
                        &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}", new_f.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")),
                    ));
                }
            }
        }
        causes.extend(self.inner.hooks.validate(info, obj, old));
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&info.group, &info.kind, name, causes))
        }
    }

    /// Persist a prepared, validated new object.
    pub(crate) fn commit_create(
        &self,
        info: &ResourceInfo,
        mut obj: Value,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Value, ApiError> {
        let gr = info.group_resource();
        let ns = if info.namespaced {
            meta_str(&obj, "namespace").to_string()
        } else {
            String::new()
        };
        let name = meta_str(&obj, "name").to_string();
        let mut st = self.lock();
        if info.namespaced {
            let nsobj = st
                .objects
                .get(&GroupResource::new("", "namespaces"))
                .and_then(|m| m.get(&(String::new(), ns.clone())));
            match nsobj {
                None => return Err(ApiError::not_found("", "namespaces", &ns)),
                Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                        crate::error::qualified(&info.group, &info.resource),
                        name,
                        ns
                    )))
                }
                _ => {}
            }
        }
        if st
            .objects
            .get(&gr)
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
        {
            return Err(ApiError::already_exists(&info.group, &info.resource, &name));
        }
        // ServiceAccount admission: a pod's service account must exist.
        if info.group.is_empty() && info.resource == "pods" {
            let sa = obj["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let exists = st
                .objects
                .get(&GroupResource::new("", "serviceaccounts"))
                .is_some_and(|m| m.contains_key(&(ns.clone(), sa.clone())));
            if !exists {
                return Err(ApiError::forbidden(format!(
                    "pods \"{name}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
                )));
            }
            crate::util::set_path(&mut obj, &["spec", "serviceAccount"], json!(sa));
        }
        alloc::allocate(info, &mut obj, &mut st.alloc, opts.dry_run)?;
        let now = now_rfc3339();
        if let Some(meta) = meta_mut(&mut obj) {
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now));
            if info.has_generation {
                meta.insert("generation".into(), json!(1));
            }
        }
        managed::record_update(info, None, &mut obj, opts.manager(), operation, None, &now);
        if opts.dry_run {
            return Ok(obj);
        }
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(obj);
        st.objects
            .entry(gr.clone())
            .or_default()
            .insert((ns.clone(), name.clone()), arc.clone());
        self.emit(
            &mut st,
            WatchEvent {
                kind: EventKind::Added,
                gr,
                namespace: ns,
                name,
                rv,
                object: arc.clone(),
                old: None,
            },
        );
        drop(st);
        self.after_write(info, Some(&arc), None);
        Ok(Self::to_version(info, &arc))
    }

    /// What the serviceaccount and root-CA-publisher controllers create in every namespace.
    pub(super) fn namespace_defaults(&self, ns: &str) {
        let opts = WriteOptions {
            field_manager: Some("kube-controller-manager".into()),
            dry_run: false,
        };
        let _ = self.create_with(
            &ResourceKey::core("serviceaccounts"),
            Some(ns),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}),
            &opts,
        );
        let _ = self.create_with(
            &ResourceKey::core("configmaps"),
            Some(ns),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                    "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": KUBESIM_CA_PLACEHOLDER}}),
            &opts,
        );
    }

    /// Record a core/v1 Event about an object (as the controllers do).
    pub fn record_event(&self, involved: &Value, type_: &str, reason: &str, message: &str, component: &str) {
        let ns = involved["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let iname = involved["metadata"]["name"].as_str().unwrap_or_default();
        let now = now_rfc3339();
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", iname, rand::random::<u64>() & 0xffff_ffff_ffff), "namespace": ns},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": iname,
                "namespace": involved["metadata"]["namespace"],
                "uid": involved["metadata"]["uid"],
                "resourceVersion": involved["metadata"]["resourceVersion"],
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": "",
        });
        let _ = self.create(&ResourceKey::core("events"), Some(&ns), ev);
    }
}

/// The apiVersion and kind in a body must name the resource of the URL (another served version
/// of its group is accepted).
pub(super) fn check_type_meta(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    if !kind.is_empty() && kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    if !av.is_empty() && av != info.api_version() {
        // Another served version of the same resource is fine (None conversion); anything else
        // is rejected like the real server does.
        let same_group = match av.split_once('/') {
            Some((g, _)) => g == info.group,
            None => info.group.is_empty(),
        };
        if !same_group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
    }
    Ok(())
}

/// kube-root-ca.crt content (kubesim serves plain HTTP; this is a syntactically valid placeholder).
const KUBESIM_CA_PLACEHOLDER: &str = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAXMRUwEwYDVQQDDAxrdWJlc2ltLWNh\n-----END CERTIFICATE-----\n";
