//! MetricsActor: owns the Prometheus registry (injected, never global) and every metric in it.
//!
//! Every other actor reports through a `Recipient<MetricEvent>`; nothing else touches Prometheus
//! types. The HTTP layer asks for the text exposition with [`Render`].
//!
//! Names follow controller-runtime so off-the-shelf dashboards work
//! (`controller_runtime_reconcile_total{controller,result}`,
//! `controller_runtime_reconcile_errors_total{controller}`,
//! `controller_runtime_reconcile_time_seconds{controller}`), plus domain metrics
//! `kubedirector_clusters{state}`, `kubedirector_members{state}`,
//! `kubedirector_cluster_actors`, `kubedirector_mailbox_depth{actor}`,
//! `kubedirector_mailbox_adds_total{actor}`, `kubedirector_mailbox_dropped_total{actor,reason}`
//! and `kubedirector_api_errors_total{category}`. Labels are bounded: never a cluster or pod name.

use std::{collections::HashMap, time::Duration};

use actix::prelude::*;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be registered (duplicate name in the injected registry).
    #[error("cannot register metric {name}")]
    Register {
        /// Metric name.
        name: &'static str,
        /// Cause.
        #[source]
        source: prometheus::Error,
    },
    /// The text encoding failed.
    #[error("cannot encode metrics")]
    Encode {
        /// Cause.
        #[source]
        source: prometheus::Error,
    },
}

impl MetricsError {
    /// Bounded label for this error.
    pub fn category(&self) -> &'static str {
        match self {
            MetricsError::Register { .. } => "register",
            MetricsError::Encode { .. } => "encode",
        }
    }
}

/// Outcome label of a reconcile, controller-runtime style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Finished, nothing more to do until a change.
    Success,
    /// Failed.
    Error,
    /// Finished and asked to run again immediately.
    Requeue,
    /// Finished and asked to run again after a delay.
    RequeueAfter,
}

impl ReconcileResult {
    /// The `result` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
            ReconcileResult::Requeue => "requeue",
            ReconcileResult::RequeueAfter => "requeue_after",
        }
    }
}

/// Something worth counting, sent by any actor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum MetricEvent {
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
    /// A cluster's state and member states, replacing what was known for this uid.
    ClusterObserved {
        /// Cluster uid (used only as a map key, never as a label).
        uid: String,
        /// Cluster state (`creating`, `configured`, ...).
        state: String,
        /// Member state → count.
        members: Vec<(String, i64)>,
    },
    /// The cluster is gone: forget it.
    ClusterGone {
        /// Cluster uid.
        uid: String,
    },
    /// Number of live ClusterActors.
    ClusterActors(i64),
    /// Current depth of an actor's work queue.
    MailboxDepth {
        /// Actor type.
        actor: &'static str,
        /// Queued items.
        depth: i64,
    },
    /// An item was queued for an actor.
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
}

/// Renders the registry in the Prometheus text format.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<String, MetricsError>")]
pub struct Render;

/// The metrics the operator exports.
#[derive(Clone)]
struct Metrics {
    reconcile_total: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_time: HistogramVec,
    api_errors: IntCounterVec,
    clusters: IntGaugeVec,
    members: IntGaugeVec,
    cluster_actors: IntGauge,
    mailbox_depth: IntGaugeVec,
    mailbox_adds: IntCounterVec,
    mailbox_dropped: IntCounterVec,
}

fn reg<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    c: Result<C, prometheus::Error>,
) -> Result<C, MetricsError> {
    let c = c.map_err(|source| MetricsError::Register { name, source })?;
    registry
        .register(Box::new(c.clone()))
        .map_err(|source| MetricsError::Register { name, source })?;
    Ok(c)
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let m = Metrics {
            reconcile_total: reg(
                registry,
                "controller_runtime_reconcile_total",
                IntCounterVec::new(
                    Opts::new(
                        "controller_runtime_reconcile_total",
                        "Total number of reconciliations per controller",
                    ),
                    &["controller", "result"],
                ),
            )?,
            reconcile_errors: reg(
                registry,
                "controller_runtime_reconcile_errors_total",
                IntCounterVec::new(
                    Opts::new(
                        "controller_runtime_reconcile_errors_total",
                        "Total number of reconciliation errors per controller",
                    ),
                    &["controller"],
                ),
            )?,
            reconcile_time: reg(
                registry,
                "controller_runtime_reconcile_time_seconds",
                HistogramVec::new(
                    HistogramOpts::new(
                        "controller_runtime_reconcile_time_seconds",
                        "Length of time per reconciliation per controller",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
                    &["controller"],
                ),
            )?,
            api_errors: reg(
                registry,
                "kubedirector_api_errors_total",
                IntCounterVec::new(
                    Opts::new(
                        "kubedirector_api_errors_total",
                        "Failed Kubernetes API calls made by the operator, by error category",
                    ),
                    &["category"],
                ),
            )?,
            clusters: reg(
                registry,
                "kubedirector_clusters",
                IntGaugeVec::new(
                    Opts::new("kubedirector_clusters", "KubeDirectorClusters by state"),
                    &["state"],
                ),
            )?,
            members: reg(
                registry,
                "kubedirector_members",
                IntGaugeVec::new(
                    Opts::new("kubedirector_members", "KubeDirectorCluster members by state"),
                    &["state"],
                ),
            )?,
            cluster_actors: reg(
                registry,
                "kubedirector_cluster_actors",
                IntGauge::new("kubedirector_cluster_actors", "Live per-cluster actors"),
            )?,
            mailbox_depth: reg(
                registry,
                "kubedirector_mailbox_depth",
                IntGaugeVec::new(
                    Opts::new("kubedirector_mailbox_depth", "Queued work items per actor type"),
                    &["actor"],
                ),
            )?,
            mailbox_adds: reg(
                registry,
                "kubedirector_mailbox_adds_total",
                IntCounterVec::new(
                    Opts::new(
                        "kubedirector_mailbox_adds_total",
                        "Work items queued per actor type",
                    ),
                    &["actor"],
                ),
            )?,
            mailbox_dropped: reg(
                registry,
                "kubedirector_mailbox_dropped_total",
                IntCounterVec::new(
                    Opts::new(
                        "kubedirector_mailbox_dropped_total",
                        "Work items dropped per actor type and reason",
                    ),
                    &["actor", "reason"],
                ),
            )?,
        };
        // Make the controller-runtime series visible from the start (dashboards expect them).
        for r in ["success", "error", "requeue", "requeue_after"] {
            m.reconcile_total
                .with_label_values(&[CLUSTER_CONTROLLER, r])
                .inc_by(0);
        }
        m.reconcile_errors
            .with_label_values(&[CLUSTER_CONTROLLER])
            .inc_by(0);
        Ok(m)
    }
}

/// Controller label used for KubeDirectorCluster reconciles.
pub const CLUSTER_CONTROLLER: &str = "kubedirectorcluster";

/// The actor owning the registry.
pub struct MetricsActor {
    registry: Registry,
    metrics: Metrics,
    clusters: HashMap<String, (String, Vec<(String, i64)>)>,
}

impl MetricsActor {
    /// Registers every metric in `registry`.
    pub fn new(registry: Registry) -> Result<Self, MetricsError> {
        let metrics = Metrics::register(&registry)?;
        Ok(Self {
            registry,
            metrics,
            clusters: HashMap::new(),
        })
    }

    fn refresh_state_gauges(&self) {
        self.metrics.clusters.reset();
        self.metrics.members.reset();
        for (state, members) in self.clusters.values() {
            self.metrics.clusters.with_label_values(&[state.as_str()]).inc();
            for (m, n) in members {
                self.metrics.members.with_label_values(&[m.as_str()]).add(*n);
            }
        }
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<MetricEvent> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: MetricEvent, _ctx: &mut Self::Context) {
        let m = &self.metrics;
        match msg {
            MetricEvent::ReconcileFinished {
                controller,
                result,
                duration,
            } => {
                m.reconcile_total
                    .with_label_values(&[controller, result.as_str()])
                    .inc();
                if result == ReconcileResult::Error {
                    m.reconcile_errors.with_label_values(&[controller]).inc();
                }
                m.reconcile_time
                    .with_label_values(&[controller])
                    .observe(duration.as_secs_f64());
            }
            MetricEvent::ApiError { category } => {
                m.api_errors.with_label_values(&[category]).inc();
            }
            MetricEvent::ClusterObserved { uid, state, members } => {
                self.clusters.insert(uid, (state, members));
                self.refresh_state_gauges();
            }
            MetricEvent::ClusterGone { uid } => {
                self.clusters.remove(&uid);
                self.refresh_state_gauges();
            }
            MetricEvent::ClusterActors(n) => m.cluster_actors.set(n),
            MetricEvent::MailboxDepth { actor, depth } => {
                m.mailbox_depth.with_label_values(&[actor]).set(depth);
            }
            MetricEvent::MailboxAdd { actor } => m.mailbox_adds.with_label_values(&[actor]).inc(),
            MetricEvent::MailboxDropped { actor, reason } => {
                m.mailbox_dropped.with_label_values(&[actor, reason]).inc();
            }
        }
    }
}

impl Handler<Render> for MetricsActor {
    type Result = Result<String, MetricsError>;

    fn handle(&mut self, _msg: Render, _ctx: &mut Self::Context) -> Self::Result {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|source| MetricsError::Encode { source })?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn render_exposes_controller_runtime_and_domain_metrics() {
        let addr = MetricsActor::new(Registry::new()).unwrap().start();
        addr.send(MetricEvent::ReconcileFinished {
            controller: CLUSTER_CONTROLLER,
            result: ReconcileResult::Success,
            duration: Duration::from_millis(12),
        })
        .await
        .unwrap();
        addr.send(MetricEvent::ReconcileFinished {
            controller: CLUSTER_CONTROLLER,
            result: ReconcileResult::Error,
            duration: Duration::from_millis(3),
        })
        .await
        .unwrap();
        for (uid, state) in [("u1", "configured"), ("u2", "creating"), ("u3", "configured")] {
            addr.send(MetricEvent::ClusterObserved {
                uid: uid.into(),
                state: state.into(),
                members: vec![("configured".into(), 2), ("creating".into(), 1)],
            })
            .await
            .unwrap();
        }
        addr.send(MetricEvent::ClusterGone { uid: "u3".into() })
            .await
            .unwrap();
        let text = addr.send(Render).await.unwrap().unwrap();
        assert!(text.contains(
            "controller_runtime_reconcile_total{controller=\"kubedirectorcluster\",result=\"success\"} 1"
        ));
        assert!(text.contains(
            "controller_runtime_reconcile_total{controller=\"kubedirectorcluster\",result=\"error\"} 1"
        ));
        assert!(
            text.contains("controller_runtime_reconcile_errors_total{controller=\"kubedirectorcluster\"} 1")
        );
        assert!(text.contains(
            "controller_runtime_reconcile_time_seconds_count{controller=\"kubedirectorcluster\"} 2"
        ));
        assert!(text.contains("kubedirector_clusters{state=\"configured\"} 1"));
        assert!(text.contains("kubedirector_clusters{state=\"creating\"} 1"));
        assert!(text.contains("kubedirector_members{state=\"configured\"} 4"));
        assert!(
            !text.contains("u1"),
            "cluster identifiers must never become labels"
        );
    }

    #[test]
    fn registering_twice_in_one_registry_is_an_error_not_a_panic() {
        let r = Registry::new();
        assert!(MetricsActor::new(r.clone()).is_ok());
        let err = MetricsActor::new(r).err().map(|e| e.category());
        assert_eq!(err, Some("register"));
    }
}
