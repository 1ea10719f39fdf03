//! Shared helpers for kubesim's conformance tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use kube::Client;
use kubesim::{Sim, SimConfig};
use std::time::Duration;

/// Start a simulator and a kube-rs client for it.
pub async fn start() -> (Sim, Client) {
    start_with(SimConfig::default()).await
}

/// Start with a config.
pub async fn start_with(cfg: SimConfig) -> (Sim, Client) {
    let sim = Sim::start(cfg).await.expect("start sim");
    let client = client_for(&sim);
    (sim, client)
}

/// A kube-rs client for a sim (through its kubeconfig, like a user would).
pub fn client_for(sim: &Sim) -> Client {
    let config = kube::Config::new(sim.url().parse().expect("url"));
    Client::try_from(config).expect("client")
}

/// The API Status of a kube error.
pub fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Poll `f` until it returns Some, or panic after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one way a test of this crate says it could not run: prints a `SKIPPED: <reason>` line (cargo's harness
/// shows it only for failing tests or under `--nocapture`) and, when `KD_SKIP_LOG` names a file, appends
/// `<crate>/<test binary>: <test>: <reason>` to it so tests/ci.sh counts skips in its summary line (and fails
/// the run under `CI=true`).
pub fn skipped(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    eprintln!("SKIPPED: {test}: {reason}");
    if let Some(path) = std::env::var_os("KD_SKIP_LOG") {
        // One short write per line with O_APPEND: concurrent tests do not interleave lines.
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let line = format!("{}/{binary}: {test}: {reason}\n", env!("CARGO_PKG_NAME"));
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("KD_SKIP_LOG {}: {e}", std::path::Path::new(&path).display()));
    }
}
