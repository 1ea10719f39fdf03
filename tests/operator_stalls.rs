//! Issue 12, no silent stalls: every wait of `kubedirector run` that can last says why in its
//! log, again at least every `--wait-log-interval` (default 30 s; 1 s here), and in `/readyz`;
//! what cannot be waited out ends the process with one clear line (exit non-zero, for the
//! kubelet to restart it with backoff); SIGTERM ends it within 10 s in every one of these states.
//!
//! | state | behaviour |
//! |---|---|
//! | API server silent during the start checks | exit 1: "did not answer within" |
//! | API server gone (connection refused) at start | exit 1: "cannot reach the Kubernetes API server" |
//! | CRDs missing | exit 1 naming the CRD and the install command (tests/operator_preflight.rs) |
//! | KubeDirector namespace missing (Lease cannot be created) | waits, logs, `/readyz` 503 with the reason |
//! | Lease held by another replica | waits as a standby, logs, `/readyz` 200 naming the holder |
//! | API server gone while leading | stops writing and exits within the renew deadline |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::Lease,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use operator_support::{free_addr, http_request, operator_binary, signal, Env, KD_NS};

/// SIGTERM must end the process within this (its shutdown budget is 8 s).
const TERM_LIMIT: Duration = Duration::from_secs(10);

fn run(kubeconfig: &std::path::Path, metrics: std::net::SocketAddr, log: &std::path::Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(operator_binary())
        .arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--webhook",
            "false",
            "--log-format",
            "text",
            "--wait-log-interval",
            "1s",
        ])
        .args([
            "--metrics-addr",
            &metrics.to_string(),
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, limit: Duration) -> (Duration, std::process::ExitStatus) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (start.elapsed(), status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running {limit:?} later");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(child: &mut Child) -> Duration {
    assert!(signal(child.id(), "TERM"));
    let (took, _) = wait_exit(child, TERM_LIMIT * 3);
    assert!(took < TERM_LIMIT, "SIGTERM took {took:?}");
    took
}

/// Waits until `needle` occurs `n` times in the log file.
fn wait_log(log: &std::path::Path, needle: &str, n: usize, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return text;
        }
        assert!(
            start.elapsed() < limit,
            "{needle:?} not logged {n} times within {limit:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kubeconfig_for(dir: &tempfile::TempDir, server: &str) -> std::path::PathBuf {
    let path = dir.path().join("silent.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_silent_api_server_ends_the_start_with_a_clear_line() {
    // Accepts TCP connections (kernel backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig_for(&dir, &format!("http://{}", silent.local_addr().unwrap()));
    let log = dir.path().join("op.log");
    let mut child = run(&kc, free_addr(), &log);
    let (took, status) = wait_exit(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    println!("exit {status} {took:?} after start with a silent API server");
    assert!(!status.success());
    assert!(text.contains("did not answer within 1s"), "{text}");
}

#[test]
fn a_stopped_api_server_is_one_clear_line_at_start_and_a_stop_while_leading() {
    let lease_args = [
        "--leader-elect-lease-duration",
        "3s",
        "--leader-elect-renew-deadline",
        "2s",
        "--leader-elect-retry-period",
        "250ms",
    ];
    let mut env = Env::start_process(&lease_args);
    let start = Instant::now();
    while !env.lease_holder().is_some_and(|h| h.starts_with("op_")) {
        assert!(start.elapsed() < Duration::from_secs(60), "never led");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = env.sim.as_ref().unwrap().url();
    let sim = env.sim.take().unwrap();
    env.rt.block_on(sim.shutdown());
    let stopped = Instant::now();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = env.operator_exited() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the leader kept running without its API server"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = stopped.elapsed();
    let text = std::fs::read_to_string(&env.operator_log).unwrap();
    println!("leader exited ({status}) {took:?} after its API server stopped (renew deadline 2 s)");
    assert!(!status.success());
    assert!(text.contains("leadership can no longer be proven"), "{text}");
    assert!(took < Duration::from_secs(6), "took {took:?}");

    // Restarted against the stopped server: one clear line, exit non-zero.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("op.log");
    let mut child = run(&kubeconfig_for(&dir, &url), free_addr(), &log);
    let (took, status) = wait_exit(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    println!("restart against a stopped API server: exit {status} after {took:?}");
    assert!(!status.success());
    assert!(
        text.contains("cannot reach the Kubernetes API server at"),
        "{text}"
    );
}

/// kubesim with the CRDs and, if `namespace`, the KubeDirector namespace.
fn sim_with_crds(
    rt: &tokio::runtime::Runtime,
    kubeconfig: &std::path::Path,
    namespace: bool,
) -> (kubesim::Sim, Client) {
    rt.block_on(async {
        let sim = kubesim::Sim::start(kubesim::SimConfig::default()).await.unwrap();
        sim.write_kubeconfig(kubeconfig).unwrap();
        let kc = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
        let client = Client::try_from(
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .unwrap(),
        )
        .unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in kubedirector_crds::crds().unwrap() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        if namespace {
            let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": KD_NS}})).unwrap();
            Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await
                .unwrap();
        }
        (sim, client)
    })
}

#[test]
fn without_its_namespace_the_reason_repeats_in_the_log_and_readyz_and_sigterm_ends_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let (sim, _client) = sim_with_crds(&rt, &kc, false);
    let metrics = free_addr();
    let log = dir.path().join("op.log");
    let mut child = run(&kc, metrics, &log);
    let text = wait_log(
        &log,
        "cannot take the leader lease yet",
        3,
        Duration::from_secs(30),
    );
    assert!(
        text.contains("namespaces \\\"kubedirector\\\" not found") || text.contains("not found"),
        "{text}"
    );
    let (code, body) = http_request(metrics, "GET", "/readyz", "");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("cannot take the leader lease kubedirector-lock") && body.contains("not found"),
        "{body}"
    );
    let took = terminate(&mut child);
    println!("SIGTERM while waiting for the namespace: exit after {took:?}");
    rt.block_on(sim.shutdown());
}

#[test]
fn a_standby_repeats_who_leads_in_the_log_and_readyz_and_sigterm_ends_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let (sim, client) = sim_with_crds(&rt, &kc, true);
    // Another replica holds the lease for an hour.
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kubedirector-lock"},
        "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600,
                 "renewTime": MicroTime(Timestamp::now())}
    }))
    .unwrap();
    rt.block_on(Api::<Lease>::namespaced(client, KD_NS).create(&PostParams::default(), &lease))
        .unwrap();
    let metrics = free_addr();
    let log = dir.path().join("op.log");
    let mut child = run(&kc, metrics, &log);
    wait_log(
        &log,
        "waiting for the leader lease held by another replica",
        3,
        Duration::from_secs(30),
    );
    let (code, body) = http_request(metrics, "GET", "/readyz", "");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("standby: the leader lease is held by elsewhere"),
        "{body}"
    );
    let took = terminate(&mut child);
    println!("SIGTERM of a standby: exit after {took:?}");
    rt.block_on(sim.shutdown());
}
