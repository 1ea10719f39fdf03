//! Messages shared by several actors.

use actix::prelude::*;

/// Why a ClusterActor is asked to run a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerReason {
    /// The KubeDirectorCluster itself changed.
    ClusterChanged,
    /// An owned StatefulSet, Service, Pod or PVC changed.
    OwnedObjectChanged,
    /// The kdapp changed (or appeared, or disappeared).
    AppChanged,
    /// The global kdconfig changed.
    ConfigChanged,
    /// A retry after a failure (backoff timer).
    Retry,
    /// The periodic safety resync.
    Resync,
    /// The watch was re-listed.
    Relist,
}

impl TriggerReason {
    /// Bounded label.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::ClusterChanged => "cluster",
            TriggerReason::OwnedObjectChanged => "owned",
            TriggerReason::AppChanged => "app",
            TriggerReason::ConfigChanged => "config",
            TriggerReason::Retry => "retry",
            TriggerReason::Resync => "resync",
            TriggerReason::Relist => "relist",
        }
    }
}

/// Asks a ClusterActor to run a reconcile pass soon. Bursts coalesce into one pass.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Trigger {
    /// Why.
    pub reason: TriggerReason,
}

/// Stops an actor (and its children) gracefully.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Liveness check; answered by a running actor.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Ping;
