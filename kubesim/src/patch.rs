//! Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge
//! patch for built-in kinds (merge keys as declared by the Kubernetes API types).

use crate::error::ApiError;
use serde_json::{json, Map, Value};

/// Patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

fn rejected(err: impl std::fmt::Display) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: "the server rejected our request due to an error in our request".into(),
        details: Some(Box::new(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": err.to_string()}]}),
        )),
    }
}

/// Apply an RFC 6902 JSON patch.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &p).map_err(rejected)?;
    Ok(doc)
}

/// Apply an RFC 7386 merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut doc = target.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// How a list field is merged by strategic merge patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmpList {
    /// Merge object elements by this key.
    Key(&'static str),
    /// Primitive list merged as a set.
    Primitive,
    /// Replace.
    Replace,
}

/// Strategic-merge list semantics of built-in fields.
pub fn smp_list(parent: &[String], field: &str) -> SmpList {
    let in_container = parent
        .last()
        .is_some_and(|p| p == "[containers]" || p == "[initContainers]" || p == "[ephemeralContainers]");
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => {
            SmpList::Key("name")
        }
        "volumeMounts" => SmpList::Key("mountPath"),
        "volumeDevices" => SmpList::Key("devicePath"),
        "ports" if in_container => SmpList::Key("containerPort"),
        "ports" => SmpList::Key("port"),
        "conditions" => SmpList::Key("type"),
        "ownerReferences" => SmpList::Key("uid"),
        "finalizers" => SmpList::Primitive,
        "hostAliases" => SmpList::Key("ip"),
        "topologySpreadConstraints" => SmpList::Key("topologyKey"),
        "readinessGates" => SmpList::Key("conditionType"),
        _ => SmpList::Replace,
    }
}

/// Apply a strategic merge patch.
pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    }
    let mut doc = target.clone();
    smp_object(&mut doc, patch, &[]);
    Ok(doc)
}

fn smp_object(target: &mut Value, patch: &Value, path: &[String]) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pm.clone();
        p.remove("$patch");
        *target = Value::Object(strip_directives(p));
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(tm) = target.as_object_mut() else { return };
    if let Some(keep) = pm.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        tm.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in pm {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (tm.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            tm.remove(k);
            continue;
        }
        let mut child_path = path.to_vec();
        child_path.push(k.clone());
        match v {
            Value::Object(_) => {
                if v.get("$patch").and_then(Value::as_str) == Some("delete") {
                    tm.remove(k);
                    continue;
                }
                let entry = tm.entry(k.clone()).or_insert(Value::Null);
                smp_object(entry, v, &child_path);
            }
            Value::Array(items) => {
                let kind = smp_list(path, k);
                let entry = tm.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                smp_list_merge(entry, items, kind, &child_path, k);
            }
            _ => {
                tm.insert(k.clone(), v.clone());
            }
        }
    }
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

fn smp_list_merge(target: &mut Value, items: &[Value], kind: SmpList, path: &[String], field: &str) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return;
    }
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Some(list) = target.as_array_mut() else { return };
    match kind {
        SmpList::Replace => {
            *list = items
                .iter()
                .map(|i| match i {
                    Value::Object(m) => Value::Object(strip_directives(m.clone())),
                    other => other.clone(),
                })
                .collect();
        }
        SmpList::Primitive => {
            for i in items {
                if !list.contains(i) {
                    list.push(i.clone());
                }
            }
        }
        SmpList::Key(key) => {
            let elem_path: Vec<String> = {
                let mut p = path.to_vec();
                p.pop();
                p.push(format!("[{field}]"));
                p
            };
            for i in items {
                let Some(kv) = i.get(key) else {
                    list.push(i.clone());
                    continue;
                };
                let pos = list.iter().position(|e| e.get(key) == Some(kv));
                if i.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(p) = pos {
                        list.remove(p);
                    }
                    continue;
                }
                match pos {
                    Some(p) => smp_object(&mut list[p], i, &elem_path),
                    None => {
                        let mut fresh = Value::Object(Map::new());
                        smp_object(&mut fresh, i, &elem_path);
                        list.push(fresh);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smp_merges_containers_by_name() {
        let t = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"a","image":"x","env":[{"name":"E","value":"1"}],"ports":[{"containerPort":80}]},
            {"name":"b","image":"y"}]}}}});
        let p = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"a","image":"x2","env":[{"name":"F","value":"2"}],"ports":[{"containerPort":81}]},
            {"name":"b","$patch":"delete"},
            {"name":"c","image":"z"}]}}}});
        let r = strategic_merge(&t, &p).unwrap();
        let cs = r["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "x2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["name"], "c");
    }

    #[test]
    fn smp_null_removes_and_lists_replace() {
        let t = json!({"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"args":["x","y"]}});
        let p = json!({"metadata":{"labels":{"a":null}},"spec":{"args":["z"]}});
        let r = strategic_merge(&t, &p).unwrap();
        assert_eq!(r["metadata"]["labels"], json!({"b":"2"}));
        assert_eq!(r["spec"]["args"], json!(["z"]));
    }

    #[test]
    fn json_patch_errors_are_422() {
        let e = json_patch(&json!({}), &json!([{"op":"test","path":"/a","value":1}])).unwrap_err();
        assert_eq!(e.code, 422);
        let e = json_patch(&json!({}), &json!({"op":"x"})).unwrap_err();
        assert_eq!(e.code, 400);
    }
}
