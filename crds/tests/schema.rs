//! Schema fidelity: our generated CRDs against upstream's (names, scope, subresources, printer
//! columns, and every property path with its type and constraints), structural validity, and
//! behaviour of the schemas on real documents (a small validator implementing the subset of
//! OpenAPI the schemas use).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{read_doc, upstream_dir};
use serde_json::{json, Value};

/// Constraint keywords compared between upstream and our schemas.
const COMPARED: &[&str] = &[
    "type",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "enum",
    "required",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
];

/// One intentional difference from upstream.
struct Allow {
    /// CRD plural.
    crd: &'static str,
    /// Schema path (`spec.roles[].id`; `[]` = array items, `{}` = additionalProperties).
    path: &'static str,
    kind: AllowKind,
}

#[derive(PartialEq)]
enum AllowKind {
    /// Our schema has this extra property.
    ExtraProperty,
    /// Our schema may have extra properties anywhere under this path (constraints on the
    /// properties both have are still compared).
    ExtraPropertiesUnder,
    /// This constraint keyword differs.
    Constraint(&'static str),
}

/// The explicit allow-list of intentional differences.
const ALLOWED: &[Allow] = &[
    // Spec 7 R20: upstream's cluster role-id pattern is unanchored (so it matches anything); we
    // anchor it like the kdapp role-id pattern. A kdcluster role id must name a kdapp role, whose
    // ids already satisfy the anchored pattern, so no valid kdcluster is rejected.
    Allow {
        crd: "kubedirectorclusters",
        path: "spec.roles[].id",
        kind: AllowKind::Constraint("pattern"),
    },
    // Spec 7 R28: upstream's backup schema lacks storageInitProgress, so backups lose it.
    Allow {
        crd: "kubedirectorstatusbackups",
        path: "spec.statusBackup.roles[].members[].stateDetail.storageInitProgress",
        kind: AllowKind::ExtraProperty,
    },
    // Spec 7 R4: the generation the reconciler has seen, so that a spec change moves the state
    // to `spec modified` from the reconciler (upstream's webhook patch of the status is lost).
    Allow {
        crd: "kubedirectorclusters",
        path: "status.observedGeneration",
        kind: AllowKind::ExtraProperty,
    },
    Allow {
        crd: "kubedirectorstatusbackups",
        path: "spec.statusBackup.observedGeneration",
        kind: AllowKind::ExtraProperty,
    },
    // Upstream keeps `exported_service` only through x-kubernetes-preserve-unknown-fields on
    // service items; we declare it (type string), which accepts the same documents.
    Allow {
        crd: "kubedirectorapps",
        path: "spec.services[].exported_service",
        kind: AllowKind::ExtraProperty,
    },
    // Upstream's affinity schema is a copy of an old core/v1 Affinity; ours is k8s-openapi's
    // current one, which adds newer optional fields (matchLabelKeys, namespaceSelector, ...).
    Allow {
        crd: "kubedirectorclusters",
        path: "spec.roles[].affinity",
        kind: AllowKind::ExtraPropertiesUnder,
    },
];

struct Compare<'a> {
    crd: &'a str,
    diffs: Vec<String>,
    used: Vec<usize>,
}

impl Compare<'_> {
    fn allowed(&mut self, path: &str, kind: &AllowKind) -> bool {
        let hit = ALLOWED.iter().position(|a| {
            a.crd == self.crd
                && ((a.path == path && a.kind == *kind)
                    || (a.kind == AllowKind::ExtraPropertiesUnder
                        && *kind == AllowKind::ExtraProperty
                        && path.starts_with(a.path)))
        });
        if let Some(i) = hit {
            self.used.push(i);
        }
        hit.is_some()
    }

    fn walk(&mut self, path: &str, up: &Value, ours: &Value) {
        for key in COMPARED {
            let norm = |v: Option<&Value>| -> Value {
                match (key, v) {
                    (&"nullable" | &"x-kubernetes-preserve-unknown-fields", None) => Value::Bool(false),
                    (&"required", Some(Value::Array(a))) => {
                        let mut names: Vec<String> = a.iter().map(|v| v.to_string()).collect();
                        names.sort();
                        json!(names)
                    }
                    (_, Some(Value::Number(n))) => json!(n.as_f64()),
                    (_, Some(v)) => v.clone(),
                    (_, None) => Value::Null,
                }
            };
            let (a, b) = (norm(up.get(*key)), norm(ours.get(*key)));
            if a != b && !self.allowed(path, &AllowKind::Constraint(key)) {
                self.diffs
                    .push(format!("{}: {path}: {key}: upstream {a} != ours {b}", self.crd));
            }
        }
        let empty = serde_json::Map::new();
        let up_props = up.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let our_props = ours
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (name, up_child) in up_props {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            match our_props.get(name) {
                Some(our_child) => self.walk(&child_path, up_child, our_child),
                None => self
                    .diffs
                    .push(format!("{}: {child_path}: missing in ours", self.crd)),
            }
        }
        for name in our_props.keys().filter(|n| !up_props.contains_key(*n)) {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if !self.allowed(&child_path, &AllowKind::ExtraProperty) {
                self.diffs
                    .push(format!("{}: {child_path}: extra in ours", self.crd));
            }
        }
        for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
            match (up.get(key), ours.get(key)) {
                (Some(a), Some(b)) => self.walk(&format!("{path}{suffix}"), a, b),
                (None, None) => {}
                (a, b) => self.diffs.push(format!(
                    "{}: {path}: {key}: upstream {} / ours {}",
                    self.crd,
                    if a.is_some() { "present" } else { "absent" },
                    if b.is_some() { "present" } else { "absent" }
                )),
            }
        }
    }
}

fn ours_by_plural() -> Vec<(String, Value)> {
    kubedirector_crds::crds()
        .unwrap()
        .into_iter()
        .map(|crd| (crd.spec.names.plural.clone(), serde_json::to_value(&crd).unwrap()))
        .collect()
}

#[test]
fn schemas_and_names_match_upstream() {
    let Some(dir) = upstream_dir() else { return };
    let mut diffs = Vec::new();
    let mut used = Vec::new();
    for (plural, ours) in ours_by_plural() {
        let up = read_doc(&dir.join(format!("kubedirector.hpe.com_{plural}_crd.yaml")));
        for key in ["group", "names", "scope"] {
            if up["spec"][key] != ours["spec"][key] {
                diffs.push(format!(
                    "{plural}: spec.{key}: upstream {} != ours {}",
                    up["spec"][key], ours["spec"][key]
                ));
            }
        }
        let (uv, ov) = (&up["spec"]["versions"], &ours["spec"]["versions"]);
        assert_eq!(uv.as_array().unwrap().len(), 1);
        assert_eq!(ov.as_array().unwrap().len(), 1);
        for key in [
            "name",
            "served",
            "storage",
            "subresources",
            "additionalPrinterColumns",
        ] {
            if uv[0][key] != ov[0][key] {
                diffs.push(format!(
                    "{plural}: versions[0].{key}: upstream {} != ours {}",
                    uv[0][key], ov[0][key]
                ));
            }
        }
        let mut cmp = Compare {
            crd: &plural,
            diffs: Vec::new(),
            used: Vec::new(),
        };
        cmp.walk(
            "",
            &uv[0]["schema"]["openAPIV3Schema"],
            &ov[0]["schema"]["openAPIV3Schema"],
        );
        diffs.extend(cmp.diffs);
        used.extend(cmp.used);
    }
    for (i, allow) in ALLOWED.iter().enumerate() {
        if !used.contains(&i) {
            diffs.push(format!("stale allow-list entry: {} {}", allow.crd, allow.path));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} difference(s) from upstream:\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

/// Keywords that must not appear in a structural CRD schema generated by us.
const FORBIDDEN: &[&str] = &[
    "$ref",
    "$schema",
    "$defs",
    "definitions",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "format",
    "default",
    "title",
    "const",
    "examples",
    "example",
];

fn check_structural(path: &str, node: &Value, errs: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        errs.push(format!("{path}: schema node is not an object"));
        return;
    };
    for key in FORBIDDEN {
        if map.contains_key(*key) {
            errs.push(format!("{path}: has `{key}`"));
        }
    }
    match map.get("type").and_then(Value::as_str) {
        Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
        other => errs.push(format!("{path}: type is {other:?}")),
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        errs.push(format!("{path}: properties together with additionalProperties"));
    }
    if map.get("type") == Some(&json!("array")) && !map.contains_key("items") {
        errs.push(format!("{path}: array without items"));
    }
    if let Some(n) = map.get("nullable") {
        if n != &json!(true) {
            errs.push(format!("{path}: nullable is {n}"));
        }
    }
    if let Some(p) = map.get("pattern") {
        if let Err(e) = regex::Regex::new(p.as_str().unwrap_or("")) {
            errs.push(format!("{path}: pattern does not compile: {e}"));
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            check_structural(&format!("{path}.{name}"), child, errs);
        }
    }
    for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
        if let Some(child) = map.get(key) {
            check_structural(&format!("{path}{suffix}"), child, errs);
        }
    }
}

#[test]
fn generated_schemas_are_structural() {
    let mut errs = Vec::new();
    for (plural, crd) in ours_by_plural() {
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        check_structural(&plural, schema, &mut errs);
        // descriptions come from the `///` docs
        assert!(
            schema["properties"]["spec"]["description"].is_string(),
            "{plural}: spec has no description"
        );
    }
    assert!(
        errs.is_empty(),
        "non-structural schema nodes:\n  {}",
        errs.join("\n  ")
    );
}

#[test]
fn structural_check_detects_problems() {
    let mut errs = Vec::new();
    check_structural(
        "x",
        &json!({ "type": "object", "properties": { "a": { "anyOf": [] }, "b": { "type": "array" } },
                 "additionalProperties": { "type": "string", "format": "int32" } }),
        &mut errs,
    );
    assert_eq!(errs.len(), 5, "{errs:?}");
}

// ---------------------------------------------------------------------------------------------
// A small validator for the OpenAPI subset our CRDs use: what the API server would reject
// (errors) or prune (unknown fields where nothing preserves them).

fn validate(path: &str, doc: &Value, schema: &Value, out: &mut Vec<String>) {
    if doc.is_null() {
        if schema.get("nullable") != Some(&json!(true)) {
            out.push(format!("{path}: null not allowed"));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "object" => doc.is_object(),
        "array" => doc.is_array(),
        "string" => doc.is_string(),
        "integer" => doc.is_i64() || doc.is_u64(),
        "number" => doc.is_number(),
        "boolean" => doc.is_boolean(),
        _ => true,
    };
    if !ok {
        out.push(format!("{path}: expected {ty}, got {doc}"));
        return;
    }
    if let Some(s) = doc.as_str() {
        let len = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            out.push(format!("{path}: shorter than minLength"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            out.push(format!("{path}: longer than maxLength"));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            if !regex::Regex::new(p).unwrap().is_match(s) {
                out.push(format!("{path}: {s:?} does not match {p}"));
            }
        }
    }
    if let Some(n) = doc.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            out.push(format!("{path}: below minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            out.push(format!("{path}: above maximum"));
        }
    }
    if let Some(obj) = doc.as_object() {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap_or("")) {
                out.push(format!("{path}: missing required {req}"));
            }
        }
        let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        for (k, v) in obj {
            if let Some(child) = schema.get("properties").and_then(|p| p.get(k)) {
                validate(&format!("{path}.{k}"), v, child, out);
            } else if let Some(child) = schema.get("additionalProperties") {
                validate(&format!("{path}.{k}"), v, child, out);
            } else if !preserve && path != ".metadata" {
                // (metadata is validated and pruned by the API server's own rules, not the schema)
                out.push(format!("{path}.{k}: unknown field (pruned)"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), doc.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(&format!("{path}[{i}]"), v, items, out);
        }
    }
}

fn our_schema(plural: &str) -> Value {
    let crds = ours_by_plural();
    let (_, crd) = crds.into_iter().find(|(p, _)| p == plural).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn errors(doc: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    validate("", doc, schema, &mut out);
    out
}

#[test]
fn upstream_examples_are_accepted_unpruned_by_both_schemas() {
    let Some(dir) = upstream_dir() else { return };
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let plural = if name.starts_with("cr-app-") {
            "kubedirectorapps"
        } else if name.starts_with("cr-cluster-") {
            "kubedirectorclusters"
        } else {
            continue;
        };
        let doc = read_doc(&path);
        let upstream = read_doc(&dir.join(format!("kubedirector.hpe.com_{plural}_crd.yaml")));
        let up_schema = &upstream["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for (who, schema) in [("upstream", up_schema.clone()), ("ours", our_schema(plural))] {
            for e in errors(&doc, &schema) {
                problems.push(format!("{name} ({who}): {e}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn minimal_cluster() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": { "name": "c" },
        "spec": { "app": "a", "roles": [ { "id": "r", "resources": { "limits": { "memory": "1Gi", "cpu": "1" } } } ] }
    })
}

fn minimal_app() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": { "name": "a" },
        "spec": {
            "label": { "name": "A" }, "distroID": "d", "version": "1", "configSchemaVersion": 7,
            "roles": [ { "id": "r", "cardinality": "1", "configPackage": null } ],
            "config": { "roleServices": [], "selectedRoles": ["r"] }
        }
    })
}

#[test]
fn our_schemas_enforce_upstream_constraints() {
    let apps = our_schema("kubedirectorapps");
    let clusters = our_schema("kubedirectorclusters");
    let configs = our_schema("kubedirectorconfigs");
    assert_eq!(errors(&minimal_app(), &apps), Vec::<String>::new());
    assert_eq!(errors(&minimal_cluster(), &clusters), Vec::<String>::new());

    let bad_app = |f: &dyn Fn(&mut Value)| {
        let mut d = minimal_app();
        f(&mut d);
        errors(&d, &apps)
    };
    assert!(!bad_app(&|d| d["spec"]["roles"][0]["cardinality"] = json!("two")).is_empty());
    assert!(!bad_app(&|d| d["spec"]["configSchemaVersion"] = json!(6)).is_empty());
    assert!(
        !bad_app(&|d| d["spec"]["roles"][0]["configPackage"] = json!({ "packageURL": "ftp://x.zip" }))
            .is_empty()
    );
    assert!(!bad_app(&|d| d["spec"]["roles"][0]["eventList"] = json!(["reboot"])).is_empty());
    assert!(
        !bad_app(&|d| d["spec"]["services"] = json!([{ "id": "s", "endpoint": { "port": 0 } }])).is_empty()
    );
    assert!(!bad_app(&|d| d["spec"]["services"] = json!([{ "id": "Bad_Id" }])).is_empty());
    assert!(!bad_app(&|d| d["metadata"]["name"] = json!("x".repeat(64))).is_empty());
    assert!(!bad_app(&|d| {
        d["spec"].as_object_mut().unwrap().remove("config");
    })
    .is_empty());
    // preserved unknown keys are accepted, not pruned
    assert!(bad_app(&|d| d["spec"]["futureKey"] = json!(1)).is_empty());
    assert!(bad_app(&|d| d["spec"]["roles"][0]["minResources"] = json!({ "example.com/x": "1" })).is_empty());
    // but a role (no preserve-unknown-fields upstream) prunes unknown keys
    assert!(!bad_app(&|d| d["spec"]["roles"][0]["futureKey"] = json!(1)).is_empty());

    let bad_cluster = |f: &dyn Fn(&mut Value)| {
        let mut d = minimal_cluster();
        f(&mut d);
        errors(&d, &clusters)
    };
    assert!(!bad_cluster(&|d| d["spec"]["serviceType"] = json!("ExternalName")).is_empty());
    assert!(!bad_cluster(&|d| d["spec"]["roles"][0]["members"] = json!(-1)).is_empty());
    assert!(!bad_cluster(&|d| {
        d["spec"]["roles"][0]["resources"]["limits"]
            .as_object_mut()
            .unwrap()
            .remove("cpu");
    })
    .is_empty());
    assert!(
        !bad_cluster(&|d| d["spec"]["roles"][0]["resources"]["limits"]["memory"] = json!("lots")).is_empty()
    );
    assert!(!bad_cluster(&|d| d["spec"]["roles"][0]["id"] = json!("bad id!")).is_empty());
    assert!(!bad_cluster(&|d| d["spec"]["roles"][0]["env"] = json!([{ "name": "A" }])).is_empty());
    assert!(!bad_cluster(
        &|d| d["spec"]["defaultSecret"] = json!({ "name": "s", "mountPath": "/m", "defaultMode": 512 })
    )
    .is_empty());
    assert!(!bad_cluster(&|d| d["spec"]["roles"][0]["blockStorage"] =
        json!({ "storageClassName": "b", "pathPrefix": "/dev/x", "numDevices": 0 }))
    .is_empty());
    assert!(
        bad_cluster(&|d| d["spec"]["roles"][0]["resources"]["limits"]["example.com/fpga"] = json!("1"))
            .is_empty()
    );
    assert!(bad_cluster(&|d| d["spec"]["defaultSecret"] = Value::Null).is_empty());
    assert!(!bad_cluster(&|d| d["spec"]["connections"] = Value::Null).is_empty());

    let config = |spec: Value, name: &str| {
        errors(
            &json!({ "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
                     "metadata": { "name": name }, "spec": spec }),
            &configs,
        )
    };
    assert!(config(Value::Null, "kd-global-config").is_empty());
    assert!(config(json!({ "defaultServiceType": "NodePort" }), "kd-global-config").is_empty());
    assert!(!config(json!({}), "other-name").is_empty());
    assert!(!config(json!({ "defaultNamingScheme": "Random" }), "kd-global-config").is_empty());
}

#[test]
fn comparison_detects_differences() {
    let Some(dir) = upstream_dir() else { return };
    let up = read_doc(&dir.join("kubedirector.hpe.com_kubedirectorapps_crd.yaml"));
    let up = &up["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut changed = up.clone();
    let role = &mut changed["properties"]["spec"]["properties"]["roles"]["items"];
    role["properties"]["cardinality"]
        .as_object_mut()
        .unwrap()
        .remove("pattern");
    role["properties"]["maxLogSizeDump"]["minimum"] = json!(1);
    role["properties"].as_object_mut().unwrap().remove("imageRepoTag");
    role["properties"]["newThing"] = json!({ "type": "string" });
    role["required"] = json!(["id"]);
    changed["properties"]["spec"]["properties"]["label"]
        .as_object_mut()
        .unwrap()
        .remove("x-kubernetes-preserve-unknown-fields");
    let mut cmp = Compare {
        crd: "test",
        diffs: Vec::new(),
        used: Vec::new(),
    };
    cmp.walk("", up, &changed);
    assert_eq!(cmp.diffs.len(), 6, "{:#?}", cmp.diffs);
    let mut same = Compare {
        crd: "test",
        diffs: Vec::new(),
        used: Vec::new(),
    };
    same.walk("", up, up);
    assert!(same.diffs.is_empty());
}
