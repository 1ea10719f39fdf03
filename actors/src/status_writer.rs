//! StatusWriter: the single writer of KubeDirectorCluster status subresources.
//!
//! Who sends: every ClusterActor, with [`WriteStatus`] (`try_send`/`do_send`, never awaited).
//! What it owns: at most one pending and one in-flight write per cluster. A newer status for a
//! cluster replaces the pending one (latest wins), so a burst of passes costs one write.
//! What it emits: a [`StatusWriteOutcome`] to the requesting ClusterActor.
//!
//! Every write carries the resourceVersion the status was computed from, as a precondition. A
//! 409 is *not* retried with the same status — that would overlay a status computed from a stale
//! read (spec R25). The cluster is told instead, re-reads the cache and plans again. 429/5xx and
//! transport failures are retried with jittered exponential backoff through timers (never a
//! blocking sleep, spec R2), unless a newer status has arrived meanwhile.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;

use crate::{
    metrics::MetricEvent,
    ports::{ApiError, ClusterApi, ObjectKey},
    retry::{FailureClass, Retrier, RetryDecision},
};

/// Writes `status` to the cluster's status subresource.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteStatus {
    /// Cluster uid (the coalescing key).
    pub uid: String,
    /// Namespace and name.
    pub key: ObjectKey,
    /// The resourceVersion the status was computed from (precondition).
    pub resource_version: String,
    /// The complete new status.
    pub status: serde_json::Value,
    /// Who gets the outcome.
    pub reply_to: Option<Recipient<StatusWriteOutcome>>,
}

/// The result of a status write, sent to the requesting cluster actor.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum StatusWriteOutcome {
    /// Written; the object now has this resourceVersion.
    Written {
        /// Cluster uid.
        uid: String,
        /// New resourceVersion.
        resource_version: String,
    },
    /// The object changed since the status was computed; re-plan from a fresh read.
    Conflict {
        /// Cluster uid.
        uid: String,
        /// The precondition the write carried (the version the status was computed from).
        resource_version: String,
    },
    /// The object no longer exists.
    Gone {
        /// Cluster uid.
        uid: String,
    },
    /// Rejected for a non-transient reason.
    Failed {
        /// Cluster uid.
        uid: String,
        /// The error.
        error: ApiError,
    },
    /// Replaced by a newer status before it was written.
    Superseded {
        /// Cluster uid.
        uid: String,
    },
}

/// Drops everything queued for a cluster (it was deleted).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ForgetCluster {
    /// Cluster uid.
    pub uid: String,
}

/// Asks whether nothing is pending or in flight (shutdown drains the writer with it).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct IsIdle;

/// Internal: run the pending write of a cluster now (after a backoff timer).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
struct Kick {
    uid: String,
}

/// Name of the status writer's queue in the `workqueue_*` metrics.
pub const QUEUE: &str = crate::metrics::STATUS_WRITER_QUEUE;
const ACTOR: &str = QUEUE;

/// The status writer actor.
pub struct StatusWriter {
    api: Arc<dyn ClusterApi>,
    metrics: Option<Recipient<MetricEvent>>,
    pending: HashMap<String, WriteStatus>,
    /// When each pending write was first queued (`workqueue_queue_duration_seconds`).
    queued_at: HashMap<String, Instant>,
    in_flight: HashSet<String>,
    waiting: HashSet<String>,
    retriers: HashMap<String, Retrier>,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl StatusWriter {
    /// A writer using `api`, reporting to `metrics`.
    pub fn new(api: Arc<dyn ClusterApi>, metrics: Option<Recipient<MetricEvent>>) -> Self {
        Self {
            api,
            metrics,
            pending: HashMap::new(),
            queued_at: HashMap::new(),
            in_flight: HashSet::new(),
            waiting: HashSet::new(),
            retriers: HashMap::new(),
            initial_backoff: crate::retry::INITIAL_INTERVAL,
            max_backoff: crate::retry::MAX_INTERVAL,
        }
    }

    /// Overrides the retry intervals (tests).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    fn metric(&self, ev: MetricEvent) {
        if let Some(m) = &self.metrics {
            m.do_send(ev);
        }
    }

    fn report_depth(&self) {
        self.metric(MetricEvent::MailboxDepth {
            actor: ACTOR,
            depth: i64::try_from(self.pending.len() + self.in_flight.len()).unwrap_or(i64::MAX),
        });
    }

    fn start(&mut self, uid: &str, ctx: &mut Context<Self>) {
        if self.in_flight.contains(uid) || self.waiting.contains(uid) {
            return;
        }
        let Some(req) = self.pending.remove(uid) else {
            return;
        };
        self.in_flight.insert(uid.to_string());
        let waited = self.queued_at.remove(uid).map(|t| t.elapsed());
        self.metric(MetricEvent::QueueTaken { name: QUEUE, waited });
        let started = Instant::now();
        let fut =
            self.api
                .write_cluster_status(req.key.clone(), req.resource_version.clone(), req.status.clone());
        let span = tracing::debug_span!("status_write", k8s.namespace = %req.key.namespace,
            k8s.name = %req.key.name, resource_version = %req.resource_version);
        ctx.spawn(
            tracing::Instrument::instrument(fut, span)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.metric(MetricEvent::WorkFinished {
                        name: QUEUE,
                        duration: started.elapsed(),
                    });
                    act.finished(req, res, ctx)
                }),
        );
    }

    fn finished(&mut self, req: WriteStatus, res: Result<String, ApiError>, ctx: &mut Context<Self>) {
        let uid = req.uid.clone();
        self.in_flight.remove(&uid);
        let reply = |outcome: StatusWriteOutcome| {
            if let Some(r) = &req.reply_to {
                r.do_send(outcome);
            }
        };
        match res {
            Ok(resource_version) => {
                self.retriers.remove(&uid);
                reply(StatusWriteOutcome::Written {
                    uid: uid.clone(),
                    resource_version,
                });
            }
            Err(ApiError::Conflict { .. }) => {
                self.metric(MetricEvent::ApiError { category: "conflict" });
                tracing::debug!(cluster = %req.key, precondition = %req.resource_version,
                    "status write conflict; cluster re-plans from a fresh read");
                reply(StatusWriteOutcome::Conflict {
                    uid: uid.clone(),
                    resource_version: req.resource_version.clone(),
                });
            }
            Err(ApiError::NotFound { .. }) => {
                self.retriers.remove(&uid);
                self.pending.remove(&uid);
                self.queued_at.remove(&uid);
                reply(StatusWriteOutcome::Gone { uid: uid.clone() });
            }
            Err(err) if err.is_transient() => {
                self.metric(MetricEvent::ApiError {
                    category: err.category(),
                });
                let (initial, max) = (self.initial_backoff, self.max_backoff);
                let retrier = self
                    .retriers
                    .entry(uid.clone())
                    .or_insert_with(|| Retrier::with_intervals(initial, max));
                let delay = match retrier.on_failure(FailureClass::Transient) {
                    RetryDecision::Backoff(d) | RetryDecision::Requeue(d) => d,
                    RetryDecision::AwaitChange => max,
                };
                tracing::warn!(cluster = %req.key, error = %err, delay_ms = delay.as_millis() as u64,
                    "status write failed; retrying");
                // Keep this status unless a newer one arrived meanwhile.
                if !self.pending.contains_key(&uid) {
                    self.pending.insert(uid.clone(), req);
                }
                self.queued_at.entry(uid.clone()).or_insert_with(Instant::now);
                self.metric(MetricEvent::QueueRetry { name: QUEUE });
                self.waiting.insert(uid.clone());
                ctx.notify_later(Kick { uid }, delay);
                self.report_depth();
                return;
            }
            Err(error) => {
                self.metric(MetricEvent::ApiError {
                    category: error.category(),
                });
                tracing::warn!(cluster = %req.key, %error, "status write rejected");
                reply(StatusWriteOutcome::Failed {
                    uid: uid.clone(),
                    error,
                });
            }
        }
        self.start(&uid, ctx);
        self.report_depth();
    }
}

impl Actor for StatusWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<WriteStatus> for StatusWriter {
    type Result = ();

    fn handle(&mut self, msg: WriteStatus, ctx: &mut Self::Context) {
        self.metric(MetricEvent::MailboxAdd { actor: ACTOR });
        let uid = msg.uid.clone();
        self.queued_at.entry(uid.clone()).or_insert_with(Instant::now);
        if let Some(old) = self.pending.insert(uid.clone(), msg) {
            if let Some(r) = &old.reply_to {
                r.do_send(StatusWriteOutcome::Superseded { uid: uid.clone() });
            }
        }
        self.start(&uid, ctx);
        self.report_depth();
    }
}

impl Handler<ForgetCluster> for StatusWriter {
    type Result = ();

    fn handle(&mut self, msg: ForgetCluster, _ctx: &mut Self::Context) {
        self.pending.remove(&msg.uid);
        self.queued_at.remove(&msg.uid);
        self.retriers.remove(&msg.uid);
        self.waiting.remove(&msg.uid);
        self.report_depth();
    }
}

impl Handler<IsIdle> for StatusWriter {
    type Result = bool;

    fn handle(&mut self, _msg: IsIdle, _ctx: &mut Self::Context) -> bool {
        self.pending.is_empty() && self.in_flight.is_empty()
    }
}

impl Handler<Kick> for StatusWriter {
    type Result = ();

    fn handle(&mut self, msg: Kick, ctx: &mut Self::Context) {
        if self.waiting.remove(&msg.uid) {
            self.start(&msg.uid, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::{mpsc, Semaphore};

    use super::*;
    use crate::ports::fake::FakeClusterApi;

    /// Collects outcomes into a channel.
    struct Collector(mpsc::UnboundedSender<StatusWriteOutcome>);
    impl Actor for Collector {
        type Context = Context<Self>;
    }
    impl Handler<StatusWriteOutcome> for Collector {
        type Result = ();
        fn handle(&mut self, msg: StatusWriteOutcome, _: &mut Self::Context) {
            let _ = self.0.send(msg);
        }
    }

    fn write(n: u32, reply: &Recipient<StatusWriteOutcome>) -> WriteStatus {
        WriteStatus {
            uid: "uid-1".into(),
            key: ObjectKey::new("ns", "c1"),
            resource_version: "10".into(),
            status: serde_json::json!({ "n": n }),
            reply_to: Some(reply.clone()),
        }
    }

    fn setup() -> (
        FakeClusterApi,
        Addr<StatusWriter>,
        Recipient<StatusWriteOutcome>,
        mpsc::UnboundedReceiver<StatusWriteOutcome>,
    ) {
        let api = FakeClusterApi::new();
        let writer = StatusWriter::new(Arc::new(api.clone()), None)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
            .start();
        let (tx, rx) = mpsc::unbounded_channel();
        let collector = Collector(tx).start().recipient();
        (api, writer, collector, rx)
    }

    #[actix::test]
    async fn writes_for_one_cluster_coalesce_to_the_latest_status() {
        let (api, writer, reply, mut rx) = setup();
        let gate = Arc::new(Semaphore::new(0));
        api.set_gate(gate.clone());
        for n in 1..=4 {
            writer.send(write(n, &reply)).await.unwrap();
        }
        // n=1 is in flight; 2 and 3 were superseded by 4.
        assert_eq!(
            rx.recv().await,
            Some(StatusWriteOutcome::Superseded { uid: "uid-1".into() })
        );
        assert_eq!(
            rx.recv().await,
            Some(StatusWriteOutcome::Superseded { uid: "uid-1".into() })
        );
        gate.add_permits(10);
        let mut written = 0;
        while written < 2 {
            if let Some(StatusWriteOutcome::Written { .. }) = rx.recv().await {
                written += 1;
            }
        }
        let writes = api.status_writes();
        let ns: Vec<_> = writes.iter().map(|(_, _, s)| s["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, vec![1, 4]);
        assert!(
            writes.iter().all(|(_, rv, _)| rv == "10"),
            "resourceVersion precondition kept"
        );
    }

    #[actix::test]
    async fn conflict_is_reported_and_the_stale_status_is_not_rewritten() {
        let (api, writer, reply, mut rx) = setup();
        api.fail_next([ApiError::Conflict {
            kind: "KubeDirectorCluster".into(),
            key: "ns/c1".into(),
            message: "stale".into(),
        }]);
        writer.send(write(1, &reply)).await.unwrap();
        assert_eq!(
            rx.recv().await,
            Some(StatusWriteOutcome::Conflict {
                uid: "uid-1".into(),
                resource_version: "10".into()
            })
        );
        // A fresh status (computed after re-reading) is written normally.
        writer
            .send(WriteStatus {
                resource_version: "11".into(),
                ..write(2, &reply)
            })
            .await
            .unwrap();
        assert!(matches!(
            rx.recv().await,
            Some(StatusWriteOutcome::Written { .. })
        ));
        let rvs: Vec<_> = api
            .status_writes()
            .into_iter()
            .map(|(_, rv, s)| (rv, s["n"].clone()))
            .collect();
        assert_eq!(
            rvs,
            vec![
                ("10".to_string(), serde_json::json!(1)),
                ("11".to_string(), serde_json::json!(2))
            ]
        );
    }

    #[actix::test]
    async fn server_errors_are_retried_with_backoff_until_written() {
        let (api, writer, reply, mut rx) = setup();
        api.fail_next([
            ApiError::Server {
                code: 503,
                message: "unavailable".into(),
            },
            ApiError::Throttled {
                message: "slow down".into(),
            },
        ]);
        writer.send(write(7, &reply)).await.unwrap();
        let outcome = rx.recv().await;
        assert!(
            matches!(outcome, Some(StatusWriteOutcome::Written { .. })),
            "{outcome:?}"
        );
        assert_eq!(api.status_writes().len(), 3);
    }

    #[actix::test]
    async fn a_deleted_cluster_is_reported_gone() {
        let (api, writer, reply, mut rx) = setup();
        api.fail_next([ApiError::NotFound {
            kind: "KubeDirectorCluster".into(),
            key: "ns/c1".into(),
        }]);
        writer.send(write(1, &reply)).await.unwrap();
        assert_eq!(
            rx.recv().await,
            Some(StatusWriteOutcome::Gone { uid: "uid-1".into() })
        );
        assert_eq!(api.status_writes().len(), 1);
    }
}
