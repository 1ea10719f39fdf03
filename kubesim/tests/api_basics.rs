//! Conformance tests of kubesim's core API behaviour, driven through kube-rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start, status};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use kube::ResourceExt;
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

fn sts(name: &str, replicas: i32) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn discovery_lists_kinds_and_subresources() {
    let (sim, client) = start().await;
    let d = Discovery::new(client.clone()).run().await.unwrap();
    let apps = d.get("apps").unwrap();
    let (ar, caps) = apps.recommended_kind("StatefulSet").unwrap();
    assert_eq!(ar.plural, "statefulsets");
    let subs: Vec<String> = caps.subresources.iter().map(|(r, _)| r.plural.clone()).collect();
    assert!(
        subs.contains(&"statefulsets/scale".to_string()) || subs.contains(&"scale".to_string()),
        "{subs:?}"
    );
    let core = d.get("").unwrap();
    let (pods, pcaps) = core.recommended_kind("Pod").unwrap();
    assert_eq!(pods.plural, "pods");
    assert!(pcaps.subresources.iter().any(|(r, _)| r.plural.ends_with("exec")));
    // Aggregated discovery finds the same thing in two requests.
    let agg = Discovery::new(client.clone()).run_aggregated().await.unwrap();
    assert!(agg.get("apps").unwrap().recommended_kind("StatefulSet").is_some());
    assert!(agg.get("").unwrap().recommended_kind("Pod").is_some());
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    sim.shutdown().await;
}

#[tokio::test]
async fn crud_status_codes() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let e = status(
        api.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"a\" already exists");
    let e = status(api.get("nope").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "configmaps \"nope\" not found");
    // Invalid name -> 422 with causes
    let e = status(
        api.create(&PostParams::default(), &cm("Bad_Name", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let causes = e.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");
    // Invalid label value
    let e = status(
        api.create(&PostParams::default(), &cm("ok", json!({"a": "bad value"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    // Missing name
    let e = status(
        api.create(&PostParams::default(), &ConfigMap::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("name or generateName is required"),
        "{}",
        e.message
    );
    // Missing namespace
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    let e = status(
        other
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"missing\" not found")
    );
    // generateName
    let mut g = cm("", json!({}));
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = api.create(&PostParams::default(), &g).await.unwrap();
    let n = made.name_any();
    assert_eq!(n.len(), 9);
    assert!(
        n[4..].chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{n}"
    );
    // Service names must be DNS-1035 labels
    let svcs: Api<Service> = Api::default_namespaced(client.clone());
    let s: Service =
        serde_json::from_value(json!({"metadata":{"name":"1svc"},"spec":{"ports":[{"port":80}]}})).unwrap();
    assert_eq!(
        status(svcs.create(&PostParams::default(), &s).await.unwrap_err()).code,
        422
    );
    // Delete returns a Status for immediately deleted objects, 404 after.
    let r = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(r.is_right());
    assert_eq!(
        status(api.delete("a", &DeleteParams::default()).await.unwrap_err()).code,
        404
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_and_unknown_resources() {
    let (sim, _client) = start().await;
    let http = reqwest_like(&sim);
    let (code, body) = http
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "{not json",
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest");
    let (code, body) = http.send("GET", "/api/v1/namespaces/default/frobs", "", "").await;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");
    let (code, _) = http
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps/x",
            "application/json",
            "{}",
        )
        .await;
    assert_eq!(code, 405);
    // strategic merge patch on a custom resource is 415 (no CRD needed: use an unknown content type)
    let (code, body) = http
        .send(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(code, 415);
    assert_eq!(body["reason"], "UnsupportedMediaType");
    sim.shutdown().await;
}

/// Minimal raw HTTP client over hyper (through kube's client, which speaks raw requests too).
struct Raw {
    client: kube::Client,
}

fn reqwest_like(sim: &kubesim::Sim) -> Raw {
    Raw {
        client: common::client_for(sim),
    }
}

impl Raw {
    async fn send(&self, method: &str, path: &str, ct: &str, body: &str) -> (u16, serde_json::Value) {
        let mut b = http::Request::builder().method(method).uri(path);
        if !ct.is_empty() {
            b = b.header("content-type", ct);
        }
        let req = b.body(body.as_bytes().to_vec()).unwrap();
        match self.client.request_text(req).await {
            Ok(t) => (200, serde_json::from_str(&t).unwrap_or(json!(t))),
            Err(kube::Error::Api(s)) => (s.code, serde_json::to_value(&*s).unwrap()),
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn optimistic_concurrency_conflict() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let v1 = api
        .create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    let mut a = v1.clone();
    a.data = Some([("k".to_string(), "a".to_string())].into());
    let v2 = api.replace("c", &PostParams::default(), &a).await.unwrap();
    assert_ne!(v2.resource_version(), v1.resource_version());
    let mut stale = v1.clone();
    stale.data = Some([("k".to_string(), "b".to_string())].into());
    let e = status(
        api.replace("c", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
    // No-op update keeps the resourceVersion.
    let same = api.replace("c", &PostParams::default(), &v2).await.unwrap();
    assert_eq!(same.resource_version(), v2.resource_version());
    sim.shutdown().await;
}

#[tokio::test]
async fn generation_and_status_separation() {
    let (sim, client) = start().await;
    let api: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let s = api.create(&PostParams::default(), &sts("web", 1)).await.unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    assert_eq!(
        s.spec.as_ref().unwrap().pod_management_policy.as_deref(),
        Some("OrderedReady")
    );
    // label change: no bump
    let s = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    // spec change: bump
    let s = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(s.metadata.generation, Some(2));
    // status through the main resource is ignored
    let s = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(s.status.as_ref().unwrap().replicas, 0);
    // status subresource changes only status, never generation
    let s = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 2, "readyReplicas": 2}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(s.status.as_ref().unwrap().replicas, 2);
    assert_eq!(s.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(s.metadata.generation, Some(2));
    // scale subresource
    let sc = api.get_scale("web").await.unwrap();
    assert_eq!(sc.spec.unwrap().replicas, Some(3));
    assert_eq!(sc.status.as_ref().unwrap().selector.as_deref(), Some("app=web"));
    let sc = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(sc.spec.unwrap().replicas, Some(5));
    let s = api.get("web").await.unwrap();
    assert_eq!(
        (s.spec.unwrap().replicas, s.metadata.generation),
        (Some(5), Some(3))
    );
    // forbidden statefulset spec update
    let e = status(
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"serviceName": "other"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("updates to statefulset spec for fields other than"),
        "{}",
        e.message
    );
    // selector must match template labels
    let mut bad = sts("bad", 1);
    bad.spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some([("app".to_string(), "x".to_string())].into());
    let e = status(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("`selector` does not match template `labels`"),
        "{}",
        e.message
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut c = cm("f", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    let r = api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = r.left().expect("object still present");
    assert!(held.metadata.deletion_timestamp.is_some());
    // no new finalizers on a deleting object
    let e = status(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "x/y"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status(api.get("f").await.unwrap_err()).code, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for (n, l) in [
        ("a", json!({"app": "web", "tier": "fe"})),
        ("b", json!({"app": "db"})),
        ("c", json!({})),
    ] {
        api.create(&PostParams::default(), &cm(n, l)).await.unwrap();
    }
    let names =
        |l: kube::core::ObjectList<ConfigMap>| l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    assert_eq!(
        names(api.list(&ListParams::default().labels("app=web")).await.unwrap()),
        vec!["a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (web,db)"))
                .await
                .unwrap()
        ),
        vec!["a", "b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app notin (web)"))
                .await
                .unwrap()
        ),
        // (every namespace also holds the kube-root-ca.crt ConfigMap, like a real cluster)
        vec!["b", "c", "kube-root-ca.crt"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("!app")).await.unwrap()),
        vec!["c", "kube-root-ca.crt"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app,app!=db"))
                .await
                .unwrap()
        ),
        vec!["a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        vec!["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name!=b"))
                .await
                .unwrap()
        ),
        vec!["a", "c", "kube-root-ca.crt"]
    );
    let e = status(
        api.list(&ListParams::default().fields("spec.foo=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    // pods: spec.nodeName / status.phase
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let p: Pod = serde_json::from_value(
        json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(
        pods.list(&ListParams::default().fields("status.phase=Pending"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        pods.list(&ListParams::default().fields("spec.nodeName=kubesim-node-1"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    sim.store().bind_pod("default", "p", "kubesim-node-1").unwrap();
    assert_eq!(
        pods.list(&ListParams::default().fields("spec.nodeName=kubesim-node-1"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn list_paging_and_expired_continue() {
    let cfg = kubesim::SimConfig {
        store: kubesim::StoreConfig {
            history: 40,
            ..Default::default()
        },
        ..Default::default()
    };
    let (sim, client) = common::start_with(cfg).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "paging"}})).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "paging");
    api.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    for i in 0..25 {
        api.create(&PostParams::default(), &cm(&format!("cm-{i:02}"), json!({})))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let first = api.list(&lp).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    let rv = first.metadata.resource_version.clone();
    seen.extend(first.items.iter().map(|c| c.name_any()));
    let mut token = first.metadata.continue_.clone();
    // A change between pages is not visible: pages are a consistent snapshot.
    api.create(&PostParams::default(), &cm("cm-00a", json!({})))
        .await
        .unwrap();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        lp = lp.continue_token(&t);
        let page = api.list(&lp).await.unwrap();
        assert_eq!(page.metadata.resource_version, rv);
        seen.extend(page.items.iter().map(|c| c.name_any()));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(seen.len(), 25);
    assert!(!seen.contains(&"cm-00a".to_string()));
    // Expired continue token -> 410
    let first = api.list(&ListParams::default().limit(5)).await.unwrap();
    let t = first.metadata.continue_.unwrap();
    for i in 0..50 {
        api.create(&PostParams::default(), &cm(&format!("later-{i}"), json!({})))
            .await
            .unwrap();
    }
    let e = status(
        api.list(&ListParams::default().limit(5).continue_token(&t))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    sim.shutdown().await;
}

#[tokio::test]
async fn patches_merge_json_strategic() {
    let (sim, client) = start().await;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "b:1"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    // strategic: merge containers by name, env by name, delete directive
    let p = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
        {"name": "b", "$patch": "delete"}]}}}});
    let d = api
        .patch("d", &PatchParams::default(), &Patch::Strategic(p))
        .await
        .unwrap();
    let cs = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].image.as_deref(), Some("a:2"));
    assert_eq!(cs[0].env.as_ref().unwrap().len(), 2);
    // merge patch replaces lists
    let d = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "z", "image": "z:1"}]}}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .name,
        "z"
    );
    // JSON patch, including a failing test op -> 422
    let jp: json_patch_types::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 4}])).unwrap();
    let d = api
        .patch("d", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(4));
    let jp: json_patch_types::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 9}])).unwrap();
    assert_eq!(
        status(
            api.patch("d", &PatchParams::default(), &Patch::Json::<()>(jp))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    sim.shutdown().await;
}

mod json_patch_types {
    pub use json_patch::Patch;
}

#[tokio::test]
async fn server_side_apply_conflicts_and_managed_fields() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1", "y": "1"}});
    let c = api
        .patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a))
        .await
        .unwrap();
    assert_eq!(c.data.as_ref().unwrap()["x"], "1");
    let mf = c.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    // bob conflicts on x
    let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "2"}});
    let e = status(
        api.patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("conflict with \"alice\""), "{}", e.message);
    let causes = e.details.unwrap().causes;
    assert_eq!(causes[0].field, ".data.x");
    // same value: shared ownership, no conflict
    let b_same =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"y": "1"}});
    api.patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b_same))
        .await
        .unwrap();
    // force takes ownership (bob keeps applying y as well)
    let b2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "2", "y": "1"}});
    let c = api
        .patch("s", &PatchParams::apply("bob").force(), &Patch::Apply(&b2))
        .await
        .unwrap();
    assert_eq!(c.data.as_ref().unwrap()["x"], "2");
    // alice drops y from her config: y stays because bob co-owns it; x stays (bob owns it)
    let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {}});
    let c = api
        .patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a2))
        .await
        .unwrap();
    assert_eq!(c.data.as_ref().unwrap().get("y").map(String::as_str), Some("1"));
    // fieldManager is required
    let e = status(
        api.patch(
            "s",
            &PatchParams {
                field_manager: None,
                ..Default::default()
            },
            &Patch::Apply(&a2),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // an Update by another manager is recorded
    let c = api
        .patch(
            "s",
            &PatchParams {
                field_manager: Some("carol".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"z": "3"}})),
        )
        .await
        .unwrap();
    let managers: Vec<_> = c
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|m| m.manager.clone().unwrap())
        .collect();
    assert!(managers.contains(&"carol".to_string()), "{managers:?}");
    // apply creates
    let n = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"a": "b"}});
    api.patch("new", &PatchParams::apply("alice"), &Patch::Apply(&n))
        .await
        .unwrap();
    assert!(api.get("new").await.is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn services_secrets_namespaces_dry_run() {
    let (sim, client) = start().await;
    let svcs: Api<Service> = Api::default_namespaced(client.clone());
    let s: Service = serde_json::from_value(
        json!({"metadata":{"name":"s1"},"spec":{"type":"NodePort","ports":[{"port":80}]}}),
    )
    .unwrap();
    let s = svcs.create(&PostParams::default(), &s).await.unwrap();
    let spec = s.spec.unwrap();
    let ip = spec.cluster_ip.unwrap();
    assert!(
        ip.starts_with("10.9") || ip.starts_with("10.10") || ip.starts_with("10.11"),
        "{ip}"
    );
    let np = spec.ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&np));
    let h: Service = serde_json::from_value(
        json!({"metadata":{"name":"h"},"spec":{"clusterIP":"None","selector":{"a":"b"}}}),
    )
    .unwrap();
    let h = svcs.create(&PostParams::default(), &h).await.unwrap();
    assert_eq!(h.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let dup: Service = serde_json::from_value(
        json!({"metadata":{"name":"d"},"spec":{"clusterIP": ip,"ports":[{"port":80}]}}),
    )
    .unwrap();
    assert_eq!(
        status(svcs.create(&PostParams::default(), &dup).await.unwrap_err()).code,
        422
    );

    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let sec: Secret =
        serde_json::from_value(json!({"metadata":{"name":"sec"},"stringData":{"pw":"hunter2"}})).unwrap();
    let sec = secrets.create(&PostParams::default(), &sec).await.unwrap();
    assert_eq!(sec.data.unwrap()["pw"].0, b"hunter2".to_vec());
    assert_eq!(sec.type_.as_deref(), Some("Opaque"));

    // dry run does not persist
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &cm("dry", json!({})),
    )
    .await
    .unwrap();
    assert_eq!(status(cms.get("dry").await.unwrap_err()).code, 404);

    // namespace deletion removes content, then the namespace
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata":{"name":"tmp"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let in_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    in_ns
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    let r = nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    let terminating = r.left().unwrap();
    assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = status(
        in_ns
            .create(&PostParams::default(), &cm("y", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    common::eventually(10, "namespace gone", || {
        let nss = nss.clone();
        async move { nss.get_opt("tmp").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert!(in_ns.get_opt("x").await.unwrap().is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_injection_and_accounting() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    sim.metrics().reset();
    api.create(&PostParams::default(), &cm("m", json!({})))
        .await
        .unwrap();
    api.get("m").await.unwrap();
    api.get("m").await.unwrap();
    let m = sim.metrics().snapshot();
    assert_eq!(m.by_verb_resource.get("get configmaps"), Some(&2));
    assert_eq!(m.by_verb_resource.get("create configmaps"), Some(&1));
    sim.faults().add_error(kubesim::faults::ErrorRule {
        verb: "get".into(),
        resource: "configmaps".into(),
        rate: 1.0,
        code: 500,
        count: None,
    });
    assert_eq!(status(api.get("m").await.unwrap_err()).code, 500);
    assert!(api.list(&ListParams::default()).await.is_ok());
    sim.faults().clear();
    assert!(api.get("m").await.is_ok());
    sim.faults().set_conflict_rate(1.0);
    let e = status(
        api.patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    sim.faults().clear();
    assert!(api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}}))
        )
        .await
        .is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn events_k8s_io_and_core_events_share_storage() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let c = cms
        .create(&PostParams::default(), &cm("evt", json!({})))
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "kubedirector".into(),
        instance: Some("kd-0".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ev = Event {
        type_: EventType::Warning,
        reason: "BadThing".into(),
        note: Some("something happened".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&c, &());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    // visible as core/v1 Events, with the fields mapped
    let core: Api<CoreEvent> = Api::default_namespaced(client.clone());
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=evt"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("something happened"));
    assert_eq!(e.reason.as_deref(), Some("BadThing"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(e.reporting_component.as_deref(), Some("kubedirector"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(2)));
    // and as events.k8s.io/v1
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let l = new
        .list(&ListParams::default().fields("regarding.name=evt"))
        .await
        .unwrap();
    assert_eq!(l.items[0].note.as_deref(), Some("something happened"));
    // a core event written by a controller shows up through events.k8s.io
    sim.store().record_event(
        &serde_json::to_value(&c).unwrap(),
        "Normal",
        "Synced",
        "ok",
        "test-controller",
    );
    let l = new
        .list(&ListParams::default().fields("reason=Synced"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(
        l.items[0].reporting_controller.as_deref(),
        Some("test-controller")
    );
    assert!(l.items[0].event_time.is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_is_idempotent_for_workloads() {
    let (sim, client) = start().await;
    let owner = Api::<ConfigMap>::default_namespaced(client.clone())
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap(), "controller": true, "blockOwnerDeletion": true}]);
    let sts_cfg = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "kd", "labels": {"app": "kd"}, "ownerReferences": oref},
        "spec": {"replicas": 2, "serviceName": "kd", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "kd"}},
            "template": {"metadata": {"labels": {"app": "kd"}},
                "spec": {"containers": [{"name": "app", "image": "centos:7", "ports": [{"containerPort": 22, "name": "ssh"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}], "env": [{"name": "A", "value": "1"}]}],
                    "volumes": [{"name": "cfg", "configMap": {"name": "owner"}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    });
    let svc_cfg = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kd", "ownerReferences": oref},
        "spec": {"clusterIP": "None", "selector": {"app": "kd"}, "ports": [{"name": "ssh", "port": 22}]}
    });
    let pp = PatchParams::apply("kubedirector.hpe.com").force();
    let stss: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let svcs: Api<Service> = Api::default_namespaced(client.clone());
    let s1 = stss.patch("kd", &pp, &Patch::Apply(&sts_cfg)).await.unwrap();
    let v1 = svcs.patch("kd", &pp, &Patch::Apply(&svc_cfg)).await.unwrap();
    // Re-applying the same configuration is a no-op: same resourceVersion, same generation.
    let s2 = stss.patch("kd", &pp, &Patch::Apply(&sts_cfg)).await.unwrap();
    let v2 = svcs.patch("kd", &pp, &Patch::Apply(&svc_cfg)).await.unwrap();
    assert_eq!(s1.resource_version(), s2.resource_version());
    assert_eq!(v1.resource_version(), v2.resource_version());
    assert_eq!(s2.metadata.generation, Some(1));
    // Status written by another manager survives re-applies and does not conflict.
    stss.patch_status(
        "kd",
        &PatchParams::apply("kube-controller-manager").force(),
        &Patch::Apply(&json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "status": {"replicas": 2, "readyReplicas": 2}})),
    )
    .await
    .unwrap();
    let s3 = stss.patch("kd", &pp, &Patch::Apply(&sts_cfg)).await.unwrap();
    assert_eq!(s3.status.as_ref().unwrap().ready_replicas, Some(2));
    // A changed replica count bumps generation once; removing an env var removes it.
    let mut cfg2 = sts_cfg.clone();
    cfg2["spec"]["replicas"] = json!(3);
    cfg2["spec"]["template"]["spec"]["containers"][0]["env"] = json!([]);
    let s4 = stss.patch("kd", &pp, &Patch::Apply(&cfg2)).await.unwrap();
    assert_eq!(s4.metadata.generation, Some(2));
    let c = &s4
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert!(c.env.as_ref().is_none_or(|e| e.is_empty()), "{:?}", c.env);
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    // the headless service kept its clusterIP
    assert_eq!(v2.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    sim.shutdown().await;
}

#[tokio::test]
async fn pod_graceful_deletion_and_service_account_admission() {
    let (sim, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let p = |name: &str, sa: Option<&str>| -> Pod {
        let mut v =
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(sa) = sa {
            v["spec"]["serviceAccountName"] = json!(sa);
        }
        serde_json::from_value(v).unwrap()
    };
    // service account admission
    let e = status(
        pods.create(&PostParams::default(), &p("nosa", Some("missing")))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert!(
        e.message.contains("serviceaccount \"missing\" not found"),
        "{}",
        e.message
    );
    let created = pods
        .create(&PostParams::default(), &p("bound", None))
        .await
        .unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("default")
    );
    assert_eq!(created.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    // nodeName cannot be changed by an update; binding sets it
    let e = status(
        pods.patch(
            "bound",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "kubesim-node-1"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    sim.store()
        .bind_pod("default", "bound", "kubesim-node-1")
        .unwrap();
    assert_eq!(
        sim.store()
            .bind_pod("default", "bound", "kubesim-node-1")
            .unwrap_err()
            .code,
        409
    );
    // a bound pod is deleted gracefully: it stays with deletionTimestamp + grace period
    let r = pods.delete("bound", &DeleteParams::default()).await.unwrap();
    let terminating = r.left().expect("pod still present");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    // the kubelet finishes it with grace period 0
    pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("bound").await.unwrap().is_none());
    // an unbound pod goes immediately
    pods.create(&PostParams::default(), &p("unbound", None))
        .await
        .unwrap();
    pods.delete("unbound", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("unbound").await.unwrap().is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_collection_preconditions_and_dry_run() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for (n, l) in [
        ("x1", json!({"grp": "x"})),
        ("x2", json!({"grp": "x"})),
        ("y1", json!({"grp": "y"})),
    ] {
        api.create(&PostParams::default(), &cm(n, l)).await.unwrap();
    }
    // dry-run delete keeps the object
    api.delete(
        "y1",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get_opt("y1").await.unwrap().is_some());
    // uid precondition mismatch -> 409
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = status(api.delete("y1", &dp).await.unwrap_err());
    assert_eq!(e.code, 409);
    assert!(
        e.message
            .contains("Precondition failed: UID in precondition: wrong"),
        "{}",
        e.message
    );
    // deletecollection by label
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("grp=x"))
        .await
        .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default().labels("grp"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, vec!["y1"]);
    sim.shutdown().await;
}
