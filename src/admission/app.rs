//! KubeDirectorApp admission (spec 2.2): rules A-1..A-15 and mutations A-M1..A-M10.
//!
//! Order (upstream's): A-1/A-2 (delete), A-3 decode, uniqueness A-4..A-7, references A-8..A-10,
//! per role A-M6, A-11, A-12, A-13/A-M7 (a role without an image is not defaulted further),
//! A-M8..A-M10, then A-14 services, then A-15 for updates of referenced kdapps (comparing the
//! *mutated* new spec with the stored one; a change replaces every other message). Patches are
//! emitted only when A-3..A-14 found no error.

use serde_json::Value;

use super::{
    get, get_array, get_str,
    gotypes::{self, canon},
    has_key, offline_note, op_add, op_remove,
    quantity::Quantity,
    AdmissionContext, Fact, Operation, Verdict,
};

/// Default `maxLogSizeDump` for roles that specify none (bytes).
pub const DEFAULT_MAX_LOG_SIZE_DUMP: i64 = 256;

/// message.
pub fn app_in_use_message(references: &[String]) -> String {
    format!(
        "KubeDirectorApp resource cannot be deleted or modified while referenced by the following \
         KubeDirectorCluster resources: {}",
        references.join(", ")
    )
}

/// Parses a role cardinality (`"N"` or `"N+"`) into (N, scale-out).
pub fn parse_cardinality(card: &str) -> Option<(i64, bool)> {
    let (digits, scale_out) = match card.strip_suffix('+') {
        Some(d) => (d, true),
        None => (card, false),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|n| (n, scale_out))
}

/// A role cardinality as upstream's `catalog.GetRoleCardinality` reads it: scale-out iff the
/// string ends in `+`; the number is `strconv.Atoi` of the string without its trailing `+`s,
/// 0 when that fails, truncated to an `int32`.
pub fn role_cardinality(card: &str) -> (i64, bool) {
    let scale_out = card.ends_with('+');
    let n = card.trim_end_matches('+').parse::<i64>().unwrap_or(0);
    (i64::from(n as i32), scale_out)
}

fn ids(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| get_str(i, &[key]).unwrap_or_default().to_string())
        .collect()
}

fn strings(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

fn is_unique(list: &[String]) -> bool {
    let mut seen = std::collections::HashSet::new();
    list.iter().all(|x| seen.insert(x))
}

fn present(v: &Value, keys: &[&str]) -> bool {
    get(v, keys).is_some_and(|x| !x.is_null())
}

/// Checks a kdapp document decodes as upstream's Go KubeDirectorApp does; returns the
/// decode error text.
pub fn decode_error(obj: &Value) -> Option<String> {
    gotypes::decode_error(obj, &gotypes::APP)
}

/// The A-15 comparison form of a kdapp spec: its Go value, `defaultConfigPackage` ignored.
fn comparable_spec(app: &Value) -> Option<Value> {
    let mut spec = canon(get(app, &["spec"]), &gotypes::APP_SPEC);
    if let Some(Value::Object(o)) = spec.as_mut() {
        o.remove("defaultConfigPackage");
    }
    spec
}

/// Admits a KubeDirectorApp request.
pub fn admit_app(
    op: Operation,
    old: Option<&Value>,
    new: Option<&Value>,
    ctx: &AdmissionContext<'_>,
) -> Verdict {
    let mut notes = Vec::new();
    let references = match op {
        Operation::Update | Operation::Delete => {
            match ctx.facts.clusters_referencing_app(&ctx.namespace, &ctx.name) {
                Fact::Known(r) => r,
                Fact::Unknown => {
                    let rule = if op == Operation::Delete { "A-1" } else { "A-15" };
                    notes.push(offline_note(rule, "kdclusters referencing this kdapp"));
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    match op {
        Operation::Delete => {
            //
            let mut v = if references.is_empty() {
                Verdict::allow()
            } else {
                Verdict::reject(app_in_use_message(&references))
            };
            v.notes = notes;
            return v;
        }
        Operation::Connect => return Verdict::allow(),
        Operation::Create | Operation::Update => {}
    }
    //
    let Some(app) = new else {
        return Verdict::reject(super::MISSING_OBJECT);
    };
    if let Some(err) = decode_error(app) {
        let mut v = Verdict::reject(err);
        v.notes = notes;
        return v;
    }

    let mut errors = Vec::new();
    let mut patch = Vec::new();
    let roles = get_array(app, &["spec", "roles"]);
    let services = get_array(app, &["spec", "services"]);
    let role_ids = ids(roles, "id");
    let service_ids = ids(services, "id");
    let selected = strings(get_array(app, &["spec", "config", "selectedRoles"]));
    let role_services = get_array(app, &["spec", "config", "roleServices"]);

    //
    if !is_unique(&role_ids) {
        errors.push("Each id in the roles array must be unique.".to_string());
    }
    if !is_unique(&service_ids) {
        errors.push("Each id in the services array must be unique.".to_string());
    }
    //
    if !is_unique(&selected) {
        errors.push("Each element of selectedRoles array in config section must be unique.".to_string());
    }
    if !is_unique(&ids(role_services, "roleID")) {
        errors.push("Each roleID in roleServices array in config section must be unique.".to_string());
    }
    //
    for rs in role_services {
        let role_id = get_str(rs, &["roleID"]).unwrap_or_default();
        if !role_ids.iter().any(|r| r == role_id) {
            errors.push(format!(
                "Invalid roleID({role_id}) in roleServices array in config section. Valid roles: \"{}\"",
                role_ids.join(",")
            ));
        }
        for sid in strings(get_array(rs, &["serviceIDs"])) {
            if !service_ids.contains(&sid) {
                errors.push(format!(
                    "Invalid service_id({sid}) in roleServices array in config section. Valid services: \"{}\"",
                    service_ids.join(",")
                ));
            }
        }
    }
    //
    for s in &selected {
        if !role_ids.contains(s) {
            errors.push(format!(
                "Invalid element({s}) in selectedRoles array in config section. Valid roles: \"{}\"",
                role_ids.join(",")
            ));
        }
    }

    // A-M1..A-M5: strip the top-level defaults.
    let spec = get(app, &["spec"]).cloned().unwrap_or(Value::Null);
    let default_image = get_str(&spec, &["defaultImageRepoTag"]).map(str::to_string);
    let default_package = get(&spec, &["defaultConfigPackage"])
        .cloned()
        .unwrap_or(Value::Null);
    let default_persist = get(&spec, &["defaultPersistDirs"])
        .filter(|v| !v.is_null())
        .cloned();
    let default_events = get(&spec, &["defaultEventList"])
        .filter(|v| !v.is_null())
        .cloned();
    let default_log = get(&spec, &["defaultMaxLogSizeDump"])
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_MAX_LOG_SIZE_DUMP);
    if present(&spec, &["defaultImageRepoTag"]) {
        patch.push(op_remove(["spec", "defaultImageRepoTag"]));
    }
    if has_key(&spec, &["defaultConfigPackage"]) {
        patch.push(op_remove(["spec", "defaultConfigPackage"]));
    }
    if default_persist.is_some() {
        patch.push(op_remove(["spec", "defaultPersistDirs"]));
    }
    if default_events.is_some() {
        patch.push(op_remove(["spec", "defaultEventList"]));
    }
    if present(&spec, &["defaultMaxLogSizeDump"]) {
        patch.push(op_remove(["spec", "defaultMaxLogSizeDump"]));
    }

    for (i, role) in roles.iter().enumerate() {
        let idx = i.to_string();
        let id = get_str(role, &["id"]).unwrap_or_default();
        // A-M6
        if !has_key(role, &["configPackage"]) {
            patch.push(op_add(
                ["spec", "roles", &idx, "configPackage"],
                default_package.clone(),
            ));
        }
        //
        if present(role, &["minStorage"]) {
            let size = get_str(role, &["minStorage", "size"]).unwrap_or_default();
            if Quantity::parse(size).is_err() {
                errors.push(format!(
                    "Minimum storage size for role ({id}) is incorrectly defined."
                ));
            }
        }
        //
        let tty = get(role, &["containerSpec", "tty"])
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let stdin = get(role, &["containerSpec", "stdin"])
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if tty && !stdin {
            errors.push(format!("Role({id}) requested TTY without STDIN."));
        }
        // A-13 / A-M7: upstream skips the rest of the role when it has no image
        if !present(role, &["imageRepoTag"]) {
            match &default_image {
                Some(img) => patch.push(op_add(
                    ["spec", "roles", &idx, "imageRepoTag"],
                    Value::from(img.clone()),
                )),
                None => {
                    errors.push(format!(
                        "Role({id}) has no specified image, and no top-level default image is specified."
                    ));
                    continue;
                }
            }
        }
        // A-M8, A-M9
        if !present(role, &["persistDirs"]) {
            if let Some(dirs) = &default_persist {
                patch.push(op_add(["spec", "roles", &idx, "persistDirs"], dirs.clone()));
            }
        }
        if !present(role, &["eventList"]) {
            if let Some(events) = &default_events {
                patch.push(op_add(["spec", "roles", &idx, "eventList"], events.clone()));
            }
        }
        // A-M10
        if !present(role, &["maxLogSizeDump"]) {
            patch.push(op_add(
                ["spec", "roles", &idx, "maxLogSizeDump"],
                Value::from(default_log),
            ));
        }
    }

    //
    for svc in services {
        let dashboard = get(svc, &["endpoint", "isDashboard"])
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let scheme = get_str(svc, &["endpoint", "urlScheme"]).unwrap_or_default();
        if dashboard && scheme.is_empty() {
            errors.push(format!(
                "The endpoint for service({}) must include a urlScheme value because isDashboard is true.",
                get_str(svc, &["id"]).unwrap_or_default()
            ));
        }
    }

    // a referenced kdapp's (defaulted) spec must not change. Upstream checks this after
    // the other rules whatever they found, and a change replaces all other messages. The
    // defaulted form is the new object with our own patch applied (upstream defaults in
    // memory; roles it could not default differ from the stored spec either way).
    if op == Operation::Update && !references.is_empty() {
        let Some(old_app) = old else {
            return Verdict::reject(super::MISSING_OBJECT);
        };
        if let Some(err) = decode_error(old_app) {
            let mut v = Verdict::reject(err);
            v.notes = notes;
            return v;
        }
        let mut mutated = app.clone();
        if json_patch::patch(&mut mutated, &patch).is_err() {
            mutated = app.clone();
        }
        if comparable_spec(&mutated) != comparable_spec(old_app) {
            let mut v = Verdict::reject(app_in_use_message(&references));
            v.notes = notes;
            return v;
        }
    }

    Verdict::from_parts(errors, patch, notes)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::admission::testutil::{apply, ctx, CountingEntropy, FakeFacts};

    fn app() -> Value {
        json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1",
            "kind": "KubeDirectorApp",
            "metadata": {"name": "web", "namespace": "ns1"},
            "spec": {
                "label": {"name": "Web"},
                "distroID": "example/web",
                "version": "1.0",
                "configSchemaVersion": 7,
                "defaultImageRepoTag": "example/web:1",
                "defaultConfigPackage": {"packageURL": "file:///opt/x.tgz"},
                "defaultPersistDirs": ["/data"],
                "defaultEventList": ["configure"],
                "defaultMaxLogSizeDump": 1024,
                "services": [
                    {"id": "http", "endpoint": {"port": 80, "urlScheme": "http", "isDashboard": true}},
                    {"id": "ssh", "endpoint": {"port": 22}}
                ],
                "roles": [
                    {"id": "head", "cardinality": "1"},
                    {"id": "worker", "cardinality": "0+", "imageRepoTag": "example/worker:2",
                     "configPackage": null, "persistDirs": ["/w"], "eventList": [], "maxLogSizeDump": 0}
                ],
                "config": {
                    "roleServices": [{"roleID": "head", "serviceIDs": ["http", "ssh"]},
                                     {"roleID": "worker", "serviceIDs": ["ssh"]}],
                    "selectedRoles": ["head", "worker"]
                }
            }
        })
    }

    fn run(op: Operation, old: Option<&Value>, new: &Value, facts: &FakeFacts) -> Verdict {
        let e = CountingEntropy(0.into());
        admit_app(op, old, Some(new), &ctx(facts, &e, "ns1", "web"))
    }

    fn rejects(doc: Value, msg: &str) {
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        assert!(!v.allowed, "expected rejection with {msg}");
        assert!(
            v.messages.iter().any(|m| m == msg),
            "{:?} lacks {msg}",
            v.messages
        );
        assert!(v.patch.is_empty());
    }

    #[test]
    fn conforming_app_is_admitted_and_fully_defaulted() {
        let doc = app();
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        let stored = apply(&doc, &v);
        let spec = &stored["spec"];
        for k in [
            "defaultImageRepoTag",
            "defaultConfigPackage",
            "defaultPersistDirs",
            "defaultEventList",
            "defaultMaxLogSizeDump",
        ] {
            assert!(spec.get(k).is_none(), "A-M1..A-M5 must remove {k}");
        }
        let head = &spec["roles"][0];
        assert_eq!(head["configPackage"], json!({"packageURL": "file:///opt/x.tgz"})); // A-M6
        assert_eq!(head["imageRepoTag"], "example/web:1"); // A-M7
        assert_eq!(head["persistDirs"], json!(["/data"])); // A-M8
        assert_eq!(head["eventList"], json!(["configure"])); // A-M9
        assert_eq!(head["maxLogSizeDump"], 1024); // A-M10
        let worker = &spec["roles"][1];
        assert_eq!(worker["configPackage"], Value::Null);
        assert_eq!(worker["imageRepoTag"], "example/worker:2");
        assert_eq!(worker["persistDirs"], json!(["/w"]));
        assert_eq!(worker["eventList"], json!([]));
        assert_eq!(worker["maxLogSizeDump"], 0);
    }

    #[test]
    fn null_default_package_gives_explicit_null_and_log_size_defaults_to_256() {
        let mut doc = app();
        doc["spec"]["defaultConfigPackage"] = Value::Null;
        doc["spec"]
            .as_object_mut()
            .unwrap()
            .remove("defaultMaxLogSizeDump");
        doc["spec"].as_object_mut().unwrap().remove("defaultPersistDirs");
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        let stored = apply(&doc, &v);
        assert!(stored["spec"].get("defaultConfigPackage").is_none());
        let head = stored["spec"]["roles"][0].as_object().unwrap();
        assert_eq!(head["configPackage"], Value::Null);
        assert!(head.contains_key("configPackage"));
        assert_eq!(head["maxLogSizeDump"], 256);
        assert!(!head.contains_key("persistDirs"));
    }

    #[test]
    fn absent_default_package_gives_null_package() {
        let mut doc = app();
        doc["spec"]
            .as_object_mut()
            .unwrap()
            .remove("defaultConfigPackage");
        let stored = apply(&doc, &run(Operation::Create, None, &doc, &FakeFacts::new()));
        assert_eq!(stored["spec"]["roles"][0]["configPackage"], Value::Null);
    }

    #[test]
    fn a3_undecodable_app_is_rejected() {
        let mut doc = app();
        doc["spec"]["roles"] = json!("not a list");
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        assert_eq!(
            v.messages,
            vec!["json: cannot unmarshal string into Go struct field KubeDirectorAppSpec.spec.roles of type []v1beta1.NodeRole".to_string()]
        );
    }

    #[test]
    fn a4_duplicate_role_ids() {
        let mut doc = app();
        doc["spec"]["roles"][1]["id"] = json!("head");
        rejects(doc, "Each id in the roles array must be unique.");
    }

    #[test]
    fn a5_duplicate_service_ids() {
        let mut doc = app();
        doc["spec"]["services"][1]["id"] = json!("http");
        rejects(doc, "Each id in the services array must be unique.");
    }

    #[test]
    fn a6_duplicate_selected_roles() {
        let mut doc = app();
        doc["spec"]["config"]["selectedRoles"] = json!(["head", "head"]);
        rejects(
            doc,
            "Each element of selectedRoles array in config section must be unique.",
        );
    }

    #[test]
    fn a7_duplicate_role_services_reported_once() {
        let mut doc = app();
        doc["spec"]["config"]["roleServices"] = json!([
            {"roleID": "head", "serviceIDs": []}, {"roleID": "head", "serviceIDs": []}, {"roleID": "head", "serviceIDs": []}
        ]);
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        let n = v
            .messages
            .iter()
            .filter(|m| m.starts_with("Each roleID in roleServices"))
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn a8_unknown_role_in_role_services() {
        let mut doc = app();
        doc["spec"]["config"]["roleServices"][1]["roleID"] = json!("nope");
        rejects(
            doc,
            "Invalid roleID(nope) in roleServices array in config section. Valid roles: \"head,worker\"",
        );
    }

    #[test]
    fn a9_unknown_service_in_role_services() {
        let mut doc = app();
        doc["spec"]["config"]["roleServices"][1]["serviceIDs"] = json!(["ftp"]);
        rejects(
            doc,
            "Invalid service_id(ftp) in roleServices array in config section. Valid services: \"http,ssh\"",
        );
    }

    #[test]
    fn a10_unknown_selected_role() {
        let mut doc = app();
        doc["spec"]["config"]["selectedRoles"] = json!(["head", "ghost"]);
        rejects(
            doc,
            "Invalid element(ghost) in selectedRoles array in config section. Valid roles: \"head,worker\"",
        );
    }

    #[test]
    fn a11_bad_min_storage() {
        let mut doc = app();
        doc["spec"]["roles"][0]["minStorage"] = json!({"size": "lots"});
        rejects(
            doc.clone(),
            "Minimum storage size for role (head) is incorrectly defined.",
        );
        doc["spec"]["roles"][0]["minStorage"] = json!({"size": "10Gi"});
        assert!(run(Operation::Create, None, &doc, &FakeFacts::new()).allowed);
    }

    #[test]
    fn a12_tty_without_stdin() {
        let mut doc = app();
        doc["spec"]["roles"][0]["containerSpec"] = json!({"tty": true});
        rejects(doc.clone(), "Role(head) requested TTY without STDIN.");
        doc["spec"]["roles"][0]["containerSpec"] = json!({"tty": true, "stdin": true});
        assert!(run(Operation::Create, None, &doc, &FakeFacts::new()).allowed);
    }

    #[test]
    fn per_role_messages_come_in_upstream_order() {
        let mut doc = app();
        doc["spec"].as_object_mut().unwrap().remove("defaultImageRepoTag");
        doc["spec"]["roles"][0]["containerSpec"] = json!({"tty": true});
        doc["spec"]["roles"][0]["minStorage"] = json!({"size": "big"});
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        assert_eq!(
            v.messages,
            vec![
                "Minimum storage size for role (head) is incorrectly defined.".to_string(),
                "Role(head) requested TTY without STDIN.".to_string(),
                "Role(head) has no specified image, and no top-level default image is specified.".to_string(),
            ]
        );
    }

    #[test]
    fn a13_role_without_image() {
        let mut doc = app();
        doc["spec"].as_object_mut().unwrap().remove("defaultImageRepoTag");
        rejects(
            doc,
            "Role(head) has no specified image, and no top-level default image is specified.",
        );
    }

    #[test]
    fn a14_dashboard_needs_url_scheme() {
        let mut doc = app();
        doc["spec"]["services"][0]["endpoint"]
            .as_object_mut()
            .unwrap()
            .remove("urlScheme");
        rejects(
            doc,
            "The endpoint for service(http) must include a urlScheme value because isDashboard is true.",
        );
    }

    fn referenced() -> FakeFacts {
        let mut f = FakeFacts::new();
        f.references.insert(
            ("ns1".into(), "web".into()),
            vec!["ns1/c1".into(), "ns2/c2".into()],
        );
        f
    }

    #[test]
    fn a1_delete_of_referenced_app_rejected_a2_otherwise_allowed() {
        let doc = app();
        let v = run(Operation::Delete, Some(&doc), &doc, &referenced());
        assert_eq!(
            v.messages,
            vec![
                "KubeDirectorApp resource cannot be deleted or modified while referenced by the following \
                 KubeDirectorCluster resources: ns1/c1, ns2/c2"
                    .to_string()
            ]
        );
        assert!(run(Operation::Delete, Some(&doc), &doc, &FakeFacts::new()).allowed);
    }

    #[test]
    fn a1_unknown_references_give_a_note() {
        let mut f = FakeFacts::new();
        f.unknown.insert("references");
        let doc = app();
        let v = run(Operation::Delete, Some(&doc), &doc, &f);
        assert!(v.allowed);
        assert_eq!(
            v.notes,
            vec!["A-1 not checked offline: kdclusters referencing this kdapp".to_string()]
        );
    }

    #[test]
    fn a15_referenced_app_spec_is_frozen_but_metadata_may_change() {
        let doc = app();
        let stored = apply(&doc, &run(Operation::Create, None, &doc, &FakeFacts::new()));
        // Re-submitting the un-normalised form plus a label is a no-op on the spec.
        let mut same = doc.clone();
        same["metadata"]["labels"] = json!({"x": "y"});
        assert!(run(Operation::Update, Some(&stored), &same, &referenced()).allowed);
        let mut changed = stored.clone();
        changed["spec"]["version"] = json!("2.0");
        let v = run(Operation::Update, Some(&stored), &changed, &referenced());
        assert!(!v.allowed);
        assert!(v.messages[0].starts_with("KubeDirectorApp resource cannot be deleted or modified"));
        assert!(run(Operation::Update, Some(&stored), &changed, &FakeFacts::new()).allowed);
    }

    #[test]
    fn a15_change_replaces_every_other_message() {
        let doc = app();
        let stored = apply(&doc, &run(Operation::Create, None, &doc, &FakeFacts::new()));
        let mut changed = stored.clone();
        changed["spec"]["version"] = json!("2.0");
        changed["spec"]["roles"][1]["id"] = json!("head"); // A-4 as well
        let v = run(Operation::Update, Some(&stored), &changed, &referenced());
        assert_eq!(
            v.messages,
            vec![app_in_use_message(&["ns1/c1".into(), "ns2/c2".into()])]
        );
        // unreferenced: the ordinary messages (three of them)
        let v = run(Operation::Update, Some(&stored), &changed, &FakeFacts::new());
        assert_eq!(v.messages.len(), 3, "{:?}", v.messages);
        assert_eq!(v.messages[0], "Each id in the roles array must be unique.");
    }

    #[test]
    fn a15_compares_go_values() {
        let doc = app();
        let stored = apply(&doc, &run(Operation::Create, None, &doc, &FakeFacts::new()));
        // a key the Go type does not have is invisible to upstream
        let mut extra = stored.clone();
        extra["spec"]["notAGoField"] = json!({"x": 1});
        extra["spec"]["roles"][0]["alsoUnknown"] = json!(true);
        let v = run(Operation::Update, Some(&stored), &extra, &referenced());
        assert!(v.allowed, "{:?}", v.messages);
        // zero-valued plain fields are the same Go value as absent ones
        let mut zero = stored.clone();
        zero["spec"]["systemdRequired"] = json!(false);
        zero["spec"]["logoURL"] = json!("");
        assert!(run(Operation::Update, Some(&stored), &zero, &referenced()).allowed);
        // an empty list equals a nil one ...
        let mut empty = stored.clone();
        empty["spec"]["capabilities"] = json!([]);
        assert!(run(Operation::Update, Some(&stored), &empty, &referenced()).allowed);
        // ... but persistDirs is a pointer to a list: [] is not "no persistDirs"
        let mut no_dirs = stored.clone();
        no_dirs["spec"]["roles"][0]
            .as_object_mut()
            .unwrap()
            .remove("persistDirs");
        let mut empty_dirs = no_dirs.clone();
        empty_dirs["spec"]["roles"][0]["persistDirs"] = json!([]);
        let v = run(Operation::Update, Some(&no_dirs), &empty_dirs, &referenced());
        assert!(!v.allowed);
        assert!(v.messages[0].starts_with("KubeDirectorApp resource cannot be deleted or modified"));
        // quantities compare by value
        let mut q_old = stored.clone();
        q_old["spec"]["roles"][0]["minResources"] = json!({"memory": "1Gi"});
        let mut q_new = q_old.clone();
        q_new["spec"]["roles"][0]["minResources"] = json!({"memory": "1024Mi"});
        assert!(run(Operation::Update, Some(&q_old), &q_new, &referenced()).allowed);
    }

    #[test]
    fn a15_undecodable_old_object_is_reported() {
        let doc = app();
        let mut old = apply(&doc, &run(Operation::Create, None, &doc, &FakeFacts::new()));
        old["spec"]["configSchemaVersion"] = json!("seven");
        let v = run(Operation::Update, Some(&old), &doc, &referenced());
        assert_eq!(
            v.messages,
            vec!["json: cannot unmarshal string into Go struct field KubeDirectorAppSpec.spec.configSchemaVersion of type int".to_string()]
        );
    }

    #[test]
    fn a3_decodes_like_go() {
        // nulls are accepted wherever Go accepts them
        let mut doc = app();
        doc["spec"]["services"] = Value::Null;
        doc["spec"]["config"]["roleServices"] = Value::Null;
        doc["spec"]["roles"][1]["persistDirs"] = Value::Null;
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        assert!(v.allowed, "{:?}", v.messages);
        // minResources are decoded as quantities
        let mut doc = app();
        doc["spec"]["roles"][0]["minResources"] = json!({"cpu": "lots"});
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        assert_eq!(
            v.messages,
            vec![
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                    .to_string()
            ]
        );
        doc["spec"]["roles"][0]["minResources"] = json!({"cpu": 2});
        assert!(run(Operation::Create, None, &doc, &FakeFacts::new()).allowed);
    }

    #[test]
    fn cardinality_parsing() {
        assert_eq!(parse_cardinality("3"), Some((3, false)));
        assert_eq!(parse_cardinality("0+"), Some((0, true)));
        assert_eq!(parse_cardinality("+"), None);
        assert_eq!(parse_cardinality("x"), None);
        assert_eq!(role_cardinality("3"), (3, false));
        assert_eq!(role_cardinality("2+"), (2, true));
        assert_eq!(role_cardinality("x"), (0, false));
        assert_eq!(role_cardinality("+"), (0, true));
    }
}
