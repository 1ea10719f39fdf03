//! Optimistic concurrency as the API server does it: a stale resourceVersion on a status PUT
//! and on a patch is 409 Conflict, an unconditional PUT (no resourceVersion) is allowed for
//! built-in kinds but 422 for custom resources and CRDs, and a watch from a resourceVersion the
//! server has not reached waits for it (never skipping events) or ends with a 504
//! "Too large resource version" error event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start, status};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::{Client, ResourceExt};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn sts(name: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 0, "serviceName": name, "selector": {"matchLabels": {"a": name}},
                 "template": {"metadata": {"labels": {"a": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap()
}

fn conflict_message(resource: &str, name: &str) -> String {
    format!(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )
}

async fn gadgets(client: &Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Gadget"), "gadgets");
    Api::namespaced_with(client.clone(), "default", &ar)
}

#[tokio::test]
async fn stale_resource_version_on_status_put_and_on_patch_is_a_conflict() {
    let (sim, client) = start().await;
    let api: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let v1 = api.create(&PostParams::default(), &sts("s")).await.unwrap();
    // Move the object on (spec change), then PUT status with the old resourceVersion.
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0, "minReadySeconds": 1}})),
    )
    .await
    .unwrap();
    let mut stale = serde_json::to_value(&v1).unwrap();
    stale["status"] = json!({"replicas": 0, "observedGeneration": 1});
    let e = status(
        api.replace_status(
            "s",
            &PostParams::default(),
            &serde_json::from_value(stale).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(e.message, conflict_message("statefulsets.apps", "s"));

    // A patch carrying a stale metadata.resourceVersion is a precondition: 409 as well,
    // for each patch type.
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let c1 = cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    let old_rv = c1.resource_version().unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    for patch in [
        Patch::Merge(json!({"metadata": {"resourceVersion": old_rv}, "data": {"k": "x"}})),
        Patch::Strategic(json!({"metadata": {"resourceVersion": old_rv}, "data": {"k": "x"}})),
    ] {
        let e = status(cms.patch("c", &PatchParams::default(), &patch).await.unwrap_err());
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        assert_eq!(e.message, conflict_message("configmaps", "c"));
    }
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["k"], "w");
    sim.shutdown().await;
}

#[tokio::test]
async fn unconditional_put_is_allowed_for_built_ins_and_refused_for_custom_resources() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let c1 = cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    let mut put = cm("c");
    put.data = Some([("k".to_string(), "new".to_string())].into());
    assert!(put.metadata.resource_version.is_none());
    let c2 = cms.replace("c", &PostParams::default(), &put).await.unwrap();
    assert_ne!(c2.resource_version(), c1.resource_version());
    assert_eq!(c2.data.unwrap()["k"], "new");

    let api = gadgets(&client).await;
    let g: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"a": 1}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &g).await.unwrap();
    let e = status(api.replace("g", &PostParams::default(), &g).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "gadgets.example.com \"g\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    // The status subresource follows the same rule; with the resourceVersion both work.
    let mut st = serde_json::to_value(&g).unwrap();
    st["status"] = json!({"phase": "x"});
    let e = status(
        api.replace_status(
            "g",
            &PostParams::default(),
            &serde_json::from_value(st.clone()).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    st["metadata"]["resourceVersion"] = json!(created.resource_version().unwrap());
    api.replace_status(
        "g",
        &PostParams::default(),
        &serde_json::from_value(st.clone()).unwrap(),
    )
    .await
    .unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut crd = crds.get("gadgets.example.com").await.unwrap();
    crd.metadata.resource_version = None;
    let e = status(
        crds.replace("gadgets.example.com", &PostParams::default(), &crd)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{}", e.message);
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_future_resource_version_ends_with_too_large_after_waiting() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let current: u64 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    let future = (current + 1_000_000).to_string();
    let mut stream = api.watch(&WatchParams::default(), &future).await.unwrap().boxed();
    let ev = stream
        .try_next()
        .await
        .unwrap()
        .expect("an error event, not the end of the stream");
    let WatchEvent::Error(e) = ev else {
        panic!("expected an ERROR event, got {ev:?}");
    };
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"));
    assert!(
        e.message.starts_with(&format!(
            "Timeout: Too large resource version: {future}, current: "
        )),
        "{}",
        e.message
    );
    assert!(
        stream.try_next().await.unwrap().is_none(),
        "the stream ends after the error"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_resource_version_reached_soon_after_skips_nothing_after_it() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let current: u64 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    // Two writes ahead: whatever reaches that version, every later change is delivered.
    let from = current + 2;
    let mut stream = api
        .watch(&WatchParams::default(), &from.to_string())
        .await
        .unwrap()
        .boxed();
    for n in ["a", "b", "c", "d"] {
        api.create(&PostParams::default(), &cm(n)).await.unwrap();
    }
    let mut seen = Vec::new();
    while !seen.contains(&"d".to_string()) {
        match stream.try_next().await.unwrap().expect("stream open") {
            WatchEvent::Added(o) => {
                let rv: u64 = o.resource_version().unwrap().parse().unwrap();
                assert!(rv > from, "event at {rv} not after {from}");
                seen.push(o.name_any());
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // The store may have been moved on by others; the configmaps created after `from` all arrive.
    let after: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|o| o.resource_version().unwrap().parse::<u64>().unwrap() > from)
        .map(|o| o.name_any())
        .collect();
    assert_eq!(seen, after);
    sim.shutdown().await;
}
