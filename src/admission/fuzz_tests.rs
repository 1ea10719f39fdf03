//! Seeded generator test: at least 100,000 generated AdmissionReview bodies (structural mutations
//! of valid reviews of every kind, and byte-level damage) through the decoder and rule dispatch
//! ([`handle_review`]); none may panic, and every reply must be a well-formed HTTP answer.

use std::time::Instant;

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use super::{
    review::handle_review,
    testutil::{CountingEntropy, FakeFacts},
};

const INPUTS: usize = 100_000;

fn app() -> Value {
    json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "centos7x", "namespace": "team", "uid": "app-uid"},
        "spec": {"systemdRequired": false, "distroID": "bluedata/centos7x", "version": "1.1",
            "configSchemaVersion": 7, "label": {"name": "CentOS"},
            "config": {"roleServices": [{"serviceIDs": ["ssh"], "roleID": "vanilla_centos"}],
                       "selectedRoles": ["vanilla_centos"]},
            "services": [{"endpoint": {"port": 22, "isDashboard": false}, "id": "ssh", "label": {"name": "SSH"}}],
            "roles": [{"cardinality": "1+", "id": "vanilla_centos", "imageRepoTag": "docker.io/bluedata/centos7:4.1",
                       "minResources": {"memory": "1Gi"}, "configPackage": null, "persistDirs": ["/home"]}]}})
}

fn cluster() -> Value {
    json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "c1", "namespace": "team", "uid": "c-uid", "labels": {"a": "b"}},
        "spec": {"app": "centos7x", "appCatalog": "local", "serviceType": "ClusterIP",
            "defaultSecret": {"name": "s1"},
            "roles": [{"id": "vanilla_centos", "members": 2,
                "resources": {"requests": {"memory": "2Gi", "cpu": "1"}, "limits": {"memory": "2Gi"}},
                "storage": {"size": "10Gi", "storageClassName": "standard"},
                "secretKeys": [{"name": "k", "value": "v"}],
                "fileInjections": [{"srcURL": "https://example.invalid/f", "destDir": "/tmp"}],
                "volumeProjections": [{"pvcName": "shared", "mountPath": "/data"}]}]},
        "status": {"state": "configured", "generationUID": "g1",
            "roles": [{"id": "vanilla_centos", "members": [{"pod": "p0", "state": "configured"}]}]}})
}

fn lean_cluster() -> Value {
    let mut c = cluster();
    for k in ["secretKeys", "fileInjections", "volumeProjections", "storage"] {
        c["spec"]["roles"][0].as_object_mut().map(|r| r.remove(k));
    }
    c
}

fn config() -> Value {
    json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config", "namespace": "kd"},
        "spec": {"defaultStorageClassName": "standard", "requiredSecretPrefix": "s",
                 "masterEncryptionKey": "0123456789abcdef0123456789abcdef"}})
}

fn pvc() -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "p", "namespace": "team", "labels": {"kubedirector.hpe.com/kdcluster": "c1"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

fn review(kind: &str, op: &str, object: Value, old: Value, version: &str) -> Value {
    json!({"apiVersion": version, "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": kind}, "operation": op,
            "namespace": object["metadata"]["namespace"], "name": object["metadata"]["name"],
            "userInfo": {"username": "alice", "groups": ["g"]}, "object": object, "oldObject": old}})
}

fn seeds() -> Vec<Value> {
    let mut out = Vec::new();
    for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        for op in ["CREATE", "UPDATE", "DELETE"] {
            let old = |v: Value| if op == "CREATE" { Value::Null } else { v };
            out.push(review("KubeDirectorApp", op, app(), old(app()), version));
            // Updates compare old and new objects several times (C-6..C-8, C-42): a lean cluster
            // keeps the 100,000 inputs affordable in a debug build.
            let full = if op == "UPDATE" { lean_cluster() } else { cluster() };
            let mut changed = full.clone();
            changed["spec"]["roles"][0]["members"] = json!(3);
            out.push(review("KubeDirectorCluster", op, changed, old(full), version));
            out.push(review("KubeDirectorConfig", op, config(), old(config()), version));
            out.push(review("PersistentVolumeClaim", op, pvc(), old(pvc()), version));
        }
    }
    out
}

fn facts() -> FakeFacts {
    let mut f = FakeFacts::new().with_app("team", app());
    f.clusters.insert(("team".into(), "c1".into()), cluster());
    f.storage_classes.insert("standard".into());
    f.default_sc = Some("standard".into());
    f.secrets.insert(("team".into(), "s1".into()));
    f.pvcs.insert(("team".into(), "shared".into()), pvc());
    f.kd_config = Some(config());
    f
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    const STRINGS: &[&str] = &[
        "",
        "1Gi",
        "-1",
        "0",
        "1+",
        "0+",
        "3",
        "999999999999999Ei",
        "1.5",
        "1e400",
        "abc",
        "local",
        "system",
        "spec modified",
        "CREATE",
        "\u{0}",
        "é",
        "kd-global-config",
        "/tmp",
        "https://x",
        "-bad",
        "a/b",
    ];
    match rng.random_range(0..10) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => json!(rng.random_range(-3i64..5)),
        3 => [
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1e300),
            json!(-0.5),
        ][rng.random_range(0..5)]
        .clone(),
        4 | 5 => json!(STRINGS[rng.random_range(0..STRINGS.len())]),
        6 if depth < 3 => Value::Array(
            (0..rng.random_range(0..3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        7 if depth < 3 => {
            let keys = [
                "id", "members", "name", "app", "spec", "storage", "size", "roles", "value",
            ];
            Value::Object(
                (0..rng.random_range(0..3))
                    .map(|_| {
                        (
                            keys[rng.random_range(0..keys.len())].to_string(),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
        _ => json!({}),
    }
}

/// Replaces, deletes or adds at a random place of `v`.
fn mutate(v: &mut Value, rng: &mut StdRng) {
    let nested = match &*v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    };
    if nested && rng.random_bool(0.75) {
        match v {
            Value::Object(m) => {
                let i = rng.random_range(0..m.len());
                if let Some(x) = m.values_mut().nth(i) {
                    mutate(x, rng);
                }
            }
            Value::Array(a) => {
                let i = rng.random_range(0..a.len());
                mutate(&mut a[i], rng);
            }
            _ => {}
        }
        return;
    }
    match (rng.random_range(0..4), &mut *v) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let k = m
                .keys()
                .nth(rng.random_range(0..m.len()))
                .cloned()
                .unwrap_or_default();
            m.remove(&k);
        }
        (1, Value::Array(a)) if !a.is_empty() => {
            let dup = a[rng.random_range(0..a.len())].clone();
            a.push(dup);
        }
        _ => *v = random_value(rng, 0),
    }
}

/// CPU seconds used by this thread (Linux), to report the cost on a loaded machine.
fn thread_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[test]
fn a_hundred_thousand_generated_reviews_never_panic() {
    let seeds = seeds();
    let facts = facts();
    let entropy = CountingEntropy(0.into());
    let mut rng = StdRng::seed_from_u64(0x6b64_7265_7669_6577);
    let started = Instant::now();
    let cpu_before = thread_cpu();
    let (mut allowed, mut denied, mut http_errors) = (0usize, 0usize, 0usize);
    for i in 0..INPUTS {
        let mut doc = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..5) {
            mutate(&mut doc, &mut rng);
        }
        let mut body = serde_json::to_vec(&doc).unwrap_or_default();
        if rng.random_bool(0.25) {
            match rng.random_range(0..3) {
                0 => body.truncate(rng.random_range(0..=body.len())),
                1 if !body.is_empty() => {
                    let at = rng.random_range(0..body.len());
                    body[at] = rng.random();
                }
                _ => {
                    let at = rng.random_range(0..=body.len());
                    body.insert(at, b"{}[]\",:0\\"[rng.random_range(0..9)]);
                }
            }
        }
        let ct = if rng.random_bool(0.98) {
            Some("application/json")
        } else {
            Some("text/plain")
        };
        let reply = handle_review(ct, &body, Some("kd".into()), &facts, &entropy);
        match reply.status {
            200 => {
                let v: Value = serde_json::from_slice(&reply.body).expect("a 200 reply is JSON");
                assert_eq!(v["kind"], "AdmissionReview");
                if v["response"]["allowed"] == true {
                    allowed += 1;
                } else {
                    denied += 1;
                }
            }
            400 | 415 => http_errors += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    println!(
        "{INPUTS} generated reviews in {:?} wall, {} CPU: {allowed} allowed, {denied} denied, {http_errors} HTTP errors",
        started.elapsed(),
        thread_cpu().map_or("unknown".to_string(), |c| format!("{:.1}s", c - cpu_before.unwrap_or(0.0)))
    );
    assert_eq!(allowed + denied + http_errors, INPUTS);
    assert!(
        allowed > 1000 && denied > 1000,
        "the generator must reach both outcomes"
    );
}
