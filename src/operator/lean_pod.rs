//! [`LeanPod`]: a member pod decoded straight from the watch stream into what the caches keep.
//!
//! The operator reads a pod's metadata and status, never its spec (it builds pods through the
//! StatefulSet's template), and nothing reads `metadata.managedFields`. Decoding a full
//! [`Pod`] and then dropping those parts was the largest single CPU cost of the operator at
//! 1,000 kdclusters (issue 13: serde 22 % of its samples, `managedFields` entries alone 10 %).
//! `LeanPod` skips them while parsing: serde passes over unknown fields without building them.
//! What it keeps: all of `metadata` but `managedFields`, `spec.nodeName`, and `status`.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    api::core::v1::{Pod, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    NamespaceResourceScope,
};
use kube::Resource;
use serde::{Deserialize, Deserializer};

/// A watched pod as the caches keep it (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanPod(pub Pod);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Option<Spec>,
    #[serde(default)]
    status: Option<PodStatus>,
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Raw {
            metadata: m,
            spec,
            status,
        } = Raw::deserialize(d)?;
        Ok(LeanPod(Pod {
            metadata: ObjectMeta {
                annotations: m.annotations,
                creation_timestamp: m.creation_timestamp,
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                deletion_timestamp: m.deletion_timestamp,
                finalizers: m.finalizers,
                generate_name: m.generate_name,
                generation: m.generation,
                labels: m.labels,
                managed_fields: None,
                name: m.name,
                namespace: m.namespace,
                owner_references: m.owner_references,
                resource_version: m.resource_version,
                self_link: m.self_link,
                uid: m.uid,
            },
            spec: spec.map(|s| PodSpec {
                node_name: s.node_name,
                ..Default::default()
            }),
            status,
        }))
    }
}

impl Resource for LeanPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        Pod::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The full pod decoded, then trimmed to what the caches keep: the reference `LeanPod`
    /// must equal.
    fn trimmed(v: &serde_json::Value) -> Pod {
        let mut pod: Pod = serde_json::from_value(v.clone()).unwrap();
        pod.metadata.managed_fields = None;
        if let Some(spec) = pod.spec.as_mut() {
            *spec = PodSpec {
                node_name: spec.node_name.take(),
                ..Default::default()
            };
        }
        pod
    }

    #[test]
    fn a_lean_pod_is_the_full_pod_without_managed_fields_and_spec_but_its_node() {
        let full = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "kdss-abc-0", "generateName": "kdss-abc-", "namespace": "team",
                "uid": "u-1", "resourceVersion": "42", "generation": 1,
                "creationTimestamp": "2026-12-07T00:00:00Z",
                "deletionTimestamp": "2026-12-07T00:01:00Z", "deletionGracePeriodSeconds": 30,
                "labels": {"kubedirector.hpe.com/kdcluster": "c1"},
                "annotations": {"note": "x"},
                "finalizers": ["f"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "kdss-abc", "uid": "s-1", "controller": true}],
                "managedFields": [{"manager": "kubelet", "operation": "Update",
                    "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:phase": {}}}}]
            },
            "spec": {"nodeName": "node-3", "hostname": "kdss-abc-0",
                "containers": [{"name": "app", "image": "centos:7",
                    "env": [{"name": "A", "value": "b"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                    "image": "centos:7", "imageID": "", "containerID": "kubesim://c-1",
                    "state": {"running": {"startedAt": "2026-12-07T00:00:05Z"}}}]}
        });
        let lean: LeanPod = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(lean.0, trimmed(&full));
        assert_eq!(lean.0.spec.as_ref().unwrap().node_name.as_deref(), Some("node-3"));
        assert!(lean.0.status.is_some());
    }

    #[test]
    fn a_pod_without_spec_or_status_decodes_and_a_malformed_one_is_an_error() {
        let bare = json!({"metadata": {"name": "p", "namespace": "ns"}});
        let lean: LeanPod = serde_json::from_value(bare.clone()).unwrap();
        assert_eq!(lean.0, trimmed(&bare));
        assert!(serde_json::from_value::<LeanPod>(json!({"metadata": {"labels": "nope"}})).is_err());
        assert!(serde_json::from_value::<LeanPod>(json!({"status": {"phase": 3}})).is_err());
    }
}
