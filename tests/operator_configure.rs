//! Configuration injection end to end (spec section 4): the operator in-process against kubesim,
//! whose `pods/exec` runs for real in each pod's bubblewrap sandbox, with a setup package served
//! over HTTP on loopback. Everything is observed through the Kubernetes API and by reading files
//! inside the pods.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;
mod skip_support;

use std::{path::Path, process::Command};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use operator_support::{
    configured_with, members, owned, serve_files, setup_package, two_role_app, Env, ResourceKind, NS,
};
use serde_json::{json, Value};

/// A startscript that logs every call to /var/log/kdtest/calls.log, takes a moment to
/// configure (so an operator restart can land mid-setup) and exits with `exit` on --configure.
fn package(dir: &Path, name: &str, exit: i32) -> Vec<u8> {
    setup_package(
        dir,
        name,
        &format!(
            "#!/bin/sh\nmkdir -p /var/log/kdtest\necho \"$*\" >> /var/log/kdtest/calls.log\n\
             if [ \"$1\" = --configure ]; then sleep 1; echo configuring; echo 'listen failed: port 7000 in use' >&2; exit {exit}; fi\nexit 0\n"
        ),
    )
}

/// The fault suites' two-role app with a `configMeta` block of its own.
fn app(name: &str, url: &str) -> Value {
    let mut app = two_role_app(name, url);
    app["spec"]["config"]["configMeta"] = json!({"flavour": "test"});
    app
}

fn cluster(name: &str, app: &str, workers: i64) -> Value {
    let res = json!({"limits": {"memory": "512Mi", "cpu": "1"}, "requests": {"memory": "512Mi", "cpu": "1"}});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"app": app, "roles": [
            {"id": "head", "members": 1, "resources": res},
            {"id": "worker", "members": workers, "resources": res}
        ]}
    })
}

/// Runs `sh -c script` in the pod's `app` container and returns its stdout.
fn exec(env: &Env, pod: &str, script: &str) -> String {
    exec_in(env, NS, pod, script)
}

/// As [`exec`], in namespace `ns`.
fn exec_in(env: &Env, ns: &str, pod: &str, script: &str) -> String {
    env.exec_sh(ns, pod, script)
}

/// Sets the worker role of cluster `name` to `n` members.
fn scale_workers(env: &Env, name: &str, n: i64) {
    let limits = json!({"limits": {"memory": "512Mi", "cpu": "1"}});
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        name,
        json!({"spec": {"roles": [
            {"id": "head", "members": 1, "resources": limits},
            {"id": "worker", "members": n, "resources": limits}
        ]}}),
    );
}

fn calls(env: &Env, pod: &str) -> Vec<String> {
    exec(env, pod, "cat /var/log/kdtest/calls.log 2>/dev/null")
        .lines()
        .map(str::to_string)
        .collect()
}

fn pods_of(env: &Env, name: &str) -> Vec<String> {
    members(env, name)
        .iter()
        .map(|m| m["pod"].as_str().unwrap().to_string())
        .collect()
}

fn events(env: &Env) -> Vec<String> {
    env.list(&ResourceKind::Event, NS)
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn two_role_cluster_configures_scales_and_survives_restarts_with_one_configure_per_container() {
    if !kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available()) {
        skip_support::skipped("bubblewrap/nsenter not available, in-pod exec cannot run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = serve_files(vec![
        ("/ok.tgz", package(dir.path(), "ok", 0)),
        ("/bad.tgz", package(dir.path(), "bad", 3)),
    ]);
    let mut env = Env::start();
    env.create(&ResourceKind::App, NS, app("kdtest", &format!("{base}/ok.tgz")));
    env.create(&ResourceKind::Cluster, NS, cluster("stack", "kdtest", 2));

    // An operator stopped while setups run and started again resumes them: no second --configure.
    env.eventually("a member is being set up", |e| {
        members(e, "stack").iter().any(|m| m["state"] == "creating")
    });
    env.stop_operator();
    env.start_operator();
    env.eventually("stack configured", |e| configured_with(e, "stack", 3));

    let pods = pods_of(&env, "stack");
    let svc = env.get(&ResourceKind::Cluster, NS, "stack").unwrap()["status"]["clusterService"]
        .as_str()
        .unwrap()
        .to_string();
    let fqdn = |pod: &str| format!("{pod}.{svc}.{NS}.svc.cluster.local");
    for (i, pod) in pods.iter().enumerate() {
        let cm: Value =
            serde_json::from_str(&exec(&env, pod, "cat /etc/guestconfig/configmeta.json")).unwrap();
        assert_eq!(cm["node"]["fqdn"], fqdn(pod), "{pod}");
        assert_eq!(cm["node"]["id"], (i + 1).to_string());
        assert_eq!(cm["nodegroups"]["1"]["config_metadata"]["flavour"], "test");
        // Intended members are listed by state group (spec 4.2), so the order depends on the
        // states when the file was written; the set does not.
        let mut workers: Vec<String> = cm["nodegroups"]["1"]["roles"]["worker"]["fqdns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        workers.sort();
        assert_eq!(workers, [fqdn(&pods[1]), fqdn(&pods[2])]);
        assert_eq!(
            calls(&env, pod),
            ["--configure"],
            "{pod} ran --configure exactly once"
        );
        assert_eq!(
            exec(&env, pod, "cat /opt/guestconfig/configure.status"),
            format!(
                "{}=0",
                members(&env, "stack")[i]["stateDetail"]["lastConfiguredContainer"]
                    .as_str()
                    .unwrap()
            )
        );
    }
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok()
    {
        let out = Command::new("kubectl")
            .args([
                "--kubeconfig",
                env.kubeconfig.to_str().unwrap(),
                "-n",
                NS,
                "exec",
                &pods[0],
                "-c",
                "app",
                "--",
            ])
            .args(["cat", "/etc/guestconfig/configmeta.json"])
            .output()
            .unwrap();
        let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cm["node"]["role_id"], "head");
    } else {
        skip_support::skipped("kubectl not installed; configmeta read through kube-rs only");
    }

    // Scale out: the new member configures, and only the members set up before hear of it.
    scale_workers(&env, "stack", 3);
    env.eventually("scaled out", |e| configured_with(e, "stack", 4));
    let new = pods_of(&env, "stack")[3].clone();
    let add = format!("--addnodes --nodegroup 1 --role worker --fqdns {}", fqdn(&new));
    for pod in &pods {
        assert_eq!(
            calls(&env, pod),
            ["--configure".to_string(), add.clone()],
            "{pod}"
        );
    }
    assert_eq!(
        calls(&env, &new),
        ["--configure"],
        "a new member is never told about itself"
    );

    // Scale in: the departing member is announced to the others.
    scale_workers(&env, "stack", 2);
    env.eventually("scaled in", |e| configured_with(e, "stack", 3));
    let del = format!("--delnodes --nodegroup 1 --role worker --fqdns {}", fqdn(&new));
    for pod in &pods {
        assert_eq!(calls(&env, pod).last(), Some(&del), "{pod}");
    }

    // A container restart (no persistent storage) is set up again from scratch, once.
    let restarted = pods[1].clone();
    let old = members(&env, "stack")[1]["stateDetail"]["lastConfiguredContainer"].clone();
    env.sim
        .as_ref()
        .unwrap()
        .faults()
        .set_pod_faults(kubesim::faults::PodFaults {
            crash_pods: vec![format!("{NS}/{restarted}")],
            ..Default::default()
        });
    env.eventually("restarted member configured again", |e| {
        let m = members(e, "stack");
        configured_with(e, "stack", 3) && m[1]["stateDetail"]["lastConfiguredContainer"] != old
    });
    assert_eq!(
        calls(&env, &restarted),
        ["--configure"],
        "fresh container, one --configure"
    );
    let cm: Value =
        serde_json::from_str(&exec(&env, &restarted, "cat /etc/guestconfig/configmeta.json")).unwrap();
    assert_eq!(cm["node"]["fqdn"], fqdn(&restarted));

    // A failing startscript: config error, with the exit status in an Event and the stderr tail
    // in the member status.
    env.create(&ResourceKind::App, NS, app("kdbad", &format!("{base}/bad.tgz")));
    env.create(&ResourceKind::Cluster, NS, cluster("broken", "kdbad", 0));
    env.eventually("broken member in config error", |e| {
        members(e, "broken")
            .first()
            .is_some_and(|m| m["state"] == "config error")
    });
    let m = &members(&env, "broken")[0];
    assert_eq!(
        m["stateDetail"]["configErrorDetail"],
        "execution of app config failed: configure failed with exit status {3}"
    );
    assert_eq!(
        m["stateDetail"]["startScriptStderrMessage"],
        "listen failed: port 7000 in use\n"
    );
    let pod = m["pod"].as_str().unwrap().to_string();
    env.eventually("config error events", |e| {
        let ev = events(e);
        ev.iter()
            .any(|x| x == &format!("failed to run initial config for member{{{pod}}} in role{{head}}"))
            && ev.iter().any(|x| {
                x.starts_with(&format!(
                    "startscript --configure exited with status 3 in member{{{pod}}}"
                ))
            })
    });
    assert!(owned(&env, &ResourceKind::Pod, "broken").len() == 1);
}

#[test]
fn the_example_catalog_and_clusters_applied_with_kubectl_all_reach_configured() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        skip_support::skipped("kubectl not installed");
        return;
    }
    if !kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available()) {
        skip_support::skipped("bubblewrap/nsenter not available, in-pod exec cannot run");
        return;
    }
    let env = Env::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("kubectl")
        .args([
            "--kubeconfig",
            env.kubeconfig.to_str().unwrap(),
            "apply",
            "-n",
            "default",
        ])
        .arg("-f")
        .arg(root.join("deploy/examples/catalog"))
        .arg("-f")
        .arg(root.join("deploy/examples/clusters"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let get = |name: &str| {
        let out = Command::new("kubectl")
            .args([
                "--kubeconfig",
                env.kubeconfig.to_str().unwrap(),
                "-n",
                "default",
                "get",
                "kdcluster",
                name,
            ])
            .args(["-o", "jsonpath={.status.state}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for name in ["shell-demo", "webstack-demo", "keyvalue-demo"] {
        env.eventually(&format!("{name} configured"), |_| get(name) == "configured");
    }
    // The example startscripts really ran: the webstack controller wrote its config file.
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pods = env.rt.block_on(api.list(&Default::default())).unwrap();
    let controller = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|n| {
            pods.items.iter().any(|p| {
                p.metadata.name.as_deref() == Some(n)
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubedirector.hpe.com/role"))
                        == Some(&"controller".to_string())
            })
        })
        .expect("a webstack controller pod");
    let conf = exec_in(&env, "default", &controller, "cat /etc/webstack/webstack.conf");
    assert!(conf.contains("role=controller"), "{conf}");
    assert!(conf.contains(&format!("fqdn={controller}.")), "{conf}");
}
