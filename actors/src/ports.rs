//! Ports: the traits the actors call to reach the outside world.
//!
//! The actors never talk to the Kubernetes API directly. They call a [`ClusterApi`] (writes of
//! owned objects, status and metadata), an [`EventRecorder`] (Kubernetes Events) and a
//! [`Clock`]. The root crate implements these with a `kube::Client`; tests use the recording
//! fakes in [`fake`].
//!
//! Every call returns a boxed `Send` future, so implementations can run on any tokio worker and
//! the actors can drive them with `into_actor` without blocking their mailbox.

use std::{fmt, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// The future every port method returns.
pub type PortFuture<T> = BoxFuture<'static, Result<T, ApiError>>;

/// Namespace and name of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key from a namespace and a name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kinds of owned objects the operator may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnedKind {
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// v1 Service.
    Service,
    /// v1 PersistentVolumeClaim.
    PersistentVolumeClaim,
}

impl OwnedKind {
    /// Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnedKind::StatefulSet => "StatefulSet",
            OwnedKind::Service => "Service",
            OwnedKind::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }
}

pub use crate::plan::MetadataPatch;

/// Why an API call failed, classified for the retry policy (STYLE R9).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// 404: the object does not exist.
    #[error("{kind} {key} not found")]
    NotFound {
        /// Kind of the object.
        kind: String,
        /// The object.
        key: String,
    },
    /// 409 because of a stale resourceVersion (or an apply conflict).
    #[error("conflict writing {kind} {key}: {message}")]
    Conflict {
        /// Kind of the object.
        kind: String,
        /// The object.
        key: String,
        /// Server message.
        message: String,
    },
    /// 409 AlreadyExists on create.
    #[error("{kind} {key} already exists")]
    AlreadyExists {
        /// Kind of the object.
        kind: String,
        /// The object.
        key: String,
    },
    /// 429 Too Many Requests.
    #[error("throttled by the API server: {message}")]
    Throttled {
        /// Server message.
        message: String,
    },
    /// 5xx from the API server.
    #[error("API server error {code}: {message}")]
    Server {
        /// HTTP status code.
        code: u16,
        /// Server message.
        message: String,
    },
    /// Any other 4xx: the request itself is wrong (invalid object, forbidden, ...).
    #[error("request rejected ({code}): {message}")]
    Rejected {
        /// HTTP status code.
        code: u16,
        /// Server message.
        message: String,
    },
    /// The API server could not be reached, or the response could not be read.
    #[error("transport error: {message}")]
    Transport {
        /// What went wrong.
        message: String,
    },
}

impl ApiError {
    /// Short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::AlreadyExists { .. } => "already_exists",
            ApiError::Throttled { .. } => "throttled",
            ApiError::Server { .. } => "server",
            ApiError::Rejected { .. } => "rejected",
            ApiError::Transport { .. } => "transport",
        }
    }

    /// True for errors worth retrying with exponential backoff: 409, 429, 5xx and transport.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Conflict { .. }
                | ApiError::Throttled { .. }
                | ApiError::Server { .. }
                | ApiError::Transport { .. }
        )
    }

    /// Classifies an HTTP status code and message.
    pub fn from_status(code: u16, reason: &str, kind: &str, key: &str, message: &str) -> Self {
        match code {
            404 => ApiError::NotFound {
                kind: kind.into(),
                key: key.into(),
            },
            409 if reason == "AlreadyExists" => ApiError::AlreadyExists {
                kind: kind.into(),
                key: key.into(),
            },
            409 => ApiError::Conflict {
                kind: kind.into(),
                key: key.into(),
                message: message.into(),
            },
            429 => ApiError::Throttled {
                message: message.into(),
            },
            500..=599 => ApiError::Server {
                code,
                message: message.into(),
            },
            _ => ApiError::Rejected {
                code,
                message: message.into(),
            },
        }
    }
}

/// Writes to the Kubernetes API on behalf of the cluster actors.
pub trait ClusterApi: Send + Sync + 'static {
    /// Creates a StatefulSet. When one of that name already exists (a retried create: names
    /// are deterministic) it is adopted as is and returned, never overwritten, if it is the
    /// kdcluster's own: controlled by the owner of `sts` (the controller reference's uid), or
    /// without any controller and carrying the same `kdcluster` label (as upstream adopts);
    /// otherwise it is someone else's and the call fails with [`ApiError::AlreadyExists`]
    /// without writing to it.
    fn create_stateful_set(&self, sts: StatefulSet) -> PortFuture<StatefulSet>;
    /// Merge-patches the metadata of an existing StatefulSet (labels, annotations, owner
    /// references), leaving the pod template alone.
    fn patch_stateful_set_metadata(&self, key: ObjectKey, metadata: ObjectMeta) -> PortFuture<()>;
    /// Writes a Service (field manager [`FIELD_MANAGER`](kubedirector_crds::wire::FIELD_MANAGER))
    /// and returns it as stored. Without `metadata.resourceVersion` it is created; when one of
    /// that name already exists it is returned as is if it is the kdcluster's own (the rule of
    /// [`Self::create_stateful_set`]: a create retried, or the cache lagging), otherwise the call
    /// fails with
    /// [`ApiError::AlreadyExists`] without writing to it. With `metadata.resourceVersion` (a
    /// repair of the Service the planner observed) it replaces that object, conditional on the
    /// version, so a Service replaced meanwhile by someone else is never taken over.
    fn apply_service(&self, svc: Service) -> PortFuture<Service>;
    /// Sets `spec.replicas` of a StatefulSet (merge patch of the main resource).
    fn set_replicas(&self, key: ObjectKey, replicas: i32) -> PortFuture<()>;
    /// Deletes an object; NotFound counts as success. With `uid` the delete carries a UID
    /// precondition: an object of that name with another uid (recreated by someone else) is
    /// left alone, and that also counts as success (ours is gone).
    fn delete(&self, kind: OwnedKind, key: ObjectKey, uid: Option<String>) -> PortFuture<()>;
    /// Replaces the status subresource of a KubeDirectorCluster with `status`, with the given
    /// resourceVersion as precondition. Returns the new resourceVersion.
    fn write_cluster_status(
        &self,
        key: ObjectKey,
        resource_version: String,
        status: serde_json::Value,
    ) -> PortFuture<String>;
    /// Merge-patches a KubeDirectorCluster's metadata. Returns the new resourceVersion.
    fn patch_cluster_metadata(&self, key: ObjectKey, patch: MetadataPatch) -> PortFuture<String>;
    /// Creates or overwrites a kdcluster's KubeDirectorStatusBackup (spec 3.13): server-side
    /// apply, field manager `kubedirector.hpe.com`, forced.
    fn apply_status_backup(&self, backup: kubedirector_crds::KubeDirectorStatusBackup) -> PortFuture<()>;
    /// Deletes a KubeDirectorStatusBackup; NotFound counts as success.
    fn delete_status_backup(&self, key: ObjectKey) -> PortFuture<()>;
    /// Merge-patches a KubeDirectorConfig (main resource: its finalizers, a generated
    /// `spec.masterEncryptionKey`; spec 3.16). Returns the new resourceVersion.
    fn patch_config(&self, key: ObjectKey, patch: serde_json::Value) -> PortFuture<String>;
    /// Replaces the status subresource of a KubeDirectorConfig, with the given resourceVersion as
    /// precondition. Returns the new resourceVersion.
    fn write_config_status(
        &self,
        key: ObjectKey,
        resource_version: String,
        status: serde_json::Value,
    ) -> PortFuture<String>;
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvolvedObject {
    /// apiVersion, e.g. `kubedirector.hpe.com/v1beta1`.
    pub api_version: String,
    /// Kind, e.g. `KubeDirectorCluster`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, when known.
    pub uid: Option<String>,
}

/// A Kubernetes Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The object the event is about.
    pub involved: InvolvedObject,
    /// Normal or Warning.
    pub event_type: EventType,
    /// Reason (`Cluster`, `Role`, `Member`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// Records Kubernetes Events.
pub trait EventRecorder: Send + Sync + 'static {
    /// Publishes one event.
    fn record(&self, event: EventRecord) -> PortFuture<()>;
}

/// The wall clock, injected so tests control time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> k8s_openapi::jiff::Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::now()
    }
}

/// The set of ports handed to the actors.
#[derive(Clone)]
pub struct Ports {
    /// API writes.
    pub api: Arc<dyn ClusterApi>,
    /// Events.
    pub events: Arc<dyn EventRecorder>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// `pods/exec` for configuration jobs (spec 4); `None` where nothing runs in pods.
    pub exec: Option<Arc<dyn GuestExec>>,
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// Recording fakes for tests (used by this crate's tests and by `actors/tests`). Compiled only
/// for tests and with the `test-util` feature: release builds do not contain it.
#[cfg(any(test, feature = "test-util"))]
pub mod fake {
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex, MutexGuard},
    };

    use super::*;

    /// One call made to [`FakeClusterApi`].
    #[derive(Debug, Clone, PartialEq)]
    #[allow(clippy::large_enum_variant)] // a test record; size does not matter
    pub enum ApiCall {
        /// `create_stateful_set`.
        CreateStatefulSet(StatefulSet),
        /// `patch_stateful_set_metadata`.
        PatchStatefulSetMetadata(ObjectKey, ObjectMeta),
        /// `apply_service`.
        ApplyService(Service),
        /// `set_replicas`.
        SetReplicas(ObjectKey, i32),
        /// `delete` (the uid precondition is not recorded).
        Delete(OwnedKind, ObjectKey),
        /// `write_cluster_status`.
        WriteStatus(ObjectKey, String, serde_json::Value),
        /// `patch_cluster_metadata`.
        PatchMetadata(ObjectKey, MetadataPatch),
        /// [`ClusterApi::apply_status_backup`].
        ApplyStatusBackup(kubedirector_crds::KubeDirectorStatusBackup),
        /// [`ClusterApi::delete_status_backup`].
        DeleteStatusBackup(ObjectKey),
        /// [`ClusterApi::patch_config`].
        PatchConfig(ObjectKey, serde_json::Value),
        /// [`ClusterApi::write_config_status`].
        WriteConfigStatus(ObjectKey, String, serde_json::Value),
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[derive(Default)]
    struct Inner {
        calls: Vec<ApiCall>,
        failures: VecDeque<ApiError>,
        rv: u64,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    /// A [`ClusterApi`] that records every call and succeeds, unless failures were queued.
    #[derive(Clone, Default)]
    pub struct FakeClusterApi {
        inner: Arc<Mutex<Inner>>,
    }

    impl FakeClusterApi {
        /// A fresh fake.
        pub fn new() -> Self {
            Self::default()
        }

        /// The next calls fail with these errors, in order.
        pub fn fail_next(&self, errors: impl IntoIterator<Item = ApiError>) {
            lock(&self.inner).failures.extend(errors);
        }

        /// From now on every call's future completes only after taking one permit of `gate`
        /// (lets tests hold calls "in flight").
        pub fn set_gate(&self, gate: Arc<tokio::sync::Semaphore>) {
            lock(&self.inner).gate = Some(gate);
        }

        fn finish<T: Send + 'static>(&self, res: Result<T, ApiError>) -> PortFuture<T> {
            let gate = lock(&self.inner).gate.clone();
            Box::pin(async move {
                if let Some(g) = gate {
                    if let Ok(permit) = g.acquire_owned().await {
                        permit.forget();
                    }
                }
                res
            })
        }

        /// Every call so far.
        pub fn calls(&self) -> Vec<ApiCall> {
            lock(&self.inner).calls.clone()
        }

        /// Status writes so far.
        pub fn status_writes(&self) -> Vec<(ObjectKey, String, serde_json::Value)> {
            self.calls()
                .into_iter()
                .filter_map(|c| match c {
                    ApiCall::WriteStatus(k, rv, s) => Some((k, rv, s)),
                    _ => None,
                })
                .collect()
        }

        fn record(&self, call: ApiCall) -> Result<u64, ApiError> {
            let mut inner = lock(&self.inner);
            inner.calls.push(call);
            if let Some(err) = inner.failures.pop_front() {
                return Err(err);
            }
            inner.rv += 1;
            Ok(inner.rv)
        }
    }

    impl ClusterApi for FakeClusterApi {
        fn create_stateful_set(&self, sts: StatefulSet) -> PortFuture<StatefulSet> {
            let res = self.record(ApiCall::CreateStatefulSet(sts.clone())).map(|_| sts);
            self.finish(res)
        }

        fn patch_stateful_set_metadata(&self, key: ObjectKey, metadata: ObjectMeta) -> PortFuture<()> {
            let res = self
                .record(ApiCall::PatchStatefulSetMetadata(key, metadata))
                .map(|_| ());
            self.finish(res)
        }

        fn apply_service(&self, svc: Service) -> PortFuture<Service> {
            let res = self.record(ApiCall::ApplyService(svc.clone())).map(|_| svc);
            self.finish(res)
        }

        fn set_replicas(&self, key: ObjectKey, replicas: i32) -> PortFuture<()> {
            let res = self.record(ApiCall::SetReplicas(key, replicas)).map(|_| ());
            self.finish(res)
        }

        fn delete(&self, kind: OwnedKind, key: ObjectKey, _uid: Option<String>) -> PortFuture<()> {
            let res = self.record(ApiCall::Delete(kind, key)).map(|_| ());
            self.finish(res)
        }

        fn write_cluster_status(
            &self,
            key: ObjectKey,
            resource_version: String,
            status: serde_json::Value,
        ) -> PortFuture<String> {
            let res = self
                .record(ApiCall::WriteStatus(key, resource_version, status))
                .map(|rv| rv.to_string());
            self.finish(res)
        }

        fn patch_cluster_metadata(&self, key: ObjectKey, patch: MetadataPatch) -> PortFuture<String> {
            let res = self
                .record(ApiCall::PatchMetadata(key, patch))
                .map(|rv| rv.to_string());
            self.finish(res)
        }

        fn apply_status_backup(&self, backup: kubedirector_crds::KubeDirectorStatusBackup) -> PortFuture<()> {
            let res = self.record(ApiCall::ApplyStatusBackup(backup)).map(|_| ());
            self.finish(res)
        }

        fn delete_status_backup(&self, key: ObjectKey) -> PortFuture<()> {
            let res = self.record(ApiCall::DeleteStatusBackup(key)).map(|_| ());
            self.finish(res)
        }

        fn patch_config(&self, key: ObjectKey, patch: serde_json::Value) -> PortFuture<String> {
            let res = self
                .record(ApiCall::PatchConfig(key, patch))
                .map(|rv| rv.to_string());
            self.finish(res)
        }

        fn write_config_status(
            &self,
            key: ObjectKey,
            resource_version: String,
            status: serde_json::Value,
        ) -> PortFuture<String> {
            let res = self
                .record(ApiCall::WriteConfigStatus(key, resource_version, status))
                .map(|rv| rv.to_string());
            self.finish(res)
        }
    }

    /// An [`EventRecorder`] that keeps every event.
    #[derive(Clone, Default)]
    pub struct FakeEventRecorder {
        events: Arc<Mutex<Vec<EventRecord>>>,
    }

    impl FakeEventRecorder {
        /// A fresh recorder.
        pub fn new() -> Self {
            Self::default()
        }

        /// Every event so far.
        pub fn events(&self) -> Vec<EventRecord> {
            lock(&self.events).clone()
        }
    }

    impl EventRecorder for FakeEventRecorder {
        fn record(&self, event: EventRecord) -> PortFuture<()> {
            lock(&self.events).push(event);
            Box::pin(async { Ok(()) })
        }
    }

    /// A clock fixed at a settable instant.
    #[derive(Clone)]
    pub struct FakeClock {
        now: Arc<Mutex<k8s_openapi::jiff::Timestamp>>,
    }

    impl FakeClock {
        /// A clock at `now`.
        pub fn at(now: k8s_openapi::jiff::Timestamp) -> Self {
            Self {
                now: Arc::new(Mutex::new(now)),
            }
        }

        /// Moves the clock.
        pub fn set(&self, now: k8s_openapi::jiff::Timestamp) {
            *lock(&self.now) = now;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> k8s_openapi::jiff::Timestamp {
            *lock(&self.now)
        }
    }

    /// Fake ports wired together, with handles to inspect them.
    pub fn ports() -> (Ports, FakeClusterApi, FakeEventRecorder) {
        let api = FakeClusterApi::new();
        let events = FakeEventRecorder::new();
        let ports = Ports {
            api: Arc::new(api.clone()),
            events: Arc::new(events.clone()),
            clock: Arc::new(FakeClock::at(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            exec: None,
        };
        (ports, api, events)
    }
}

/// One `pods/exec` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The pod.
    pub pod: ObjectKey,
    /// The container.
    pub container: String,
    /// argv.
    pub command: Vec<String>,
    /// Bytes fed to stdin (then closed).
    pub stdin: Vec<u8>,
    /// Upper bound for the whole call.
    pub timeout: Duration,
}

/// What an exec returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// Exit status of the command.
    pub status: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Port: runs commands in containers (`pods/exec`).
pub trait GuestExec: Send + Sync + 'static {
    /// Runs `req`; transport failures and timeouts are `Err`, a non-zero exit is `Ok`.
    fn exec(&self, req: ExecRequest) -> PortFuture<ExecOutput>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_classified_for_the_retry_policy() {
        assert!(ApiError::from_status(409, "Conflict", "x", "a/b", "m").is_transient());
        assert!(ApiError::from_status(429, "", "x", "a/b", "m").is_transient());
        assert!(ApiError::from_status(503, "", "x", "a/b", "m").is_transient());
        assert!(!ApiError::from_status(422, "Invalid", "x", "a/b", "m").is_transient());
        assert_eq!(
            ApiError::from_status(409, "AlreadyExists", "x", "a/b", "m").category(),
            "already_exists"
        );
        assert_eq!(
            ApiError::from_status(404, "", "x", "a/b", "m").category(),
            "not_found"
        );
    }
}
