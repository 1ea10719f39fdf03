//! Tests of the kdcluster rules C-1..C-43 and mutations C-M1..C-M8.

use serde_json::{json, Value};

use super::*;
use crate::admission::{
    secretkeys,
    testutil::{apply, ctx, CountingEntropy, FakeFacts},
    SarAnswer, StatusToken,
};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn app() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "web"},
        "spec": {
            "label": {"name": "Web"}, "distroID": "example/web", "version": "1", "configSchemaVersion": 7,
            "systemdRequired": true,
            "roles": [
                {"id": "master", "cardinality": "1", "imageRepoTag": "img", "configPackage": null},
                {"id": "worker", "cardinality": "1+", "imageRepoTag": "img", "configPackage": null,
                 "minStorage": {"size": "10Gi", "ephemeralModeSupported": false}},
                {"id": "extra", "cardinality": "0+", "imageRepoTag": "img", "configPackage": null,
                 "minResources": {"memory": "2Gi", "cpu": "0"}}
            ],
            "config": {"roleServices": [], "selectedRoles": ["master", "worker", "extra"]}
        }
    })
}

fn limits() -> Value {
    json!({"limits": {"memory": "4Gi", "cpu": "2"}, "requests": {"memory": "4Gi", "cpu": "2"}})
}

fn cluster() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": "c1", "namespace": "ns1", "uid": "uid-1"},
        "spec": {
            "app": "web",
            "roles": [
                {"id": "master", "resources": limits()},
                {"id": "worker", "members": 2, "resources": limits(), "storage": {"size": "20Gi"}}
            ]
        }
    })
}

fn facts() -> FakeFacts {
    let mut f = FakeFacts::new().with_app("ns1", app());
    f.storage_classes
        .extend(["standard".to_string(), "fast".to_string()]);
    f.default_sc = Some("standard".into());
    f.kd_config =
        Some(json!({"metadata": {"name": "kd-global-config"}, "spec": {"masterEncryptionKey": KEY}}));
    f
}

fn run(op: Operation, old: Option<&Value>, new: &Value, f: &FakeFacts) -> Verdict {
    let e = CountingEntropy(0.into());
    admit_cluster(op, old, Some(new), &ctx(f, &e, "ns1", "c1"))
}

fn create(doc: &Value, f: &FakeFacts) -> Verdict {
    run(Operation::Create, None, doc, f)
}

fn rejects(v: &Verdict, msg: &str) {
    assert!(!v.allowed, "expected rejection with {msg}");
    assert!(
        v.messages.iter().any(|m| m == msg),
        "{:?} lacks {msg}",
        v.messages
    );
    assert!(v.patch.is_empty());
}

/// A stored (admitted) kdcluster with a status showing members of every role.
fn stored_with_status() -> Value {
    let doc = cluster();
    let mut stored = apply(&doc, &create(&doc, &facts()));
    stored["status"] = json!({
        "state": "configured", "generationUID": "g1", "clusterService": "kdhs-x", "lastNodeID": 3,
        "roles": [
            {"id": "master", "statefulSet": "kdss-a", "members": [{"pod": "kdss-a-0", "state": "configured", "stateDetail": {}}]},
            {"id": "worker", "statefulSet": "kdss-b", "members": [{"pod": "kdss-b-0", "state": "configured", "stateDetail": {}}]}
        ],
        "memberStateRollup": {}
    });
    stored
}

#[test]
fn conforming_create_is_fully_defaulted() {
    let doc = cluster();
    let v = create(&doc, &facts());
    assert!(v.notes.is_empty(), "{:?}", v.notes);
    let stored = apply(&doc, &v);
    let spec = &stored["spec"];
    assert_eq!(spec["appCatalog"], "local"); // C-M1
    assert_eq!(spec["roles"][0]["members"], 1); // C-M3
    assert_eq!(spec["roles"][1]["members"], 2);
    assert_eq!(spec["roles"][1]["storage"]["storageClassName"], "standard"); // C-M4
    assert_eq!(spec["serviceType"], "LoadBalancer"); // C-M5
    assert_eq!(spec["namingScheme"], "UID"); // C-M6
}

#[test]
fn c9_app_found_only_in_kd_namespace_is_system_catalog() {
    let mut f = facts();
    f.apps.clear();
    f = f.with_app("kd-system", app());
    let doc = cluster();
    let stored = apply(&doc, &create(&doc, &f));
    assert_eq!(stored["spec"]["appCatalog"], "system");
    // explicit local catalog does not fall back to the KD namespace
    let mut local = cluster();
    local["spec"]["appCatalog"] = json!("local");
    rejects(
        &create(&local, &f),
        "Invalid app(web). This app resource ID has not been registered.",
    );
}

#[test]
fn c9_unknown_app_is_fatal() {
    let mut doc = cluster();
    doc["spec"]["app"] = json!("nope");
    let v = create(&doc, &facts());
    assert_eq!(
        v.messages,
        vec!["Invalid app(nope). This app resource ID has not been registered.".to_string()]
    );
}

#[test]
fn c1_undecodable_old_object_rejected() {
    let mut old = cluster();
    old["spec"]["roles"] = json!(5);
    let msg = "json: cannot unmarshal number into Go struct field KubeDirectorClusterSpec.spec.roles of type []v1beta1.Role";
    for op in [Operation::Update, Operation::Delete] {
        assert_eq!(
            run(op, Some(&old), &cluster(), &facts()).messages,
            vec![msg.to_string()]
        );
    }
}

#[test]
fn c2_c3_delete_while_restoring() {
    let mut old = cluster();
    assert!(run(Operation::Delete, Some(&old), &old.clone(), &facts()).allowed);
    old["metadata"]["labels"] = json!({LABEL_RESTORING: ""});
    rejects(
        &run(Operation::Delete, Some(&old), &old.clone(), &facts()),
        "delete not allowed while kubedirector.hpe.com/restoring label exists, unless kubedirector.hpe.com/allow-delete-while-restoring label also exists",
    );
    old["metadata"]["labels"][LABEL_ALLOW_DELETE_WHILE_RESTORING] = json!("whatever");
    assert!(run(Operation::Delete, Some(&old), &old.clone(), &facts()).allowed);
}

#[test]
fn c4_undecodable_new_object_rejected() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["members"] = json!("three");
    assert_eq!(
        create(&doc, &facts()).messages,
        vec![
            "json: cannot unmarshal string into Go struct field Role.spec.roles.members of type int32"
                .to_string()
        ]
    );
    let mut doc = cluster();
    doc["spec"]["roles"][0]["resources"]["limits"]["memory"] = json!("four gigs");
    assert_eq!(
        create(&doc, &facts()).messages,
        vec![crate::admission::quantity::QuantityError::Format.to_string()]
    );
}

#[test]
fn c5_restore_adds_label_and_skips_validation() {
    let mut doc = cluster();
    doc["spec"]["app"] = json!("missing-app");
    doc["metadata"]["annotations"] = json!({ANNOTATION_STATUS_BACKUP_EXISTS: "true"});
    doc["status"] = json!({"state": "configured"});
    let stored = apply(&doc, &create(&doc, &facts()));
    assert_eq!(stored["metadata"]["labels"], json!({LABEL_RESTORING: ""}));
    assert!(stored["spec"].get("serviceType").is_none());
    doc["metadata"]["labels"] = json!({"team": "a"});
    let stored = apply(&doc, &create(&doc, &facts()));
    assert_eq!(
        stored["metadata"]["labels"],
        json!({"team": "a", LABEL_RESTORING: ""})
    );
}

#[test]
fn c6_no_spec_change_while_restoring() {
    let mut old = stored_with_status();
    old["metadata"]["labels"] = json!({LABEL_RESTORING: ""});
    let mut new = old.clone();
    new["spec"]["roles"][1]["members"] = json!(3);
    rejects(
        &run(Operation::Update, Some(&old), &new, &facts()),
        "spec changes not allowed while kubedirector.hpe.com/restoring label exists",
    );
}

#[test]
fn c7_status_is_read_only() {
    let mut doc = cluster();
    doc["status"] = json!({"state": "configured"});
    rejects(
        &create(&doc, &facts()),
        "KubeDirector-related status properties are read-only",
    );
    // unchanged status on an update passes (no token recorded)
    let old = stored_with_status();
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({"a": "b"});
    let f = facts();
    assert!(run(Operation::Update, Some(&old), &new, &f).allowed);
    // changed status without a token is rejected
    let mut tampered = old.clone();
    tampered["status"]["state"] = json!("creating");
    rejects(
        &run(Operation::Update, Some(&old), &tampered, &f),
        "KubeDirector-related status properties are read-only",
    );
    // a known token must match, and once validated the status may not change
    let mut f = facts();
    f.tokens.insert(
        "uid-1".into(),
        StatusToken {
            uid: "g2".into(),
            validated: false,
        },
    );
    rejects(
        &run(Operation::Update, Some(&old), &new, &f),
        "KubeDirector-related status properties are read-only",
    );
    let mut ok = tampered.clone();
    ok["status"]["generationUID"] = json!("g2");
    assert!(run(Operation::Update, Some(&old), &ok, &f).allowed);
    assert!(f.validated.borrow().contains(&"uid-1".to_string()));
    f.tokens.insert(
        "uid-1".into(),
        StatusToken {
            uid: "g2".into(),
            validated: true,
        },
    );
    rejects(
        &run(Operation::Update, Some(&old), &ok, &f),
        "KubeDirector-related status properties are read-only",
    );
}

#[test]
fn c8_unchanged_spec_shortcuts_even_if_app_is_gone() {
    let old = stored_with_status();
    let mut f = facts();
    f.apps.clear();
    let v = run(Operation::Update, Some(&old), &old.clone(), &f);
    assert!(v.allowed && v.patch.is_empty());
    // leaving restore mode runs full validation
    let mut restoring = old.clone();
    restoring["metadata"]["labels"] = json!({LABEL_RESTORING: ""});
    rejects(
        &run(Operation::Update, Some(&restoring), &old, &f),
        "Invalid app(web). This app resource ID has not been registered.",
    );
}

#[test]
fn c10_spec_change_rules_and_no_status_patch_r4() {
    let old = stored_with_status();
    let mut new = old.clone();
    new["spec"]["roles"][1]["members"] = json!(3);
    let v = run(Operation::Update, Some(&old), &new, &facts());
    assert!(v.allowed, "{v:?}");
    // R4: the webhook never patches status (the API server would discard it anyway).
    assert!(
        !v.patch.iter().any(|p| p.path().as_str().starts_with("/status")),
        "{:?}",
        v.patch
    );
    let stored = apply(&new, &v);
    assert_eq!(stored["status"]["state"], old["status"]["state"]);
    // (a) no status
    let mut no_status = new.clone();
    no_status.as_object_mut().unwrap().remove("status");
    let mut old_no_status = old.clone();
    old_no_status.as_object_mut().unwrap().remove("status");
    rejects(
        &run(Operation::Update, Some(&old_no_status), &no_status, &facts()),
        "Change to spec not allowed before previous spec change has been processed.",
    );
    // (b) pending notifications
    let mut pending_old = old.clone();
    pending_old["status"]["roles"][1]["members"][0]["stateDetail"]["pendingNotifyCmds"] =
        json!([{"arguments": ["--addnodes"]}]);
    let mut pending_new = new.clone();
    pending_new["status"] = pending_old["status"].clone();
    rejects(
        &run(Operation::Update, Some(&pending_old), &pending_new, &facts()),
        "Change to spec not allowed because some members have not processed notifications of previous change.",
    );
    // (c) already spec modified
    let mut modified_old = old.clone();
    modified_old["status"]["state"] = json!("spec modified");
    let mut modified_new = new.clone();
    modified_new["status"] = modified_old["status"].clone();
    rejects(
        &run(Operation::Update, Some(&modified_old), &modified_new, &facts()),
        "Change to spec not allowed before previous spec change has been processed.",
    );
}

#[test]
fn c11_member_count_must_match_cardinality() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["members"] = json!(2);
    rejects(
        &create(&doc, &facts()),
        "Invalid member count for role(master). Specified member count:2 Role cardinality:1",
    );
    doc["spec"]["roles"][0]["members"] = json!(1);
    doc["spec"]["roles"][1]["members"] = json!(0);
    rejects(
        &create(&doc, &facts()),
        "Invalid member count for role(worker). Specified member count:0 Role cardinality:1+",
    );
}

#[test]
fn c12_total_members_capped() {
    let mut doc = cluster();
    doc["spec"]["roles"][1]["members"] = json!(1000);
    rejects(
        &create(&doc, &facts()),
        "Maximum number of total members per KD cluster supported is 1000.",
    );
    doc["spec"]["roles"][1]["members"] = json!(999);
    assert!(create(&doc, &facts()).allowed);
}

#[test]
fn c13_role_labels_and_annotations_validated() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["podLabels"] = json!({"bad key": "v"});
    doc["spec"]["roles"][1]["serviceAnnotations"] = json!({"a/b/c": "v"});
    // per role, upstream reports pod labels, pod annotations, service labels, service annotations
    doc["spec"]["roles"][0]["serviceLabels"] = json!({"k": "-v"});
    doc["spec"]["roles"][0]["podAnnotations"] = json!({"/x": "y"});
    let v = create(&doc, &facts());
    assert_eq!(
        v.messages[1..3],
        [
            "spec.roles[0].podAnnotations: Invalid value: \"/x\": prefix part must be non-empty".to_string(),
            format!(
                "spec.roles[0].serviceLabels: Invalid value: \"-v\": {}",
                crate::admission::labels::is_valid_label_value("-v")[0]
            ),
        ]
    );
    assert!(!v.allowed);
    assert_eq!(v.messages.len(), 4, "{:?}", v.messages);
    assert!(v.messages[0].starts_with("spec.roles[0].podLabels: Invalid value: \"bad key\": name part must"));
    assert!(v.messages[3]
        .starts_with("spec.roles[1].serviceAnnotations: Invalid value: \"a/b/c\": a qualified name"));
    let mut good = cluster();
    good["spec"]["roles"][0]["podLabels"] = json!({"tier": "gold"});
    good["spec"]["roles"][0]["podAnnotations"] = json!({"Example.com/Note": "free text"});
    assert!(create(&good, &facts()).allowed);
}

#[test]
fn c14_c15_c16_role_set_checks() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["id"] = json!("boss");
    let v = create(&doc, &facts());
    rejects(
        &v,
        "Invalid role(boss) in app(web) specified. Valid roles: \"master,worker,extra\"",
    );
    rejects(
        &v,
        "Active role(master) in app(web) must have its configuration included in the roles array.",
    );
    let mut dup = cluster();
    let r = dup["spec"]["roles"][1].clone();
    dup["spec"]["roles"].as_array_mut().unwrap().push(r);
    rejects(
        &create(&dup, &facts()),
        "Each id in the roles array must be unique.",
    );
}

#[test]
fn c17_minimum_resources() {
    let mut doc = cluster();
    doc["spec"]["roles"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "extra", "members": 1,
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"memory": "1024Mi"}}}));
    rejects(
        &create(&doc, &facts()),
        "Specified resource(\"memory\") value(\"1Gi\") for role(\"extra\") is invalid. Minimum value must be \"2Gi\".",
    );
    doc["spec"]["roles"][2]["resources"] = json!({"limits": {"cpu": "1", "memory": "4Gi"}});
    assert!(
        create(&doc, &facts()).allowed,
        "limits are consulted when requests lack the resource (R20)"
    );
    doc["spec"]["roles"][2]["resources"] = json!({"limits": {"cpu": "1"}});
    // CRD requires memory in limits, but the webhook reports the missing resource as "0"
    rejects(
        &create(&doc, &facts()),
        "Specified resource(\"memory\") value(\"0\") for role(\"extra\") is invalid. Minimum value must be \"2Gi\".",
    );
}

#[test]
fn c18_minimum_storage() {
    let mut doc = cluster();
    doc["spec"]["roles"][1]["storage"] = json!({"size": "5Gi"});
    rejects(
        &create(&doc, &facts()),
        "Specified persistent storage size(\"5Gi\") for role(\"worker\") is invalid. Minimum size must be \"10Gi\".",
    );
    doc["spec"]["roles"][1].as_object_mut().unwrap().remove("storage");
    rejects(
        &create(&doc, &facts()),
        "Specified persistent storage size(\"0\") for role(\"worker\") is invalid. Minimum size must be \"10Gi\".",
    );
    let mut f = facts();
    let mut a = app();
    a["spec"]["roles"][1]["minStorage"]["ephemeralModeSupported"] = json!(true);
    f = f.with_app("ns1", a);
    assert!(create(&doc, &f).allowed);
}

#[test]
fn c19_c20_service_accounts() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["serviceAccountName"] = json!("runner");
    rejects(
        &create(&doc, &facts()),
        "service account runner requested by role master does not exist",
    );
    let mut f = facts();
    f.service_accounts.insert(("ns1".into(), "runner".into()));
    assert!(create(&doc, &f).allowed);
    let seen = f.sar_seen.borrow().clone();
    assert_eq!(seen[0].resource, "serviceaccounts");
    assert_eq!(seen[0].name, "runner");
    assert_eq!(seen[0].user.username, "alice");
    f.sar = Some(SarAnswer {
        allowed: false,
        denied: false,
        reason: "RBAC: no".into(),
    });
    rejects(&create(&doc, &f), "RBAC: no");
    f.unknown.insert("sa");
    f.unknown.insert("sar");
    let v = create(&doc, &f);
    assert!(v.allowed);
    assert_eq!(
        v.notes,
        vec![
            "C-19 not checked offline: service account existence".to_string(),
            "C-20 not checked offline: SubjectAccessReview".to_string()
        ]
    );
}

#[test]
fn c21_c22_storage_size() {
    let mut doc = cluster();
    doc["spec"]["roles"][1]["storage"]["size"] = json!("big");
    rejects(
        &create(&doc, &facts()),
        "Storage size for role (worker) is incorrectly defined.",
    );
    doc["spec"]["roles"][1]["storage"]["size"] = json!("0");
    let mut f = facts();
    f.apps.clear();
    let mut a = app();
    a["spec"]["roles"][1]
        .as_object_mut()
        .unwrap()
        .remove("minStorage");
    f = f.with_app("ns1", a);
    rejects(
        &create(&doc, &f),
        "Storage size for role (worker) should be greater than zero.",
    );
}

#[test]
fn c23_c24_storage_classes() {
    let mut doc = cluster();
    doc["spec"]["roles"][1]["storage"]["storageClassName"] = json!("slow");
    rejects(
        &create(&doc, &facts()),
        "Unable to fetch storageClassName(slow) for role(worker).",
    );
    doc["spec"]["roles"][1]["storage"]["storageClassName"] = json!("fast");
    let stored = apply(&doc, &create(&doc, &facts()));
    assert_eq!(stored["spec"]["roles"][1]["storage"]["storageClassName"], "fast");
    // no class anywhere
    let mut f = facts();
    f.default_sc = None;
    rejects(
        &create(&cluster(), &f),
        "storageClassName is not specified for one or more roles, and no default storage class is available.",
    );
    // kdconfig default wins over the cluster default, and must exist
    f.kd_config = Some(json!({"spec": {"defaultStorageClassName": "fast"}}));
    let stored = apply(&cluster(), &create(&cluster(), &f));
    assert_eq!(stored["spec"]["roles"][1]["storage"]["storageClassName"], "fast");
    f.kd_config = Some(json!({"spec": {"defaultStorageClassName": "gone"}}));
    rejects(
        &create(&cluster(), &f),
        "storageClassName is not specified for one or more roles, and default storage class (gone) is not available on the system.",
    );
    // offline: unknown default class leaves the field unset, with a note
    let mut f = facts();
    f.unknown.insert("default_sc");
    let v = create(&cluster(), &f);
    let stored = apply(&cluster(), &v);
    assert!(stored["spec"]["roles"][1]["storage"]
        .get("storageClassName")
        .is_none());
    assert_eq!(
        v.notes,
        vec!["C-24 not checked offline: default storage class (storageClassName left unset)".to_string()]
    );
}

#[test]
fn c25_c26_shared_memory() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["sharedMemory"] = json!("1Gi");
    let mut f = facts();
    assert!(create(&doc, &f).allowed);
    f.version = (1, 21);
    rejects(
        &create(&doc, &f),
        "Specifying shared memory size for role (master) requires K8s version >= 1.22.",
    );
    f.kd_config = Some(json!({"spec": {"masterEncryptionKey": KEY, "forceSharedMemorySizeSupport": true}}));
    assert!(create(&doc, &f).allowed);
    f.kd_config = Some(json!({"spec": {"forceSharedMemorySizeSupport": false}}));
    rejects(
        &create(&doc, &f),
        "Specifying shared memory size for role (master) not allowed; feature disabled by global KubeDirector config.",
    );
    let f = facts();
    doc["spec"]["roles"][0]["sharedMemory"] = json!("lots");
    rejects(
        &create(&doc, &f),
        "Shared memory size for role (master) is incorrectly defined.",
    );
    doc["spec"]["roles"][0]["sharedMemory"] = json!("0");
    rejects(
        &create(&doc, &f),
        "Shared memory size for role (master) should be greater than zero.",
    );
}

#[test]
fn c27_c28_service_type_and_naming_scheme_from_kdconfig() {
    let mut f = facts();
    f.kd_config =
        Some(json!({"spec": {"defaultServiceType": "NodePort", "defaultNamingScheme": "CrNameRole"}}));
    let stored = apply(&cluster(), &create(&cluster(), &f));
    assert_eq!(stored["spec"]["serviceType"], "NodePort");
    assert_eq!(stored["spec"]["namingScheme"], "CrNameRole");
    let mut given = cluster();
    given["spec"]["serviceType"] = json!("ClusterIP");
    given["spec"]["namingScheme"] = json!("UID");
    let stored = apply(&given, &create(&given, &f));
    assert_eq!(stored["spec"]["serviceType"], "ClusterIP");
    assert_eq!(stored["spec"]["namingScheme"], "UID");
}

#[test]
fn c29_file_injection_urls() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["fileInjections"] =
        json!([{"srcURL": "http://files.invalid/a.sh", "destDir": "/opt"}]);
    let mut f = facts();
    assert!(create(&doc, &f).allowed);
    f.bad_urls.insert(
        "http://files.invalid/a.sh".into(),
        "dial tcp: no such host".into(),
    );
    rejects(
        &create(&doc, &f),
        "Unable to access the specified URL(\"http://files.invalid/a.sh\") in file injection spec for the role (master). error: dial tcp: no such host.",
    );
}

#[test]
fn c30_c31_secrets_and_default_secret_copy() {
    let mut doc = cluster();
    doc["spec"]["defaultSecret"] = json!({"name": "kd-creds", "mountPath": "/etc/creds"});
    doc["spec"]["roles"][1]["secret"] = json!({"name": "kd-worker", "mountPath": "/etc/w"});
    let mut f = facts();
    rejects(
        &create(&doc, &f),
        "Unable to find defaultSecret(kd-creds) in namespace(ns1).",
    );
    f.secrets.insert(("ns1".into(), "kd-creds".into()));
    rejects(
        &create(&doc, &f),
        "Unable to find secret(kd-worker) for role(worker) in namespace(ns1).",
    );
    f.secrets.insert(("ns1".into(), "kd-worker".into()));
    let stored = apply(&doc, &create(&doc, &f));
    assert_eq!(
        stored["spec"]["roles"][0]["secret"],
        json!({"name": "kd-creds", "mountPath": "/etc/creds"})
    ); // C-M7
    assert_eq!(stored["spec"]["roles"][1]["secret"]["name"], "kd-worker");
    f.kd_config = Some(json!({"spec": {"requiredSecretPrefix": "kd-w"}}));
    rejects(
        &create(&doc, &f),
        "defaultSecret(kd-creds) does not have the required name prefix(kd-w).",
    );
    doc["spec"].as_object_mut().unwrap().remove("defaultSecret");
    doc["spec"]["roles"][1]["secret"]["name"] = json!("other");
    rejects(
        &create(&doc, &f),
        "Secret(other) for role(worker) does not have the required name prefix(kd-w).",
    );
}

#[test]
fn c32_secret_keys_are_encrypted_and_encrypted_values_protected() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["secretKeys"] = json!([{"name": "pw", "value": "hunter2"}, {"name": "empty"}]);
    let f = facts();
    let stored = apply(&doc, &create(&doc, &f));
    let sk = &stored["spec"]["roles"][0]["secretKeys"];
    assert!(sk[0].get("value").is_none());
    assert_eq!(sk[0]["name"], "pw");
    assert_eq!(
        secretkeys::decrypt(KEY, sk[0]["encryptedValue"].as_str().unwrap()).unwrap(),
        "hunter2"
    );
    assert_eq!(
        secretkeys::decrypt(KEY, sk[1]["encryptedValue"].as_str().unwrap()).unwrap(),
        ""
    );
    // hand-written encrypted values are forbidden on create ...
    let mut manual = cluster();
    manual["spec"]["roles"][0]["secretKeys"] = json!([{"name": "pw", "encryptedValue": "abcd"}]);
    rejects(
        &create(&manual, &f),
        "manually setting secret key (pw) encrypted value is forbidden",
    );
    // ... but keeping the stored one on update is fine (and not re-encrypted)
    let mut old = stored.clone();
    old["status"] = json!({"state": "configured", "roles": []});
    let mut new = old.clone();
    new["spec"]["roles"][1]["members"] = json!(3);
    let v = run(Operation::Update, Some(&old), &new, &f);
    assert!(v.allowed, "{:?}", v.messages);
    assert!(!v.patch.iter().any(|p| p.path().as_str().contains("secretKeys")));
    // no master key: cannot encrypt
    let mut f = facts();
    f.kd_config = None;
    rejects(&create(&doc, &f), "cannot encrypt secret key pw");
}

fn pvc(mode: &str, access: &str) -> Value {
    json!({"metadata": {"name": "shared"}, "spec": {"volumeMode": mode, "accessModes": [access]}})
}

#[test]
fn c33_to_c38_volume_projections() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["volumeProjections"] =
        json!([{"pvcName": "shared", "mountPath": "/data"}, {"pvcName": "shared", "mountPath": "/data"}]);
    let mut f = facts();
    f.pvcs
        .insert(("ns1".into(), "shared".into()), pvc("Filesystem", "ReadOnlyMany"));
    rejects(
        &create(&doc, &f),
        "Specified mountPath(/data) for role(master) is invalid. It must be unique within the role.",
    );
    doc["spec"]["roles"][0]["volumeProjections"] =
        json!([{"pvcName": "shared", "mountPath": "/sys/fs/cgroup"}]);
    rejects(
        &create(&doc, &f),
        "Specified mountPath(/sys/fs/cgroup) for role(master) is invalid. It clashes with system generated mountPath.",
    );
    doc["spec"]["roles"][0]["volumeProjections"] = json!([{"pvcName": "shared", "mountPath": "/data"}]);
    assert!(create(&doc, &f).allowed);
    let sars = f.sar_seen.borrow().clone();
    assert!(sars
        .iter()
        .any(|s| s.resource == "persistentvolumeclaims" && s.name == "shared"));
    f.sar = Some(SarAnswer {
        allowed: false,
        denied: true,
        reason: "no pvc for you".into(),
    });
    rejects(&create(&doc, &f), "no pvc for you");
    f.sar = None;
    f.pvcs
        .insert(("ns1".into(), "shared".into()), pvc("Block", "ReadOnlyMany"));
    rejects(
        &create(&doc, &f),
        "Specified persistentvolumeclaim(shared) for role(master) is invalid. Its volumeMode must be Filesystem.",
    );
    // RWO claim used by master (1) and worker (2 members)
    f.pvcs.insert(
        ("ns1".into(), "shared".into()),
        pvc("Filesystem", "ReadWriteOnce"),
    );
    assert!(create(&doc, &f).allowed);
    doc["spec"]["roles"][1]["volumeProjections"] = json!([{"pvcName": "shared", "mountPath": "/data"}]);
    rejects(
        &create(&doc, &f),
        "Specified persistentvolumeclaim(shared) is used by 3 members. A persistentvolumeclaim used by more than one member must have the ReadWriteMany or ReadOnlyMany access mode.",
    );
    f.pvcs.clear();
    rejects(
        &create(&doc, &f),
        "Unable to find persistentvolumeclaim(shared) in namespace(ns1) as specified for role(master).",
    );
}

#[test]
fn c40_to_c43_immutable_properties_take_precedence() {
    let old = stored_with_status();
    let mut new = old.clone();
    new["spec"]["app"] = json!("other-app");
    // C-9 is fatal and returns before the immutability checks, exactly as upstream.
    rejects(
        &run(Operation::Update, Some(&old), &new, &facts()),
        "Invalid app(other-app). This app resource ID has not been registered.",
    );
    let f = facts().with_app("ns1", {
        let mut a = app();
        a["metadata"]["name"] = json!("other-app");
        a
    });
    let v = run(Operation::Update, Some(&old), &new, &f);
    assert_eq!(v.messages, vec!["The app property is read-only.".to_string()]);
    let mut new = old.clone();
    new["spec"]["appCatalog"] = json!("system");
    new["spec"]["roles"][0]["members"] = json!(7); // C-11 error is replaced by the C-41 one
    let v = run(
        Operation::Update,
        Some(&old),
        &new,
        &facts().with_app("kd-system", app()),
    );
    assert_eq!(
        v.messages,
        vec!["The appCatalog property is read-only.".to_string()]
    );
    let mut new = old.clone();
    new["spec"]["namingScheme"] = json!("CrNameRole");
    rejects(
        &run(Operation::Update, Some(&old), &new, &facts()),
        "The namingScheme property is read-only.",
    );
}

#[test]
fn c42_role_properties_frozen_while_members_exist() {
    let old = stored_with_status();
    let mut new = old.clone();
    new["spec"]["roles"][1]["members"] = json!(5);
    assert!(
        run(Operation::Update, Some(&old), &new, &facts()).allowed,
        "members may change"
    );
    new["spec"]["roles"][1]["resources"]["limits"]["cpu"] = json!("3");
    new["spec"]["roles"][1]["resources"]["requests"]["cpu"] = json!("3");
    rejects(
        &run(Operation::Update, Some(&old), &new, &facts()),
        "Role(worker) properties other than the members count cannot be modified while role members exist.",
    );
    // a removed role that still has status may not come back yet
    let mut old2 = old.clone();
    old2["spec"]["roles"].as_array_mut().unwrap().remove(0);
    rejects(
        &run(Operation::Update, Some(&old2), &old, &facts()),
        "Role(master) properties other than the members count cannot be modified while role members exist.",
    );
    // storage class defaulting in memory makes an omitted class compare equal
    let mut same = old.clone();
    same["spec"]["roles"][1]["storage"]
        .as_object_mut()
        .unwrap()
        .remove("storageClassName");
    same["spec"]["roles"][1]["members"] = json!(4);
    assert!(run(Operation::Update, Some(&old), &same, &facts()).allowed);
}

#[test]
fn offline_unknown_app_fact_is_a_note() {
    let mut f = facts();
    f.unknown.insert("app");
    let v = create(&cluster(), &f);
    assert!(v.allowed);
    assert_eq!(
        v.notes,
        vec!["C-9 not checked offline: kdapp lookup (and every rule that needs the kdapp)".to_string()]
    );
}

// ---- Go decoding / deep-equality semantics (audit additions) ----

#[test]
fn c5_restore_label_patch_paths() {
    let mut doc = cluster();
    doc["metadata"]["annotations"] = json!({ANNOTATION_STATUS_BACKUP_EXISTS: ""});
    // other labels: the single key is added, `/` escaped as `~1`
    doc["metadata"]["labels"] = json!({"team": "a"});
    let v = create(&doc, &facts());
    assert_eq!(
        serde_json::to_value(&v.patch).unwrap(),
        json!([{"op": "add", "path": "/metadata/labels/kubedirector.hpe.com~1restoring", "value": ""}])
    );
    // upstream tests len(labels) == 0: an empty map is replaced by the whole map, as null is
    for labels in [json!({}), Value::Null] {
        doc["metadata"]["labels"] = labels;
        let v = create(&doc, &facts());
        assert_eq!(
            serde_json::to_value(&v.patch).unwrap(),
            json!([{"op": "add", "path": "/metadata/labels", "value": {LABEL_RESTORING: ""}}])
        );
    }
    // already labelled: allowed without a patch (the value is kept)
    doc["metadata"]["labels"] = json!({LABEL_RESTORING: "x"});
    let v = create(&doc, &facts());
    assert!(v.allowed && v.patch.is_empty());
}

#[test]
fn c7_empty_status_object_is_a_status() {
    // Go: a non-nil *Status (even all zero) differs from the nil status of a create
    let mut doc = cluster();
    doc["status"] = json!({});
    rejects(
        &create(&doc, &facts()),
        "KubeDirector-related status properties are read-only",
    );
    doc["status"] = Value::Null;
    assert!(create(&doc, &facts()).allowed);
}

#[test]
fn c7_status_compare_is_semantic_deep_equality() {
    let old = stored_with_status();
    let f = facts();
    // zero scalars, an all-false rollup and empty lists are the same Go value as absent ones
    let mut same = old.clone();
    same["status"]["memberStateRollup"] = json!({"membersDown": false, "configErrors": false});
    same["status"]["lastConnectionHash"] = json!("");
    same["status"]["roles"][0]["members"][0]["stateDetail"] = json!({"configuringContainer": ""});
    same["status"]["roles"][0]["members"][0]["blockDevicePaths"] = json!([]);
    assert!(run(Operation::Update, Some(&old), &same, &f).allowed);
    // a pointer to an empty struct is not a nil pointer
    let mut changed = old.clone();
    changed["status"]["restoreProgress"] = json!({});
    rejects(
        &run(Operation::Update, Some(&old), &changed, &f),
        "KubeDirector-related status properties are read-only",
    );
}

#[test]
fn c8_zero_valued_string_and_equal_quantity_are_no_spec_change() {
    // serviceAccountName is a plain Go string ("" decodes like absent), quantities compare by
    // value: the spec is unchanged and the update short-circuits although the kdapp is gone.
    let old = stored_with_status();
    let mut new = old.clone();
    new["spec"]["roles"][0]["serviceAccountName"] = json!("");
    new["spec"]["roles"][0]["resources"]["limits"]["memory"] = json!("4096Mi");
    new["spec"]["roles"][0]["env"] = json!([]);
    let mut f = facts();
    f.apps.clear();
    let v = run(Operation::Update, Some(&old), &new, &f);
    assert!(v.allowed, "{:?}", v.messages);
    assert!(v.patch.is_empty());
    // a pointer to an empty struct is a change, and runs the rules
    new["spec"]["roles"][0]["blockStorage"] = json!({});
    rejects(
        &run(Operation::Update, Some(&old), &new, &f),
        "Invalid app(web). This app resource ID has not been registered.",
    );
}

#[test]
fn c42_compares_roles_semantically() {
    let old = stored_with_status();
    // a pointer to an empty struct added to a role with members is a change
    let mut new = old.clone();
    new["spec"]["roles"][0]["blockStorage"] = json!({});
    rejects(
        &run(Operation::Update, Some(&old), &new, &facts()),
        "Role(master) properties other than the members count cannot be modified while role members exist.",
    );
    // an equal quantity written differently, an empty env list and a null are not
    let mut new = old.clone();
    new["spec"]["roles"][0]["resources"]["requests"]["memory"] = json!("4096Mi");
    new["spec"]["roles"][0]["env"] = json!([]);
    new["spec"]["roles"][0]["affinity"] = Value::Null;
    new["spec"]["roles"][1]["members"] = json!(3);
    let v = run(Operation::Update, Some(&old), &new, &facts());
    assert!(v.allowed, "{:?}", v.messages);
}

#[test]
fn c4_numeric_quantities_decode_like_go() {
    // Go's Quantity.UnmarshalJSON reads unquoted numbers; an extended resource is not typed by
    // the CRD, so `2` reaches the webhook as a JSON number.
    let mut doc = cluster();
    doc["spec"]["roles"][0]["resources"]["limits"]["example.com/widget"] = json!(2);
    doc["spec"]["roles"][0]["resources"]["requests"]["example.com/widget"] = json!(1.5);
    let v = create(&doc, &facts());
    assert!(v.allowed, "{:?}", v.messages);
    doc["spec"]["roles"][0]["resources"]["limits"]["example.com/widget"] = json!(true);
    let v = create(&doc, &facts());
    assert_eq!(
        v.messages,
        vec![
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                .to_string()
        ]
    );
}

#[test]
fn c17_numeric_minimum_and_request_are_quantities() {
    let mut f = facts();
    let mut a = app();
    a["spec"]["roles"][2]["minResources"] = json!({"example.com/widget": 2});
    f = f.with_app("ns1", a);
    let mut doc = cluster();
    doc["spec"]["roles"].as_array_mut().unwrap().push(
        json!({"id": "extra", "members": 1, "resources": {"limits": {"cpu": "1", "memory": "2Gi"},
            "requests": {"memory": "2Gi", "example.com/widget": 1}}}),
    );
    rejects(
        &create(&doc, &f),
        "Specified resource(\"example.com/widget\") value(\"1\") for role(\"extra\") is invalid. Minimum value must be \"2\".",
    );
    doc["spec"]["roles"][2]["resources"]["requests"]["example.com/widget"] = json!(2);
    assert!(create(&doc, &f).allowed);
}

#[test]
fn c21_storage_size_is_parsed_without_trimming() {
    let mut doc = cluster();
    doc["spec"]["roles"][1]["storage"]["size"] = json!(" 20Gi");
    rejects(
        &create(&doc, &facts()),
        "Storage size for role (worker) is incorrectly defined.",
    );
}

#[test]
fn naming_scheme_cannot_be_dropped_on_update() {
    // R20: namingScheme is immutable; leaving it out would let C-M6 patch in another default
    let old = stored_with_status();
    assert_eq!(old["spec"]["namingScheme"], "UID");
    let mut f = facts();
    f.kd_config = Some(json!({"spec": {"masterEncryptionKey": KEY, "defaultNamingScheme": "CrNameRole"}}));
    let mut new = old.clone();
    new["spec"].as_object_mut().unwrap().remove("namingScheme");
    new["spec"]["roles"][1]["members"] = json!(3);
    let v = run(Operation::Update, Some(&old), &new, &f);
    assert_eq!(
        v.messages,
        vec!["The namingScheme property is read-only.".to_string()]
    );
    new["spec"]["namingScheme"] = json!("UID");
    assert!(run(Operation::Update, Some(&old), &new, &f).allowed);
}

#[test]
fn c12_stops_at_the_role_that_exceeds() {
    // the third role is never examined: its bad labels are not reported
    let mut doc = cluster();
    doc["spec"]["roles"][1]["members"] = json!(1000);
    doc["spec"]["roles"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "extra", "members": 1, "podLabels": {"bad key": "x"},
                     "resources": {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"memory": "2Gi"}}}));
    let v = create(&doc, &facts());
    assert_eq!(
        v.messages,
        vec!["Maximum number of total members per KD cluster supported is 1000.".to_string()]
    );
    doc["spec"]["roles"][1]["members"] = json!(998);
    let v = create(&doc, &facts());
    assert!(v.messages[0].starts_with("spec.roles[2].podLabels: Invalid value: \"bad key\""));
}

#[test]
fn c40_app_is_a_plain_go_string() {
    // absent and "" are the same Go value; only a real change is reported
    assert!(immutable_changes(&json!({"spec": {"app": ""}}), &[], &json!({"spec": {}})).is_empty());
    assert_eq!(
        immutable_changes(&json!({"spec": {"app": "a"}}), &[], &json!({"spec": {}})),
        vec!["The app property is read-only.".to_string()]
    );
}

#[test]
fn c17_compares_exactly_c18_by_rounded_up_integers() {
    // R20: upstream compares Value() (rounded up), so a 500m request met a minimum of 1 CPU;
    // we compare exactly and reject, rendering both quantities canonically.
    let mut a = app();
    a["spec"]["roles"][2]["minResources"] = json!({"cpu": "1", "memory": "0"});
    let f = facts().with_app("ns1", a);
    let mut doc = cluster();
    doc["spec"]["roles"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "extra", "members": 1,
        "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}));
    rejects(
        &create(&doc, &f),
        "Specified resource(\"cpu\") value(\"500m\") for role(\"extra\") is invalid. Minimum value must be \"1\".",
    );
    doc["spec"]["roles"][2]["resources"]["requests"]["cpu"] = json!("1000m");
    assert!(create(&doc, &f).allowed, "1000m equals 1 exactly");
    // C-18 keeps upstream's integer compare: a fractional byte rounds up to the minimum
    let mut doc = cluster();
    doc["spec"]["roles"][1]["storage"] = json!({"size": "10737418239.5"});
    assert!(create(&doc, &facts()).allowed);
    doc["spec"]["roles"][1]["storage"] = json!({"size": "10737418239"});
    rejects(
        &create(&doc, &facts()),
        "Specified persistent storage size(\"10737418239\") for role(\"worker\") is invalid. Minimum size must be \"10Gi\".",
    );
}

#[test]
fn c6_metadata_only_update_while_restoring_is_allowed() {
    let mut old = stored_with_status();
    old["metadata"]["labels"] = json!({LABEL_RESTORING: ""});
    // a label change, plus a spec that only differs in Go zero values: no spec change
    let mut new = old.clone();
    new["metadata"]["labels"]["team"] = json!("a");
    new["spec"]["roles"][0]["serviceAccountName"] = json!("");
    let mut f = facts();
    f.apps.clear(); // C-8 short-circuits before the kdapp lookup
    let v = run(Operation::Update, Some(&old), &new, &f);
    assert!(v.allowed && v.patch.is_empty(), "{:?}", v.messages);
}

#[test]
fn c30_c31_matching_prefix_passes() {
    let mut doc = cluster();
    doc["spec"]["defaultSecret"] = json!({"name": "kd-creds", "mountPath": "/etc/creds"});
    doc["spec"]["roles"][1]["secret"] = json!({"name": "kd-worker", "mountPath": "/etc/w"});
    let mut f = facts();
    f.kd_config = Some(json!({"spec": {"masterEncryptionKey": KEY, "requiredSecretPrefix": "kd-"}}));
    f.secrets.insert(("ns1".into(), "kd-creds".into()));
    f.secrets.insert(("ns1".into(), "kd-worker".into()));
    let v = create(&doc, &f);
    assert!(v.allowed, "{:?}", v.messages);
    // C-30 returns early: a bad default secret hides the role secret's problems
    f.secrets.clear();
    assert_eq!(
        create(&doc, &f).messages,
        vec!["Unable to find defaultSecret(kd-creds) in namespace(ns1).".to_string()]
    );
}

#[test]
fn c_m7_default_secret_is_copied_as_go_marshals_it() {
    let mut doc = cluster();
    doc["spec"]["defaultSecret"] =
        json!({"name": "kd-creds", "mountPath": "/etc/creds", "readOnly": false, "defaultMode": null});
    let mut f = facts();
    f.secrets.insert(("ns1".into(), "kd-creds".into()));
    let stored = apply(&doc, &create(&doc, &f));
    // readOnly is `omitempty` and defaultMode a nil pointer: neither is written
    assert_eq!(
        stored["spec"]["roles"][0]["secret"],
        json!({"name": "kd-creds", "mountPath": "/etc/creds"})
    );
    doc["spec"]["defaultSecret"] =
        json!({"name": "kd-creds", "mountPath": "/etc/creds", "readOnly": true, "defaultMode": 292});
    let stored = apply(&doc, &create(&doc, &f));
    assert_eq!(
        stored["spec"]["roles"][1]["secret"],
        json!({"name": "kd-creds", "defaultMode": 292, "mountPath": "/etc/creds", "readOnly": true})
    );
}

#[test]
fn c32_encrypted_value_must_come_from_the_same_role_and_key() {
    let mut doc = cluster();
    doc["spec"]["roles"][0]["secretKeys"] = json!([{"name": "pw", "value": "hunter2"}]);
    let f = facts();
    let mut old = apply(&doc, &create(&doc, &f));
    old["status"] = json!({"state": "configured", "roles": []});
    let enc = old["spec"]["roles"][0]["secretKeys"][0]["encryptedValue"].clone();
    // the same ciphertext under another key name of the same role
    let mut new = old.clone();
    new["spec"]["roles"][0]["secretKeys"] = json!([{"name": "other", "encryptedValue": enc}]);
    rejects(
        &run(Operation::Update, Some(&old), &new, &f),
        "manually setting secret key (other) encrypted value is forbidden",
    );
    // the same key name in another role
    let mut new = old.clone();
    new["spec"]["roles"][1]["secretKeys"] = json!([{"name": "pw", "encryptedValue": enc}]);
    rejects(
        &run(Operation::Update, Some(&old), &new, &f),
        "manually setting secret key (pw) encrypted value is forbidden",
    );
    // a new plain value next to the kept one is encrypted (replace at its own index)
    let mut new = old.clone();
    new["spec"]["roles"][0]["secretKeys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "token", "value": ""}));
    let v = run(Operation::Update, Some(&old), &new, &f);
    let ops = serde_json::to_value(&v.patch).unwrap();
    let sk_ops: Vec<&Value> = ops
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["path"].as_str().unwrap().contains("secretKeys"))
        .collect();
    assert_eq!(sk_ops.len(), 1, "{ops}");
    assert_eq!(sk_ops[0]["op"], "replace");
    assert_eq!(sk_ops[0]["path"], "/spec/roles/0/secretKeys/1");
    assert_eq!(sk_ops[0]["value"]["name"], "token");
}
