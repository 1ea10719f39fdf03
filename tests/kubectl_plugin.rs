//! The kubectl plugin against kubesim and a running operator: `kubedirector install-plugin DIR`
//! makes the `kubectl-kd` symlink; run through it (and through `kubectl kd` when kubectl is
//! installed), `status` shows a cluster in `configured`, one in `creating` (unschedulable) and one in
//! `config error` (failing startscript, with its stderr tail); `logs` prints a member's startscript
//! output read in its pod; `validate` is the offline admission check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use operator_support::{centos_cluster, members, serve_files, setup_package, Env, ResourceKind, NS};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kubedirector");

/// A setup package whose startscript prints to stdout and stderr and exits with `exit` on
/// --configure.
fn package(dir: &Path, name: &str, exit: i32) -> Vec<u8> {
    setup_package(
        dir,
        name,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = --configure ]; then echo \"configuring {name}\"; \
             echo 'listen failed: port 7000 in use' >&2; exit {exit}; fi\nexit 0\n"
        ),
    )
}

fn app(name: &str, url: &str) -> Value {
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
            "defaultConfigPackage": {"packageURL": url, "useNewSetupLayout": true},
            "roles": [{"id": "head", "cardinality": "1"}],
            "config": {"selectedRoles": ["head"], "roleServices": []}
        }
    })
}

fn cluster(name: &str, app: &str) -> Value {
    let res = json!({"limits": {"memory": "512Mi", "cpu": "1"}, "requests": {"memory": "512Mi", "cpu": "1"}});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"app": app, "roles": [{"id": "head", "members": 1, "resources": res}]}
    })
}

/// The plugin, through the symlink `install-plugin` made.
struct Plugin {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Plugin {
    fn link(&self) -> PathBuf {
        self.dir.path().join("kubectl-kd")
    }

    /// `kubectl-kd ARGS` (argv[0] is the symlink's name).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.link())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    }

    /// `kubectl kd ARGS`, kubectl finding the plugin on the PATH; None without kubectl.
    fn kubectl(&self, args: &[&str]) -> Option<Output> {
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("kubectl")
            .arg("kd")
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .ok()?;
        Some(out)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl-kd {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The line of `tree` that starts (after the tree drawing, which is cut off) with `head`.
fn line<'a>(tree: &'a str, head: &str) -> &'a str {
    tree.lines()
        .map(|l| l.trim_start_matches(['│', '├', '└', '─', ' ']))
        .find(|l| l.starts_with(head))
        .unwrap_or_else(|| panic!("no line for {head} in:\n{tree}"))
}

fn words(l: &str) -> Vec<&str> {
    l.split_whitespace().collect()
}

#[test]
fn kubectl_kd_status_logs_and_validate_on_configured_creating_and_config_error_clusters() {
    let env = Env::start();
    let work = tempfile::tempdir().unwrap();
    let base = serve_files(vec![
        ("/good.tgz", package(work.path(), "good", 0)),
        ("/bad.tgz", package(work.path(), "bad", 3)),
    ]);
    env.create(&ResourceKind::App, NS, app("kdgood", &format!("{base}/good.tgz")));
    env.create(&ResourceKind::App, NS, app("kdbad", &format!("{base}/bad.tgz")));
    env.create(&ResourceKind::Cluster, NS, cluster("good", "kdgood"));
    env.create(&ResourceKind::Cluster, NS, cluster("broken", "kdbad"));
    // 64 CPUs per member: no simulated node fits it.
    let mut huge = centos_cluster("pending", &[("vanilla_centos", 1)]);
    huge["spec"]["roles"][0]["resources"] =
        json!({"limits": {"memory": "1Gi", "cpu": "64"}, "requests": {"memory": "1Gi", "cpu": "64"}});
    env.create(&ResourceKind::Cluster, NS, huge);

    // install-plugin makes the symlink.
    let plugin = Plugin {
        dir: tempfile::tempdir().unwrap(),
        kubeconfig: env.kubeconfig.clone(),
    };
    let out = Command::new(BIN)
        .arg("install-plugin")
        .arg(plugin.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("{} -> ", plugin.link().display())),
        "{said}"
    );
    assert_eq!(
        std::fs::canonicalize(plugin.link()).unwrap(),
        std::fs::canonicalize(BIN).unwrap()
    );

    let state = |e: &Env, name: &str, s: &str| {
        operator_support::state_of(e, name) == s && members(e, name).iter().all(|m| m["state"] != "creating")
    };
    env.eventually("good configured", |e| state(e, "good", "configured"));
    env.eventually("broken member in config error", |e| {
        members(e, "broken")
            .first()
            .is_some_and(|m| m["state"] == "config error")
    });
    env.eventually("pending has a member status", |e| {
        !members(e, "pending").is_empty()
    });

    // configured
    let good = plugin.ok(&["status", "good", "-n", NS]);
    assert_eq!(
        words(line(&good, "KubeDirectorCluster/good"))[..6],
        [
            "KubeDirectorCluster/good",
            "configured",
            "app",
            "kdgood,",
            "1",
            "member"
        ],
        "{good}"
    );
    let pod = members(&env, "good")[0]["pod"].as_str().unwrap().to_string();
    assert!(line(&good, "Role/head").contains("1 member"), "{good}");
    assert_eq!(
        words(line(&good, &format!("Member/{pod}"))),
        [format!("Member/{pod}").as_str(), "configured"]
    );

    // creating: unschedulable
    let pending = plugin.ok(&["status", "pending", "-n", NS]);
    assert_eq!(
        words(line(&pending, "KubeDirectorCluster/pending"))[..2],
        ["KubeDirectorCluster/pending", "creating"],
        "{pending}"
    );
    let member = members(&env, "pending")[0].clone();
    let ppod = member["pod"].as_str().unwrap();
    let mline = line(&pending, &format!("Member/{ppod}"));
    assert_eq!(words(mline)[1..3], ["create", "pending"], "{pending}");
    assert!(
        mline.contains("scheduling: ") && mline.contains("Insufficient cpu"),
        "the scheduler's reason is shown: {pending}"
    );

    // config error, with the stderr tail
    let broken = plugin.ok(&["status", "broken", "-n", NS]);
    let bpod = members(&env, "broken")[0]["pod"].as_str().unwrap().to_string();
    assert!(
        line(&broken, "KubeDirectorCluster/broken").contains("1 in config error"),
        "{broken}"
    );
    let bline = line(&broken, &format!("Member/{bpod}"));
    assert!(
        bline.contains("config error  execution of app config failed: configure failed with exit status {3}"),
        "{broken}"
    );
    assert!(
        broken
            .lines()
            .any(|l| l.trim() == "stderr: listen failed: port 7000 in use"),
        "{broken}"
    );

    println!("{good}\n{pending}\n{broken}");

    // Every cluster of the namespace when none is named.
    let all = plugin.ok(&["status", "-n", NS]);
    for name in ["good", "broken", "pending"] {
        line(&all, &format!("KubeDirectorCluster/{name}"));
    }
    let missing = plugin.run(&["status", "nope", "-n", NS]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        format!("kubectl kd: kdcluster nope not found in namespace {NS}")
    );

    // logs: the startscript output, read in the pod.
    let logs = plugin.ok(&["logs", "good", &pod, "-n", NS]);
    assert!(
        logs.contains("==> /opt/guestconfig/configure.stdout <==\nconfiguring good\n"),
        "{logs}"
    );
    // configure.status: `<container ID>=<exit status>` (the setup's completion protocol).
    let status_of = |text: &str| {
        let (_, rest) = text
            .split_once("==> /opt/guestconfig/configure.status <==\n")
            .unwrap();
        rest.lines()
            .next()
            .unwrap()
            .rsplit('=')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of(&logs), "0", "{logs}");
    let blogs = plugin.ok(&["logs", "broken", &bpod, "-n", NS]);
    assert!(
        blogs.contains("==> /opt/guestconfig/configure.stderr <==\nlisten failed: port 7000 in use\n"),
        "{blogs}"
    );
    assert_eq!(status_of(&blogs), "3", "{blogs}");
    let wrong = plugin.run(&["logs", "good", &bpod, "-n", NS]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains(&format!(
            "{bpod} is not a member of kdcluster good; its members: {pod}"
        )),
        "{wrong:?}"
    );

    // validate: the offline admission check.
    let v = plugin.ok(&[
        "validate",
        "--catalog",
        "deploy/examples/catalog",
        "deploy/examples/clusters/webstack.yaml",
    ]);
    assert_eq!(v.trim(), "ok KubeDirectorCluster/webstack-demo", "{v}");

    // Through kubectl itself, which finds kubectl-kd on the PATH.
    match plugin.kubectl(&["status", "good", "-n", NS]) {
        None => println!("SKIPPED (kubectl part): kubectl not found on PATH"),
        Some(out) => {
            assert!(out.status.success(), "{out:?}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), good);
        }
    }
}
