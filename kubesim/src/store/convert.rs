//! Storage conversion of Events: events.k8s.io/v1 and core/v1 Events share one storage (the
//! core/v1 form), converted on the way in and out.

use serde_json::{json, Value};

fn mv(from: &Value, to: &mut serde_json::Map<String, Value>, src: &str, dst: &str) {
    if let Some(v) = from.get(src).filter(|v| !v.is_null()) {
        to.insert(dst.to_string(), v.clone());
    }
}

/// events.k8s.io/v1 Event -> core/v1 Event (the storage form).
pub fn event_to_core(e: &Value) -> Value {
    if e["apiVersion"] == json!("v1") {
        return e.clone();
    }
    let mut o = serde_json::Map::new();
    o.insert("apiVersion".into(), json!("v1"));
    o.insert("kind".into(), json!("Event"));
    o.insert("metadata".into(), e["metadata"].clone());
    mv(e, &mut o, "regarding", "involvedObject");
    mv(e, &mut o, "related", "related");
    mv(e, &mut o, "note", "message");
    mv(e, &mut o, "reason", "reason");
    mv(e, &mut o, "type", "type");
    mv(e, &mut o, "action", "action");
    mv(e, &mut o, "eventTime", "eventTime");
    mv(e, &mut o, "series", "series");
    mv(e, &mut o, "reportingController", "reportingComponent");
    mv(e, &mut o, "reportingInstance", "reportingInstance");
    mv(e, &mut o, "deprecatedFirstTimestamp", "firstTimestamp");
    mv(e, &mut o, "deprecatedLastTimestamp", "lastTimestamp");
    mv(e, &mut o, "deprecatedCount", "count");
    match e.get("deprecatedSource").filter(|v| v.is_object()) {
        Some(src) => {
            o.insert("source".into(), src.clone());
        }
        None => {
            let mut src = serde_json::Map::new();
            if let Some(c) = e.get("reportingController") {
                src.insert("component".into(), c.clone());
            }
            if let Some(h) = e.get("reportingInstance") {
                src.insert("host".into(), h.clone());
            }
            if !src.is_empty() {
                o.insert("source".into(), Value::Object(src));
            }
        }
    }
    Value::Object(o)
}

/// core/v1 Event -> events.k8s.io/v1 Event.
pub fn event_from_core(e: &Value) -> Value {
    if e["apiVersion"] == json!("events.k8s.io/v1") {
        return e.clone();
    }
    let mut o = serde_json::Map::new();
    o.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    o.insert("kind".into(), json!("Event"));
    o.insert("metadata".into(), e["metadata"].clone());
    mv(e, &mut o, "involvedObject", "regarding");
    mv(e, &mut o, "related", "related");
    mv(e, &mut o, "message", "note");
    mv(e, &mut o, "reason", "reason");
    mv(e, &mut o, "type", "type");
    mv(e, &mut o, "action", "action");
    mv(e, &mut o, "series", "series");
    mv(e, &mut o, "reportingComponent", "reportingController");
    mv(e, &mut o, "reportingInstance", "reportingInstance");
    mv(e, &mut o, "firstTimestamp", "deprecatedFirstTimestamp");
    mv(e, &mut o, "lastTimestamp", "deprecatedLastTimestamp");
    mv(e, &mut o, "count", "deprecatedCount");
    mv(e, &mut o, "source", "deprecatedSource");
    // eventTime is required in events.k8s.io/v1: old-style events get it from their timestamps.
    let et = e
        .get("eventTime")
        .filter(|v| !v.is_null())
        .or_else(|| {
            e.get("firstTimestamp")
                .filter(|v| !v.is_null())
                .map(|_| &e["firstTimestamp"])
        })
        .cloned()
        .unwrap_or_else(|| e["metadata"]["creationTimestamp"].clone());
    if let Some(s) = et.as_str() {
        // MicroTime format
        let micro = if s.contains('.') {
            s.to_string()
        } else {
            s.replace('Z', ".000000Z")
        };
        o.insert("eventTime".into(), json!(micro));
    }
    if !o.contains_key("reportingController") {
        if let Some(c) = e["source"]["component"].as_str() {
            o.insert("reportingController".into(), json!(c));
        }
    }
    Value::Object(o)
}
