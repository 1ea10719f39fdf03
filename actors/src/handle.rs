//! The one handle through which the root crate talks to the actor system: start it, route a
//! watch event, read state (caches, metrics, liveness), shut it down. The root crate never holds
//! the `Addr` of a concrete actor, and does not depend on actix.

use std::{future::Future, time::Duration};

use prometheus::Registry;

use crate::{
    caches::Caches,
    cluster::ClusterSettings,
    messages::{Ping, Shutdown},
    metrics::{MetricEvent, MetricsError, Render},
    ports::Ports,
    status_writer::IsIdle,
    system::{self, Topology},
    watcher::{WatchEvent, Watched},
};

/// The actor system is gone (stopped or crashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the actor system is not running")]
pub struct Gone;

/// Sends metric events to the MetricsActor from outside the actor system (any thread); a
/// closure in tests.
#[derive(Clone)]
pub struct MetricsHandle(std::sync::Arc<dyn Fn(MetricEvent) + Send + Sync>);

impl MetricsHandle {
    /// A handle calling `f` for every event.
    pub fn from_fn(f: impl Fn(MetricEvent) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// Sends `ev` (dropped when the actor system is gone).
    pub fn send(&self, ev: MetricEvent) {
        (self.0)(ev);
    }
}

/// A cheap-to-clone handle on a running topology.
#[derive(Clone)]
pub struct ActorSystem {
    topology: Topology,
}

impl std::fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSystem").finish_non_exhaustive()
    }
}

/// Runs `fut` to completion on an actix System driven by `rt` (the operator's entry point; the
/// actors need a System, ACTIX.md 6.1).
pub fn run_on_system<F>(rt: tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future,
{
    actix::System::with_tokio_rt(move || rt).block_on(fut)
}

impl ActorSystem {
    /// Starts the topology on the current actix System (inside [`run_on_system`]).
    pub fn start(ports: Ports, settings: ClusterSettings, registry: Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            topology: system::start(ports, settings, registry)?,
        })
    }

    /// Routes one watch event of the stream watching `scope` (waits for the front door's mailbox:
    /// backpressure).
    pub async fn route(&self, scope: Option<String>, event: WatchEvent) -> Result<(), Gone> {
        self.topology
            .watcher
            .send(Watched { scope, event })
            .await
            .map_err(|_| Gone)
    }

    /// Read handles on the reflector caches (and the shared status tokens).
    pub fn caches(&self) -> Caches {
        self.topology.caches.clone()
    }

    /// The Prometheus text exposition.
    pub async fn render_metrics(&self) -> Result<Result<String, MetricsError>, Gone> {
        self.topology.metrics.send(Render).await.map_err(|_| Gone)
    }

    /// A handle sending metric events to the MetricsActor.
    pub fn metrics(&self) -> MetricsHandle {
        let recipient = self.topology.metrics.clone().recipient::<MetricEvent>();
        MetricsHandle::from_fn(move |ev| recipient.do_send(ev))
    }

    /// Whether the front door answers within `timeout`.
    pub async fn responsive(&self, timeout: Duration) -> bool {
        self.topology.watcher.send(Ping).timeout(timeout).await.is_ok()
    }

    /// Stops the actors (cluster actors finish with the watcher) and waits (bounded, 5 s) for
    /// the status writer to drain.
    pub async fn shutdown(&self) {
        let _ = self.topology.watcher.send(Shutdown).await;
        for _ in 0..100 {
            match self.topology.status_writer.send(IsIdle).await {
                Ok(false) => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => break,
            }
        }
    }

    /// Stops the actix System this runs on (the last step of a shutdown).
    pub fn stop_system(&self) {
        actix::System::current().stop();
    }
}
