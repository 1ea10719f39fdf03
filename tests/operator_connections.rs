//! Connections and auth tokens end to end (spec 4.2, 4.8): the operator in-process against
//! kubesim, whose `pods/exec` runs for real in each pod's bubblewrap sandbox, with a setup
//! package served over HTTP on loopback that logs every startscript call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use operator_support::{
    centos_cluster, configured_with, members, serve_files, setup_package, Env, ResourceKind, NS,
};
use serde_json::{json, Value};

/// A startscript that appends its arguments to /var/log/kdtest/calls.log.
fn package(dir: &Path) -> Vec<u8> {
    setup_package(
        dir,
        "pkg",
        "#!/bin/sh\nmkdir -p /var/log/kdtest\necho \"$*\" >> /var/log/kdtest/calls.log\nexit 0\n",
    )
}

/// Serves `body` at `/pkg.tgz` over HTTP/1.0 on loopback until the process ends; returns its URL.
fn serve(body: Vec<u8>) -> String {
    format!("{}/pkg.tgz", serve_files(vec![("/pkg.tgz", body)]))
}

fn app(url: &str) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "kdconn", "namespace": NS},
        "spec": {
            "label": {"name": "kdconn"},
            "distroID": "kdtest/kdconn",
            "version": "1.0",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": "docker.io/library/debian:12-slim",
            "defaultConfigPackage": {"packageURL": url, "useNewSetupLayout": true},
            "services": [{"id": "api", "label": {"name": "API"},
                          "endpoint": {"port": 7000, "urlScheme": "http", "hasAuthToken": true}}],
            "roles": [{"id": "head", "cardinality": "1"}, {"id": "worker", "cardinality": "0+"}],
            "config": {
                "roleServices": [{"roleID": "head", "serviceIDs": ["api"]}, {"roleID": "worker", "serviceIDs": ["api"]}],
                "selectedRoles": ["head", "worker"]
            }
        }
    })
}

fn client_cluster() -> Value {
    let res = json!({"limits": {"memory": "512Mi", "cpu": "1"}, "requests": {"memory": "512Mi", "cpu": "1"}});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": "client", "namespace": NS},
        "spec": {"app": "kdconn", "roles": [
            {"id": "head", "members": 1, "resources": res},
            {"id": "worker", "members": 1, "resources": res}
        ], "connections": {"clusters": ["db"], "configmaps": ["settings"]}}
    })
}

fn settings(value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": "settings", "namespace": NS,
                     "labels": {"kubedirector.hpe.com/cmType": "appcfg"}},
        "data": {"key": value}
    }))
    .unwrap()
}

fn exec(env: &Env, pod: &str, script: &str) -> String {
    env.exec_sh(NS, pod, script)
}

fn calls(env: &Env, pod: &str) -> Vec<String> {
    exec(env, pod, "cat /var/log/kdtest/calls.log 2>/dev/null")
        .lines()
        .map(str::to_string)
        .collect()
}

fn configmeta(env: &Env, pod: &str) -> Value {
    serde_json::from_str(&exec(env, pod, "cat /etc/guestconfig/configmeta.json")).unwrap()
}

fn pods(env: &Env, name: &str) -> Vec<String> {
    members(env, name)
        .iter()
        .map(|m| m["pod"].as_str().unwrap().to_string())
        .collect()
}

fn db_fqdns(env: &Env) -> Vec<String> {
    let db = env.get(&ResourceKind::Cluster, NS, "db").unwrap();
    let svc = db["status"]["clusterService"].as_str().unwrap().to_string();
    let mut v: Vec<String> = pods(env, "db")
        .iter()
        .map(|p| format!("{p}.{svc}.{NS}.svc.cluster.local"))
        .collect();
    v.sort();
    v
}

fn connected_fqdns(cm: &Value) -> Vec<String> {
    let mut v: Vec<String> = cm["connections"]["clusters"]["db"]["nodegroups"]["1"]["roles"]
        ["vanilla_centos"]["fqdns"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Every member of `client` configured, holding connection version `v`.
fn settled_at(env: &Env, v: i64) -> bool {
    configured_with(env, "client", 2)
        && members(env, "client")
            .iter()
            .all(|m| m["stateDetail"]["lastConnectionVersion"] == v)
}

fn counter(env: &Env) -> Value {
    env.get(&ResourceKind::Cluster, NS, "client").unwrap()["metadata"]["annotations"]
        ["kubedirector.hpe.com/hashChangeCounter"]
        .clone()
}

#[test]
fn a_connected_cluster_sees_its_connections_and_gets_one_reconnect_per_change() {
    if !kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available()) {
        println!("SKIPPED: bubblewrap/nsenter not available, in-pod exec cannot run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = serve(package(dir.path()));
    let mut env = Env::start();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    env.rt
        .block_on(cms.create(&PostParams::default(), &settings("one")))
        .unwrap();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("db", &[("vanilla_centos", 1)]),
    );
    env.eventually("db configured", |e| configured_with(e, "db", 1));
    env.create(&ResourceKind::App, NS, app(&url));
    env.create(&ResourceKind::Cluster, NS, client_cluster());
    env.eventually("client configured", |e| settled_at(e, 1));
    assert_eq!(counter(&env), "1");

    // configmeta: the connected cluster's member and the ConfigMap's data; auth tokens.
    let client_pods = pods(&env, "client");
    let ms = members(&env, "client");
    let role_ids = ["head", "worker"];
    for ((pod, m), role_id) in client_pods.iter().zip(&ms).zip(role_ids) {
        let cm = configmeta(&env, pod);
        assert_eq!(connected_fqdns(&cm), db_fqdns(&env), "{pod}");
        assert_eq!(cm["connections"]["configmaps"]["appcfg"][0]["data"]["key"], "one");
        let token = m["authToken"].as_str().unwrap();
        assert_eq!(token.len(), 32, "{pod}");
        assert_eq!(
            cm["nodegroups"]["1"]["roles"][role_id]["services"]["api"]["authToken"], token,
            "{pod}: configmeta carries the role's token"
        );
        let svc = env
            .get(&ResourceKind::Service, NS, m["service"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            svc["metadata"]["annotations"]["kubedirector.hpe.com/kd-auth-token"],
            token
        );
        assert_eq!(
            calls(&env, pod),
            ["--configure"],
            "{pod}: no reconnect for a new member"
        );
    }
    let tokens: Vec<Value> = ms.iter().map(|m| m["authToken"].clone()).collect();

    // An operator restart keeps the tokens; a ConfigMap change reaches every member with
    // exactly one --reconnect, after the new configmeta.
    env.stop_operator();
    env.start_operator();
    env.rt
        .block_on(cms.patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"key": "two"}})),
        ))
        .unwrap();
    env.eventually("client reconnected after the ConfigMap change", |e| {
        settled_at(e, 2)
    });
    assert_eq!(counter(&env), "2");
    for pod in &client_pods {
        assert_eq!(
            configmeta(&env, pod)["connections"]["configmaps"]["appcfg"][0]["data"]["key"],
            "two"
        );
        assert_eq!(calls(&env, pod), ["--configure", "--reconnect"], "{pod}");
    }
    let after: Vec<Value> = members(&env, "client")
        .iter()
        .map(|m| m["authToken"].clone())
        .collect();
    assert_eq!(
        after, tokens,
        "auth tokens survive passes and an operator restart"
    );

    // The connected cluster scales out: its generation moves, one more --reconnect each.
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "db",
        json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 2,
            "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}}]}}),
    );
    env.eventually("db scaled", |e| configured_with(e, "db", 2));
    // Every generation the connected cluster goes through is one change (one counter bump).
    env.eventually("client reconnected after db scaled", |e| {
        let c = counter(e)
            .as_str()
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0);
        c >= 3 && settled_at(e, c) && connected_fqdns(&configmeta(e, &client_pods[0])) == db_fqdns(e)
    });
    let changes: usize = counter(&env).as_str().unwrap().parse().unwrap();
    for pod in &client_pods {
        assert_eq!(connected_fqdns(&configmeta(&env, pod)), db_fqdns(&env), "{pod}");
        let got = calls(&env, pod);
        assert_eq!(got[0], "--configure", "{pod}");
        assert!(got[1..].iter().all(|c| c == "--reconnect"), "{pod}: {got:?}");
        assert_eq!(
            got.len() - 1,
            changes - 1,
            "{pod}: one --reconnect per counter bump"
        );
    }
    println!(
        "connections e2e: {} members, hashChangeCounter {changes}, {} --reconnect per member",
        client_pods.len(),
        changes - 1
    );
}
