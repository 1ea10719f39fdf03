//! MetricsActor: owns the Prometheus registry (injected, never global) and every metric in it.
//!
//! Every other actor (and the operator's HTTP client layer, leader elector and webhook server)
//! reports through a `Recipient<MetricEvent>`; nothing else touches Prometheus types. The HTTP
//! layer asks for the text exposition with [`Render`].
//!
//! Operator health uses controller-runtime / client-go names so off-the-shelf dashboards work
//! (`controller_runtime_reconcile_*`, `controller_runtime_active_workers`, `workqueue_*{name}`,
//! `rest_client_*`, `leader_election_master_status{name}`). Per-cluster progress
//! (`kubedirector_cluster_*`) is derived from the observed KubeDirectorCluster by the pure
//! [`progress`] module; its labels are namespace, cluster, app, role and state, never a member
//! or pod, and a deleted cluster's series are removed. The README lists every metric.

mod events;
mod families;
pub mod progress;

pub use events::{
    ExecJob, ExecOperation, ExecResult, MetricEvent, ReconcileResult, WebhookResult, CERT_WEBHOOK_CA,
    CERT_WEBHOOK_SERVING, CLUSTER_CONTROLLER, STATUS_WRITER_QUEUE, WEBHOOK_KINDS,
};

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use actix::prelude::*;
use kubedirector_crds::KubeDirectorCluster;
use prometheus::{Encoder, Registry, TextEncoder};

use families::Metrics;
use progress::Tracked;

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

/// The names of every series the MetricsActor can export (histograms with their `_bucket`,
/// `_sum` and `_count` series), sorted. Dashboards and alerting rules are checked against it.
pub fn exported_series_names() -> Result<Vec<String>, MetricsError> {
    Ok(Metrics::register(&Registry::new())?.series_names())
}

/// Renders the registry in the Prometheus text format.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<String, MetricsError>")]
pub struct Render;

fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Queue names whose depth is counted here (adds − drops − takes) rather than reported.
fn queue_name(actor: &'static str) -> &'static str {
    if actor == "cluster" {
        CLUSTER_CONTROLLER
    } else {
        actor
    }
}

/// The actor owning the registry.
pub struct MetricsActor {
    registry: Registry,
    metrics: Metrics,
    clusters: HashMap<String, Tracked>,
    /// `kubedirector_clusters{state}` and `kubedirector_members{state}`, kept incrementally.
    cluster_totals: HashMap<String, i64>,
    member_totals: HashMap<String, i64>,
    /// Depth of the queues counted from adds and takes.
    counted_depth: HashMap<&'static str, i64>,
    active: HashMap<&'static str, i64>,
}

impl MetricsActor {
    /// Registers every metric in `registry`, with the series dashboards and alerts expect
    /// present at zero from the start (as controller-runtime does).
    pub fn new(registry: Registry) -> Result<Self, MetricsError> {
        let metrics = Metrics::register(&registry)?;
        metrics.preinitialize();
        for s in kubedirector_crds::ClusterState::KNOWN {
            metrics.clusters.with_label_values(&[s.as_str()]).set(0);
        }
        Ok(Self {
            registry,
            metrics,
            clusters: HashMap::new(),
            cluster_totals: HashMap::new(),
            member_totals: HashMap::new(),
            counted_depth: HashMap::new(),
            active: HashMap::new(),
        })
    }

    /// Adds (`sign` 1) or removes (`sign` -1) one cluster's contribution to the totals
    /// `kubedirector_clusters{state}` and `kubedirector_members{state}`: O(its roles), never a
    /// walk over every cluster. A known cluster state stays at 0; any other series is removed
    /// when its count reaches 0, as a full recount would leave it.
    fn count_totals(&mut self, series: &progress::ClusterSeries, sign: i64) {
        fn bump(
            totals: &mut HashMap<String, i64>,
            gauge: &prometheus::IntGaugeVec,
            state: &str,
            delta: i64,
            keep_zero: bool,
        ) {
            let n = totals.entry(state.to_string()).or_default();
            *n += delta;
            if *n <= 0 && !keep_zero {
                totals.remove(state);
                let _ = gauge.remove_label_values(&[state]);
            } else {
                gauge.with_label_values(&[state]).set((*n).max(0));
            }
        }
        if !series.state.is_empty() {
            let known = kubedirector_crds::ClusterState::KNOWN
                .iter()
                .any(|s| s.as_str() == series.state);
            bump(
                &mut self.cluster_totals,
                &self.metrics.clusters,
                &series.state,
                sign,
                known,
            );
        }
        for role in &series.roles {
            for (state, n) in &role.members {
                if *n > 0 {
                    bump(
                        &mut self.member_totals,
                        &self.metrics.members,
                        state,
                        sign * n,
                        false,
                    );
                }
            }
        }
    }

    fn cluster_observed(&mut self, uid: String, cluster: &KubeDirectorCluster) {
        let Some(series) = progress::derive(cluster) else {
            return;
        };
        let now = unix_seconds(SystemTime::now());
        let previous = self.clusters.remove(&uid);
        if let Some(p) = &previous {
            self.metrics.remove_cluster(&p.series);
            self.count_totals(&p.series, -1);
        }
        let t = progress::observe(previous.as_ref(), series, now);
        if let Some(secs) = t.time_to_configured {
            self.metrics
                .time_to_configured
                .with_label_values(&[t.tracked.series.app.as_str()])
                .observe(secs);
        }
        self.metrics.set_cluster(&t.tracked, now);
        self.count_totals(&t.tracked.series, 1);
        self.clusters.insert(uid, t.tracked);
    }

    fn cluster_gone(&mut self, uid: &str) {
        if let Some(t) = self.clusters.remove(uid) {
            self.metrics.remove_cluster(&t.series);
            self.count_totals(&t.series, -1);
        }
    }

    fn count_depth(&mut self, name: &'static str, delta: i64) {
        let d = self.counted_depth.entry(name).or_default();
        *d = (*d + delta).max(0);
        self.metrics.queue_depth.with_label_values(&[name]).set(*d);
    }

    fn active(&mut self, controller: &'static str, delta: i64) {
        let a = self.active.entry(controller).or_default();
        *a = (*a + delta).max(0);
        self.metrics
            .active_workers
            .with_label_values(&[controller])
            .set(*a);
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<MetricEvent> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: MetricEvent, _ctx: &mut Self::Context) {
        let m = &self.metrics;
        match msg {
            MetricEvent::ReconcileStarted { controller } => self.active(controller, 1),
            MetricEvent::ReconcileAbandoned { controller } => self.active(controller, -1),
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
                if result != ReconcileResult::Success {
                    m.queue_retries.with_label_values(&[controller]).inc();
                }
                m.reconcile_time
                    .with_label_values(&[controller])
                    .observe(duration.as_secs_f64());
                m.work_duration
                    .with_label_values(&[controller])
                    .observe(duration.as_secs_f64());
                self.active(controller, -1);
            }
            MetricEvent::ApiError { category } => {
                m.api_errors.with_label_values(&[category]).inc();
            }
            MetricEvent::ClusterObserved { uid, cluster } => self.cluster_observed(uid, &cluster),
            MetricEvent::ClusterGone { uid } => self.cluster_gone(&uid),
            MetricEvent::ClusterActors(n) => m.cluster_actors.set(n),
            MetricEvent::MailboxDepth { actor, depth } => {
                m.queue_depth.with_label_values(&[queue_name(actor)]).set(depth);
            }
            MetricEvent::MailboxAdd { actor } => {
                let name = queue_name(actor);
                m.queue_adds.with_label_values(&[name]).inc();
                if name == CLUSTER_CONTROLLER {
                    self.count_depth(name, 1);
                }
            }
            MetricEvent::MailboxDropped { actor, reason } => {
                m.mailbox_dropped.with_label_values(&[actor, reason]).inc();
                let name = queue_name(actor);
                if name == CLUSTER_CONTROLLER {
                    self.count_depth(name, -1);
                }
            }
            MetricEvent::QueueTaken { name, waited } => {
                let name = queue_name(name);
                if let Some(w) = waited {
                    m.queue_duration
                        .with_label_values(&[name])
                        .observe(w.as_secs_f64());
                }
                if name == CLUSTER_CONTROLLER {
                    self.count_depth(name, -1);
                }
            }
            MetricEvent::QueueWaited { name, waited } => {
                m.queue_duration
                    .with_label_values(&[queue_name(name)])
                    .observe(waited.as_secs_f64());
            }
            MetricEvent::WorkFinished { name, duration } => {
                m.work_duration
                    .with_label_values(&[queue_name(name)])
                    .observe(duration.as_secs_f64());
            }
            MetricEvent::QueueRetry { name } => {
                m.queue_retries.with_label_values(&[queue_name(name)]).inc();
            }
            MetricEvent::RestRequest {
                method,
                code,
                duration,
            } => {
                let code = code.map_or_else(|| "<error>".to_string(), |c| c.to_string());
                m.rest_requests.with_label_values(&[code.as_str(), method]).inc();
                m.rest_duration
                    .with_label_values(&[method])
                    .observe(duration.as_secs_f64());
            }
            MetricEvent::Leader { name, leader } => {
                m.leader
                    .with_label_values(&[name.as_str()])
                    .set(i64::from(leader));
            }
            MetricEvent::WebhookRequest {
                kind,
                result,
                duration,
            } => {
                m.webhook_requests
                    .with_label_values(&[kind, result.as_str()])
                    .inc();
                m.webhook_duration
                    .with_label_values(&[kind])
                    .observe(duration.as_secs_f64());
            }
            MetricEvent::CertificateExpiry {
                certificate,
                not_after,
            } => {
                m.cert_expiry
                    .with_label_values(&[certificate])
                    .set(unix_seconds(not_after));
            }
            MetricEvent::ExecFinished {
                operation,
                result,
                duration,
            } => {
                m.exec_total
                    .with_label_values(&[operation.as_str(), result.as_str()])
                    .inc();
                m.exec_duration
                    .with_label_values(&[operation.as_str()])
                    .observe(duration.as_secs_f64());
            }
        }
    }
}

impl Handler<Render> for MetricsActor {
    type Result = Result<String, MetricsError>;

    fn handle(&mut self, _msg: Render, _ctx: &mut Self::Context) -> Self::Result {
        let now = unix_seconds(SystemTime::now());
        for t in self.clusters.values() {
            let s = &t.series;
            self.metrics
                .state_age
                .with_label_values(&[s.namespace.as_str(), s.cluster.as_str(), s.app.as_str()])
                .set((now - t.state_since).max(0.0));
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|source| MetricsError::Encode { source })?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn cluster(name: &str, state: &str, members: &[&str]) -> Box<KubeDirectorCluster> {
        let members: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"pod": format!("pod-{i}"), "service": "s", "state": s, "nodeID": i}))
            .collect();
        Box::new(
            serde_json::from_value(json!({
                "apiVersion": "kubedirector.hpe.com/v1beta1",
                "kind": "KubeDirectorCluster",
                "metadata": {"name": name, "namespace": "team", "uid": name, "generation": 1,
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"app": "centos7x", "roles": [{"id": "worker", "members": 3, "resources": {}}]},
                "status": {"state": state, "roles": [{"id": "worker", "statefulSet": "kdss-x", "members": members}]}
            }))
            .unwrap(),
        )
    }

    async fn observe(addr: &Addr<MetricsActor>, name: &str, state: &str, members: &[&str]) {
        addr.send(MetricEvent::ClusterObserved {
            uid: name.into(),
            cluster: cluster(name, state, members),
        })
        .await
        .unwrap();
    }

    #[actix::test]
    async fn render_exposes_controller_runtime_and_aggregate_metrics() {
        let addr = MetricsActor::new(Registry::new()).unwrap().start();
        for result in [ReconcileResult::Success, ReconcileResult::Error] {
            addr.send(MetricEvent::ReconcileStarted {
                controller: CLUSTER_CONTROLLER,
            })
            .await
            .unwrap();
            addr.send(MetricEvent::ReconcileFinished {
                controller: CLUSTER_CONTROLLER,
                result,
                duration: Duration::from_millis(12),
            })
            .await
            .unwrap();
        }
        observe(
            &addr,
            "u1",
            "configured",
            &["configured", "configured", "creating"],
        )
        .await;
        observe(&addr, "u2", "creating", &["configured", "configured", "creating"]).await;
        observe(&addr, "u3", "configured", &["configured"]).await;
        addr.send(MetricEvent::ClusterGone { uid: "u3".into() })
            .await
            .unwrap();
        let text = addr.send(Render).await.unwrap().unwrap();
        for line in [
            "controller_runtime_reconcile_total{controller=\"kubedirectorcluster\",result=\"success\"} 1",
            "controller_runtime_reconcile_total{controller=\"kubedirectorcluster\",result=\"error\"} 1",
            "controller_runtime_reconcile_errors_total{controller=\"kubedirectorcluster\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"kubedirectorcluster\"} 2",
            "controller_runtime_active_workers{controller=\"kubedirectorcluster\"} 0",
            "workqueue_retries_total{name=\"kubedirectorcluster\"} 1",
            "workqueue_work_duration_seconds_count{name=\"kubedirectorcluster\"} 2",
            "kubedirector_clusters{state=\"configured\"} 1",
            "kubedirector_clusters{state=\"creating\"} 1",
            "kubedirector_clusters{state=\"updating\"} 0",
            "kubedirector_members{state=\"configured\"} 4",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("pod-0"), "members never become labels");
    }

    #[actix::test]
    async fn totals_follow_each_cluster_as_it_changes_state_and_goes() {
        let addr = MetricsActor::new(Registry::new()).unwrap().start();
        let render = || async { addr.send(Render).await.unwrap().unwrap() };
        assert!(render()
            .await
            .contains("kubedirector_clusters{state=\"configured\"} 0"));
        observe(&addr, "a", "creating", &["creating", "creating"]).await;
        observe(&addr, "b", "creating", &["configured", "creating"]).await;
        let text = render().await;
        assert!(
            text.contains("kubedirector_clusters{state=\"creating\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("kubedirector_members{state=\"creating\"} 3"),
            "{text}"
        );
        observe(&addr, "a", "configured", &["configured", "configured"]).await;
        observe(&addr, "b", "configured", &["configured", "configured"]).await;
        let text = render().await;
        assert!(
            text.contains("kubedirector_clusters{state=\"creating\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("kubedirector_clusters{state=\"configured\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("kubedirector_members{state=\"configured\"} 4"),
            "{text}"
        );
        assert!(
            !text.contains("kubedirector_members{state=\"creating\"}"),
            "a member state nobody is in is not exported: {text}"
        );
        addr.send(MetricEvent::ClusterGone { uid: "a".into() })
            .await
            .unwrap();
        addr.send(MetricEvent::ClusterGone { uid: "a".into() })
            .await
            .unwrap();
        let text = render().await;
        assert!(
            text.contains("kubedirector_clusters{state=\"configured\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kubedirector_members{state=\"configured\"} 2"),
            "{text}"
        );
    }

    #[actix::test]
    async fn per_cluster_series_follow_the_cluster_and_disappear_with_it() {
        let addr = MetricsActor::new(Registry::new()).unwrap().start();
        observe(&addr, "c1", "creating", &["configured", "creating"]).await;
        let text = addr.send(Render).await.unwrap().unwrap();
        let l = "app=\"centos7x\",cluster=\"c1\",namespace=\"team\"";
        for line in [
            format!("kubedirector_cluster_state{{{l},state=\"creating\"}} 1"),
            format!("kubedirector_cluster_state{{{l},state=\"configured\"}} 0"),
            format!("kubedirector_cluster_role_members_desired{{{l},role=\"worker\"}} 3"),
            format!("kubedirector_cluster_role_members{{{l},role=\"worker\",state=\"configured\"}} 1"),
            format!("kubedirector_cluster_role_members{{{l},role=\"worker\",state=\"config error\"}} 0"),
            format!("kubedirector_cluster_spec_generation{{{l}}} 1"),
            format!("kubedirector_cluster_pending_notifications{{{l}}} 0"),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        assert!(text.contains(&format!("kubedirector_cluster_seconds_since_state_change{{{l}}}")));
        observe(
            &addr,
            "c1",
            "configured",
            &["configured", "configured", "configured"],
        )
        .await;
        let text = addr.send(Render).await.unwrap().unwrap();
        assert!(text.contains(&format!(
            "kubedirector_cluster_state{{{l},state=\"configured\"}} 1"
        )));
        assert!(text.contains("kubedirector_cluster_time_to_configured_seconds_count{app=\"centos7x\"} 1"));
        addr.send(MetricEvent::ClusterGone { uid: "c1".into() })
            .await
            .unwrap();
        let text = addr.send(Render).await.unwrap().unwrap();
        assert!(
            !text.contains("cluster=\"c1\""),
            "series of a deleted cluster remain:\n{text}"
        );
    }

    #[actix::test]
    async fn health_events_feed_the_client_go_and_webhook_families() {
        let addr = MetricsActor::new(Registry::new()).unwrap().start();
        let events = [
            MetricEvent::MailboxAdd { actor: "cluster" },
            MetricEvent::MailboxAdd { actor: "cluster" },
            MetricEvent::QueueTaken {
                name: "cluster",
                waited: Some(Duration::from_millis(3)),
            },
            MetricEvent::QueueWaited {
                name: CLUSTER_CONTROLLER,
                waited: Duration::from_millis(4),
            },
            MetricEvent::RestRequest {
                method: "GET",
                code: Some(200),
                duration: Duration::from_millis(2),
            },
            MetricEvent::RestRequest {
                method: "PATCH",
                code: None,
                duration: Duration::from_millis(2),
            },
            MetricEvent::Leader {
                name: "kubedirector-lock".into(),
                leader: true,
            },
            MetricEvent::WebhookRequest {
                kind: "KubeDirectorCluster",
                result: WebhookResult::Denied,
                duration: Duration::from_millis(1),
            },
            MetricEvent::CertificateExpiry {
                certificate: "webhook",
                not_after: UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            },
            MetricEvent::ExecFinished {
                operation: ExecOperation::StartScript,
                result: ExecResult::Failure,
                duration: Duration::from_secs(2),
            },
        ];
        for e in events {
            addr.send(e).await.unwrap();
        }
        let text = addr.send(Render).await.unwrap().unwrap();
        for line in [
            "workqueue_adds_total{name=\"kubedirectorcluster\"} 2",
            "workqueue_depth{name=\"kubedirectorcluster\"} 1",
            "workqueue_queue_duration_seconds_count{name=\"kubedirectorcluster\"} 2",
            "workqueue_queue_duration_seconds_sum{name=\"kubedirectorcluster\"} 0.007",
            "workqueue_depth{name=\"status_writer\"} 0",
            "rest_client_requests_total{code=\"200\",method=\"GET\"} 1",
            "rest_client_requests_total{code=\"<error>\",method=\"PATCH\"} 1",
            "rest_client_request_duration_seconds_count{verb=\"GET\"} 1",
            "leader_election_master_status{name=\"kubedirector-lock\"} 1",
            "kubedirector_webhook_requests_total{kind=\"KubeDirectorCluster\",result=\"denied\"} 1",
            "kubedirector_webhook_requests_total{kind=\"KubeDirectorApp\",result=\"allowed\"} 0",
            "kubedirector_webhook_requests_total{kind=\"PersistentVolumeClaim\",result=\"error\"} 0",
            "kubedirector_webhook_requests_total{kind=\"other\",result=\"error\"} 0",
            "kubedirector_certificate_expiry_timestamp_seconds{certificate=\"webhook\"} 2000000000",
            "kubedirector_exec_total{operation=\"startscript\",result=\"failure\"} 1",
            "kubedirector_exec_total{operation=\"notify\",result=\"success\"} 0",
            "kubedirector_exec_duration_seconds_count{operation=\"startscript\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[actix::test]
    async fn an_exec_job_reports_its_operation_result_and_duration() {
        let addr = MetricsActor::new(Registry::new()).unwrap().start();
        let job = ExecJob::start(ExecOperation::ConfigMeta, "team", "c1", "kdss-abcde-0");
        let ev = job.span().in_scope(|| job.finished(ExecResult::Success));
        assert!(matches!(
            ev,
            MetricEvent::ExecFinished {
                operation: ExecOperation::ConfigMeta,
                result: ExecResult::Success,
                ..
            }
        ));
        addr.send(ev).await.unwrap();
        let text = addr.send(Render).await.unwrap().unwrap();
        assert!(text.contains("kubedirector_exec_total{operation=\"configmeta\",result=\"success\"} 1"));
        assert!(!text.contains("kdss-abcde-0"), "members never become labels");
    }

    #[test]
    fn exported_names_cover_every_family_and_histogram_series() {
        let names = exported_series_names().unwrap();
        for n in [
            "controller_runtime_reconcile_time_seconds_bucket",
            "workqueue_depth",
            "kubedirector_cluster_state",
            "kubedirector_cluster_seconds_since_state_change",
            "kubedirector_cluster_time_to_configured_seconds_count",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert!(!names
            .iter()
            .any(|x| x == "kubedirector_cluster_seconds_since_state_change_bucket"));
        assert_eq!(names.len(), 23 + 7 * 4);
    }

    #[test]
    fn registering_twice_in_one_registry_is_an_error_not_a_panic() {
        let r = Registry::new();
        assert!(MetricsActor::new(r.clone()).is_ok());
        let err = MetricsActor::new(r).err().map(|e| e.category());
        assert_eq!(err, Some("register"));
    }
}
