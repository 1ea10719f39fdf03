//! Every upstream example app (`../shared/spec/upstream/cr-app-*.json`, read in place) with its
//! example cluster (`cr-cluster-*.yaml`) gets Running member pods on kubesim's node simulation
//! with the operator; apps without a setup package reach `configured`. All of upstream's examples
//! require systemd (`systemdRequired: true`), so their pods mount the node's cgroup filesystem
//! (`hostPath` volumes `/sys/fs/cgroup` and `/sys/fs/cgroup/systemd`), which kubesim serves from
//! the simulated node's own directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;
mod skip_support;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use operator_support::{Env, ResourceKind};
use serde_json::{json, Value};

/// Namespace of the examples (the harness's own apps live elsewhere).
const UPSTREAM_NS: &str = "upstream";

fn upstream_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/upstream")
}

/// `(app, cluster)` pairs: each app with the example cluster that uses it.
fn examples(dir: &Path) -> Vec<(Value, Value)> {
    let mut apps = Vec::new();
    let mut clusters = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("cr-app-") && name.ends_with(".json") {
            apps.push(serde_json::from_str::<Value>(&std::fs::read_to_string(&p).unwrap()).unwrap());
        } else if name.starts_with("cr-cluster-") && name.ends_with(".yaml") {
            clusters.push(serde_yaml::from_str::<Value>(&std::fs::read_to_string(&p).unwrap()).unwrap());
        }
    }
    apps.into_iter()
        .map(|app| {
            let cluster = clusters
                .iter()
                .find(|c| c["spec"]["app"] == app["metadata"]["name"])
                .unwrap_or_else(|| panic!("no example cluster for app {}", app["metadata"]["name"]))
                .clone();
            (app, cluster)
        })
        .collect()
}

fn member_pods(env: &Env, cluster: &str) -> Vec<Value> {
    env.list(&ResourceKind::Pod, UPSTREAM_NS)
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["kubedirector.hpe.com/kdcluster"] == cluster)
        .collect()
}

fn expected_members(cluster: &Value) -> usize {
    cluster["spec"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        // Upstream's examples leave some roles' member counts to the app's default (1).
        .map(|r| r["members"].as_u64().unwrap_or(1) as usize)
        .sum()
}

#[test]
fn every_upstream_example_app_gets_running_pods_on_kubesim() {
    let dir = upstream_dir();
    if !dir.is_dir() {
        skip_support::skipped(&format!("{} is absent", dir.display()));
        return;
    }
    let examples = examples(&dir);
    assert!(!examples.is_empty(), "no cr-app-*.json in {}", dir.display());
    let env = Env::start();
    env.rt.block_on(async {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": UPSTREAM_NS}})).unwrap();
        Api::<Namespace>::all(env.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    });
    for (app, cluster) in examples {
        let app_name = app["metadata"]["name"].as_str().unwrap().to_string();
        let name = cluster["metadata"]["name"].as_str().unwrap().to_string();
        println!(
            "example app {app_name} (systemdRequired: {}), cluster {name}",
            app["spec"]["systemdRequired"]
        );
        // Connection secrets the example names exist in a real deployment too.
        for secret in cluster["spec"]["connections"]["secrets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let s: Secret = serde_json::from_value(json!({"metadata": {"name": secret}})).unwrap();
            env.rt.block_on(async {
                Api::<Secret>::namespaced(env.client.clone(), UPSTREAM_NS)
                    .create(&PostParams::default(), &s)
                    .await
                    .unwrap();
            });
        }
        env.create(&ResourceKind::App, UPSTREAM_NS, app.clone());
        env.create(&ResourceKind::Cluster, UPSTREAM_NS, cluster.clone());
        let want = expected_members(&cluster);
        env.eventually(&format!("{want} Running member pods of {name}"), |env| {
            let pods = member_pods(env, &name);
            pods.len() == want
                && pods.iter().all(|p| {
                    p["status"]["phase"] == "Running"
                        && p["status"]["containerStatuses"]
                            .as_array()
                            .is_some_and(|cs| cs.iter().all(|c| c["state"]["running"].is_object()))
                })
        });
        let systemd = app["spec"]["systemdRequired"] == true;
        if systemd {
            for p in member_pods(&env, &name) {
                let vols: Vec<&str> = p["spec"]["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|v| v["hostPath"]["path"].as_str())
                    .collect();
                assert!(vols.contains(&"/sys/fs/cgroup/systemd"), "{vols:?}");
            }
        }
        if app["spec"]["defaultConfigPackage"].is_null() {
            env.eventually(&format!("{name} configured"), |env| {
                env.get(&ResourceKind::Cluster, UPSTREAM_NS, &name)
                    .is_some_and(|c| c["status"]["state"] == "configured")
            });
        }
        // Free the node for the next example.
        env.delete(&ResourceKind::Cluster, UPSTREAM_NS, &name);
        env.eventually(&format!("pods of {name} gone"), |env| {
            member_pods(env, &name).is_empty()
        });
    }
}
