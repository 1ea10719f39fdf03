//! managedFields bookkeeping and server-side apply.
//!
//! Field sets use the real `FieldsV1` path syntax (`f:spec`, `k:{"name":"c"}`, `v:"x"`, `.`).
//! List semantics come from the merge keys of built-in kinds and, for custom resources, from
//! `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` in the CRD schema (default atomic).

use crate::error::ApiError;
use crate::resources::ResourceInfo;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How a list is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Elements identified by the values of these keys.
    Map(Vec<String>),
    /// Scalar set.
    Set,
}

/// A field path: FieldsV1 keys.
pub type Path = Vec<String>;

/// List type of a built-in list field, by field name and the path leading to it.
pub fn builtin_list_type(parent: &[String], field: &str) -> ListType {
    let in_container = parent
        .iter()
        .any(|p| p == "f:containers" || p == "f:initContainers" || p == "f:ephemeralContainers");
    let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "readinessGates" => {
            if field == "readinessGates" {
                keys(&["conditionType"])
            } else {
                keys(&["name"])
            }
        }
        "volumeMounts" => keys(&["mountPath"]),
        "volumeDevices" => keys(&["devicePath"]),
        "ports" if in_container => keys(&["containerPort", "protocol"]),
        "ports" if parent.last().is_some_and(|p| p == "f:spec") => keys(&["port", "protocol"]),
        "conditions" => keys(&["type"]),
        "ownerReferences" => keys(&["uid"]),
        "finalizers" => ListType::Set,
        "hostAliases" => keys(&["ip"]),
        "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
        "clusterIPs" | "ipFamilies" => ListType::Atomic,
        _ => ListType::Atomic,
    }
}

/// Resolves list types for one resource (schema-driven for custom resources).
pub struct ListTypes<'a> {
    schema: Option<&'a Value>,
}

impl<'a> ListTypes<'a> {
    /// For a resource.
    pub fn for_info(info: &'a ResourceInfo) -> Self {
        ListTypes {
            schema: if info.crd.is_some() {
                info.schema.as_ref()
            } else {
                None
            },
        }
    }

    fn schema_at(&self, path: &[String]) -> Option<&'a Value> {
        let mut s = self.schema?;
        for p in path {
            if let Some(f) = p.strip_prefix("f:") {
                s = s
                    .get("properties")
                    .and_then(|m| m.get(f))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))?;
            } else if p.starts_with("k:") || p.starts_with("i:") || p.starts_with("v:") {
                s = s.get("items")?;
            }
        }
        Some(s)
    }

    /// The list type at `parent` + field.
    pub fn list_type(&self, parent: &[String], field: &str) -> ListType {
        if self.schema.is_none() {
            return builtin_list_type(parent, field);
        }
        let mut p = parent.to_vec();
        p.push(format!("f:{field}"));
        match self.schema_at(&p) {
            Some(s) => match s["x-kubernetes-list-type"].as_str() {
                Some("map") => ListType::Map(
                    s["x-kubernetes-list-map-keys"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|k| k.as_str().map(String::from)).collect())
                        .unwrap_or_default(),
                ),
                Some("set") => ListType::Set,
                _ => ListType::Atomic,
            },
            None => {
                if parent.first().is_some_and(|f| f == "f:metadata") {
                    builtin_list_type(parent, field)
                } else {
                    ListType::Atomic
                }
            }
        }
    }
}

fn element_key(keys: &[String], elem: &Value) -> String {
    let mut m = BTreeMap::new();
    for k in keys {
        if let Some(v) = elem.get(k) {
            m.insert(k.clone(), v.clone());
        } else if k == "protocol" {
            // List-map keys with a schema default count as present with that default.
            m.insert(k.clone(), json!("TCP"));
        }
    }
    let mut o = Map::new();
    for (k, v) in m {
        o.insert(k, v);
    }
    format!("k:{}", Value::Object(o))
}

/// Leaf paths (and `.` element markers) of an object, with their values.
pub fn fields_of(obj: &Value, lt: &ListTypes<'_>, status_only: bool) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if status_only {
                    continue;
                }
                if let Some(mm) = v.as_object() {
                    for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(x) = mm.get(mk) {
                            let p = vec!["f:metadata".to_string()];
                            walk_field(&p, mk, x, lt, &mut out);
                        }
                    }
                }
            }
            "status" => walk_field(&[], k, v, lt, &mut out),
            _ if status_only => {}
            _ => walk_field(&[], k, v, lt, &mut out),
        }
    }
    out
}

fn walk_field(
    parent: &[String],
    field: &str,
    v: &Value,
    lt: &ListTypes<'_>,
    out: &mut BTreeMap<Path, Value>,
) {
    let mut p = parent.to_vec();
    p.push(format!("f:{field}"));
    match v {
        Value::Object(m) if !m.is_empty() => {
            if field == "labels" || field == "annotations" {
                let mut d = p.clone();
                d.push(".".into());
                out.insert(d, Value::Null);
            }
            for (k, x) in m {
                walk_field(&p, k, x, lt, out);
            }
        }
        Value::Array(items) => match lt.list_type(parent, field) {
            ListType::Atomic => {
                out.insert(p, v.clone());
            }
            ListType::Set => {
                if items.is_empty() {
                    out.insert(p.clone(), v.clone());
                }
                for it in items {
                    let mut e = p.clone();
                    e.push(format!("v:{it}"));
                    out.insert(e, it.clone());
                }
            }
            ListType::Map(keys) => {
                if items.is_empty() {
                    out.insert(p.clone(), v.clone());
                }
                for it in items {
                    let mut e = p.clone();
                    e.push(element_key(&keys, it));
                    let mut dot = e.clone();
                    dot.push(".".into());
                    out.insert(dot, Value::Null);
                    if let Some(m) = it.as_object() {
                        for (k, x) in m {
                            walk_field(&e, k, x, lt, out);
                        }
                    }
                }
            }
        },
        other => {
            out.insert(p, other.clone());
        }
    }
}

/// FieldsV1 JSON from a set of paths.
pub fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let e = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !e.is_object() {
                *e = Value::Object(Map::new());
            }
            match e {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

/// Paths from FieldsV1 JSON.
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    fn rec(prefix: &mut Path, v: &Value, out: &mut BTreeSet<Path>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, x) in m {
                    prefix.push(k.clone());
                    rec(prefix, x, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    rec(&mut Vec::new(), v, &mut out);
    out
}

/// One managedFields entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion.
    pub api_version: String,
    /// time.
    pub time: Value,
    /// subresource (`status`) or empty.
    pub subresource: String,
    /// Owned paths.
    pub fields: BTreeSet<Path>,
}

/// Parse `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["manager"].is_string() || e["fieldsV1"].is_object())
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].clone(),
                    subresource: e["subresource"].as_str().unwrap_or_default().into(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Write entries back (dropping empty ones).
pub fn set_entries(obj: &mut Value, es: &[Entry]) {
    let arr: Vec<Value> = es
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation));
            m.insert("apiVersion".into(), json!(e.api_version));
            if !e.time.is_null() {
                m.insert("time".into(), e.time.clone());
            }
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), to_fields_v1(&e.fields));
            if !e.subresource.is_empty() {
                m.insert("subresource".into(), json!(e.subresource));
            }
            Value::Object(m)
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// Record an Update (or Create) by `manager` in `new`'s managedFields.
pub fn record_update(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    sub: Option<&str>,
    now: &str,
) {
    if operation == "Apply" {
        return;
    }
    let lt = ListTypes::for_info(info);
    let status_only = sub == Some("status");
    let new_f = fields_of(new, &lt, false);
    let old_f = old.map(|o| fields_of(o, &lt, false)).unwrap_or_default();
    let changed: BTreeSet<Path> = new_f
        .iter()
        .filter(|(p, v)| old_f.get(*p) != Some(*v))
        .filter(|(p, _)| !status_only || p.first().is_some_and(|f| f == "f:status"))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: BTreeSet<Path> = old_f
        .keys()
        .filter(|p| !new_f.contains_key(*p))
        .cloned()
        .collect();
    // Client-supplied managedFields (if they differ from the stored ones) win, like the real server.
    let mut es = match old {
        Some(o) if new["metadata"]["managedFields"] != o["metadata"]["managedFields"] => entries(new),
        Some(o) => entries(o),
        None => entries(new),
    };
    let subres = sub.unwrap_or_default().to_string();
    for e in es.iter_mut() {
        e.fields.retain(|p| !removed.contains(p));
        if !(e.manager == manager && e.operation == operation && e.subresource == subres) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match es
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == operation && e.subresource == subres)
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = json!(now);
                e.api_version = info.api_version();
            }
            None => es.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version: info.api_version(),
                time: json!(now),
                subresource: subres,
                fields: changed,
            }),
        }
    }
    set_entries(new, &es);
}

fn path_display(p: &Path) -> String {
    let mut s = String::new();
    for seg in p {
        if seg == "." {
            continue;
        }
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            s.push('[');
            s.push_str(
                k.trim_start_matches('{')
                    .trim_end_matches('}')
                    .replace("\":", "=")
                    .replace('"', "")
                    .as_str(),
            );
            s.push(']');
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Remove the field at a path from an object (element markers remove the element).
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        // remove the element addressed by the parent path
        remove_at(obj, parent);
        return;
    }
    let mut cur = obj;
    for seg in parent {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|e| key_matches(&key, e)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
        if let Some(a) = cur.as_array_mut() {
            a.retain(|e| !key_matches(&key, e));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        let val: Value = serde_json::from_str(v).unwrap_or(Value::Null);
        if let Some(a) = cur.as_array_mut() {
            a.retain(|e| e != &val);
        }
    }
}

fn key_matches(key: &Value, elem: &Value) -> bool {
    key.as_object()
        .is_some_and(|k| k.iter().all(|(kk, kv)| elem.get(kk) == Some(kv)))
}

/// Structural merge of an applied configuration into a live object.
fn merge_applied(
    live: &mut Value,
    applied: &Value,
    parent: &[String],
    field: Option<&str>,
    lt: &ListTypes<'_>,
) {
    match (live, applied) {
        (Value::Object(lm), Value::Object(am)) => {
            let mut p = parent.to_vec();
            if let Some(f) = field {
                p.push(format!("f:{f}"));
            }
            for (k, av) in am {
                match lm.get_mut(k) {
                    Some(lv) if !av.is_null() => merge_applied(lv, av, &p, Some(k), lt),
                    _ => {
                        lm.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (lv @ Value::Array(_), Value::Array(aa)) => {
            let lt_here = field.map(|f| lt.list_type(parent, f)).unwrap_or(ListType::Atomic);
            let Value::Array(la) = lv else { return };
            match lt_here {
                ListType::Atomic => *la = aa.clone(),
                ListType::Set => {
                    for a in aa {
                        if !la.contains(a) {
                            la.push(a.clone());
                        }
                    }
                }
                ListType::Map(keys) => {
                    let mut p = parent.to_vec();
                    if let Some(f) = field {
                        p.push(format!("f:{f}"));
                    }
                    for a in aa {
                        let ek = element_key(&keys, a);
                        let mut ep = p.clone();
                        ep.push(ek.clone());
                        match la.iter_mut().find(|e| element_key(&keys, e) == ek) {
                            Some(e) => merge_applied(e, a, &ep, None, lt),
                            None => la.push(a.clone()),
                        }
                    }
                }
            }
        }
        (lv, av) => *lv = av.clone(),
    }
}

/// Server-side apply: merge `applied` into `live` for `manager`. Returns the new object with
/// managedFields set, or a 409 conflict error.
pub fn apply(
    info: &ResourceInfo,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    sub: Option<&str>,
    now: &str,
) -> Result<Value, ApiError> {
    let lt = ListTypes::for_info(info);
    let status_only = sub == Some("status");
    let applied_f = fields_of(applied, &lt, status_only);
    let applied_paths: BTreeSet<Path> = applied_f.keys().cloned().collect();
    let live_v = live.cloned().unwrap_or_else(|| json!({}));
    let live_f = fields_of(&live_v, &lt, false);
    let mut es = entries(&live_v);
    let subres = sub.unwrap_or_default().to_string();
    // Conflicts: fields owned by someone else with a different value.
    let mut conflicts: Vec<(String, String, Path)> = Vec::new();
    for e in &es {
        if e.manager == manager && e.operation == "Apply" && e.subresource == subres {
            continue;
        }
        for p in e.fields.intersection(&applied_paths) {
            if p.last().is_some_and(|s| s == ".") {
                continue;
            }
            if live_f.get(p) != applied_f.get(p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let name = applied["metadata"]["name"].as_str().unwrap_or_default();
        let n = conflicts.len();
        let msg = if n == 1 {
            format!(
                "Apply failed with 1 conflict: conflict with \"{}\"{}: {}",
                conflicts[0].0,
                using(&conflicts[0].1),
                path_display(&conflicts[0].2)
            )
        } else {
            let mut by: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            for (m, v, p) in &conflicts {
                by.entry((m.clone(), v.clone()))
                    .or_default()
                    .push(path_display(p));
            }
            let parts: Vec<String> = by
                .iter()
                .map(|((m, v), ps)| format!("conflicts with \"{m}\"{}:\n- {}", using(v), ps.join("\n- ")))
                .collect();
            format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, v, p)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\"{}", using(v)), "field": path_display(p)})
            })
            .collect();
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if !info.group.is_empty() {
            d.insert("group".into(), json!(info.group));
        }
        d.insert("kind".into(), json!(info.resource));
        d.insert("causes".into(), Value::Array(causes));
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message: msg,
            details: Some(Box::new(Value::Object(d))),
        });
    }
    let conflict_paths: BTreeSet<Path> = conflicts.iter().map(|c| c.2.clone()).collect();
    // Fields this manager applied before but not now, owned by nobody else: remove.
    let mut obj = live_v.clone();
    let prev: BTreeSet<Path> = es
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subres)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<Path> = es
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == subres))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut to_remove: Vec<&Path> = prev
        .iter()
        .filter(|p| !applied_paths.contains(*p) && !others.contains(*p))
        .collect();
    // Remove deepest first; element markers remove whole elements only if nothing else inside is owned.
    to_remove.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in to_remove {
        if p.last().is_some_and(|s| s == ".") {
            let elem = &p[..p.len() - 1];
            let owned_inside = others.iter().any(|o| o.len() > elem.len() && o.starts_with(elem));
            if owned_inside {
                continue;
            }
        }
        remove_at(&mut obj, p);
    }
    // Merge applied values.
    let mut applied_body = applied.clone();
    if let Some(m) = applied_body.as_object_mut() {
        m.remove("metadata");
        if status_only {
            m.retain(|k, _| k == "status");
        }
    }
    merge_applied(&mut obj, &applied_body, &[], None, &lt);
    if !status_only {
        for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
            if let Some(v) = applied["metadata"].get(mk) {
                if obj["metadata"].get(mk).is_none_or(Value::is_null) {
                    crate::util::set_path(&mut obj, &["metadata", mk], v.clone());
                } else if let Some(lv) = obj.get_mut("metadata").and_then(|m| m.get_mut(mk)) {
                    merge_applied(lv, v, &["f:metadata".to_string()], Some(mk), &lt);
                }
            }
        }
    }
    // managedFields: force moves conflicting fields; the applier owns exactly the applied set.
    for e in es.iter_mut() {
        if e.manager == manager && e.operation == "Apply" && e.subresource == subres {
            continue;
        }
        e.fields.retain(|p| !conflict_paths.contains(p));
    }
    match es
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subres)
    {
        Some(e) => {
            if e.fields != applied_paths {
                e.time = json!(now);
            }
            e.fields = applied_paths;
            e.api_version = info.api_version();
        }
        None => es.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: info.api_version(),
            time: json!(now),
            subresource: subres,
            fields: applied_paths,
        }),
    }
    // Keep fields that still exist only.
    let final_f = fields_of(&obj, &lt, false);
    for e in es.iter_mut() {
        e.fields
            .retain(|p| final_f.contains_key(p) || p.last().is_some_and(|s| s == "."));
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    for k in ["name", "namespace", "generateName"] {
        if obj["metadata"].get(k).is_none() {
            if let Some(v) = applied["metadata"].get(k) {
                obj["metadata"][k] = v.clone();
            }
        }
    }
    set_entries(&mut obj, &es);
    if obj["metadata"]["managedFields"].is_null() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    }
    Ok(obj)
}

fn using(api_version: &str) -> String {
    if api_version.is_empty() {
        String::new()
    } else {
        format!(" using {api_version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Registry, ResourceKey};

    #[test]
    fn fields_v1_roundtrip_and_keys() {
        let reg = Registry::with_builtins();
        let info = reg.get(&ResourceKey::apps("statefulsets")).unwrap();
        let lt = ListTypes::for_info(&info);
        let o = json!({"metadata":{"labels":{"a":"b"}},"spec":{"replicas":1,"template":{"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":80,"protocol":"TCP"}]}]}}}});
        let f = fields_of(&o, &lt, false);
        let paths: BTreeSet<Path> = f.keys().cloned().collect();
        let v1 = to_fields_v1(&paths);
        assert!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:ports"]
                ["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]
                .is_object()
        );
        assert_eq!(from_fields_v1(&v1), paths);
    }

    #[test]
    fn apply_conflict_and_force() {
        let reg = Registry::with_builtins();
        let info = reg.get(&ResourceKey::core("configmaps")).unwrap();
        let a =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"1","j":"2"}});
        let live = apply(&info, None, &a, "m1", false, None, "t").unwrap();
        assert_eq!(live["data"]["k"], "1");
        let b = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"2"}});
        let e = apply(&info, Some(&live), &b, "m2", false, None, "t").unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e.message.contains("conflict with \"m1\""), "{}", e.message);
        assert!(e.message.contains(".data.k"), "{}", e.message);
        let forced = apply(&info, Some(&live), &b, "m2", true, None, "t").unwrap();
        assert_eq!(forced["data"]["k"], "2");
        // m1 re-applies without "j": j removed, since only m1 owned it
        let a2 = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{}});
        let after = apply(&info, Some(&forced), &a2, "m1", false, None, "t").unwrap();
        assert!(after["data"].get("j").is_none());
        assert_eq!(after["data"]["k"], "2");
    }
}
