//! The messages the MetricsActor is fed with, and their bounded label values.

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use kubedirector_crds::KubeDirectorCluster;

/// Defines a label enum with its wire names.
macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $wire:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }
    };
}

label_enum! {
    /// Outcome label of a reconcile, controller-runtime style.
    ReconcileResult {
        /// Finished, nothing more to do until a change.
        Success => "success",
        /// Failed.
        Error => "error",
        /// Finished and asked to run again immediately.
        Requeue => "requeue",
        /// Finished and asked to run again after a delay.
        RequeueAfter => "requeue_after",
    }
}

label_enum! {
    /// What a command run in a member container was for (`kubedirector_exec_total{operation}`).
    ExecOperation {
        /// Writing `/etc/guestconfig/configmeta.json`.
        ConfigMeta => "configmeta",
        /// Fetching and unpacking the app's setup package.
        SetupPackage => "setup_package",
        /// Running the setup package's startscript (`--configure`).
        StartScript => "startscript",
        /// Delivering a notification (`--addnodes`, `--delnodes`, `--reconnect`).
        Notify => "notify",
        /// A file injection (`spec.roles[].fileInjections`).
        FileInjection => "file_injection",
        /// Reading a member's state (e.g. the configure status file).
        Probe => "probe",
    }
}

label_enum! {
    /// Outcome of a command run in a member container.
    ExecResult {
        /// Exit status 0.
        Success => "success",
        /// Ran and exited non-zero.
        Failure => "failure",
        /// Could not be started or the stream broke (API or kubelet error).
        Error => "error",
        /// Did not finish in time.
        Timeout => "timeout",
    }
}

label_enum! {
    /// Outcome of an admission request.
    WebhookResult {
        /// Allowed (possibly with a patch).
        Allowed => "allowed",
        /// Denied with a message.
        Denied => "denied",
        /// The request could not be handled (malformed review, internal error).
        Error => "error",
    }
}

/// The resource kinds the admission webhook serves (label values of `kind`); `other` counts
/// reviews of any other kind and those whose kind could not be read.
pub const WEBHOOK_KINDS: &[&str] = &[
    "KubeDirectorApp",
    "KubeDirectorCluster",
    "KubeDirectorConfig",
    "PersistentVolumeClaim",
    "other",
];

/// `certificate` label of the webhook's serving certificate.
pub const CERT_WEBHOOK_SERVING: &str = "webhook";
/// `certificate` label of the CA that issued the webhook's serving certificate.
pub const CERT_WEBHOOK_CA: &str = "webhook-ca";

/// Controller label used for KubeDirectorCluster reconciles (and its workqueue `name`).
pub const CLUSTER_CONTROLLER: &str = "kubedirectorcluster";

/// The StatusWriterActor's queue name (`workqueue_*{name}`).
pub const STATUS_WRITER_QUEUE: &str = "status_writer";

/// Something worth counting, sent by any actor or operator component.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum MetricEvent {
    /// A reconcile pass started (one that will end with [`MetricEvent::ReconcileFinished`]).
    ReconcileStarted {
        /// Controller name (`kubedirectorcluster`).
        controller: &'static str,
    },
    /// A started reconcile pass will never finish (its actor stopped while it ran).
    ReconcileAbandoned {
        /// Controller name (`kubedirectorcluster`).
        controller: &'static str,
    },
    /// A reconcile pass finished.
    ReconcileFinished {
        /// Controller name (`kubedirectorcluster`).
        controller: &'static str,
        /// Outcome.
        result: ReconcileResult,
        /// Wall time of the pass.
        duration: Duration,
    },
    /// An API call failed (bounded category, see `ApiError::category`).
    ApiError {
        /// Error category.
        category: &'static str,
    },
    /// The cluster as last observed (spec + status), replacing what was known for this uid.
    ClusterObserved {
        /// Cluster uid (a map key, never a label).
        uid: String,
        /// The object.
        cluster: Box<KubeDirectorCluster>,
    },
    /// The cluster is gone: forget it and remove its series.
    ClusterGone {
        /// Cluster uid.
        uid: String,
    },
    /// Number of live ClusterActors.
    ClusterActors(i64),
    /// Current depth of an actor's work queue (`workqueue_depth{name=actor}`).
    MailboxDepth {
        /// Actor type.
        actor: &'static str,
        /// Queued items.
        depth: i64,
    },
    /// An item was queued for an actor (`workqueue_adds_total`). For the `cluster` queue the
    /// depth is counted from adds, drops and [`MetricEvent::QueueTaken`].
    MailboxAdd {
        /// Actor type.
        actor: &'static str,
    },
    /// An item was dropped instead of queued.
    MailboxDropped {
        /// Actor type.
        actor: &'static str,
        /// `full` or `closed`.
        reason: &'static str,
    },
    /// An item left a queue for processing.
    QueueTaken {
        /// Queue (actor type).
        name: &'static str,
        /// How long it waited, when known.
        waited: Option<Duration>,
    },
    /// The work an item asked for started (for the cluster queue: the pass handling the oldest
    /// event not yet handled), `waited` after the item was queued
    /// (`workqueue_queue_duration_seconds`).
    QueueWaited {
        /// Queue (actor type).
        name: &'static str,
        /// Time from queueing to the start of the work.
        waited: Duration,
    },
    /// An item of a queue was processed (`workqueue_work_duration_seconds`).
    WorkFinished {
        /// Queue (actor type).
        name: &'static str,
        /// Processing time.
        duration: Duration,
    },
    /// An item was put back for a retry (`workqueue_retries_total`).
    QueueRetry {
        /// Queue (actor type).
        name: &'static str,
    },
    /// One Kubernetes API request (`rest_client_*`).
    RestRequest {
        /// HTTP method (`GET`, `POST`, ...).
        method: &'static str,
        /// Status code; `None` when no response arrived.
        code: Option<u16>,
        /// Time until the response headers.
        duration: Duration,
    },
    /// Leader election status of this replica.
    Leader {
        /// Lease name.
        name: String,
        /// Holds the lease.
        leader: bool,
    },
    /// One admission request served by the webhook.
    WebhookRequest {
        /// Resource kind (one of [`WEBHOOK_KINDS`]).
        kind: &'static str,
        /// Outcome.
        result: WebhookResult,
        /// Handling time.
        duration: Duration,
    },
    /// The serving certificate `certificate` (e.g. `webhook`) expires at `not_after`.
    CertificateExpiry {
        /// Which certificate.
        certificate: &'static str,
        /// Its notAfter.
        not_after: SystemTime,
    },
    /// A command run in a member container finished.
    ExecFinished {
        /// What it was for.
        operation: ExecOperation,
        /// Outcome.
        result: ExecResult,
        /// Wall time.
        duration: Duration,
    },
}

/// One command run in a member container: its tracing span (`exec`, with `k8s.namespace`,
/// `k8s.name` (the cluster), `member` and `operation` fields) and its timer. Run the job inside
/// [`ExecJob::span`] and send [`ExecJob::finished`] to the MetricsActor when it ends.
#[derive(Debug)]
pub struct ExecJob {
    operation: ExecOperation,
    started: std::time::Instant,
    span: tracing::Span,
}

impl ExecJob {
    /// Starts timing `operation` on `member` (pod name; a span field, never a metric label) of
    /// the cluster `namespace/cluster`.
    pub fn start(operation: ExecOperation, namespace: &str, cluster: &str, member: &str) -> Self {
        let span = tracing::info_span!("exec", k8s.namespace = %namespace, k8s.name = %cluster,
            member = %member, operation = operation.as_str());
        Self {
            operation,
            started: std::time::Instant::now(),
            span,
        }
    }

    /// The job's span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The metric event of the job ending with `result` now.
    pub fn finished(&self, result: ExecResult) -> MetricEvent {
        MetricEvent::ExecFinished {
            operation: self.operation,
            result,
            duration: self.started.elapsed(),
        }
    }
}
