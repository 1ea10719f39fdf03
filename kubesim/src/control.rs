//! The control API under `/kubesim/v1` (documented in kubesim/README.md): fault injection,
//! request accounting, restarts, history compaction, webhook service mapping.

use crate::admission::Admission;
use crate::faults::{ErrorRule, FaultConfig, LatencyRule, PodFaults, ThrottleRule};
use crate::respond::json_response;
use crate::store::Store;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Settings the control API needs to re-create the bootstrap objects.
#[derive(Debug, Clone, Default)]
pub struct ControlHooks {
    /// Number of simulated nodes.
    pub nodes: usize,
}

/// What the control API acts on.
#[derive(Clone)]
pub struct ControlState {
    /// The store (faults, metrics, compaction, restart).
    pub store: Store,
    /// The admission dispatcher (webhook service mapping).
    pub admission: std::sync::Arc<Admission>,
    /// Settings for restarts.
    pub hooks: ControlHooks,
}

/// The control router (mounted at `/kubesim/v1`), with its state bound.
pub fn router<S: Clone + Send + Sync + 'static>(state: ControlState) -> Router<S> {
    Router::new()
        .route("/faults", get(get_faults).put(put_faults).delete(clear_faults))
        .route("/faults/errors", post(add_error))
        .route("/faults/latency", post(add_latency))
        .route("/faults/conflicts", put(set_conflicts))
        .route("/faults/pods", put(set_pod_faults))
        .route("/faults/watch-drop", post(drop_watches))
        .route("/faults/watch-gone", post(watch_gone))
        .route("/faults/errors-after-commit", post(add_error_after_commit))
        .route("/faults/throttle", post(add_throttle))
        .route("/faults/watch-expire", post(expire_watches))
        .route(
            "/faults/watch-stall",
            post(stall_watches).delete(clear_watch_stall),
        )
        .route("/faults/expire-continue", post(expire_continue))
        .route("/faults/stale-lists", put(stale_lists))
        .route("/metrics", get(get_metrics).delete(reset_metrics))
        .route("/restart", post(restart))
        .route("/compact", post(compact))
        .route("/webhook-services", put(map_service))
        .route("/access-reviews", put(access_reviews))
        .with_state(state)
}

fn ok() -> Response {
    json_response(200, &json!({"status": "ok"}))
}

async fn get_faults(State(app): State<ControlState>) -> Response {
    json_response(
        200,
        &serde_json::to_value(app.store.faults().config()).unwrap_or_default(),
    )
}

async fn put_faults(State(app): State<ControlState>, Json(c): Json<FaultConfig>) -> Response {
    app.store.faults().set_config(c);
    ok()
}

async fn clear_faults(State(app): State<ControlState>) -> Response {
    app.store.faults().clear();
    ok()
}

async fn add_error(State(app): State<ControlState>, Json(r): Json<ErrorRule>) -> Response {
    app.store.faults().add_error(r);
    ok()
}

async fn add_latency(State(app): State<ControlState>, Json(r): Json<LatencyRule>) -> Response {
    app.store.faults().add_latency(r);
    ok()
}

#[derive(Deserialize)]
struct Rate {
    rate: f64,
}

async fn set_conflicts(State(app): State<ControlState>, Json(r): Json<Rate>) -> Response {
    app.store.faults().set_conflict_rate(r.rate);
    ok()
}

async fn set_pod_faults(State(app): State<ControlState>, Json(p): Json<PodFaults>) -> Response {
    app.store.faults().set_pod_faults(p);
    ok()
}

async fn drop_watches(State(app): State<ControlState>) -> Response {
    app.store.faults().drop_watches();
    ok()
}

async fn watch_gone(State(app): State<ControlState>) -> Response {
    app.store.faults().force_gone_next_watch();
    ok()
}

async fn add_error_after_commit(State(app): State<ControlState>, Json(r): Json<ErrorRule>) -> Response {
    app.store.faults().add_error_after_commit(r);
    ok()
}

async fn add_throttle(State(app): State<ControlState>, Json(r): Json<ThrottleRule>) -> Response {
    app.store.faults().add_throttle(r);
    ok()
}

async fn expire_watches(State(app): State<ControlState>) -> Response {
    app.store.expire_watches();
    ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StallBody {
    #[serde(default)]
    seconds: Option<f64>,
}

async fn stall_watches(State(app): State<ControlState>, body: Option<Json<StallBody>>) -> Response {
    let d = body
        .and_then(|Json(b)| b.seconds)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(std::time::Duration::from_secs_f64);
    app.store.faults().stall_watches(d);
    ok()
}

async fn clear_watch_stall(State(app): State<ControlState>) -> Response {
    app.store.faults().clear_watch_stall();
    ok()
}

#[derive(Deserialize)]
struct Count {
    count: u64,
}

async fn expire_continue(State(app): State<ControlState>, Json(c): Json<Count>) -> Response {
    app.store.faults().expire_continue_tokens(c.count);
    ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StaleBody {
    resource_version: Option<u64>,
}

async fn stale_lists(State(app): State<ControlState>, Json(b): Json<StaleBody>) -> Response {
    app.store.faults().serve_stale_lists(b.resource_version);
    ok()
}

async fn get_metrics(State(app): State<ControlState>) -> Response {
    json_response(
        200,
        &serde_json::to_value(app.store.metrics().snapshot()).unwrap_or_default(),
    )
}

async fn reset_metrics(State(app): State<ControlState>) -> Response {
    app.store.metrics().reset();
    ok()
}

async fn restart(State(app): State<ControlState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let keep = q.get("keepStore").map(|v| v != "false").unwrap_or(true);
    crate::cluster::restart_store(&app.store, keep, app.hooks.nodes);
    ok()
}

async fn compact(State(app): State<ControlState>) -> Response {
    app.store.compact();
    json_response(
        200,
        &json!({"status": "ok", "compactedRevision": app.store.compacted_rv()}),
    )
}

#[derive(Deserialize)]
struct ServiceMapping {
    namespace: String,
    name: String,
    address: String,
}

async fn map_service(State(app): State<ControlState>, Json(m): Json<ServiceMapping>) -> Response {
    app.admission.map_service(&m.namespace, &m.name, &m.address);
    ok()
}

async fn access_reviews(Json(v): Json<Value>) -> Response {
    let allow = v["allow"].as_bool().unwrap_or(true);
    crate::reviews::DENY_ACCESS_REVIEWS.store(!allow, std::sync::atomic::Ordering::SeqCst);
    ok()
}
