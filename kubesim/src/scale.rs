//! The autoscaling/v1 Scale view of a resource with a scale subresource.

use serde_json::{json, Value};

use crate::resources::ResourceInfo;

/// Scale object of a resource.
pub fn to_scale(info: &ResourceInfo, obj: &Value) -> Value {
    let (spec_path, status_path, sel_path) = match &info.scale {
        Some(s) => (
            s.spec_replicas.clone(),
            s.status_replicas.clone(),
            s.label_selector.clone(),
        ),
        None => (".spec.replicas".into(), ".status.replicas".into(), None),
    };
    let get = |p: &str| -> Value {
        let segs: Vec<&str> = p.trim_start_matches('.').split('.').collect();
        crate::util::get_path(obj, &segs).cloned().unwrap_or(Value::Null)
    };
    let selector = match &sel_path {
        Some(p) => get(p).as_str().unwrap_or_default().to_string(),
        None => match crate::selectors::LabelSelector::from_structured(&obj["spec"]["selector"]) {
            Ok(_) => selector_string(&obj["spec"]["selector"]),
            Err(_) => String::new(),
        },
    };
    let mut status = json!({"replicas": get(&status_path).as_i64().unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": get(&spec_path).as_i64().unwrap_or(0)},
        "status": status,
    })
}

fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for e in exprs {
            let k = e["key"].as_str().unwrap_or_default();
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => parts.push(format!("{k} in ({})", vals.join(","))),
                "NotIn" => parts.push(format!("{k} notin ({})", vals.join(","))),
                "Exists" => parts.push(k.to_string()),
                "DoesNotExist" => parts.push(format!("!{k}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}
