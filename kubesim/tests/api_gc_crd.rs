//! Garbage collection (background, foreground, orphan) and CustomResourceDefinition lifecycle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{eventually, start, status};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::core::params::PropagationPolicy;
use kube::discovery::Discovery;
use kube::{Client, ResourceExt};
use serde_json::json;

fn owned(name: &str, owner: &ConfigMap, block: bool) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(),
            "uid": owner.uid().unwrap(), "blockOwnerDeletion": block, "controller": true
        }]},
        "data": {}
    }))
    .unwrap()
}

async fn owner_and_deps(api: &Api<ConfigMap>, prefix: &str, block: bool) -> ConfigMap {
    let o: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": format!("{prefix}-owner")}})).unwrap();
    let o = api.create(&PostParams::default(), &o).await.unwrap();
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &owned(&format!("{prefix}-dep{i}"), &o, block),
        )
        .await
        .unwrap();
    }
    o
}

async fn gone(api: &Api<ConfigMap>, name: &str) {
    let api = api.clone();
    let name = name.to_string();
    eventually(10, &format!("{name} deleted"), || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.unwrap().is_none().then_some(()) }
    })
    .await
}

#[tokio::test]
async fn background_deletion_collects_dependents() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    owner_and_deps(&api, "bg", false).await;
    api.delete("bg-owner", &DeleteParams::background()).await.unwrap();
    assert!(api.get_opt("bg-owner").await.unwrap().is_none());
    for i in 0..3 {
        gone(&api, &format!("bg-dep{i}")).await;
    }
    // a dependent whose owner never existed is collected too
    let ghost: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "ghost-owner", "uid": "00000000-0000-0000-0000-000000000000"}}),
    )
    .unwrap();
    let mut ghost = ghost;
    ghost.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    api.create(&PostParams::default(), &owned("orphaned-dep", &ghost, false))
        .await
        .unwrap();
    gone(&api, "orphaned-dep").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    owner_and_deps(&api, "fg", true).await;
    // hold one dependent with a finalizer so the owner must wait
    api.patch(
        "fg-dep0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold"]}})),
    )
    .await
    .unwrap();
    let r = api.delete("fg-owner", &DeleteParams::foreground()).await.unwrap();
    let o = r.left().expect("owner still present during foreground deletion");
    assert!(o.finalizers().contains(&"foregroundDeletion".to_string()));
    gone(&api, "fg-dep1").await;
    gone(&api, "fg-dep2").await;
    let still = api.get("fg-owner").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    api.patch(
        "fg-dep0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&api, "fg-dep0").await;
    gone(&api, "fg-owner").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    owner_and_deps(&api, "or", false).await;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete("or-owner", &dp).await.unwrap();
    gone(&api, "or-owner").await;
    for i in 0..3 {
        let d = api.get(&format!("or-dep{i}")).await.unwrap();
        assert!(d.owner_references().is_empty(), "owner reference removed");
    }
    sim.shutdown().await;
}

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                        "tags": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "note": {"type": "string", "nullable": true}
                    }},
                    "status": {"type": "object", "properties": {"size": {"type": "integer"}, "phase": {"type": "string"}}}
                }}}
            }]
        }
    }))
    .unwrap()
}

fn widgets(client: &Client) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

#[tokio::test]
async fn crd_lifecycle_validation_defaulting_printing() {
    let (sim, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd()).await.unwrap();
    let c = crds.get("widgets.example.com").await.unwrap();
    let st = c.status.unwrap();
    let conds = st.conditions.unwrap();
    assert!(conds
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True"));
    assert!(conds
        .iter()
        .any(|c| c.type_ == "NamesAccepted" && c.status == "True"));
    assert_eq!(st.accepted_names.unwrap().kind, "Widget");
    // discovery
    let d = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = d.get("example.com").unwrap().recommended_kind("Widget").unwrap();
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);

    let api = widgets(&client);
    // defaulting + pruning
    let w = api
        .create(
            &PostParams::default(),
            &widget("w1", json!({"size": 3, "junk": true, "extra": {"kept": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["color"], "red");
    assert!(w.data["spec"].get("junk").is_none());
    assert_eq!(w.data["spec"]["extra"]["kept"], 1);
    assert_eq!(w.metadata.generation, Some(1));
    // validation errors with causes
    let e = status(
        api.create(
            &PostParams::default(),
            &widget(
                "bad",
                json!({"size": 11, "color": "green", "name": "ABC", "tags": [], "note": null}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let fields: Vec<String> = e
        .details
        .unwrap()
        .causes
        .iter()
        .map(|c| c.field.clone())
        .collect();
    for f in ["spec.size", "spec.color", "spec.name", "spec.tags"] {
        assert!(fields.contains(&f.to_string()), "{f} in {fields:?}");
    }
    assert!(
        e.message.starts_with("Widget.example.com \"bad\" is invalid: ["),
        "{}",
        e.message
    );
    let e = status(
        api.create(&PostParams::default(), &widget("bad2", json!({"size": "three"})))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("spec.size in body must be of type integer"),
        "{}",
        e.message
    );
    let e = status(
        api.create(&PostParams::default(), &widget("bad3", json!({})))
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("spec.size: Required value"), "{}", e.message);
    // server-side field validation: Strict rejects unknown fields that would be pruned
    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    let e = status(
        api.patch("w1", &strict, &Patch::Merge(json!({"spec": {"junk": 1}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert_eq!(e.message, "strict decoding error: unknown field \"spec.junk\"");
    // strategic merge patch is not supported for custom resources
    let e = status(
        api.patch(
            "w1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 415);
    // status subresource: generation unchanged, spec ignored
    let w = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready", "size": 3}, "spec": {"size": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (w.data["spec"]["size"].as_i64(), w.metadata.generation),
        (Some(3), Some(1))
    );
    let w = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    // scale subresource through custom paths (.spec.size / .status.size)
    let sc = api.get_scale("w1").await.unwrap();
    assert_eq!(sc.spec.unwrap().replicas, Some(4));
    assert_eq!(sc.status.unwrap().replicas, 3);
    api.patch_scale(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 6}})),
    )
    .await
    .unwrap();
    let w = api.get("w1").await.unwrap();
    assert_eq!(w.data["spec"]["size"], 6);
    assert_eq!(w.metadata.generation, Some(3));
    let w = api.get("w1").await.unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    // server-side Table printing with printer columns
    let req = http::Request::get("/apis/example.com/v1/namespaces/default/widgets")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let t: serde_json::Value = serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, vec!["Name", "Size", "Color", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "w1");
    assert_eq!(t["rows"][0]["cells"][1], 6);
    assert_eq!(t["rows"][0]["cells"][2], "red");
    // deleting the CRD removes its objects and its API
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let crds2 = crds.clone();
    eventually(10, "crd gone", || {
        let crds = crds2.clone();
        async move {
            crds.get_opt("widgets.example.com")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    let e = status(api.list(&Default::default()).await.unwrap_err());
    assert_eq!(e.code, 404);
    sim.shutdown().await;
}
