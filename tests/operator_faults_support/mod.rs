//! The fixture of tests/operator_faults_api.rs: a two-member cluster of an app whose
//! startscript logs each call in the pod, foreign objects beside it, in-process waits and
//! reads (never through the faulty API), and the final-state, `--configure`-once and
//! write-bound checks every fault test ends with.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support code

use std::{collections::BTreeMap, time::Duration};

use kubesim::faults::ErrorRule;
use serde_json::{json, Value};

use crate::operator_support::{
    final_state::{self, Expected, Foreign},
    serve_files, setup_package, Env, ResourceKind, NS,
};
use crate::skip_support;

pub const ROLES: [(&str, usize); 2] = [("head", 1), ("worker", 1)];

/// A startscript that logs every call to /var/log/kdtest/calls.log and takes a second to
/// configure (so faults can land while members configure).
pub const STARTSCRIPT: &str =
    "#!/bin/sh\nmkdir -p /var/log/kdtest\necho \"$*\" >> /var/log/kdtest/calls.log\n\
     if [ \"$1\" = --configure ]; then sleep 1; fi\nexit 0\n";

pub fn app(url: &str) -> Value {
    crate::operator_support::two_role_app("kdfault", url)
}

pub fn cluster(name: &str) -> Value {
    let res =
        json!({"limits": {"memory": "256Mi", "cpu": "500m"}, "requests": {"memory": "256Mi", "cpu": "500m"}});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"app": "kdfault", "roles": [
            {"id": "head", "members": 1, "resources": res},
            {"id": "worker", "members": 1, "resources": res}
        ]}
    })
}

/// The test's environment: kubesim + operator, the app installed, foreign objects planted.
pub struct Fixture {
    /// kubesim + the operator.
    pub env: Env,
    /// The foreign objects planted beside the cluster.
    pub foreign: Foreign,
    /// The KubeDirectorApp document (re-created after a store loss).
    pub app: Value,
    pub _dir: tempfile::TempDir,
}

/// Starts everything (None: no bubblewrap, the test is skipped), the operator with
/// `--watch-timeout-seconds watch_timeout` when given, and waits until the operator watches
/// (so faults injected next meet a running operator, not its start).
pub fn setup(name: &str, watch_timeout: Option<u32>) -> Option<Fixture> {
    if !kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available()) {
        skip_support::skipped("bubblewrap/nsenter not available, in-pod exec cannot run");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = serve_files(vec![(
        "/fault.tgz",
        setup_package(dir.path(), "fault", STARTSCRIPT),
    )]);
    let mut env = Env::start();
    let mut before = 0;
    if watch_timeout.is_some() {
        env.stop_operator();
        before = operator_watches(&sim(&env).metrics().snapshot());
        env.watch_timeout_seconds = watch_timeout;
        env.start_operator();
    }
    wait(&env, 30, "the operator watching", |e| {
        operator_watches(&sim(e).metrics().snapshot()) >= before + WATCHES
    });
    let app = app(&format!("{base}/fault.tgz"));
    env.create(&ResourceKind::App, NS, app.clone());
    let foreign = final_state::plant_foreign(&env, NS, name);
    Some(Fixture {
        env,
        foreign,
        app,
        _dir: dir,
    })
}

pub fn sim(env: &Env) -> &kubesim::Sim {
    env.sim.as_ref().unwrap()
}

/// The cluster object, in-process.
pub fn stored_cluster(env: &Env, name: &str) -> Option<Value> {
    final_state::stored(env, "kubedirectorclusters", NS)
        .into_iter()
        .find(|c| c["metadata"]["name"] == name)
}

pub fn member_states(env: &Env, name: &str) -> Vec<String> {
    stored_cluster(env, name)
        .map(|c| {
            c["status"]["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["members"].as_array().cloned().unwrap_or_default())
                .map(|m| m["state"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Converged as far as the status says: `configured` with both members configured.
pub fn configured(env: &Env, name: &str) -> bool {
    let Some(c) = stored_cluster(env, name) else {
        return false;
    };
    let states = member_states(env, name);
    c["status"]["state"] == "configured" && states.len() == 2 && states.iter().all(|s| s == "configured")
}

/// Some member is being set up (the startscript runs while the state is `creating`).
pub fn configuring(env: &Env, name: &str) -> bool {
    member_states(env, name).iter().any(|s| s == "creating")
}

/// Objects of `kind` labelled for cluster `name`, in-process.
pub fn labelled(env: &Env, kind: &str, name: &str) -> usize {
    final_state::stored(env, kind, NS)
        .iter()
        .filter(|o| o["metadata"]["labels"][final_state::CLUSTER_LABEL] == name)
        .count()
}

/// Waits until `cond` holds, up to `secs` seconds (in-process reads only).
pub fn wait(env: &Env, secs: u64, what: &str, mut cond: impl FnMut(&Env) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond(env) {
        if std::time::Instant::now() > deadline {
            eprintln!("{}", env.dump());
            panic!("never happened within {secs} s: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each member pod's startscript calls, read in the pod.
pub fn calls(env: &Env, name: &str) -> BTreeMap<String, Vec<String>> {
    let pods: Vec<String> = final_state::stored(env, "pods", NS)
        .iter()
        .filter(|p| p["metadata"]["labels"][final_state::CLUSTER_LABEL] == name)
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    pods.into_iter()
        .map(|pod| {
            let out = env.exec_sh(NS, &pod, "cat /var/log/kdtest/calls.log 2>/dev/null");
            (pod, out.lines().map(str::to_string).collect())
        })
        .collect()
}

/// The final-state comparison every test ends with (faults cleared before).
pub fn assert_final(fx: &Fixture, name: &str) {
    sim(&fx.env).faults().clear();
    wait(&fx.env, 60, "converged after the fault", |e| configured(e, name));
    final_state::assert_converged(
        &fx.env,
        &Expected {
            ns: NS,
            cluster: name,
            roles: &ROLES,
            pvcs: false,
        },
    );
    assert_eq!(
        fx.foreign.problems(&fx.env),
        Vec::<String>::new(),
        "foreign objects"
    );
    let calls = calls(&fx.env, name);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        final_state::configure_once_problems(&calls),
        Vec::<String>::new(),
        "--configure once per container"
    );
}

/// The operator's writes so far that reached the handlers (kubesim counts the requests its
/// injected faults refused before any handler ran too; those stored nothing and are taken
/// out), checked against per-request maximums; any write kind not listed is a failure too.
/// Prints both counts.
pub fn assert_writes(env: &Env, test: &str, max: &[(&str, u64)]) -> BTreeMap<String, u64> {
    let mut writes = final_state::operator_writes(env);
    let refused: BTreeMap<String, u64> = sim(env)
        .faults()
        .refused()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("kubedirector ").map(|k| (k.to_string(), v)))
        .filter(|(k, _)| writes.contains_key(k))
        .collect();
    for (k, n) in &refused {
        if let Some(w) = writes.get_mut(k) {
            *w -= n;
        }
    }
    eprintln!("{test}: operator writes {writes:?} (refused before any handler: {refused:?})");
    let allowed: BTreeMap<&str, u64> = max.iter().copied().collect();
    for (k, n) in &writes {
        match allowed.get(k.as_str()) {
            Some(m) => assert!(n <= m, "{test}: {n} x {k} > bound {m}: {writes:?}"),
            None => panic!("{test}: unexpected write {k} x {n}: {writes:?}"),
        }
    }
    writes
}

/// What a fault-free two-member cluster costs: per role one StatefulSet create; one headless
/// and two member Services (created: nothing in the cache has their names); the finalizer patch; a few status
/// writes (5 measured: creating, members' progress, configured; 8 allowed for timing). Each
/// test adds what its fault can cost on top, with the reason.
pub fn baseline() -> Vec<(&'static str, u64)> {
    vec![
        ("create statefulsets", 2),
        ("create services", 3),
        ("patch kubedirectorclusters", 1),
        ("update kubedirectorclusters/status", 8),
    ]
}

pub fn with(extra: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    let mut b = baseline();
    for (k, n) in extra {
        match b.iter_mut().find(|(bk, _)| bk == k) {
            Some(e) => e.1 += n,
            None => b.push((k, *n)),
        }
    }
    b
}

pub fn error(verb: &str, resource: &str, code: u16, count: Option<u64>, rate: f64) -> ErrorRule {
    ErrorRule {
        verb: verb.into(),
        resource: resource.into(),
        rate,
        code,
        count,
    }
}

pub fn statefulsets_exist(env: &Env, name: &str) -> bool {
    labelled(env, "statefulsets", name) == 2
}

/// Watch streams of `kubedirector run` watching all namespaces (8 kinds + kdapps + kdconfigs).
pub const WATCHES: u64 = 10;

/// The operator's list requests so far.
pub fn operator_lists(m: &kubesim::faults::MetricsSnapshot) -> u64 {
    m.by_client_verb_resource
        .iter()
        .filter(|(k, _)| k.starts_with("kubedirector list "))
        .map(|(_, v)| *v)
        .sum()
}

/// The operator's watch requests so far.
pub fn operator_watches(m: &kubesim::faults::MetricsSnapshot) -> u64 {
    m.by_client_verb_resource
        .iter()
        .filter(|(k, _)| k.starts_with("kubedirector watch "))
        .map(|(_, v)| *v)
        .sum()
}

/// Creates cluster `name` straight in kubesim's store (no HTTP request of the test's own).
pub fn create_in_store(env: &Env, name: &str) {
    sim(env)
        .store()
        .create(
            &kubesim::resources::ResourceKey::new("kubedirector.hpe.com", "v1beta1", "kubedirectorclusters"),
            Some(NS),
            cluster(name),
        )
        .unwrap();
}
