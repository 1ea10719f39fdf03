//! `kubedirector run` (the process) ends within 10 s of SIGTERM whatever the API server does:
//! while every request to kubesim hangs (injected latency of an hour), and while the "API
//! server" is a socket that accepts connections and never answers (preflight blocked). Run
//! against a kubesim without its namespace, it says why it waits, in its log and in `/readyz`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_kubedirector");

/// The bound the operator promises (its shutdown budget is 8 s) plus process exit slack.
const LIMIT: Duration = Duration::from_secs(10);

fn spawn_run(kubeconfig: &std::path::Path) -> Child {
    Command::new(BIN)
        .arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--metrics-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(["--log-format", "text"])
        .args(["--webhook-addr", &free_addr()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// SIGTERM, then wait for the exit; returns how long it took and the process's output.
fn terminate(mut child: Child) -> (Duration, String) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let took = start.elapsed();
            // Logs go to stdout, errors to stderr: both are the process's report.
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
            return (took, out);
        }
        if start.elapsed() > LIMIT * 3 {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kubedirector run still running {:?} after SIGTERM",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_ends_the_operator_in_bounded_time_while_every_api_request_hangs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (sim, client) = rt.block_on(async {
        let sim = kubesim::Sim::start(kubesim::SimConfig::default()).await.unwrap();
        sim.write_kubeconfig(&kubeconfig).unwrap();
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
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "kubedirector"}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        (sim, client)
    });
    let child = spawn_run(&kubeconfig);
    // Running as the leader: it holds the lease.
    let leases: Api<Lease> = Api::namespaced(client, "kubedirector");
    let start = Instant::now();
    while rt
        .block_on(leases.get_opt("kubedirector-lock"))
        .unwrap()
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the operator never took the lease"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // From now on the API server answers nothing for an hour.
    sim.faults().add_latency(kubesim::faults::LatencyRule {
        verb: "*".into(),
        resource: "*".into(),
        millis: 3_600_000,
    });
    let (took, stderr) = terminate(child);
    println!("exit {took:?} after SIGTERM with every request hanging");
    assert!(took < LIMIT, "took {took:?}; output:\n{stderr}");
    sim.faults().clear();
    rt.block_on(sim.shutdown());
}

#[test]
fn sigterm_ends_the_operator_while_the_api_server_never_answers() {
    // Accepts TCP connections (kernel backlog) and never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let child = spawn_run(&kubeconfig);
    // Barrier: the operator is in its first request (preflight) once it has connected.
    let (_conn, _) = silent.accept().unwrap();
    let (took, stderr) = terminate(child);
    println!("exit {took:?} after SIGTERM with a silent API server");
    assert!(took < LIMIT, "took {took:?}; output:\n{stderr}");
    assert!(
        stderr.contains("shut down during the preflight checks"),
        "{stderr}"
    );
    drop(silent);
}

#[test]
fn without_its_namespace_the_operator_logs_the_reason_and_readyz_shows_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let sim = rt.block_on(async {
        let sim = kubesim::Sim::start(kubesim::SimConfig::default()).await.unwrap();
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let kc = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
        let client = Client::try_from(
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .unwrap(),
        )
        .unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        for crd in kubedirector_crds::crds().unwrap() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        sim
    });
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--metrics-addr",
            &metrics.to_string(),
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "text", "--webhook", "false"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Barrier: the log line naming the reason.
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(stdout) {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("cannot take the leader lease yet") {
            assert!(
                line.contains("namespaces \"kubedirector\" not found") || line.contains("kubedirector"),
                "{line}"
            );
            break;
        }
    }
    if !seen
        .iter()
        .any(|l| l.contains("cannot take the leader lease yet"))
    {
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        panic!("no reason logged: {seen:#?}\nstderr: {err}");
    }
    let (code, body) = http_get(metrics, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("cannot take the leader lease kubedirector-lock"),
        "{body}"
    );
    assert!(body.contains("not found"), "{body}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    rt.block_on(sim.shutdown());
}

/// With the webhook on (the default) the missing namespace stops the start with one clear line.
#[test]
fn without_its_namespace_and_with_the_webhook_the_operator_exits_naming_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let sim = rt.block_on(async {
        let sim = kubesim::Sim::start(kubesim::SimConfig::default()).await.unwrap();
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let kc = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(Client::try_from(cfg).unwrap());
        for crd in kubedirector_crds::crds().unwrap() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        sim
    });
    let out = spawn_run(&kubeconfig).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespaces \"kubedirector\" not found"), "{err}");
    rt.block_on(sim.shutdown());
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}
