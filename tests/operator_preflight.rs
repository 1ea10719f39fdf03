//! `kubedirector run` preflight: clear one-line errors instead of panics when the API server is
//! unreachable or the CRDs are missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

use std::{net::SocketAddr, path::PathBuf};

use axum::{http::StatusCode, routing::get, Json, Router};
use kubedirector::operator::{run_until, RunOptions};

fn kubeconfig(dir: &tempfile::TempDir, server: &str) -> PathBuf {
    let path = dir.path().join("kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// An API server that answers `/version` and 404s everything else (no CRDs installed).
fn start_bare_api_server() -> (SocketAddr, std::sync::mpsc::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route(
                    "/version",
                    get(|| async {
                        Json(serde_json::json!({
                            "major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "",
                            "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "",
                            "platform": "linux/amd64"
                        }))
                    }),
                )
                .fallback(|| async {
                    (
                        StatusCode::NOT_FOUND,
                        Json(serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": "the server could not find the requested resource",
                            "reason": "NotFound", "code": 404
                        })),
                    )
                });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let server = axum::serve(listener, app);
            tokio::select! {
                _ = server => {}
                _ = tokio::task::spawn_blocking(move || { let _ = stop_rx.recv(); }) => {}
            }
        });
    });
    (addr_rx.recv().unwrap(), stop_tx)
}

#[test]
fn an_unreachable_api_server_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let opts = RunOptions::for_kubeconfig(kubeconfig(&dir, "http://127.0.0.1:1"));
    let err = run_until(opts, std::future::pending()).unwrap_err().to_string();
    assert!(
        err.starts_with("kubedirector: cannot reach the Kubernetes API server at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn missing_crds_are_reported_with_the_install_command() {
    let (addr, stop) = start_bare_api_server();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions::for_kubeconfig(kubeconfig(&dir, &format!("http://{addr}")));
    let err = run_until(opts, std::future::pending()).unwrap_err().to_string();
    assert_eq!(
        err,
        "kubedirector: CRD kubedirectorclusters.kubedirector.hpe.com not installed; \
         run 'kubedirector crds | kubectl apply -f -'"
    );
    let _ = stop.send(());
}

#[test]
fn a_missing_kubeconfig_file_is_a_clear_error() {
    let opts = RunOptions::for_kubeconfig(PathBuf::from("/nonexistent/kubeconfig"));
    let err = run_until(opts, std::future::pending()).unwrap_err().to_string();
    assert!(
        err.starts_with("kubedirector: cannot read kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
}
