//! End to end, as a user would do it: `kubedirector sim` and `kubedirector run` started as
//! processes, driven only with `kubectl`. Applies the CRDs and our example catalog, creates a
//! cluster of an app without a setup package, waits with `kubectl wait` for `configured`, checks
//! upstream's printer columns, deletes the cluster and sees everything it owned disappear, then
//! stops both processes with SIGTERM and expects a clean exit.
//!
//! Skips (with a printed notice) when `kubectl` is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod skip_support;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_kubedirector");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A child process that is SIGKILLed if the test fails before stopping it gracefully.
struct Proc {
    name: &'static str,
    child: Option<Child>,
}

impl Proc {
    /// Sends SIGTERM and waits (bounded) for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("process already stopped");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within 20 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// Runs kubectl and returns stdout, failing the test with kubectl's stderr when it fails.
fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `kubectl <args>` until its stdout satisfies `done` (bounded).
fn eventually(kubeconfig: &Path, args: &[&str], what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = kubectl(kubeconfig, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last output:\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn kubectl_drives_sim_and_operator_from_crds_to_cluster_deletion() {
    if !kubectl_available() {
        skip_support::skipped("kubectl not found on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");

    // 1. kubedirector sim, as a process; it prints its address once it serves.
    let mut sim_child = Command::new(BIN)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "2",
            "--kubeconfig-out",
        ])
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = sim_child.stdout.take().unwrap();
    let mut sim = Proc {
        name: "kubedirector sim",
        child: Some(sim_child),
    };
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("sim printed nothing").unwrap();
    assert!(
        first.starts_with("kubesim listening on http://127.0.0.1:"),
        "unexpected first line: {first}"
    );
    // Keep draining sim's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    // 2. CRDs from `kubedirector crds`, our example catalog, the KubeDirector namespace.
    let crds = Command::new(BIN).arg("crds").output().unwrap();
    assert!(crds.status.success());
    let crd_file = dir.path().join("crds.yaml");
    std::fs::write(&crd_file, &crds.stdout).unwrap();
    kubectl_ok(&kubeconfig, &["apply", "-f", crd_file.to_str().unwrap()]);
    kubectl_ok(
        &kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd/kubedirectorclusters.kubedirector.hpe.com",
            "--timeout=30s",
        ],
    );
    kubectl_ok(&kubeconfig, &["create", "namespace", "kubedirector"]);
    let catalog = repo().join("deploy/examples/catalog");
    kubectl_ok(&kubeconfig, &["apply", "-f", catalog.to_str().unwrap()]);
    let apps = kubectl_ok(&kubeconfig, &["get", "kdapp"]);
    assert!(apps.contains("kd-shell"), "kdapps: {apps}");

    // 3. kubedirector run, as a process, serving its admission webhook at a URL kubesim calls.
    let webhook_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let webhook_url = format!("https://{webhook_addr}/validate");
    let run_child = Command::new(BIN)
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .args(["--webhook-addr", &webhook_addr, "--webhook-url", &webhook_url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut run = Proc {
        name: "kubedirector run",
        child: Some(run_child),
    };

    eventually(
        &kubeconfig,
        &["get", "mutatingwebhookconfigurations", "-o", "name"],
        "the webhook is registered",
        |out| out.contains("kubedirector-webhook"),
    );

    // 4. A cluster of an app without a setup package; wait for `configured`.
    let cluster = repo().join("deploy/examples/clusters/shell.yaml");
    kubectl_ok(&kubeconfig, &["apply", "-f", cluster.to_str().unwrap()]);
    kubectl_ok(
        &kubeconfig,
        &[
            "wait",
            "--for=jsonpath={.status.state}=configured",
            "kdcluster/shell-demo",
            "--timeout=60s",
        ],
    );

    // Upstream's printer columns, as kubectl renders them.
    let table = kubectl_ok(&kubeconfig, &["get", "kdcluster", "shell-demo"]);
    let mut rows = table.lines();
    let header: Vec<&str> = rows
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        ["NAME", "KDAPP", "STATE", "ANY DOWN", "ANY CONFIGERROR"],
        "table:\n{table}"
    );
    let row: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        ["shell-demo", "kd-shell", "configured", "false", "false"],
        "table:\n{table}"
    );

    // What the cluster owns: one StatefulSet, its pods, headless + member services.
    let selector = "kubedirector.hpe.com/kdcluster=shell-demo";
    let owned = kubectl_ok(
        &kubeconfig,
        &["get", "statefulsets,pods,services", "-l", selector, "-o", "name"],
    );
    let sts = owned
        .lines()
        .filter(|l| l.starts_with("statefulset.apps/kdss-"))
        .count();
    let pods = owned.lines().filter(|l| l.starts_with("pod/kdss-")).count();
    let headless = owned.lines().filter(|l| l.starts_with("service/kdhs-")).count();
    let members = owned.lines().filter(|l| l.starts_with("service/s-kdss-")).count();
    assert_eq!(
        (sts, pods, headless, members),
        (1, 2, 1, 2),
        "owned objects:\n{owned}"
    );
    let state = kubectl_ok(
        &kubeconfig,
        &[
            "get",
            "kdcluster",
            "shell-demo",
            "-o",
            "jsonpath={.status.roles[0].members[*].state}",
        ],
    );
    assert_eq!(state, "configured configured");

    // 5. Delete the cluster: the finalizer is released and everything it owned is collected.
    kubectl_ok(
        &kubeconfig,
        &[
            "delete",
            "kdcluster",
            "shell-demo",
            "--wait=true",
            "--timeout=60s",
        ],
    );
    eventually(
        &kubeconfig,
        &[
            "get",
            "statefulsets,pods,services,persistentvolumeclaims",
            "-l",
            selector,
            "-o",
            "name",
        ],
        "owned objects to disappear",
        |out| out.trim().is_empty(),
    );

    // 6. Both processes stop cleanly on SIGTERM.
    assert!(
        run.terminate().success(),
        "kubedirector run did not exit cleanly on SIGTERM"
    );
    assert!(
        sim.terminate().success(),
        "kubedirector sim did not exit cleanly on SIGTERM"
    );
}
