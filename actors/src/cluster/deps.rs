//! What every ClusterActor is given: its tunables and the shared dependencies.

use std::{sync::Arc, time::Duration};

use actix::Recipient;

use crate::{
    caches::Caches,
    catalog::{DropInterest, RegisterInterest},
    config_job::{ContainerProbe, GuestExec, JobSettings},
    metrics::MetricEvent,
    ports::Ports,
    status_writer::{ForgetCluster, WriteStatus},
};

/// Tunables of the cluster actors.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The KubeDirector namespace (`system` catalog, kdconfig).
    pub kd_namespace: String,
    /// Safety resync period after a successful pass.
    pub resync: Duration,
    /// Timeout for one child-actor call.
    pub call_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a created/deleted object is overlaid on the cache before trusting the cache.
    pub overlay_ttl: Duration,
    /// While a pass waits for the cache to show the kdcluster as our last status write left it
    /// (a stale pass, a 409 on the status write), the watch event re-triggers the pass; this
    /// delay (jittered by ±30 %, doubling up to 8 times this) is the safety net if none comes.
    pub cache_recheck: Duration,
    /// Run no pass before every watch (all seven kinds) has delivered its initial list, so no
    /// pass sees a half-filled cache (e.g. "app does not exist" at start-up).
    pub initial_sync: bool,
    /// How long a status change that only moves observation details (container states, the
    /// rollup) is held back to be written with the next real change (0, the default: never
    /// held; the benchmark runs with 5 s).
    pub status_detail_window: Duration,
    /// Delay between the first trigger and the pass it schedules, so a burst of watch events
    /// (pods starting together, a relist) is observed by one pass and costs one status write.
    pub debounce: Duration,
    /// Number of watch streams per namespaced kind (one per watched namespace, 1 for all).
    pub watch_scopes: usize,
    /// Number of kdapp watch streams (the watched namespaces plus the KubeDirector one).
    pub app_scopes: usize,
    /// Configuration jobs (exec timeouts, retries, the configcli tarball).
    pub jobs: JobSettings,
    /// Delay before a pass a member step asked for (systemd not ready, a failed notification).
    pub requeue_after: Duration,
    /// How often the `init` containers of initialising members are probed for the storage copy's
    /// progress (spec 3.10): one exec per such member per interval, none otherwise.
    pub storage_progress_interval: Duration,
}

impl ClusterSettings {
    /// Defaults for namespace `kd_namespace`.
    pub fn new(kd_namespace: impl Into<String>) -> Self {
        Self {
            kd_namespace: kd_namespace.into(),
            resync: Duration::from_secs(600),
            call_timeout: Duration::from_secs(30),
            retry_initial: crate::retry::INITIAL_INTERVAL,
            retry_max: crate::retry::MAX_INTERVAL,
            overlay_ttl: Duration::from_secs(60),
            cache_recheck: Duration::from_secs(1),
            initial_sync: true,
            status_detail_window: Duration::ZERO,
            debounce: Duration::from_millis(250),
            watch_scopes: 1,
            app_scopes: 1,
            jobs: JobSettings::default(),
            requeue_after: Duration::from_secs(5),
            storage_progress_interval: Duration::from_secs(3),
        }
    }
}

/// Everything a ClusterActor needs, shared by all of them.
#[derive(Clone)]
pub struct ClusterDeps {
    /// Ports.
    pub ports: Ports,
    /// Cache read handles.
    pub caches: Caches,
    /// App interest registration.
    pub register_interest: Recipient<RegisterInterest>,
    /// App interest removal.
    pub drop_interest: Recipient<DropInterest>,
    /// Status writes.
    pub write_status: Recipient<WriteStatus>,
    /// Status writer cleanup.
    pub forget_status: Recipient<ForgetCluster>,
    /// Metrics.
    pub metrics: Option<Recipient<MetricEvent>>,
    /// Tunables.
    pub settings: ClusterSettings,
    /// In-guest execution for configuration jobs; `None` leaves members that need in-guest
    /// work in `creating` (with a warning in the log).
    pub guest: Option<GuestDeps>,
}

/// What configuration jobs need.
#[derive(Clone)]
pub struct GuestDeps {
    /// `pods/exec`.
    pub exec: Arc<dyn GuestExec>,
    /// The current `app` container of a pod.
    pub probe: ContainerProbe,
}
