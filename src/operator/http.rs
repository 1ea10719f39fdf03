//! The HTTP servers (axum).
//!
//! - The metrics and health server (`--metrics-addr`, reachable by Prometheus and the kubelet):
//!   `/metrics` (Prometheus text, rendered by the MetricsActor), `/healthz` (process alive),
//!   `/readyz` (watches synced and the WatcherActor answering within a second; while waiting
//!   for the leader lease it says why: 200 `ok (standby: ...)` when another replica leads, 503
//!   with the reason when the lease cannot be read or written).
//! - The admin server (`--admin-addr`, loopback only, so only someone inside the pod can use it):
//!   `PUT /log-level` (body: EnvFilter directives).

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, put},
    Router,
};
use kubedirector_actors::handle::ActorSystem;

use super::watch::SyncState;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The actor system (metrics rendering, liveness of the front door).
    pub actors: ActorSystem,
    /// Watch sync progress.
    pub sync: SyncState,
    /// Why this replica is not leading yet, if it is waiting for the lease.
    pub waiting: super::leader::WaitReason,
}

/// The router of the metrics and health server.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The router of the loopback-only admin server.
pub fn admin_router(log_level: crate::telemetry::LogLevel) -> Router {
    Router::new()
        .route("/log-level", put(set_log_level))
        .with_state(log_level)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    match s.actors.render_metrics().await {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if let Some(w) = s.waiting.get() {
        return match w {
            super::leader::Waiting::Standby(holder) => (
                StatusCode::OK,
                format!("ok (standby: the leader lease is held by {holder})"),
            ),
            super::leader::Waiting::Blocked(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
        };
    }
    if !s.sync.all_synced() {
        return (StatusCode::SERVICE_UNAVAILABLE, "watches not synced".to_string());
    }
    if s.actors.responsive(Duration::from_secs(1)).await {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watcher not answering".to_string(),
        )
    }
}

async fn set_log_level(
    State(log_level): State<crate::telemetry::LogLevel>,
    body: String,
) -> impl IntoResponse {
    match log_level.set(body.trim()) {
        Ok(()) => {
            tracing::info!(filter = %body.trim(), "log level changed");
            (StatusCode::OK, "ok\n".to_string())
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// Binds `addr` (errors are reported before the operator starts) and returns the server future.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
