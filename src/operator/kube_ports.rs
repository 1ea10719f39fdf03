//! kube-client implementations of the actor ports ([`ClusterApi`], [`EventRecorder`]).
//!
//! Owned objects are written with the field manager `kubedirector.hpe.com`: StatefulSets
//! created once (AlreadyExists is adopted, never overwritten, and only when this kdcluster
//! controls it: their pod template is immutable in practice) and repaired with metadata merge
//! patches; Services created (the same adoption rule) and repaired by a replace conditional on
//! the observed resourceVersion; deletes carry the observed uid as a precondition. Status goes through the status subresource with a resourceVersion precondition.
//! Events are core/v1 Events with source component = the operator name, like upstream.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use super::event_fold::{patch_body, EventFolder, EventKey, Fold};
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Event, EventSource, ObjectReference, PersistentVolumeClaim, Service},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions},
    core::ApiResource,
    Client,
};
use kubedirector_actors::ports::{
    ApiError, ClusterApi, EventRecord, EventRecorder, EventType, MetadataPatch, ObjectKey, OwnedKind,
    PortFuture,
};
use kubedirector_crds::{
    wire::{FIELD_MANAGER, LABEL_CLUSTER},
    KubeDirectorCluster, KubeDirectorConfig, KubeDirectorStatusBackup,
};

/// Maps a kube error to the actors' classification.
pub fn classify(err: kube::Error, kind: &str, key: &ObjectKey) -> ApiError {
    match err {
        kube::Error::Api(status) => ApiError::from_status(
            status.code,
            &status.reason,
            kind,
            &key.to_string(),
            &status.message,
        ),
        other => ApiError::Transport {
            message: other.to_string(),
        },
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_string()),
    }
}

/// A JSON merge patch of a StatefulSet under the operator's field manager.
async fn merge_patch_statefulset(
    api: &Api<StatefulSet>,
    key: &ObjectKey,
    patch: &serde_json::Value,
) -> Result<(), ApiError> {
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch(&key.name, &pp, &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| classify(e, "StatefulSet", key))
}

fn cluster_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<KubeDirectorCluster>(&());
    Api::namespaced_with(client.clone(), namespace, &ar)
}

fn config_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<KubeDirectorConfig>(&());
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// [`ClusterApi`] over a kube client.
#[derive(Clone)]
pub struct KubeClusterApi {
    client: Client,
}

impl KubeClusterApi {
    /// Uses `client` for every call.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ClusterApi for KubeClusterApi {
    fn create_stateful_set(&self, sts: StatefulSet) -> PortFuture<StatefulSet> {
        let client = self.client.clone();
        Box::pin(async move {
            let ns = sts.metadata.namespace.clone().unwrap_or_default();
            let name = sts.metadata.name.clone().unwrap_or_default();
            let key = ObjectKey::new(ns.clone(), name.clone());
            let api: Api<StatefulSet> = Api::namespaced(client, &ns);
            match api.create(&post_params(), &sts).await {
                Ok(s) => Ok(s),
                Err(e) => match classify(e, "StatefulSet", &key) {
                    already @ ApiError::AlreadyExists { .. } => {
                        let existing = api
                            .get(&name)
                            .await
                            .map_err(|e| classify(e, "StatefulSet", &key))?;
                        adopt(existing, &sts.metadata, already)
                    }
                    other => Err(other),
                },
            }
        })
    }

    fn patch_stateful_set_metadata(&self, key: ObjectKey, metadata: ObjectMeta) -> PortFuture<()> {
        let client = self.client.clone();
        Box::pin(async move {
            let api: Api<StatefulSet> = Api::namespaced(client, &key.namespace);
            let patch = serde_json::json!({
                "metadata": {
                    "labels": metadata.labels,
                    "annotations": metadata.annotations,
                    "ownerReferences": metadata.owner_references,
                }
            });
            // Drop absent keys instead of nulling them.
            merge_patch_statefulset(&api, &key, &strip_nulls(patch)).await
        })
    }

    fn apply_service(&self, svc: Service) -> PortFuture<Service> {
        let client = self.client.clone();
        Box::pin(async move {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let key = ObjectKey::new(ns.clone(), name.clone());
            let api: Api<Service> = Api::namespaced(client, &ns);
            if svc.metadata.resource_version.is_some() {
                // A repair of the object the planner observed: conditional on its version.
                return api
                    .replace(&name, &post_params(), &svc)
                    .await
                    .map_err(|e| classify(e, "Service", &key));
            }
            let mut svc = svc;
            svc.metadata.managed_fields = None;
            match api.create(&post_params(), &svc).await {
                Ok(s) => Ok(s),
                Err(e) => match classify(e, "Service", &key) {
                    already @ ApiError::AlreadyExists { .. } => {
                        let existing = api.get(&name).await.map_err(|e| classify(e, "Service", &key))?;
                        adopt(existing, &svc.metadata, already)
                    }
                    other => Err(other),
                },
            }
        })
    }

    fn set_replicas(&self, key: ObjectKey, replicas: i32) -> PortFuture<()> {
        let client = self.client.clone();
        Box::pin(async move {
            let api: Api<StatefulSet> = Api::namespaced(client, &key.namespace);
            let patch = serde_json::json!({ "spec": { "replicas": replicas } });
            merge_patch_statefulset(&api, &key, &patch).await
        })
    }

    fn delete(&self, kind: OwnedKind, key: ObjectKey, uid: Option<String>) -> PortFuture<()> {
        let client = self.client.clone();
        Box::pin(async move {
            let dp = DeleteParams {
                preconditions: uid.map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            let res = match kind {
                OwnedKind::StatefulSet => Api::<StatefulSet>::namespaced(client, &key.namespace)
                    .delete(&key.name, &dp)
                    .await
                    .map(|_| ()),
                OwnedKind::Service => Api::<Service>::namespaced(client, &key.namespace)
                    .delete(&key.name, &dp)
                    .await
                    .map(|_| ()),
                OwnedKind::PersistentVolumeClaim => {
                    Api::<PersistentVolumeClaim>::namespaced(client, &key.namespace)
                        .delete(&key.name, &dp)
                        .await
                        .map(|_| ())
                }
            };
            match res.map_err(|e| classify(e, kind.as_str(), &key)) {
                Ok(()) | Err(ApiError::NotFound { .. }) => Ok(()),
                Err(ApiError::Conflict { message, .. }) if is_uid_precondition_failure(&message) => {
                    // Ours is gone; the object of that name now is someone else's.
                    tracing::info!(kind = kind.as_str(), object = %key, %message,
                        "not deleted: the object was replaced by another of the same name");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    }

    fn write_cluster_status(
        &self,
        key: ObjectKey,
        resource_version: String,
        status: serde_json::Value,
    ) -> PortFuture<String> {
        Box::pin(replace_status(
            cluster_api(&self.client, &key.namespace),
            "KubeDirectorCluster",
            key,
            resource_version,
            status,
        ))
    }

    fn patch_cluster_metadata(&self, key: ObjectKey, patch: MetadataPatch) -> PortFuture<String> {
        let client = self.client.clone();
        Box::pin(async move {
            let api = cluster_api(&client, &key.namespace);
            let body = patch.to_merge_patch();
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            api.patch(&key.name, &pp, &Patch::Merge(&body))
                .await
                .map(|o| o.metadata.resource_version.unwrap_or_default())
                .map_err(|e| classify(e, "KubeDirectorCluster", &key))
        })
    }

    fn apply_status_backup(&self, backup: KubeDirectorStatusBackup) -> PortFuture<()> {
        let client = self.client.clone();
        Box::pin(async move {
            let ns = backup.metadata.namespace.clone().unwrap_or_default();
            let name = backup.metadata.name.clone().unwrap_or_default();
            let key = ObjectKey::new(ns.clone(), name.clone());
            let api: Api<KubeDirectorStatusBackup> = Api::namespaced(client, &ns);
            let mut body = serde_json::to_value(&backup).map_err(|e| ApiError::Rejected {
                code: 400,
                message: format!("{key}: {e}"),
            })?;
            body["apiVersion"] = kubedirector_crds::API_VERSION.into();
            body["kind"] = "KubeDirectorStatusBackup".into();
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(&name, &pp, &Patch::Apply(&body))
                .await
                .map(|_| ())
                .map_err(|e| classify(e, "KubeDirectorStatusBackup", &key))
        })
    }

    fn delete_status_backup(&self, key: ObjectKey) -> PortFuture<()> {
        let client = self.client.clone();
        Box::pin(async move {
            let api: Api<KubeDirectorStatusBackup> = Api::namespaced(client, &key.namespace);
            match api
                .delete(&key.name, &Default::default())
                .await
                .map(|_| ())
                .map_err(|e| classify(e, "KubeDirectorStatusBackup", &key))
            {
                Ok(()) | Err(ApiError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn patch_config(&self, key: ObjectKey, patch: serde_json::Value) -> PortFuture<String> {
        let client = self.client.clone();
        Box::pin(async move {
            let api = config_api(&client, &key.namespace);
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            api.patch(&key.name, &pp, &Patch::Merge(&patch))
                .await
                .map(|o| o.metadata.resource_version.unwrap_or_default())
                .map_err(|e| classify(e, "KubeDirectorConfig", &key))
        })
    }

    fn write_config_status(
        &self,
        key: ObjectKey,
        resource_version: String,
        status: serde_json::Value,
    ) -> PortFuture<String> {
        Box::pin(replace_status(
            config_api(&self.client, &key.namespace),
            "KubeDirectorConfig",
            key,
            resource_version,
            status,
        ))
    }
}

/// The uid of the controller owner reference in `meta`.
fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// `existing` (found by a create that hit AlreadyExists) when it is the kdcluster's own:
/// controlled by the owner `desired` names, or without any controller and labelled for the same
/// kdcluster (as upstream adopts by labels); else the `already` error: someone else's object
/// (another controller, a predecessor of the same name included, or none of our labels) is
/// never adopted.
fn adopt<K: kube::Resource>(existing: K, desired: &ObjectMeta, already: ApiError) -> Result<K, ApiError> {
    let have = existing.meta();
    let label = |m: &ObjectMeta| m.labels.as_ref().and_then(|l| l.get(LABEL_CLUSTER)).cloned();
    let ours = match (controller_uid(have), controller_uid(desired)) {
        (Some(h), Some(w)) => h == w,
        (None, _) => label(have).is_some() && label(have) == label(desired),
        (Some(_), None) => false,
    };
    if ours && have.deletion_timestamp.is_none() {
        Ok(existing)
    } else {
        Err(already)
    }
}

/// Whether a 409 message is the API server's failed UID precondition.
fn is_uid_precondition_failure(message: &str) -> bool {
    message.contains("Precondition failed: UID in precondition")
}

/// Replaces the status subresource of a kd object, conditional on `resource_version`; returns the
/// new resourceVersion.
async fn replace_status(
    api: Api<DynamicObject>,
    kind: &'static str,
    key: ObjectKey,
    resource_version: String,
    status: serde_json::Value,
) -> Result<String, ApiError> {
    let body = serde_json::json!({
        "apiVersion": kubedirector_crds::API_VERSION,
        "kind": kind,
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "resourceVersion": resource_version,
        },
        "status": status,
    });
    api.replace_subresource("status", &key.name, &post_params(), &body)
        .await
        .map(|o| o.metadata.resource_version.unwrap_or_default())
        .map_err(|e| classify(e, kind, &key))
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// [`EventRecorder`] writing core/v1 Events, folding repeats into the existing Event (count and
/// `lastTimestamp` patched, as client-go's recorder does: [`super::event_fold`]).
#[derive(Clone)]
pub struct KubeEventRecorder {
    client: Client,
    component: Arc<str>,
    seq: Arc<AtomicU64>,
    folder: Arc<Mutex<EventFolder>>,
}

impl KubeEventRecorder {
    /// Events with source component `component` (the operator name).
    pub fn new(client: Client, component: &str) -> Self {
        Self {
            client,
            component: Arc::from(component),
            seq: Arc::new(AtomicU64::new(0)),
            folder: Arc::new(Mutex::new(EventFolder::default())),
        }
    }

    fn fold(&self, key: EventKey, new_name: &str) -> Fold {
        match self.folder.lock() {
            Ok(mut f) => f.observe(key, new_name),
            Err(_) => Fold::Create {
                name: new_name.to_owned(),
            },
        }
    }

    fn settle(&self, key: &EventKey, outcome: Option<(&str, i32)>) {
        if let Ok(mut f) = self.folder.lock() {
            match outcome {
                Some((name, count)) => f.recorded(key, name, count),
                None => f.forget(key),
            }
        }
    }
}

impl EventRecorder for KubeEventRecorder {
    fn record(&self, ev: EventRecord) -> PortFuture<()> {
        let client = self.client.clone();
        let component = self.component.to_string();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        Box::pin(async move {
            let now = k8s_openapi::jiff::Timestamp::now();
            let new_name = format!(
                "{}.{:x}{:04x}",
                ev.involved.name,
                now.as_nanosecond(),
                seq % 0x1_0000
            );
            let type_ = match ev.event_type {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string();
            let fold_key = EventKey {
                component: component.clone(),
                object: [
                    ev.involved.api_version.clone(),
                    ev.involved.kind.clone(),
                    ev.involved.namespace.clone(),
                    ev.involved.name.clone(),
                    ev.involved.uid.clone().unwrap_or_default(),
                ],
                type_: type_.clone(),
                reason: ev.reason.clone(),
                message: ev.message.clone(),
            };
            let api = Api::<Event>::namespaced(client, &ev.involved.namespace);
            let (name, count) = match this.fold(fold_key.clone(), &new_name) {
                Fold::Patch { name, count } => {
                    let key = ObjectKey::new(ev.involved.namespace.clone(), name.clone());
                    let body = patch_body(count, &Time(now), &ev.message);
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Strategic(&body))
                        .await
                    {
                        Ok(_) => {
                            this.settle(&fold_key, Some((&name, count)));
                            return Ok(());
                        }
                        // Gone (event TTL, deleted): create it again with this count.
                        Err(kube::Error::Api(s)) if s.code == 404 => (new_name, count),
                        Err(e) => {
                            this.settle(&fold_key, None);
                            return Err(classify(e, "Event", &key));
                        }
                    }
                }
                Fold::Create { name } => (name, 1),
            };
            let key = ObjectKey::new(ev.involved.namespace.clone(), name.clone());
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ev.involved.namespace.clone()),
                    ..ObjectMeta::default()
                },
                involved_object: ObjectReference {
                    api_version: Some(ev.involved.api_version.clone()),
                    kind: Some(ev.involved.kind.clone()),
                    name: Some(ev.involved.name.clone()),
                    namespace: Some(ev.involved.namespace.clone()),
                    uid: ev.involved.uid.clone(),
                    ..ObjectReference::default()
                },
                reason: Some(ev.reason),
                message: Some(ev.message),
                type_: Some(type_),
                source: Some(EventSource {
                    component: Some(component.clone()),
                    host: None,
                }),
                reporting_component: Some(component),
                first_timestamp: Some(Time(now)),
                last_timestamp: Some(Time(now)),
                count: Some(count),
                ..Event::default()
            };
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    this.settle(&fold_key, Some((&name, count)));
                    Ok(())
                }
                Err(e) => {
                    this.settle(&fold_key, None);
                    Err(classify(e, "Event", &key))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_metadata_keys_are_not_nulled_in_the_merge_patch() {
        let v = strip_nulls(serde_json::json!({"metadata": {"labels": {"a": "b"}, "annotations": null}}));
        assert_eq!(v, serde_json::json!({"metadata": {"labels": {"a": "b"}}}));
    }

    #[test]
    fn only_objects_controlled_by_the_same_owner_are_adopted() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let meta = |uid: Option<&str>| ObjectMeta {
            name: Some("kdss-abcde".into()),
            owner_references: uid.map(|u| {
                vec![OwnerReference {
                    uid: u.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        };
        let sts = |uid: Option<&str>| StatefulSet {
            metadata: meta(uid),
            ..StatefulSet::default()
        };
        let already = || ApiError::AlreadyExists {
            kind: "StatefulSet".into(),
            key: "ns/kdss-abcde".into(),
        };
        assert!(adopt(sts(Some("u1")), &meta(Some("u1")), already()).is_ok());
        assert_eq!(
            adopt(sts(Some("u0")), &meta(Some("u1")), already()),
            Err(already())
        );
        assert_eq!(adopt(sts(None), &meta(Some("u1")), already()), Err(already()));
        // Without a controller, our kdcluster label is ours (upstream adopts by labels).
        let labelled = |uid: Option<&str>, cluster: &str| {
            let mut s = sts(uid);
            s.metadata.labels = Some([(LABEL_CLUSTER.to_string(), cluster.to_string())].into());
            s
        };
        let mut want = meta(Some("u1"));
        want.labels = labelled(None, "c").metadata.labels;
        assert!(adopt(labelled(None, "c"), &want, already()).is_ok());
        assert_eq!(adopt(labelled(None, "other"), &want, already()), Err(already()));
        assert_eq!(
            adopt(labelled(Some("u0"), "c"), &want, already()),
            Err(already()),
            "a predecessor's, labelled like ours"
        );
        let mut going = sts(Some("u1"));
        going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(adopt(going, &meta(Some("u1")), already()), Err(already()));
        assert!(is_uid_precondition_failure(
            "Operation cannot be fulfilled on services \"s\": Precondition failed: UID in precondition: a, UID in object meta: b"
        ));
        assert!(!is_uid_precondition_failure("the object has been modified"));
    }

    #[test]
    fn api_errors_keep_their_http_classification() {
        let key = ObjectKey::new("ns", "x");
        let status = kube::core::Status {
            code: 409,
            reason: "AlreadyExists".into(),
            message: "exists".into(),
            ..kube::core::Status::default()
        };
        let e = classify(kube::Error::Api(Box::new(status)), "Service", &key);
        assert_eq!(e.category(), "already_exists");
    }
}
