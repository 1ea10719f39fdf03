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

/// Tells a ClusterActor that the watch saw an owned object deleted: what its read-your-writes
/// overlay remembers of a write to that object is stale (the write landed, then the object went),
/// so the next pass sees it missing at once, not after the overlay's ttl. Not coalesced (rare).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct OwnedDeleted {
    /// The kind.
    pub kind: crate::tracker::OverlayKind,
    /// The object's name.
    pub name: String,
    /// Its uid (a write of a later object of the same name is kept).
    pub uid: Option<String>,
}

/// Asks a ClusterActor to run a reconcile pass soon. Bursts coalesce into one pass.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Trigger {
    /// Why.
    pub reason: TriggerReason,
    /// When the event was queued for the cluster (`workqueue_queue_duration_seconds` measures
    /// from here to the start of the pass that handles it).
    pub queued_at: std::time::Instant,
}

impl Trigger {
    /// A trigger queued now.
    pub fn new(reason: TriggerReason) -> Self {
        Self {
            reason,
            queued_at: std::time::Instant::now(),
        }
    }
}

/// Stops an actor (and its children) gracefully.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Liveness check; answered by a running actor.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Ping;
