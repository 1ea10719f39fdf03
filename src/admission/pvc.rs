//! PersistentVolumeClaim admission (spec 2.5), the "soft" webhook: rules P-1..P-3 and the P-2
//! owner-reference mutation, on CREATE only.
//!
//! Deviation (spec 7 R8): upstream chose JSON-patch `add` or `replace` for
//! `/metadata/ownerReferences` from the *kdcluster's* labels, so a PVC without owner references
//! of a labelled kdcluster got a failing `replace`. Here the choice is made from the PVC itself:
//! `add` when it has no `ownerReferences`, `replace` otherwise.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{json, Value};

use kubedirector_crds::wire::LABEL_CLUSTER;

use super::{get, get_str, offline_note, op_add, op_replace, AdmissionContext, Fact, Operation, Verdict};

/// P-3 message (patch serialisation failure; cannot happen with `serde_json::Value` patches).
pub const PATCH_FAILURE: &str = "Internal error: failed to apply ownerReference to PVC for kdcluster.";

/// Admits a PersistentVolumeClaim request.
pub fn admit_pvc(op: Operation, new: Option<&Value>, ctx: &AdmissionContext<'_>) -> Verdict {
    if op != Operation::Create {
        return Verdict::allow();
    }
    // P-1
    let Some(pvc) = new else {
        return Verdict::reject(super::MISSING_OBJECT);
    };
    if let Err(e) = serde_json::from_value::<PersistentVolumeClaim>(pvc.clone()) {
        return Verdict::reject(e.to_string());
    }
    // P-2
    let Some(cluster_name) = get(pvc, &["metadata", "labels", LABEL_CLUSTER]).and_then(Value::as_str) else {
        return Verdict::allow();
    };
    let ns = get_str(pvc, &["metadata", "namespace"]).unwrap_or(&ctx.namespace);
    let cluster = match ctx.facts.cluster(ns, cluster_name) {
        Fact::Known(Some(c)) => c,
        Fact::Known(None) => return Verdict::allow(),
        Fact::Unknown => {
            let mut v = Verdict::allow();
            v.notes
                .push(offline_note("P-2", "kdcluster lookup for the owner reference"));
            return v;
        }
    };
    let owner = json!([{
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "name": get_str(&cluster, &["metadata", "name"]).unwrap_or(cluster_name),
        "uid": get_str(&cluster, &["metadata", "uid"]).unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": false
    }]);
    let has_owners = get(pvc, &["metadata", "ownerReferences"]).is_some_and(|o| !o.is_null());
    let mut v = Verdict::allow();
    v.patch.push(if has_owners {
        op_replace(["metadata", "ownerReferences"], owner)
    } else {
        op_add(["metadata", "ownerReferences"], owner)
    });
    v
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::testutil::{apply, ctx, CountingEntropy, FakeFacts};

    fn pvc(labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "p-kdss-abcde-0", "namespace": "ns1", "labels": labels},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    }

    fn facts_with_cluster(cluster_labels: Value) -> FakeFacts {
        let mut f = FakeFacts::new();
        f.clusters.insert(
            ("ns1".into(), "c1".into()),
            json!({"metadata": {"name": "c1", "namespace": "ns1", "uid": "uid-c1", "labels": cluster_labels}}),
        );
        f
    }

    fn run(op: Operation, doc: &Value, f: &FakeFacts) -> Verdict {
        let e = CountingEntropy(0.into());
        admit_pvc(op, Some(doc), &ctx(f, &e, "ns1", "p-kdss-abcde-0"))
    }

    #[test]
    fn p2_labelled_pvc_gets_exactly_one_controller_owner_even_for_labelled_cluster() {
        let doc = pvc(json!({LABEL_CLUSTER: "c1"}));
        // A kdcluster *with* labels: upstream emitted a failing `replace` here (R8).
        let f = facts_with_cluster(json!({"team": "x"}));
        let stored = apply(&doc, &run(Operation::Create, &doc, &f));
        assert_eq!(
            stored["metadata"]["ownerReferences"],
            json!([{"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster", "name": "c1",
                    "uid": "uid-c1", "controller": true, "blockOwnerDeletion": false}])
        );
    }

    #[test]
    fn p2_existing_owner_refs_are_replaced() {
        let mut doc = pvc(json!({LABEL_CLUSTER: "c1"}));
        doc["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "s", "uid": "u"}]);
        let stored = apply(
            &doc,
            &run(Operation::Create, &doc, &facts_with_cluster(json!(null))),
        );
        assert_eq!(stored["metadata"]["ownerReferences"].as_array().unwrap().len(), 1);
        assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], "uid-c1");
    }

    #[test]
    fn p2_unlabelled_or_unknown_cluster_untouched() {
        let f = facts_with_cluster(json!(null));
        let v = run(Operation::Create, &pvc(json!({"x": "y"})), &f);
        assert!(v.allowed && v.patch.is_empty());
        let v = run(Operation::Create, &pvc(json!({LABEL_CLUSTER: "other"})), &f);
        assert!(v.allowed && v.patch.is_empty());
        let v = run(Operation::Update, &pvc(json!({LABEL_CLUSTER: "c1"})), &f);
        assert!(v.allowed && v.patch.is_empty());
    }

    #[test]
    fn p1_undecodable_pvc_rejected() {
        let mut doc = pvc(json!({}));
        doc["spec"]["accessModes"] = json!("ReadWriteOnce");
        let v = run(Operation::Create, &doc, &FakeFacts::new());
        assert!(!v.allowed);
    }
}
