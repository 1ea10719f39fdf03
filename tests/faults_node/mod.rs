//! Helpers of tests/operator_faults_node.rs: a logging setup package, reads inside pods, write
//! counts, and the ownership tests (`ownership.rs`).

#![allow(dead_code)]

pub mod ownership;

use std::collections::BTreeMap;

use kubesim::faults::PodFaults;
use serde_json::{json, Value};

use crate::operator_support::{final_state, members, serve_files, setup_package, Env, ResourceKind, NS};
use crate::skip_support;

pub const ROLE: &str = "node";

pub fn sandbox_available() -> bool {
    let ok =
        kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available());
    if !ok {
        skip_support::skipped("bubblewrap/nsenter not available, in-pod exec cannot run");
    }
    ok
}

/// A kdapp whose startscript logs each call to /var/log/kdtest/calls.log (inside the container,
/// so a fresh container starts a fresh log) and takes a moment on `--configure`.
pub fn logging_app(env: &Env, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let script = "#!/bin/sh\nmkdir -p /var/log/kdtest\necho \"$*\" >> /var/log/kdtest/calls.log\n\
                  if [ \"$1\" = --configure ]; then sleep 1; fi\nexit 0\n";
    let base = serve_files(vec![("/p.tgz", setup_package(dir.path(), "p", script))]);
    env.create(
        &ResourceKind::App,
        NS,
        json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1",
            "kind": "KubeDirectorApp",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "label": {"name": name},
                "distroID": format!("kdtest/{name}"),
                "version": "1.0",
                "configSchemaVersion": 7,
                "defaultImageRepoTag": "docker.io/library/debian:12-slim",
                "defaultConfigPackage": {"packageURL": format!("{base}/p.tgz"), "useNewSetupLayout": true},
                "services": [{"id": "api", "label": {"name": "API"}, "endpoint": {"port": 7000}}],
                "roles": [{"id": ROLE, "cardinality": "1+"}],
                "config": {"roleServices": [{"roleID": ROLE, "serviceIDs": ["api"]}], "selectedRoles": [ROLE]}
            }
        }),
    );
}

/// A kdcluster of `app` with `n` members of role [`ROLE`].
pub fn cluster(name: &str, app: &str, n: i64) -> Value {
    let small = json!({"cpu": "200m", "memory": "256Mi"});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"app": app, "roles": [{"id": ROLE, "members": n, "resources": {"limits": small, "requests": small}}]}
    })
}

/// stdout of `sh -c script` in the pod's `app` container.
pub fn exec(env: &Env, pod: &str, script: &str) -> String {
    env.exec_sh(NS, pod, script)
}

/// Each member pod's startscript calls (one line per call).
pub fn calls(env: &Env, name: &str) -> BTreeMap<String, Vec<String>> {
    pods_of(env, name)
        .into_iter()
        .map(|pod| {
            let lines = exec(env, &pod, "cat /var/log/kdtest/calls.log 2>/dev/null");
            (pod, lines.lines().map(str::to_string).collect())
        })
        .collect()
}

pub fn pods_of(env: &Env, name: &str) -> Vec<String> {
    members(env, name)
        .iter()
        .map(|m| m["pod"].as_str().unwrap().to_string())
        .collect()
}

pub fn last_container(env: &Env, name: &str, i: usize) -> Value {
    members(env, name)[i]["stateDetail"]["lastConfiguredContainer"].clone()
}

pub fn uid_of(env: &Env, kind: &ResourceKind, name: &str) -> Option<String> {
    env.get(kind, NS, name)
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
}

pub fn set_pod_faults(env: &Env, faults: PodFaults) {
    env.sim.as_ref().unwrap().faults().set_pod_faults(faults);
}

/// Operator writes since `before` (only the counts that moved).
pub fn writes_since(env: &Env, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    final_state::operator_writes(env)
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0);
            (d > 0).then_some((k, d))
        })
        .collect()
}

pub fn count(w: &BTreeMap<String, u64>, k: &str) -> u64 {
    w.get(k).copied().unwrap_or(0)
}

pub fn status_writes(w: &BTreeMap<String, u64>) -> u64 {
    count(w, "update kubedirectorclusters/status")
}

pub fn events(env: &Env) -> Vec<(String, String)> {
    env.list(&ResourceKind::Event, NS)
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub fn expected<'a>(
    cluster: &'a str,
    roles: &'a [(&'a str, usize)],
    pvcs: bool,
) -> final_state::Expected<'a> {
    final_state::Expected {
        ns: NS,
        cluster,
        roles,
        pvcs,
    }
}

pub fn assert_configured_once(env: &Env, name: &str) {
    let calls = calls(env, name);
    assert_eq!(final_state::configure_once_problems(&calls), Vec::<String>::new());
}

pub fn sts_of(env: &Env, name: &str) -> Value {
    let all: Vec<Value> = final_state::stored(env, "statefulsets", NS)
        .into_iter()
        .filter(|s| s["metadata"]["labels"][final_state::CLUSTER_LABEL] == name)
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].clone()
}

pub fn running(env: &Env, name: &str) -> usize {
    final_state::stored(env, "pods", NS)
        .iter()
        .filter(|p| {
            p["metadata"]["labels"][final_state::CLUSTER_LABEL] == name
                && p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}
