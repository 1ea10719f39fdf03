//! KubeDirectorConfig admission (spec 2.4): rules K-1..K-9 and mutations K-M1..K-M8.
//!
//! K-3 is an early exit, and its two messages go on the wire exactly as upstream wrote them:
//! without the leading newline of the other rejections, the namespace one with a trailing
//! newline ([`Verdict::verbatim`](super::Verdict::verbatim)).

use serde_json::{json, Value};

use super::{
    cluster::check_status,
    get, get_str, has_key,
    labels::{validate_annotations, validate_labels},
    offline_note, op_add, secretkeys, AdmissionContext, Fact, Operation, TokenKind, Verdict,
};

/// Checks a kdconfig document decodes as upstream's Go KubeDirectorConfig does (K-2, K-4);
/// returns the decode error text.
pub fn decode_error(obj: &Value) -> Option<String> {
    super::gotypes::decode_error(obj, &super::gotypes::CONFIG)
}

/// Admits a KubeDirectorConfig request.
pub fn admit_config(
    op: Operation,
    old: Option<&Value>,
    new: Option<&Value>,
    ctx: &AdmissionContext<'_>,
) -> Verdict {
    let mut notes = Vec::new();
    let any_cluster = |notes: &mut Vec<String>, rule: &str| match ctx.facts.any_cluster_exists() {
        Fact::Known(b) => b,
        Fact::Unknown => {
            notes.push(offline_note(rule, "whether any kdcluster exists"));
            false
        }
    };
    match op {
        Operation::Connect => return Verdict::allow(),
        Operation::Delete => {
            // K-1
            let mut v = if any_cluster(&mut notes, "K-1") {
                Verdict::reject("kd-global-config cannot be deleted while kdclusters exist")
            } else {
                Verdict::allow()
            };
            v.notes = notes;
            return v;
        }
        Operation::Create | Operation::Update => {}
    }
    // K-2
    let Some(cfg) = new else {
        return Verdict::reject(super::MISSING_OBJECT);
    };
    if let Some(e) = decode_error(cfg) {
        return Verdict::reject(e);
    }
    // K-3: upstream returns at once, with messages it did not prefix with a newline (and the
    // namespace one ends in a newline).
    let ns = get_str(cfg, &["metadata", "namespace"]).unwrap_or(&ctx.namespace);
    match &ctx.kd_namespace {
        None => return Verdict::reject_verbatim("Failed to get kubedirector namespace"),
        Some(kd) if kd != ns => {
            return Verdict::reject_verbatim(format!("Invalid namespace '{ns}', must be '{kd}'.\n"))
        }
        Some(_) => {}
    }
    let mut errors = Vec::new();
    // K-4
    if op == Operation::Update {
        match old {
            None => return Verdict::reject(super::MISSING_OBJECT),
            Some(o) => {
                if let Some(e) = decode_error(o) {
                    return Verdict::reject(e);
                }
            }
        }
    }
    // K-5
    if let Some(reject) = check_status(cfg, old, TokenKind::Config, ctx) {
        return reject;
    }
    let spec = cfg.get("spec").filter(|s| !s.is_null());
    // K-6
    if let Some(sc) = spec.and_then(|s| get_str(s, &["defaultStorageClassName"])) {
        match ctx.facts.storage_class_exists(sc) {
            Fact::Unknown => notes.push(offline_note("K-6", "storage class existence")),
            Fact::Known(false) => errors.push(format!(
                "Unable to fetch storageClass object with the provided name({sc})."
            )),
            Fact::Known(true) => {}
        }
    }
    let new_key = spec.and_then(|s| get_str(s, &["masterEncryptionKey"]));
    // K-7
    if op == Operation::Update {
        let old_key = old.and_then(|o| get_str(o, &["spec", "masterEncryptionKey"]));
        if let Some(old_key) = old_key {
            if new_key != Some(old_key) && any_cluster(&mut notes, "K-7") {
                errors.push("masterEncryptionKey value cannot be changed while kdclusters exist".to_string());
            }
        }
    }
    // K-8
    if let Some(key) = new_key {
        if let Err(e) = secretkeys::decode_master_key(key) {
            errors.push(format!("masterEncryptionKey is invalid. error: {e}."));
        }
    }
    // K-9
    // upstream's validateLabelsAndAnnotations order
    for (key, is_label) in [
        ("podLabels", true),
        ("podAnnotations", false),
        ("serviceLabels", true),
        ("serviceAnnotations", false),
    ] {
        let v = spec.and_then(|s| s.get(key));
        let path = format!("spec.{key}");
        errors.extend(if is_label {
            validate_labels(v, &path)
        } else {
            validate_annotations(v, &path)
        });
    }
    if !errors.is_empty() {
        return Verdict::from_parts(errors, Vec::new(), notes);
    }
    // K-M1..K-M8
    let mut patch = Vec::new();
    if spec.is_none() {
        patch.push(op_add(["spec"], json!({})));
    }
    let empty = json!({});
    let spec_v = spec.unwrap_or(&empty);
    let mut add_default = |key: &str, value: Value| {
        if !has_key(spec_v, &[key]) || get(spec_v, &[key]).is_some_and(Value::is_null) {
            patch.push(op_add(["spec", key], value));
        }
    };
    add_default("defaultServiceType", json!("LoadBalancer"));
    add_default("nativeSystemdSupport", json!(false));
    add_default("clusterSvcDomainBase", json!(".svc.cluster.local"));
    add_default("defaultNamingScheme", json!("UID"));
    let mut key = [0u8; 32];
    ctx.entropy.fill(&mut key);
    add_default("masterEncryptionKey", json!(hex::encode(key)));
    add_default("backupClusterStatus", json!(false));
    add_default("allowRestoreWithoutConnections", json!(false));
    Verdict::from_parts(Vec::new(), patch, notes)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::admission::{
        testutil::{apply, ctx, CountingEntropy, FakeFacts},
        StatusToken,
    };

    fn cfg() -> Value {
        json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1",
            "kind": "KubeDirectorConfig",
            "metadata": {"name": "kd-global-config", "namespace": "kd-system", "uid": "u1"}
        })
    }

    fn run(op: Operation, old: Option<&Value>, new: &Value, facts: &FakeFacts) -> Verdict {
        let e = CountingEntropy(0.into());
        admit_config(
            op,
            old,
            Some(new),
            &ctx(facts, &e, "kd-system", "kd-global-config"),
        )
    }

    fn rejects(doc: Value, facts: &FakeFacts, msg: &str) {
        let v = run(Operation::Create, None, &doc, facts);
        assert!(!v.allowed);
        assert!(
            v.messages.iter().any(|m| m == msg),
            "{:?} lacks {msg}",
            v.messages
        );
    }

    #[test]
    fn empty_config_gets_every_default() {
        let doc = cfg();
        let stored = apply(&doc, &run(Operation::Create, None, &doc, &FakeFacts::new()));
        let expected_key: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            stored["spec"],
            json!({
                "defaultServiceType": "LoadBalancer",   // K-M2
                "nativeSystemdSupport": false,          // K-M3
                "clusterSvcDomainBase": ".svc.cluster.local", // K-M4
                "defaultNamingScheme": "UID",           // K-M5
                "masterEncryptionKey": expected_key,    // K-M6
                "backupClusterStatus": false,           // K-M7
                "allowRestoreWithoutConnections": false // K-M8
            })
        ); // K-M1 created the spec itself
    }

    #[test]
    fn given_values_are_kept() {
        let mut doc = cfg();
        doc["spec"] = json!({"defaultServiceType": "NodePort", "masterEncryptionKey": "00112233445566778899aabbccddeeff",
                             "requiredSecretPrefix": "kd-"});
        let stored = apply(&doc, &run(Operation::Create, None, &doc, &FakeFacts::new()));
        assert_eq!(stored["spec"]["defaultServiceType"], "NodePort");
        assert_eq!(
            stored["spec"]["masterEncryptionKey"],
            "00112233445566778899aabbccddeeff"
        );
        assert_eq!(stored["spec"]["requiredSecretPrefix"], "kd-");
        assert!(stored["spec"].get("defaultStorageClassName").is_none());
    }

    #[test]
    fn k1_delete_blocked_while_clusters_exist() {
        let doc = cfg();
        let mut f = FakeFacts::new();
        assert!(run(Operation::Delete, Some(&doc), &doc, &f).allowed);
        f.clusters.insert(("a".into(), "b".into()), json!({}));
        let v = run(Operation::Delete, Some(&doc), &doc, &f);
        assert_eq!(
            v.messages,
            vec!["kd-global-config cannot be deleted while kdclusters exist".to_string()]
        );
    }

    #[test]
    fn k2_undecodable_config_rejected() {
        let mut doc = cfg();
        doc["spec"] = json!({"nativeSystemdSupport": "yes"});
        assert_eq!(
            run(Operation::Create, None, &doc, &FakeFacts::new()).messages,
            vec![
                "json: cannot unmarshal string into Go struct field KubeDirectorConfigSpec.spec.nativeSystemdSupport of type bool"
                    .to_string()
            ]
        );
        // null members are Go's nil, and keys Go does not know are ignored
        doc["spec"] = json!({"nativeSystemdSupport": null, "podLabels": null, "somethingElse": 1});
        assert!(run(Operation::Create, None, &doc, &FakeFacts::new()).allowed);
    }

    #[test]
    fn k3_wrong_namespace_or_unknown_kd_namespace() {
        let mut doc = cfg();
        doc["metadata"]["namespace"] = json!("other");
        // an early exit: the bad storage class and labels are not reported as well
        doc["spec"] = json!({"defaultStorageClassName": "nope", "podLabels": {"k": "-bad"}});
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        assert_eq!(
            v.messages,
            vec!["Invalid namespace 'other', must be 'kd-system'.\n".to_string()]
        );
        assert!(v.verbatim && !v.allowed && v.patch.is_empty());
        let f = FakeFacts::new();
        let e = CountingEntropy(0.into());
        let mut c = ctx(&f, &e, "kd-system", "kd-global-config");
        c.kd_namespace = None;
        let v = admit_config(Operation::Create, None, Some(&cfg()), &c);
        assert_eq!(
            v.messages,
            vec!["Failed to get kubedirector namespace".to_string()]
        );
        assert!(v.verbatim);
    }

    #[test]
    fn k4_undecodable_old_object_rejected() {
        let mut old = cfg();
        old["spec"] = json!("garbage");
        assert!(!run(Operation::Update, Some(&old), &cfg(), &FakeFacts::new()).allowed);
    }

    #[test]
    fn k5_status_is_read_only() {
        let mut doc = cfg();
        doc["status"] = json!({"state": "ready", "generationUID": "g1"});
        rejects(
            doc.clone(),
            &FakeFacts::new(),
            "KubeDirector-related status properties are read-only",
        );
        // the operator's own write carrying its token passes
        let mut f = FakeFacts::new();
        f.tokens.insert(
            "u1".into(),
            StatusToken {
                uid: "g1".into(),
                validated: false,
            },
        );
        assert!(run(Operation::Update, Some(&cfg()), &doc, &f).allowed);
        assert_eq!(f.validated.borrow().as_slice(), ["u1".to_string()]);
    }

    #[test]
    fn k6_default_storage_class_must_exist() {
        let mut doc = cfg();
        doc["spec"] = json!({"defaultStorageClassName": "fast"});
        rejects(
            doc.clone(),
            &FakeFacts::new(),
            "Unable to fetch storageClass object with the provided name(fast).",
        );
        let mut f = FakeFacts::new();
        f.storage_classes.insert("fast".into());
        assert!(run(Operation::Create, None, &doc, &f).allowed);
        f.unknown.insert("storage_class");
        let v = run(Operation::Create, None, &doc, &f);
        assert!(v.allowed);
        assert_eq!(
            v.notes,
            vec!["K-6 not checked offline: storage class existence".to_string()]
        );
    }

    #[test]
    fn k7_master_key_frozen_while_clusters_exist() {
        let mut old = cfg();
        old["spec"] = json!({"masterEncryptionKey": "00112233445566778899aabbccddeeff"});
        let mut new = cfg();
        new["spec"] = json!({"masterEncryptionKey": "ffeeddccbbaa99887766554433221100"});
        let mut f = FakeFacts::new();
        assert!(run(Operation::Update, Some(&old), &new, &f).allowed);
        f.clusters.insert(("a".into(), "b".into()), json!({}));
        let v = run(Operation::Update, Some(&old), &new, &f);
        assert_eq!(
            v.messages,
            vec!["masterEncryptionKey value cannot be changed while kdclusters exist".to_string()]
        );
        assert!(run(Operation::Update, Some(&old), &old, &f).allowed);
    }

    #[test]
    fn k8_master_key_must_be_aes_sized_hex() {
        let mut doc = cfg();
        doc["spec"] = json!({"masterEncryptionKey": "abcd"});
        rejects(
            doc.clone(),
            &FakeFacts::new(),
            "masterEncryptionKey is invalid. error: crypto/aes: invalid key size 2.",
        );
        doc["spec"] = json!({"masterEncryptionKey": "zz"});
        rejects(
            doc,
            &FakeFacts::new(),
            "masterEncryptionKey is invalid. error: encoding/hex: invalid byte: U+007A 'z'.",
        );
    }

    #[test]
    fn k9_labels_and_annotations_validated() {
        let mut doc = cfg();
        doc["spec"] = json!({"serviceLabels": {"k": "-v"}, "podLabels": {"bad key": "v"},
                             "serviceAnnotations": {"a/b/c": "x"}, "podAnnotations": {"/x": "y"}});
        let v = run(Operation::Create, None, &doc, &FakeFacts::new());
        assert_eq!(v.messages.len(), 4, "{:?}", v.messages);
        // upstream order: pod labels, pod annotations, service labels, service annotations
        assert!(v.messages[0].starts_with("spec.podLabels: Invalid value: \"bad key\""));
        assert_eq!(
            v.messages[1],
            "spec.podAnnotations: Invalid value: \"/x\": prefix part must be non-empty"
        );
        assert!(v.messages[2].starts_with("spec.serviceLabels: Invalid value: \"-v\": a valid label"));
        assert!(v.messages[3].starts_with("spec.serviceAnnotations: Invalid value: \"a/b/c\""));
        doc["spec"] = json!({"podLabels": {"team": "data"}, "serviceAnnotations": {"example.com/x": "y z"}});
        assert!(run(Operation::Create, None, &doc, &FakeFacts::new()).allowed);
    }
}
