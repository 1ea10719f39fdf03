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
