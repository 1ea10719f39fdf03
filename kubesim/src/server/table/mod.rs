//! Server-side printing (`meta.k8s.io/v1` Table) for `kubectl get`.

mod columns;
mod values;

pub use values::{age, human_duration, json_path};

use serde_json::{json, Value};

use crate::resources::ResourceInfo;
use columns::spec_for;

/// Build a Table for objects. `include_object`: `None`/`Metadata` (default), `Object`, `None`.
pub fn table(
    info: &ResourceInfo,
    items: &[Value],
    list_meta: Option<Value>,
    include_object: Option<&str>,
) -> Value {
    let (cols, cells) = spec_for(info);
    let events = info.resource == "events" && (info.group.is_empty() || info.converted());
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut c = Vec::new();
            if !events {
                c.push(o["metadata"]["name"].clone());
            }
            c.extend(cells(o));
            let mut row = json!({"cells": c});
            match include_object.unwrap_or("Metadata") {
                "Object" => row["object"] = o.clone(),
                "None" => {}
                _ => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta.unwrap_or_else(|| json!({"resourceVersion": items.first().map(|o| o["metadata"]["resourceVersion"].clone()).unwrap_or(Value::Null)})),
        "columnDefinitions": cols,
        "rows": rows,
    })
}
