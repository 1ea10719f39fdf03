//! The pure reconcile planner of a KubeDirectorCluster (spec section 3).
//!
//! Shape: a sans-IO function [`reconcile`]`(&Observed, &PlanContext) -> Plan`. It needs no
//! client, no async runtime, no clock and no randomness (the caller injects the time and the
//! next `generationUID`). Everything the planner must remember between passes lives in the
//! kdcluster status it returns ([`Plan::status`]) plus one token the caller keeps per object
//! ([`Observed::expected_generation_uid`], spec 3.2 step 7 / 3.13).
//!
//! The operator is event-driven (spec 7 R1): the ClusterActor calls [`reconcile`] after every
//! relevant watch event (kdcluster, its StatefulSets, Pods, Services, PVCs, the kdapp and the
//! kdconfig), executes [`Plan::commands`] in order, writes [`Plan::status`] when
//! [`Plan::status_changed`], and applies [`Plan::finalizer`] / [`Plan::annotations`] (its pure
//! [`tracker`](crate::tracker) turns the last three into [`Command::PatchClusterMetadata`] and
//! [`Command::WriteStatus`] after the planner's commands). The planner is therefore written to be
//! re-run on every observation:
//! * idempotent: running it again on the same observation yields no new create commands;
//! * converging: every command moves the world towards the state stored in the status;
//! * it never asks to create something already present in [`Observed`]; objects the status says
//!   should exist but that are missing from [`Observed`] are restored (spec 3.6, 3.8, 3.9).
//!
//! Orphans: StatefulSets and Services owned by the kdcluster (owner uid) that the status no
//! longer names are deleted (a create whose status write was lost, then its role or member went
//! away). PVCs are only deleted for departing members (`p-<pod>` and `b<i>-<pod>`, R18).
//!
//! Events are data ([`Command::Event`]) with upstream's reasons and messages (spec 5.1). Some are
//! emitted on every pass while a condition lasts (`waiting for replicas count …`); the caller may
//! rate-limit or aggregate them.
//!
//! Read-your-writes: the caller must feed the results of its own writes back into the next
//! [`Observed`] (e.g. keep created objects in an overlay until the watch cache catches up), or an
//! object created in pass N that is not yet in the cache in pass N+1 is treated as lost.
//!
//! Pass structure (spec 3.2 steps 1-16, without configuration injection, which is the next
//! issue): normalise the status, finalizer handling and deletion, the known-object token check,
//! container-state observation (3.5), the headless service (3.8), role sync (3.6), generation
//! bookkeeping (step 11), per-member services (3.9), the stable check (step 13) and member sync
//! (3.11), then the epilogue: rollup, compaction (3.13) and change detection.
//!
//! Modules: [`names`] (spec 5.3), [`objects`] (pure object builders, spec 3.7-3.9), `pass` (the
//! state machine behind [`reconcile`], one file per spec section: `pass/mod.rs` the driver,
//! `observe` 3.5, `roles` 3.6, `services` 3.8-3.9, `members` 3.4/3.11, `orphans` the orphan
//! sweep and adoption), `testing` (test builders and the multi-pass `Sim`), `robustness`
//! (randomized tests).

pub mod config;
pub mod names;
pub mod objects;
mod pass;
#[cfg(test)]
mod robustness;
pub mod storage_progress;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubedirector_crds::app::KubeDirectorApp;
use kubedirector_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kubedirector_crds::config::KubeDirectorConfig;

pub use pass::{reconcile, resume_event};

/// Start of the Warning event about a same-named object this kdcluster does not control (it is
/// never written to, adopted or deleted).
pub const NOT_OURS: &str = "left untouched, not owned by this kdcluster";

/// Everything the planner looks at in one pass, as read from the caches.
///
/// Maps are keyed by object name and hold the objects of the kdcluster's namespace that carry
/// the operator's labels (or are named by the status); extra unrelated objects are harmless.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The kdcluster (metadata, spec and status) as currently stored.
    pub cluster: KubeDirectorCluster,
    /// The resolved kdapp (spec 3.14), or `None` when it does not resolve.
    pub app: Option<KubeDirectorApp>,
    /// The global kdconfig `kd-global-config`, or `None` (defaults apply, spec 1.5).
    pub config: Option<KubeDirectorConfig>,
    /// StatefulSets by name.
    pub statefulsets: BTreeMap<String, StatefulSet>,
    /// Pods by name.
    pub pods: BTreeMap<String, Pod>,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// PersistentVolumeClaims by name.
    pub pvcs: BTreeMap<String, PersistentVolumeClaim>,
    /// The `generationUID` the caller last wrote for this kdcluster (uid), or `None` when it has
    /// not written one since it started (spec 3.2 step 7). Update it from [`Plan::token`]
    /// after each pass.
    pub expected_generation_uid: Option<String>,
    /// The caller's configuration jobs by pod: whether one is running, and the last finished
    /// one not yet consumed by a pass (spec 4). Every result shown to a pass is consumed by it.
    pub guest: BTreeMap<String, config::member::GuestView>,
    /// The objects named by `spec.connections` that exist in the kdcluster's namespace (spec
    /// 4.8); the connected kdclusters' kdapps resolved through the catalog.
    pub connections: config::connections::ConnectedObjects,
    /// The kdcluster's kdstatusbackup, if one exists (spec 3.13).
    pub status_backup: Option<kubedirector_crds::KubeDirectorStatusBackup>,
    /// The caller's latest probe of each initialising member's `init` container, by pod (spec
    /// 3.10, [`storage_progress`]); shown as `storageInitProgress` while the member's container
    /// state is `initializing`.
    pub storage_probes: BTreeMap<String, storage_progress::StorageProbe>,
}

/// Injected, non-deterministic inputs of a pass.
#[derive(Clone, Debug)]
pub struct PlanContext {
    /// Wall-clock time of the pass (only used for data that carries a time).
    pub now: Time,
    /// Namespace the operator runs in (`MY_NAMESPACE`): the `system` app catalog.
    pub kd_namespace: String,
    /// A fresh UUIDv4 to use as `status.generationUID` if this pass writes the status
    /// (spec 3.13). Unused otherwise.
    pub new_generation_uid: String,
    /// Whether the operator has a configcli tarball to install in members (spec 4.4 step 8).
    pub configcli: bool,
    /// A fresh random string (a UUIDv4) that new member auth tokens are drawn from (spec 4.2).
    pub auth_token_seed: String,
}

/// Kubernetes Event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `Normal`: informational.
    Normal,
    /// `Warning`: an error.
    Warning,
}

impl EventType {
    /// The wire string (`Normal` / `Warning`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Event reasons used by the kdcluster planner (spec 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// `Cluster`
    Cluster,
    /// `Role`
    Role,
    /// `Member`
    Member,
}

impl EventReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::Cluster => "Cluster",
            EventReason::Role => "Role",
            EventReason::Member => "Member",
        }
    }
}

/// A Kubernetes Event to record on the kdcluster (spec 5.1), as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEvent {
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// Upstream's reason.
    pub reason: EventReason,
    /// Upstream's message, verbatim.
    pub message: String,
}

impl PlanEvent {
    /// A `Normal` event.
    pub fn normal(reason: EventReason, message: impl Into<String>) -> Self {
        PlanEvent {
            type_: EventType::Normal,
            reason,
            message: message.into(),
        }
    }

    /// A `Warning` event.
    pub fn warning(reason: EventReason, message: impl Into<String>) -> Self {
        PlanEvent {
            type_: EventType::Warning,
            reason,
            message: message.into(),
        }
    }
}

/// One side effect, to be executed in order by the caller.
///
/// "Ensure" commands carry the complete desired object: the caller creates it when absent
/// (treating `AlreadyExists` as success and adopting the object, which deterministic names make
/// safe) or server-side applies it (field manager `kubedirector.hpe.com`) when it exists. They are
/// only emitted when the object is missing from [`Observed`] or has drifted from the desired
/// fields (spec 7 R17).
// A pass emits a handful of commands; boxing the large variants would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Record an Event on the kdcluster.
    Event(PlanEvent),
    /// Create (or apply) the headless cluster service (spec 3.8).
    EnsureHeadlessService(Service),
    /// Create a role's StatefulSet (spec 3.7) with 0 replicas. If it already exists (a retried
    /// create) adopt it as is: do **not** apply this object over an existing StatefulSet (the pod
    /// template and selector are not re-applied, see [`Command::PatchStatefulSetMetadata`]).
    EnsureStatefulSet(StatefulSet),
    /// Merge-patch the metadata of an existing StatefulSet: operator labels, the prettyName
    /// annotation and the single controller owner reference (drift repair, spec 3.12, R17).
    /// Only the keys present are written; `owner_references` replaces the list.
    PatchStatefulSetMetadata {
        /// StatefulSet name.
        name: String,
        /// Labels, annotations and owner references to write.
        metadata: ObjectMeta,
    },
    /// Set `spec.replicas` of a StatefulSet (spec 3.11).
    SetReplicas {
        /// StatefulSet name.
        statefulset: String,
        /// New replica count.
        replicas: i32,
    },
    /// Delete a StatefulSet (role removed, spec 3.6). NotFound is success.
    DeleteStatefulSet {
        /// StatefulSet name.
        name: String,
    },
    /// Create (or apply) a per-member Service (spec 3.9).
    EnsureMemberService(Service),
    /// Delete a Service. NotFound is success.
    DeleteService {
        /// Service name.
        name: String,
    },
    /// Delete a PersistentVolumeClaim. NotFound is success.
    DeletePvc {
        /// PVC name.
        name: String,
    },
    /// Merge-patch the kdcluster's metadata (finalizer, annotations). Never emitted by
    /// [`reconcile`]: the ClusterActor's tracker appends it from [`Plan::finalizer`] and
    /// [`Plan::annotations`] after the planner's commands.
    PatchClusterMetadata(MetadataPatch),
    /// Write the kdcluster status (the last command of a pass). Never emitted by [`reconcile`]:
    /// the tracker appends it when [`Plan::status_changed`]. The precondition is the
    /// resourceVersion the status was computed from, or the one returned by a preceding
    /// [`Command::PatchClusterMetadata`] of the same pass (never a newer cached one, R25).
    WriteStatus {
        /// The complete new status.
        status: serde_json::Value,
        /// The observed resourceVersion of the kdcluster.
        resource_version: Option<String>,
    },
    /// Create or overwrite the kdcluster's kdstatusbackup (spec 3.13), before the status write.
    WriteStatusBackup(Box<kubedirector_crds::KubeDirectorStatusBackup>),
    /// Delete the kdcluster's kdstatusbackup (backups switched off). NotFound is success.
    DeleteStatusBackup {
        /// Its name (the kdcluster's).
        name: String,
    },
    /// Run in-guest work for a member (spec 4): its setup, a configmeta refresh or its queued
    /// notifications, in the container `container_id`. At most one per member at a time; the
    /// result comes back as [`Observed::guest`] in a later pass.
    RunGuestJob {
        /// Role id.
        role: String,
        /// Pod name.
        pod: String,
        /// The `app` container the job is for (the job refuses to run in another one).
        container_id: String,
        /// The work.
        job: config::script::GuestJob,
    },
}

/// What to do with the kdcluster's finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FinalizerChange {
    /// Leave it as it is.
    #[default]
    None,
    /// Add `kubedirector.hpe.com/cleanup`.
    Add,
    /// Remove `kubedirector.hpe.com/cleanup` (deletion greenlit).
    Remove,
}

/// The verdict of role sync (spec 3.2 step 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Members were added or removed in this pass.
    MembersChanged,
    /// Nothing changed but some member is not yet ready.
    StableUnready,
    /// Nothing changed and every member is ready.
    StableReady,
}

/// How a pass ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pass ran to its natural end.
    Done,
    /// The kdcluster is gone or its deletion was greenlit; the caller should drop its state for
    /// this object (token, app reference) once the commands are executed.
    Deleted,
    /// A restore pass (spec 3.15: the kdcluster carries the restoring label) ran to its end: only
    /// its status, events and the label removal are to be executed.
    Restoring,
    /// The status read from the cache is older than the last one written (token mismatch,
    /// spec 3.2 step 7): no side effects at all (R25); retry when the cache catches up.
    Stale,
    /// The pass was aborted (spec 3.2: `failed to sync …`); the plan still carries the status
    /// and commands produced so far, and the caller should retry with backoff.
    Failed(String),
}

/// The output of one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The new status (compacted, spec 3.13). When [`Plan::status_changed`] it already carries
    /// [`PlanContext::new_generation_uid`].
    pub status: KubeDirectorClusterStatus,
    /// Whether the status differs from the observed one and must be written.
    pub status_changed: bool,
    /// Finalizer change to write (metadata).
    pub finalizer: FinalizerChange,
    /// Annotation changes to merge-patch onto the kdcluster (`None` removes the key); empty when
    /// nothing changes.
    pub annotations: BTreeMap<String, Option<String>>,
    /// Label changes to merge-patch onto the kdcluster (`None` removes the key): the restoring
    /// label's removal at the end of a restore (spec 3.15 step 2); empty otherwise.
    pub labels: BTreeMap<String, Option<String>>,
    /// Ordered side effects.
    pub commands: Vec<Command>,
    /// The role-sync verdict, when role sync ran.
    pub verdict: Option<Verdict>,
    /// How the pass ended.
    pub outcome: Outcome,
    /// `true` when the planner is waiting for something that no watch event will announce (none
    /// today: every wait is on a watched object). The caller's safety resync covers the rest.
    pub requeue: bool,
    /// What the caller should do with its remembered `generationUID` for this kdcluster.
    pub token: TokenUpdate,
}

/// Update of the caller's remembered status token (spec 3.2 step 7, 3.13).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TokenUpdate {
    /// Keep the remembered token as it is.
    #[default]
    Keep,
    /// Remember this token (the one written with the status, or the one adopted after a
    /// restart). Only valid once the status write (if any) succeeded.
    Set(String),
    /// Forget the token (object deleted).
    Forget,
}

impl Plan {
    /// An empty plan carrying `status` unchanged.
    pub fn noop(status: KubeDirectorClusterStatus, outcome: Outcome) -> Self {
        Plan {
            status,
            status_changed: false,
            finalizer: FinalizerChange::None,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            commands: Vec::new(),
            verdict: None,
            outcome,
            requeue: false,
            token: TokenUpdate::Keep,
        }
    }

    /// The events of this plan, in order.
    pub fn events(&self) -> impl Iterator<Item = &PlanEvent> {
        self.commands.iter().filter_map(|c| match c {
            Command::Event(e) => Some(e),
            _ => None,
        })
    }
}

/// A change to a KubeDirectorCluster's metadata, sent as a JSON merge patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataPatch {
    /// The complete new finalizer list, when it changes.
    pub finalizers: Option<Vec<String>>,
    /// Annotations to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
    /// Labels to set (`Some`) or remove (`None`).
    pub labels: BTreeMap<String, Option<String>>,
    /// Optimistic-concurrency precondition (`metadata.resourceVersion`), if any.
    pub resource_version: Option<String>,
}

impl MetadataPatch {
    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.finalizers.is_none() && self.annotations.is_empty() && self.labels.is_empty()
    }

    /// `true` when the patch removes the restoring label (the end of a restore, spec 3.15).
    pub fn ends_restore(&self) -> bool {
        matches!(
            self.labels.get(kubedirector_crds::wire::LABEL_RESTORING),
            Some(None)
        )
    }

    /// The JSON merge patch document for this change.
    pub fn to_merge_patch(&self) -> serde_json::Value {
        let mut meta = serde_json::Map::new();
        if let Some(f) = &self.finalizers {
            meta.insert("finalizers".into(), serde_json::json!(f));
        }
        for (key, map) in [("annotations", &self.annotations), ("labels", &self.labels)] {
            if map.is_empty() {
                continue;
            }
            let m: serde_json::Map<String, serde_json::Value> = map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_ref()
                            .map_or(serde_json::Value::Null, |s| serde_json::Value::String(s.clone())),
                    )
                })
                .collect();
            meta.insert(key.into(), serde_json::Value::Object(m));
        }
        if let Some(rv) = &self.resource_version {
            meta.insert("resourceVersion".into(), serde_json::Value::String(rv.clone()));
        }
        serde_json::json!({ "metadata": meta })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_patch_removes_annotations_with_null() {
        let mut p = MetadataPatch {
            finalizers: Some(vec!["kubedirector.hpe.com/cleanup".into()]),
            resource_version: Some("7".into()),
            ..Default::default()
        };
        p.annotations.insert("a".into(), None);
        p.annotations.insert("b".into(), Some("1".into()));
        assert!(!p.ends_restore());
        p.labels
            .insert(kubedirector_crds::wire::LABEL_RESTORING.into(), None);
        assert!(p.ends_restore());
        let v = p.to_merge_patch();
        assert_eq!(
            v["metadata"]["labels"]["kubedirector.hpe.com/restoring"],
            serde_json::Value::Null
        );
        assert_eq!(v["metadata"]["annotations"]["a"], serde_json::Value::Null);
        assert_eq!(v["metadata"]["annotations"]["b"], "1");
        assert_eq!(v["metadata"]["finalizers"][0], "kubedirector.hpe.com/cleanup");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
    }
}
