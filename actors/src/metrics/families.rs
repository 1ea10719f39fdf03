//! The metric families the operator exports, registered in the injected registry.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::{
    events::{ExecOperation, ExecResult, ReconcileResult, WebhookResult, CLUSTER_CONTROLLER, WEBHOOK_KINDS},
    progress::{self, ClusterSeries, Tracked},
    MetricsError,
};

/// Label names of the per-cluster series.
pub const CLUSTER_LABELS: [&str; 3] = ["namespace", "cluster", "app"];

/// Buckets for API requests, reconciles, queue waits and exec jobs (seconds).
const LATENCY_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets for the time from creation to `configured` (seconds).
const CONFIGURED_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Every family. Field names follow the metric names.
#[derive(Clone)]
pub(super) struct Metrics {
    pub reconcile_total: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_time: HistogramVec,
    pub active_workers: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub queue_adds: IntCounterVec,
    pub queue_duration: HistogramVec,
    pub work_duration: HistogramVec,
    pub queue_retries: IntCounterVec,
    pub rest_requests: IntCounterVec,
    pub rest_duration: HistogramVec,
    pub exec_total: IntCounterVec,
    pub exec_duration: HistogramVec,
    pub leader: IntGaugeVec,
    pub webhook_requests: IntCounterVec,
    pub webhook_duration: HistogramVec,
    pub cert_expiry: GaugeVec,
    pub api_errors: IntCounterVec,
    pub clusters: IntGaugeVec,
    pub members: IntGaugeVec,
    pub cluster_actors: IntGauge,
    pub mailbox_dropped: IntCounterVec,
    pub cluster_state: IntGaugeVec,
    pub role_desired: IntGaugeVec,
    pub role_members: IntGaugeVec,
    pub config_generation: IntGaugeVec,
    pub generation: IntGaugeVec,
    pub pending_notifications: IntGaugeVec,
    pub state_age: GaugeVec,
    pub time_to_configured: HistogramVec,
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

fn counter(
    r: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    reg(r, name, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(r: &Registry, name: &'static str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    reg(r, name, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn fgauge(r: &Registry, name: &'static str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
    reg(r, name, GaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(
    r: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, MetricsError> {
    reg(
        r,
        name,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels),
    )
}

impl Metrics {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        let role_labels = ["namespace", "cluster", "app", "role"];
        Ok(Metrics {
            reconcile_total: counter(
                r,
                "controller_runtime_reconcile_total",
                "Total number of reconciliations per controller",
                &["controller", "result"],
            )?,
            reconcile_errors: counter(
                r,
                "controller_runtime_reconcile_errors_total",
                "Total number of reconciliation errors per controller",
                &["controller"],
            )?,
            reconcile_time: histogram(
                r,
                "controller_runtime_reconcile_time_seconds",
                "Length of time per reconciliation per controller",
                &["controller"],
                &LATENCY_BUCKETS,
            )?,
            active_workers: gauge(
                r,
                "controller_runtime_active_workers",
                "Number of currently used workers per controller",
                &["controller"],
            )?,
            queue_depth: gauge(r, "workqueue_depth", "Current depth of workqueue", &["name"])?,
            queue_adds: counter(
                r,
                "workqueue_adds_total",
                "Total number of adds handled by workqueue",
                &["name"],
            )?,
            queue_duration: histogram(
                r,
                "workqueue_queue_duration_seconds",
                "How long in seconds an item stays in workqueue before being requested",
                &["name"],
                &LATENCY_BUCKETS,
            )?,
            work_duration: histogram(
                r,
                "workqueue_work_duration_seconds",
                "How long in seconds processing an item from workqueue takes",
                &["name"],
                &LATENCY_BUCKETS,
            )?,
            queue_retries: counter(
                r,
                "workqueue_retries_total",
                "Total number of retries handled by workqueue",
                &["name"],
            )?,
            rest_requests: counter(
                r,
                "rest_client_requests_total",
                "Number of HTTP requests to the Kubernetes API, partitioned by status code and method",
                &["code", "method"],
            )?,
            rest_duration: histogram(
                r,
                "rest_client_request_duration_seconds",
                "Kubernetes API request latency (until the response headers) in seconds, by verb",
                &["verb"],
                &LATENCY_BUCKETS,
            )?,
            exec_total: counter(
                r,
                "kubedirector_exec_total",
                "Commands run in member containers, by operation and result",
                &["operation", "result"],
            )?,
            exec_duration: histogram(
                r,
                "kubedirector_exec_duration_seconds",
                "Duration of commands run in member containers, by operation",
                &["operation"],
                &LATENCY_BUCKETS,
            )?,
            leader: gauge(
                r,
                "leader_election_master_status",
                "1 while this replica holds the leader lease `name`, else 0",
                &["name"],
            )?,
            webhook_requests: counter(
                r,
                "kubedirector_webhook_requests_total",
                "Admission requests served, by resource kind and result",
                &["kind", "result"],
            )?,
            webhook_duration: histogram(
                r,
                "kubedirector_webhook_request_duration_seconds",
                "Admission request latency in seconds, by resource kind",
                &["kind"],
                &LATENCY_BUCKETS,
            )?,
            cert_expiry: fgauge(
                r,
                "kubedirector_certificate_expiry_timestamp_seconds",
                "Expiry time (notAfter, Unix seconds) of the certificates the operator serves",
                &["certificate"],
            )?,
            api_errors: counter(
                r,
                "kubedirector_api_errors_total",
                "Failed Kubernetes API calls made by the operator, by error category",
                &["category"],
            )?,
            clusters: gauge(
                r,
                "kubedirector_clusters",
                "KubeDirectorClusters by state",
                &["state"],
            )?,
            members: gauge(
                r,
                "kubedirector_members",
                "KubeDirectorCluster members by state",
                &["state"],
            )?,
            cluster_actors: reg(
                r,
                "kubedirector_cluster_actors",
                IntGauge::new("kubedirector_cluster_actors", "Live per-cluster actors"),
            )?,
            mailbox_dropped: counter(
                r,
                "kubedirector_mailbox_dropped_total",
                "Work items dropped per actor type and reason",
                &["actor", "reason"],
            )?,
            cluster_state: gauge(
                r,
                "kubedirector_cluster_state",
                "1 for the current state of each KubeDirectorCluster, 0 for the other states",
                &["namespace", "cluster", "app", "state"],
            )?,
            role_desired: gauge(
                r,
                "kubedirector_cluster_role_members_desired",
                "Members requested per role (spec.roles[].members)",
                &role_labels,
            )?,
            role_members: gauge(
                r,
                "kubedirector_cluster_role_members",
                "Members per role and member state (status.roles[].members[].state)",
                &["namespace", "cluster", "app", "role", "state"],
            )?,
            config_generation: gauge(
                r,
                "kubedirector_cluster_config_generation",
                "Configuration generation being processed (status.specGenerationToProcess)",
                &CLUSTER_LABELS,
            )?,
            generation: gauge(
                r,
                "kubedirector_cluster_spec_generation",
                "Spec generation of the KubeDirectorCluster (metadata.generation)",
                &CLUSTER_LABELS,
            )?,
            pending_notifications: gauge(
                r,
                "kubedirector_cluster_pending_notifications",
                "Notifications queued for members and not yet delivered",
                &CLUSTER_LABELS,
            )?,
            state_age: fgauge(
                r,
                "kubedirector_cluster_seconds_since_state_change",
                "Seconds since the cluster entered its current state",
                &CLUSTER_LABELS,
            )?,
            time_to_configured: histogram(
                r,
                "kubedirector_cluster_time_to_configured_seconds",
                "Seconds from creation to the first configured state, by app",
                &["app"],
                &CONFIGURED_BUCKETS,
            )?,
        })
    }

    /// The names of every series this set can export: each family's name, with `_bucket`,
    /// `_sum` and `_count` for histograms.
    pub(super) fn series_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let plain: [&dyn Collector; 23] = [
            &self.reconcile_total,
            &self.reconcile_errors,
            &self.active_workers,
            &self.queue_depth,
            &self.queue_adds,
            &self.queue_retries,
            &self.rest_requests,
            &self.exec_total,
            &self.leader,
            &self.webhook_requests,
            &self.cert_expiry,
            &self.api_errors,
            &self.clusters,
            &self.members,
            &self.cluster_actors,
            &self.mailbox_dropped,
            &self.cluster_state,
            &self.role_desired,
            &self.role_members,
            &self.config_generation,
            &self.generation,
            &self.pending_notifications,
            &self.state_age,
        ];
        let histograms: [&dyn Collector; 7] = [
            &self.reconcile_time,
            &self.queue_duration,
            &self.work_duration,
            &self.rest_duration,
            &self.exec_duration,
            &self.webhook_duration,
            &self.time_to_configured,
        ];
        let mut out = Vec::new();
        for c in plain {
            out.extend(c.desc().iter().map(|d| d.fq_name.clone()));
        }
        for c in histograms {
            for d in c.desc() {
                out.push(d.fq_name.clone());
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.push(format!("{}{suffix}", d.fq_name));
                }
            }
        }
        out.sort();
        out
    }

    /// Creates the series dashboards and alerts expect, at zero (as controller-runtime does).
    pub(super) fn preinitialize(&self) {
        let m = self;
        let c = CLUSTER_CONTROLLER;
        for r in ReconcileResult::ALL {
            m.reconcile_total.with_label_values(&[c, r.as_str()]).inc_by(0);
        }
        m.reconcile_errors.with_label_values(&[c]).inc_by(0);
        m.reconcile_time.with_label_values(&[c]);
        m.active_workers.with_label_values(&[c]).set(0);
        for q in [c, super::events::STATUS_WRITER_QUEUE] {
            m.queue_depth.with_label_values(&[q]).set(0);
            m.queue_adds.with_label_values(&[q]).inc_by(0);
            m.queue_retries.with_label_values(&[q]).inc_by(0);
            m.queue_duration.with_label_values(&[q]);
            m.work_duration.with_label_values(&[q]);
        }
        for op in ExecOperation::ALL {
            for r in ExecResult::ALL {
                m.exec_total
                    .with_label_values(&[op.as_str(), r.as_str()])
                    .inc_by(0);
            }
            m.exec_duration.with_label_values(&[op.as_str()]);
        }
        for kind in WEBHOOK_KINDS {
            for r in WebhookResult::ALL {
                m.webhook_requests
                    .with_label_values(&[kind, r.as_str()])
                    .inc_by(0);
            }
            m.webhook_duration.with_label_values(&[kind]);
        }
        for s in kubedirector_crds::ClusterState::KNOWN {
            m.clusters.with_label_values(&[s.as_str()]).set(0);
        }
    }

    /// Removes every per-cluster series of `s`.
    pub(super) fn remove_cluster(&self, s: &ClusterSeries) {
        let m = self;
        let base = [s.namespace.as_str(), s.cluster.as_str(), s.app.as_str()];
        if !s.state.is_empty() {
            for (state, _) in progress::one_hot_states(&s.state) {
                let _ = m
                    .cluster_state
                    .remove_label_values(&[base[0], base[1], base[2], state.as_str()]);
            }
        }
        for r in &s.roles {
            let _ = m
                .role_desired
                .remove_label_values(&[base[0], base[1], base[2], r.role.as_str()]);
            for state in r.members.keys() {
                let _ = m.role_members.remove_label_values(&[
                    base[0],
                    base[1],
                    base[2],
                    r.role.as_str(),
                    state.as_str(),
                ]);
            }
        }
        let _ = m.config_generation.remove_label_values(&base);
        let _ = m.generation.remove_label_values(&base);
        let _ = m.pending_notifications.remove_label_values(&base);
        let _ = m.state_age.remove_label_values(&base);
    }

    /// Sets every per-cluster series of `t` at time `now` (Unix seconds).
    pub(super) fn set_cluster(&self, t: &Tracked, now: f64) {
        let m = self;
        let s = &t.series;
        let base = [s.namespace.as_str(), s.cluster.as_str(), s.app.as_str()];
        if !s.state.is_empty() {
            for (state, v) in progress::one_hot_states(&s.state) {
                m.cluster_state
                    .with_label_values(&[base[0], base[1], base[2], state.as_str()])
                    .set(v);
            }
        }
        for r in &s.roles {
            m.role_desired
                .with_label_values(&[base[0], base[1], base[2], r.role.as_str()])
                .set(r.desired);
            for (state, n) in &r.members {
                m.role_members
                    .with_label_values(&[base[0], base[1], base[2], r.role.as_str(), state.as_str()])
                    .set(*n);
            }
        }
        if let Some(g) = s.config_generation {
            m.config_generation.with_label_values(&base).set(g);
        }
        m.generation.with_label_values(&base).set(s.generation);
        m.pending_notifications
            .with_label_values(&base)
            .set(s.pending_notifications);
        m.state_age
            .with_label_values(&base)
            .set((now - t.state_since).max(0.0));
    }
}
