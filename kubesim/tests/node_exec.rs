//! `pods/exec` over WebSocket, driven by the real clients (kube-rs and kubectl) against the exec
//! routes with a real sandboxed container. Skipped (with a printed notice) without bubblewrap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use kubesim::{
    exec::{ExecContext, ExecFault, PodSource},
    sandbox::{sandbox_available, ContainerSpec, Runtime},
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct StaticPods {
    pod: Value,
}

impl PodSource for StaticPods {
    fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        (namespace == "default" && self.pod["metadata"]["name"] == name).then(|| self.pod.clone())
    }

    fn exec_fault(&self, _ns: &str, _pod: &str, command: &[String]) -> ExecFault {
        if command.join(" ").contains("forced-failure") {
            ExecFault::ExitCode(42)
        } else if command.join(" ").contains("hang-forever") {
            ExecFault::Hang
        } else {
            ExecFault::None
        }
    }
}

struct Harness {
    _state: tempfile::TempDir,
    runtime: Runtime,
    url: String,
    pod: Value,
}

async fn harness() -> Option<Harness> {
    if !sandbox_available() {
        common::skipped(&kubesim::sandbox::sandbox_unavailable_reason().unwrap_or_default());
        return None;
    }
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path()).unwrap();
    let id = runtime
        .start_container(ContainerSpec {
            namespace: "default".into(),
            pod_uid: "uid-1".into(),
            pod_name: "web-0".into(),
            hostname: "web-0".into(),
            container_name: "app".into(),
            image: "img".into(),
            env: vec![],
            mounts: vec![],
            working_dir: None,
            dns: None,
        })
        .await
        .unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default", "uid": "uid-1"},
        "spec": {"nodeName": "sim-node-0", "containers": [{"name": "app", "image": "img"}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "app", "containerID": id.as_str(), "ready": true, "restartCount": 0,
            "image": "img", "imageID": "", "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}
        }]}
    });
    let ctx = ExecContext {
        pods: Arc::new(StaticPods { pod: pod.clone() }),
        runtime: runtime.clone(),
    };
    let served = pod.clone();
    let discovery = axum::Router::new()
        .route(
            "/api",
            axum::routing::get(|| async {
                axum::Json(json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}))
            }),
        )
        .route(
            "/apis",
            axum::routing::get(|| async { axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }),
        )
        .route(
            "/api/v1",
            axum::routing::get(|| async {
                axum::Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                     "verbs": ["get", "list"], "shortNames": ["po"]},
                    {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions",
                     "verbs": ["create", "get"]}
                ]}))
            }),
        );
    let app = kubesim::exec::routes(ctx).merge(discovery).route(
        "/api/v1/namespaces/default/pods/web-0",
        axum::routing::get(move || {
            let p = served.clone();
            async move { axum::Json(p) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Some(Harness {
        _state: state,
        runtime,
        url: format!("http://{addr}"),
        pod,
    })
}

fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

async fn read_all(r: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s).await.unwrap();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_exec_streams_stdin_stdout_stderr_and_reports_exit_codes() {
    let Some(h) = harness().await else { return };
    let pods: Api<Pod> = Api::namespaced(client(&h.url), "default");

    let mut p = pods
        .exec(
            "web-0",
            vec!["sh", "-c", "cat; echo to-stderr >&2; exit 3"],
            &AttachParams::default().stdin(true).stdout(true).stderr(true),
        )
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"line from stdin\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let (out, err) = tokio::join!(read_all(p.stdout()), read_all(p.stderr()));
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "line from stdin\n");
    assert_eq!(err, "to-stderr\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
    assert_eq!(causes[0].message.as_deref(), Some("3"));
    p.join().await.unwrap();

    // Operator-style file write and read back in a second exec.
    let mut p = pods
        .exec(
            "web-0",
            vec!["bash"],
            &AttachParams::default().stdin(true).stdout(true).stderr(true),
        )
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"mkdir -p /etc/guestconfig\necho -n '{\"a\":1}' | tee /etc/guestconfig/configmeta.json >/dev/null\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let out = read_all(p.stdout()).await;
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "");
    assert_eq!(status.status.as_deref(), Some("Success"));
    let mut p = pods
        .exec(
            "web-0",
            vec!["cat", "/etc/guestconfig/configmeta.json"],
            &AttachParams::default(),
        )
        .await
        .unwrap();
    let out = read_all(p.stdout()).await;
    assert_eq!(out, "{\"a\":1}");
    assert_eq!(
        p.take_status().unwrap().await.unwrap().status.as_deref(),
        Some("Success")
    );

    let mut p = pods
        .exec(
            "web-0",
            vec!["test", "-f", "/etc/absent"],
            &AttachParams::default(),
        )
        .await
        .unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(
        status.details.unwrap().causes.unwrap()[0].message.as_deref(),
        Some("1")
    );

    // Faults: the exit code is forced without running the command.
    let mut p = pods
        .exec("web-0", vec!["echo", "forced-failure"], &AttachParams::default())
        .await
        .unwrap();
    let out = read_all(p.stdout()).await;
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "");
    assert_eq!(
        status.details.unwrap().causes.unwrap()[0].message.as_deref(),
        Some("42")
    );

    // Unknown executables are an InternalError like containerd reports.
    let mut p = pods
        .exec("web-0", vec!["no-such-tool"], &AttachParams::default())
        .await
        .unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(status.reason.as_deref(), Some("InternalError"));
    assert!(status
        .message
        .unwrap()
        .contains("executable file not found in $PATH"));
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_exec_never_answers_while_others_run_and_ends_when_the_client_leaves() {
    use futures::FutureExt;
    let Some(h) = harness().await else { return };
    let pods: Api<Pod> = Api::namespaced(client(&h.url), "default");
    // Upgraded and announced like any exec, then silent.
    let mut hung = pods
        .exec(
            "web-0",
            vec!["echo", "hang-forever"],
            &AttachParams::default().stdin(true).stdout(true).stderr(true),
        )
        .await
        .unwrap();
    let mut hung_status = hung.take_status().unwrap();
    // The barrier: a later exec runs to completion meanwhile.
    let mut p = pods
        .exec("web-0", vec!["echo", "ok"], &AttachParams::default())
        .await
        .unwrap();
    assert_eq!(read_all(p.stdout()).await, "ok\n");
    p.join().await.unwrap();
    assert!(
        (&mut hung_status).now_or_never().is_none(),
        "the hanging exec answered"
    );
    // Whatever the client sends is swallowed; closing the session ends it on both sides.
    hung.stdin().unwrap().write_all(b"ignored\n").await.unwrap();
    hung.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), hung.join())
        .await
        .expect("the session ends once the client aborts it");
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_errors_before_upgrade_are_api_statuses() {
    let Some(h) = harness().await else { return };
    let pods: Api<Pod> = Api::namespaced(client(&h.url), "default");
    match pods.exec("missing", vec!["true"], &AttachParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.message, "pods \"missing\" not found");
        }
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("exec into a missing pod succeeded"),
    }
    match pods
        .exec("web-0", vec!["true"], &AttachParams::default().container("nope"))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert_eq!(s.message, "container nope is not valid for pod web-0");
        }
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("exec into a missing container succeeded"),
    }
    let _ = h.pod;
    h.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_works_unchanged() {
    let Some(h) = harness().await else { return };
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    if std::process::Command::new(&kubectl)
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        common::skipped("kubectl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n\
             contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: default\n\
             current-context: sim\nusers:\n- name: sim\n  user: {{}}\n",
            h.url
        ),
    )
    .unwrap();
    let run = |args: Vec<&str>, stdin: &'static [u8]| {
        let kubectl = kubectl.clone();
        let kubeconfig = kubeconfig.clone();
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            child.wait_with_output().unwrap()
        })
    };
    let out = run(
        vec![
            "exec",
            "web-0",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 4",
        ],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(
        vec!["exec", "-i", "web-0", "--", "bash", "-c", "tr a-z A-Z"],
        b"piped input\n",
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PIPED INPUT\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    h.runtime.shutdown().await;
}
