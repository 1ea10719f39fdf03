//! The server's shared state and the hook through which the node simulation serves pod
//! subresources.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;

use super::render_cache::RenderCache;
use crate::admission::Admission;
use crate::store::Store;

/// A request for a pod subresource served by the node simulation (`exec`, `log`, `attach`,
/// `portforward`).
pub struct PodRequest {
    /// The store.
    pub store: Store,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// `exec`, `log`, `attach` or `portforward`.
    pub subresource: String,
    /// Decoded query parameters, in order (repeated `command=` entries for exec).
    pub query: Vec<(String, String)>,
    /// The raw request (for WebSocket upgrades: `WebSocketUpgrade::from_request(req, &())`).
    pub request: Request,
}

/// Implemented by the node simulation to serve `pods/exec`, `pods/log`, `pods/attach`,
/// `pods/portforward`. The API server checks that the pod exists before calling it.
pub trait PodSubresourceHandler: Send + Sync + 'static {
    /// Handle one request and produce the full HTTP response (or WebSocket upgrade).
    fn handle(&self, req: PodRequest) -> BoxFuture<'static, Response>;
}

/// Shared server state.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Pod subresource handler (exec/log), if the node simulation is running.
    pub pods: Option<Arc<dyn PodSubresourceHandler>>,
    /// Admission webhooks dispatcher.
    pub admission: Arc<Admission>,
    /// Bookmark interval for watches.
    pub bookmark_interval: Duration,
    /// The server's own address (for discovery's serverAddressByClientCIDRs).
    pub address: String,
    /// Extra control hooks (restart).
    pub control: Arc<crate::control::ControlHooks>,
    /// Serialized-object cache shared by watch streams.
    pub render_cache: Arc<RenderCache>,
    /// Fires when the simulator shuts down (ends watch streams).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Authentication and authorization (the request-path hook).
    pub auth: Arc<crate::auth::Auth>,
}
