//! CustomResourceDefinitions: validation of the CRD itself, registration of its resources,
//! status conditions, cleanup on deletion, and structural-schema processing of custom objects
//! (pruning, defaulting, validation).

use crate::error::Cause;
use crate::resources::{PrinterColumn, ResourceInfo, ScalePaths, SubresourceInfo};
use crate::store::{now_rfc3339, Store};
use crate::util::default_path;
use regex::Regex;
use serde_json::{json, Value};

/// The finalizer the real server puts on CRDs to delete their objects first (the store's CRD
/// cleanup controller acts on it, so it is defined there).
pub use crate::store::gc::CRD_CLEANUP_FINALIZER as CLEANUP_FINALIZER;

/// Kubernetes version priority (v1 > v1beta2 > v1beta1 > v1alpha1 > other).
pub fn version_priority(v: &str) -> (u8, u64, u8, u64, String) {
    let re = Regex::new(r"^v(\d+)(?:(alpha|beta)(\d+))?$").ok();
    if let Some(c) = re.and_then(|r| r.captures(v)) {
        let major: u64 = c.get(1).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
        let (stab, minor) = match c.get(2).map(|m| m.as_str()) {
            None => (3u8, 0u64),
            Some("beta") => (2, c.get(3).and_then(|m| m.as_str().parse().ok()).unwrap_or(0)),
            _ => (1, c.get(3).and_then(|m| m.as_str().parse().ok()).unwrap_or(0)),
        };
        return (
            1,
            if stab == 3 { major } else { 0 },
            stab,
            if stab == 3 { 0 } else { major * 1000 + minor },
            String::new(),
        );
    }
    (0, 0, 0, 0, v.to_string())
}

fn sort_versions(vs: &mut [String]) {
    vs.sort_by(|a, b| {
        let (pa, pb) = (version_priority(a), version_priority(b));
        // stable first by major desc, then beta, then alpha, then others alphabetically
        pb.0.cmp(&pa.0)
            .then(pb.2.cmp(&pa.2))
            .then(pb.1.cmp(&pa.1))
            .then(pb.3.cmp(&pa.3))
            .then(pa.4.cmp(&pb.4))
    });
}

/// Defaults the server applies to a CRD object.
pub fn default_crd(obj: &mut Value) {
    default_path(obj, &["spec", "conversion"], json!({"strategy": "None"}));
    if obj["metadata"]["deletionTimestamp"].is_null() {
        let fins = obj["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !fins.iter().any(|f| f == CLEANUP_FINALIZER) && obj["metadata"]["uid"].is_null() {
            let mut f = fins;
            f.push(json!(CLEANUP_FINALIZER));
            obj["metadata"]["finalizers"] = json!(f);
        }
    }
    if let Some(names) = obj["spec"].get_mut("names").filter(|n| n.is_object()) {
        if names["singular"].as_str().unwrap_or_default().is_empty() {
            if let Some(k) = names["kind"].as_str() {
                names["singular"] = json!(k.to_lowercase());
            }
        }
        if names["listKind"].as_str().unwrap_or_default().is_empty() {
            if let Some(k) = names["kind"].as_str() {
                names["listKind"] = json!(format!("{k}List"));
            }
        }
    }
}

/// Validate a CRD object.
pub fn validate_crd(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if group.is_empty() {
        c.push(Cause::required("spec.group", ""));
    } else if !group.contains('.') {
        c.push(Cause::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        c.push(Cause::required("spec.names.plural", ""));
    }
    if spec["names"]["kind"].as_str().unwrap_or_default().is_empty() {
        c.push(Cause::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        c.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced") | Some("Cluster") => {}
        Some(s) => c.push(Cause::not_supported(
            "spec.scope",
            &json!(s),
            &[json!("Cluster"), json!("Namespaced")],
        )),
        None => c.push(Cause::required("spec.scope", "")),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        c.push(Cause::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions.iter().filter(|v| v["storage"] == json!(true)).count();
        if storage != 1 {
            c.push(Cause::invalid(
                "spec.versions",
                &json!("[]apiextensions.CustomResourceDefinitionVersion"),
                "must have exactly one version marked as storage version",
            ));
        }
        for (i, v) in versions.iter().enumerate() {
            if v["name"].as_str().unwrap_or_default().is_empty() {
                c.push(Cause::required(&format!("spec.versions[{i}].name"), ""));
            }
            if v["schema"]["openAPIV3Schema"].is_null() {
                c.push(Cause::required(
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    "schemas are required",
                ));
            }
        }
    }
    if let Some(o) = old {
        if o["spec"]["group"] != spec["group"] {
            c.push(Cause::invalid("spec.group", &spec["group"], "field is immutable"));
        }
        if o["spec"]["scope"] != spec["scope"] {
            c.push(Cause::invalid("spec.scope", &spec["scope"], "field is immutable"));
        }
    }
    c
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Resource infos for a CRD object (one per served version).
pub fn infos_for(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let crd_name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut served: Vec<String> = spec["versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|v| v["served"] != json!(false))
                .filter_map(|v| v["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    sort_versions(&mut served);
    let preferred = served.first().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for v in spec["versions"].as_array().cloned().unwrap_or_default() {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        if !served.contains(&vname) {
            continue;
        }
        let mut subs = Vec::new();
        let mut scale = None;
        if v["subresources"]["status"].is_object() {
            subs.push(SubresourceInfo {
                name: "status".into(),
                kind: kind.clone(),
                group: None,
                version: None,
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        if let Some(s) = v["subresources"]["scale"].as_object() {
            subs.push(SubresourceInfo {
                name: "scale".into(),
                kind: "Scale".into(),
                group: Some("autoscaling".into()),
                version: Some("v1".into()),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
            scale = Some(ScalePaths {
                spec_replicas: s
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .into(),
                status_replicas: s
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .into(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(String::from),
            });
        }
        let printer_columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or_default().into(),
                        type_: c["type"].as_str().unwrap_or("string").into(),
                        format: c["format"].as_str().unwrap_or_default().into(),
                        description: c["description"].as_str().unwrap_or_default().into(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceInfo {
            group: group.clone(),
            version: vname.clone(),
            resource: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            list_kind: names["listKind"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("{kind}List")),
            namespaced: spec["scope"] == json!("Namespaced"),
            verbs: [
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "create",
                "update",
                "watch",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            short_names: str_list(&names["shortNames"]),
            categories: str_list(&names["categories"]),
            subresources: subs,
            has_generation: true,
            crd: Some(crd_name.clone()),
            schema: Some(v["schema"]["openAPIV3Schema"].clone()),
            printer_columns,
            scale,
            preferred: vname == preferred,
        });
    }
    out
}

/// Keep the registry and the CRD status in sync after a CRD write.
pub fn sync_registration(store: &Store, new: Option<&Value>, old: Option<&Value>) {
    let Some(crd) = new else {
        if let Some(o) = old {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            store.registry().set_crd(name, Vec::new());
        }
        return;
    };
    let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
    store.registry().set_crd(&name, infos_for(crd));
    let names = &crd["spec"]["names"];
    let mut accepted = json!({
        "kind": names["kind"],
        "listKind": names["listKind"],
        "plural": names["plural"],
        "singular": names["singular"],
    });
    if names["shortNames"].is_array() {
        accepted["shortNames"] = names["shortNames"].clone();
    }
    if names["categories"].is_array() {
        accepted["categories"] = names["categories"].clone();
    }
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let mut stored = crd["status"]["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in storage {
        if !stored.contains(&s) {
            stored.push(s);
        }
    }
    let old_conds = crd["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cond = |t: &str, status: &str, reason: &str, msg: &str| {
        let prev = old_conds.iter().find(|c| c["type"] == json!(t));
        let ltt = match prev {
            Some(p) if p["status"] == json!(status) => p["lastTransitionTime"].clone(),
            _ => json!(now_rfc3339()),
        };
        json!({"type": t, "status": status, "lastTransitionTime": ltt, "reason": reason, "message": msg})
    };
    let mut conds = vec![
        cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
        cond(
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        ),
    ];
    if crd["metadata"]["deletionTimestamp"].is_string() {
        conds.push(cond(
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    let status = json!({"conditions": conds, "acceptedNames": accepted, "storedVersions": stored});
    if crd["status"] != status {
        let mut upd = crd.clone();
        upd["status"] = status;
        let key =
            crate::resources::ResourceKey::new("apiextensions.k8s.io", "v1", "customresourcedefinitions");
        let opts = crate::store::WriteOptions {
            field_manager: Some("kube-apiserver".into()),
            dry_run: false,
        };
        if let Err(e) = store.update_status_with(&key, None, upd, &opts) {
            tracing::debug!(error = %e, crd = %name, "CRD status update");
        }
    }
}

// ---------------------------------------------------------------- structural schema processing

fn schema_of(info: &ResourceInfo) -> Option<&Value> {
    info.schema.as_ref().filter(|s| s.is_object())
}

fn preserves(s: &Value) -> bool {
    s["x-kubernetes-preserve-unknown-fields"] == json!(true)
}

fn is_embedded(s: &Value) -> bool {
    s["x-kubernetes-embedded-resource"] == json!(true)
}

/// Prune unknown fields and apply defaults of a custom object (in place).
pub fn default_custom(info: &ResourceInfo, obj: &mut Value) {
    let Some(schema) = schema_of(info).cloned() else {
        return;
    };
    if let Some(m) = obj.as_object_mut() {
        let props = schema["properties"].as_object().cloned().unwrap_or_default();
        let keep_all = preserves(&schema);
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            if k == "apiVersion" || k == "kind" || k == "metadata" {
                continue;
            }
            match props.get(&k) {
                Some(ps) => {
                    if let Some(v) = m.get_mut(&k) {
                        process(ps, v);
                    }
                }
                None if !keep_all => {
                    m.remove(&k);
                }
                None => {}
            }
        }
        for (k, ps) in props.iter() {
            if k == "metadata" || k == "apiVersion" || k == "kind" {
                continue;
            }
            if !m.contains_key(k) {
                if let Some(d) = ps.get("default") {
                    let mut d = d.clone();
                    process(ps, &mut d);
                    m.insert(k.clone(), d);
                }
            }
        }
    }
}

fn process(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if is_embedded(schema) {
                // apiVersion/kind/metadata are always kept for embedded resources.
            }
            let props = schema["properties"].as_object();
            let addl = &schema["additionalProperties"];
            let keep_all = preserves(schema) || addl == &json!(true);
            if let Some(props) = props {
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    if let Some(ps) = props.get(&k) {
                        if let Some(x) = m.get_mut(&k) {
                            process(ps, x);
                        }
                    } else if !(keep_all
                        || is_embedded(schema) && ["apiVersion", "kind", "metadata"].contains(&k.as_str()))
                    {
                        m.remove(&k);
                    }
                }
                for (k, ps) in props {
                    if !m.contains_key(k) {
                        if let Some(d) = ps.get("default") {
                            let mut d = d.clone();
                            process(ps, &mut d);
                            m.insert(k.clone(), d);
                        }
                    }
                }
            } else if addl.is_object() {
                for (_, x) in m.iter_mut() {
                    process(addl, x);
                }
            } else if !keep_all && schema["type"] == json!("object") && !is_embedded(schema) {
                m.clear();
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for x in items.iter_mut() {
                process(&schema["items"], x);
            }
        }
        _ => {}
    }
}

/// Paths of the fields pruning would drop (for `fieldValidation`), e.g. `spec.junk`.
pub fn unknown_fields(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(schema) = schema_of(info) else { return out };
    let Some(m) = obj.as_object() else { return out };
    let props = schema["properties"].as_object().cloned().unwrap_or_default();
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" || k == "metadata" {
            continue;
        }
        match props.get(k) {
            Some(ps) => unknown_rec(ps, v, k, &mut out),
            None if !preserves(schema) => out.push(k.clone()),
            None => {}
        }
    }
    out
}

fn unknown_rec(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let addl = &schema["additionalProperties"];
            let keep_all = preserves(schema) || addl == &json!(true);
            if let Some(props) = schema["properties"].as_object() {
                for (k, x) in m {
                    match props.get(k) {
                        Some(ps) => unknown_rec(ps, x, &format!("{path}.{k}"), out),
                        None => {
                            let embedded_meta = is_embedded(schema)
                                && ["apiVersion", "kind", "metadata"].contains(&k.as_str());
                            if !keep_all && !embedded_meta {
                                out.push(format!("{path}.{k}"));
                            }
                        }
                    }
                }
            } else if addl.is_object() {
                for (k, x) in m {
                    unknown_rec(addl, x, &format!("{path}.{k}"), out);
                }
            } else if !keep_all && schema["type"] == json!("object") && !is_embedded(schema) {
                for k in m.keys() {
                    out.push(format!("{path}.{k}"));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, x) in items.iter().enumerate() {
                unknown_rec(&schema["items"], x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Validate a custom object against its schema.
pub fn validate_custom(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let Some(schema) = schema_of(info) else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    let props = schema["properties"].as_object().cloned().unwrap_or_default();
    for (k, ps) in &props {
        if k == "metadata" || k == "apiVersion" || k == "kind" {
            continue;
        }
        if let Some(v) = obj.get(k) {
            validate_value(ps, v, k, &mut causes);
        }
    }
    for r in str_list(&schema["required"]) {
        if obj.get(&r).is_none() {
            causes.push(Cause::required(&r, ""));
        }
    }
    causes
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => {
            v.as_i64().is_some() || v.as_u64().is_some() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn validate_value(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if s["nullable"] == json!(true) {
            return;
        }
        if let Some(t) = s["type"].as_str() {
            out.push(Cause::type_invalid(
                path,
                &json!("null"),
                &format!("{path} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = s["x-kubernetes-int-or-string"] == json!(true);
    if int_or_string {
        if !(v.is_string() || type_ok("integer", v)) {
            out.push(Cause::type_invalid(
                path,
                &json!(type_name(v)),
                &format!(
                    "{path} in body must be of type integer,string: \"{}\"",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = s["type"].as_str() {
        if !type_ok(t, v) {
            out.push(Cause::type_invalid(
                path,
                &json!(type_name(v)),
                &format!("{path} in body must be of type {t}: \"{}\"", type_name(v)),
            ));
            return;
        }
    }
    // Value-validation combinators (structural schemas allow them without types).
    let passes = |sub: &Value| {
        let mut tmp = Vec::new();
        validate_value(sub, v, path, &mut tmp);
        tmp.is_empty()
    };
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            validate_value(sub, v, path, out);
        }
    }
    if let Some(any) = s["anyOf"].as_array() {
        if !any.is_empty() && !any.iter().any(passes) {
            out.push(Cause::invalid(
                path,
                v,
                &format!("{path} in body must validate at least one schema (anyOf)"),
            ));
        }
    }
    if let Some(one) = s["oneOf"].as_array() {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if !one.is_empty() && n != 1 {
            let found = if n == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {n} valid alternatives")
            };
            out.push(Cause::invalid(
                path,
                v,
                &format!("{path} in body must validate one and only one schema (oneOf). {found}"),
            ));
        }
    }
    if s["not"].is_object() && passes(&s["not"]) {
        out.push(Cause::invalid(
            path,
            v,
            &format!("{path} in body must not validate the schema (not)"),
        ));
    }
    if let Some(en) = s["enum"].as_array() {
        if !en.contains(v) {
            out.push(Cause::not_supported(path, v, en));
        }
    }
    match v {
        Value::String(st) => {
            if let Some(p) = s["pattern"].as_str() {
                if let Ok(re) = Regex::new(p) {
                    if !re.is_match(st) {
                        out.push(Cause::invalid(
                            path,
                            v,
                            &format!("{path} in body should match '{p}'"),
                        ));
                    }
                }
            }
            let n = st.chars().count() as u64;
            if let Some(min) = s["minLength"].as_u64() {
                if n < min {
                    out.push(Cause::invalid(
                        path,
                        v,
                        &format!("{path} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(max) = s["maxLength"].as_u64() {
                if n > max {
                    out.push(Cause::new(
                        "FieldValueTooLong",
                        path,
                        format!("Too long: may not be more than {max} bytes"),
                    ));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = s["minimum"].as_f64() {
                let excl = s["exclusiveMinimum"] == json!(true);
                if x < min || (excl && x == min) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    out.push(Cause::invalid(
                        path,
                        v,
                        &format!("{path} in body should be {rel} {}", num(&s["minimum"])),
                    ));
                }
            }
            if let Some(max) = s["maximum"].as_f64() {
                let excl = s["exclusiveMaximum"] == json!(true);
                if x > max || (excl && x == max) {
                    let rel = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    out.push(Cause::invalid(
                        path,
                        v,
                        &format!("{path} in body should be {rel} {}", num(&s["maximum"])),
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = s["minItems"].as_u64() {
                if (items.len() as u64) < min {
                    out.push(Cause::invalid(
                        path,
                        &json!(items.len()),
                        &format!("{path} in body should have at least {min} items"),
                    ));
                }
            }
            if let Some(max) = s["maxItems"].as_u64() {
                if (items.len() as u64) > max {
                    out.push(Cause::new(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {}: must have at most {max} items", items.len()),
                    ));
                }
            }
            if s["items"].is_object() {
                for (i, it) in items.iter().enumerate() {
                    validate_value(&s["items"], it, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(m) => {
            if let Some(props) = s["properties"].as_object() {
                for (k, ps) in props {
                    if let Some(x) = m.get(k) {
                        validate_value(ps, x, &format!("{path}.{k}"), out);
                    }
                }
            } else if s["additionalProperties"].is_object() {
                for (k, x) in m {
                    validate_value(&s["additionalProperties"], x, &format!("{path}[{k}]"), out);
                }
            }
            for r in str_list(&s["required"]) {
                if !m.contains_key(&r) {
                    out.push(Cause::required(&format!("{path}.{r}"), ""));
                }
            }
            if let Some(min) = s["minProperties"].as_u64() {
                if (m.len() as u64) < min {
                    out.push(Cause::invalid(
                        path,
                        v,
                        &format!("{path} in body should have at least {min} properties"),
                    ));
                }
            }
            if let Some(max) = s["maxProperties"].as_u64() {
                if (m.len() as u64) > max {
                    out.push(Cause::new(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {}: must have at most {max} items", m.len()),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_with(schema: Value) -> ResourceInfo {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]}
        });
        infos_for(&crd).remove(0)
    }

    #[test]
    fn prune_default_validate() {
        let info = info_with(
            json!({"type":"object","properties":{"spec":{"type":"object","required":["size"],"properties":{
                "size":{"type":"integer","minimum":1,"maximum":5},
                "mode":{"type":"string","enum":["a","b"],"default":"a"},
                "free":{"type":"object","x-kubernetes-preserve-unknown-fields":true},
                "name":{"type":"string","pattern":"^[a-z]+$","maxLength":4}
            }}}}),
        );
        let mut o = json!({"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},
            "spec":{"size":9,"junk":1,"free":{"x":1},"name":"ABCDEF"},"extra":true});
        default_custom(&info, &mut o);
        assert!(o.get("extra").is_none());
        assert!(o["spec"].get("junk").is_none());
        assert_eq!(o["spec"]["free"]["x"], 1);
        assert_eq!(o["spec"]["mode"], "a");
        let c = validate_custom(&info, &o);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.size", "spec.name", "spec.name"]);
        let mut o2 = json!({"spec":{"size":"x"}});
        default_custom(&info, &mut o2);
        let c = validate_custom(&info, &o2);
        assert_eq!(c[0].reason, "FieldValueTypeInvalid");
        let c = validate_custom(&info, &json!({"spec":{}}));
        assert_eq!(c[0].field, "spec.size");
        assert_eq!(c[0].reason, "FieldValueRequired");
    }

    #[test]
    fn combinators() {
        let info = info_with(json!({"type":"object","properties":{"spec":{"type":"object",
            "properties":{"a":{"type":"string"},"b":{"type":"string"}},
            "oneOf":[{"required":["a"]},{"required":["b"]}],
            "not":{"required":["c"]}}}}));
        assert!(validate_custom(&info, &json!({"spec":{"a":"x"}})).is_empty());
        let c = validate_custom(&info, &json!({"spec":{"a":"x","b":"y"}}));
        assert!(c[0].message.contains("Found 2 valid alternatives"), "{c:?}");
        let c = validate_custom(&info, &json!({"spec":{}}));
        assert!(c[0].message.contains("Found none valid"), "{c:?}");
    }

    #[test]
    fn version_order() {
        let mut v: Vec<String> = ["v1alpha1", "v2", "v1beta1", "v1", "foo"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_versions(&mut v);
        assert_eq!(v, vec!["v2", "v1", "v1beta1", "v1alpha1", "foo"]);
    }
}
