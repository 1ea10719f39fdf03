//! ClusterActor: one per KubeDirectorCluster, a thin adapter over the pure planner
//! ([`crate::plan::reconcile`]) and the pure pass bookkeeping ([`crate::tracker`]): messages in,
//! commands out.
//!
//! Who sends: the WatcherActor ([`Trigger`] on every relevant watch event, coalesced through a
//! shared "pending" flag, and [`Shutdown`] after the cluster is gone), the CatalogActor
//! ([`Trigger`] when the kdapp changes), the StatusWriter ([`StatusWriteOutcome`]).
//!
//! A pass: observe (the reflector caches plus the tracker's read-your-writes
//! [`Overlay`]) → plan → [`Tracker::accept`] (drops repeated periodic events, appends the
//! metadata patch and the status write as commands) → execute the commands in order
//! (`exec`: StatefulSet writes through one [`RoleActor`] per role, Services and PVC deletions
//! through the [`MemberServiceActor`], events through the
//! [`EventRecorder`](crate::ports::EventRecorder) port, the metadata patch through the
//! [`ClusterApi`](crate::ports::ClusterApi) port, the status through the StatusWriter). The
//! mailbox is never blocked: execution is a spawned actor future whose result comes back into
//! the actor; an `in_flight` flag keeps passes from interleaving and a `dirty` flag re-runs the
//! pass once when triggers arrived meanwhile.
//!
//! Errors (STYLE R9, through [`crate::retry`], [`ClusterError`]): 409/429/5xx/transport →
//! exponential backoff with jitter and a re-trigger; invalid object or missing app → wait for a
//! change (the Warning event comes from the planner); anything else → bounded requeue. A stale
//! cache (the status token does not match the last status this actor wrote, spec R25) means no
//! side effects at all. A stale cache and a 409 on the status write are not failures: the watch
//! event that brings the cache up to date triggers the next pass (a 409 whose cause the cache
//! already shows re-plans at once), and a short jittered timer (`cache_recheck`, doubling up to
//! 8x) is the safety net, never the minute-long backoff of real failures.
//!
//! Configuration jobs (spec 4): a pass's [`Command::RunGuestJob`]s are started as one
//! [`ConfigJobActor`] per member job once the pass's writes succeeded ([`jobs::Jobs`]); their
//! [`JobFinished`] comes back like a watch event, is shown to the next pass through
//! [`Observed::guest`], and is dropped once a pass that saw it succeeded.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use actix::prelude::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kubedirector_crds::KubeDirectorCluster;
use tracing::Instrument;

use self::exec::{execute, observed_uids, ExecEnv, Executed};
use self::jobs::{JobRequest, Jobs};
use crate::{
    catalog::{DropInterest, RegisterInterest},
    config_job::{CancelJob, ConfigJobActor, JobFinished, JobSpec},
    member_service::MemberServiceActor,
    messages::{OwnedDeleted, Shutdown, Trigger, TriggerReason},
    metrics::{MetricEvent, ReconcileResult, CLUSTER_CONTROLLER},
    plan::{self, Command, Observed, PlanContext},
    ports::{ApiError, InvolvedObject, ObjectKey},
    retry::{FailureClass, Retrier, RetryDecision},
    role::RoleActor,
    status_writer::{ForgetCluster, StatusWriteOutcome},
    tokens::TokenTable,
    tracker::{Decision, Overlay, OverlayKind, Tracker},
};

mod deps;
mod error;
mod exec;
pub mod jobs;
mod storage;

pub use deps::{ClusterDeps, ClusterSettings, GuestDeps};
pub use error::ClusterError;

/// Internal: run a pass now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct RunPass;

/// The per-cluster actor.
pub struct ClusterActor {
    uid: String,
    key: ObjectKey,
    deps: ClusterDeps,
    pending: Arc<AtomicBool>,
    tracker: Tracker,
    retrier: Retrier,
    /// Safety-net delays while waiting for the cache (stale pass, status conflict).
    cache_wait: Retrier,
    in_flight: bool,
    dirty: bool,
    scheduled: bool,
    roles: HashMap<String, Addr<RoleActor>>,
    services: Option<Addr<MemberServiceActor>>,
    overlay: Overlay,
    retry_timer: Option<SpawnHandle>,
    resync_timer: Option<SpawnHandle>,
    pass_started: Option<Instant>,
    /// When the oldest event not yet handled by a pass was queued.
    queued_since: Option<Instant>,
    app_missing: bool,
    passes: u64,
    span: tracing::Span,
    gone: bool,
    jobs: Jobs<Addr<ConfigJobActor>>,
    requeue: bool,
    requeue_streak: u32,
    requeue_timer: Option<SpawnHandle>,
    /// Runs the pass that writes a held-back details-only status.
    detail_timer: Option<SpawnHandle>,
    /// Storage-initialisation progress probes (spec 3.10).
    storage: storage::StoragePoller,
}

impl ClusterActor {
    /// The actor of the kdcluster `key` with uid `uid`. `pending` is the coalescing flag shared
    /// with the WatcherActor: set by the watcher when it queues a [`Trigger`], cleared here when
    /// the trigger is taken.
    pub fn new(uid: String, key: ObjectKey, deps: ClusterDeps, pending: Arc<AtomicBool>) -> Self {
        let span = tracing::info_span!("cluster", k8s.namespace = %key.namespace, k8s.name = %key.name, k8s.uid = %uid);
        let retrier = Retrier::with_intervals(deps.settings.retry_initial, deps.settings.retry_max);
        let tracker = Tracker::with_detail_window(deps.settings.status_detail_window);
        let recheck = deps.settings.cache_recheck;
        let cache_wait = Retrier::with_intervals(recheck, recheck * 8);
        Self {
            uid,
            key,
            deps,
            pending,
            tracker,
            retrier,
            cache_wait,
            in_flight: false,
            dirty: false,
            scheduled: false,
            roles: HashMap::new(),
            services: None,
            overlay: Overlay::default(),
            retry_timer: None,
            resync_timer: None,
            pass_started: None,
            queued_since: None,
            app_missing: false,
            passes: 0,
            span,
            gone: false,
            jobs: Jobs::new(),
            requeue: false,
            requeue_streak: 0,
            requeue_timer: None,
            detail_timer: None,
            storage: storage::StoragePoller::default(),
        }
    }

    fn metric(&self, ev: MetricEvent) {
        if let Some(m) = &self.deps.metrics {
            m.do_send(ev);
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.scheduled {
            self.scheduled = true;
            let debounce = self.deps.settings.debounce;
            if debounce.is_zero() {
                ctx.notify(RunPass);
            } else {
                ctx.notify_later(RunPass, debounce);
            }
        }
    }

    fn involved(&self) -> InvolvedObject {
        InvolvedObject {
            api_version: KubeDirectorCluster::api_version(&()).into_owned(),
            kind: KubeDirectorCluster::kind(&()).into_owned(),
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            uid: Some(self.uid.clone()),
        }
    }

    /// Reads everything the planner looks at from the caches (plus the overlay).
    fn observe(&mut self) -> Option<Observed> {
        let caches = &self.deps.caches;
        let guard = caches.cluster(&self.key)?;
        let cluster = match &guard.0 {
            Ok(c) => c.clone(),
            Err(invalid) => {
                tracing::warn!(parent: &self.span, error = %invalid.error, "KubeDirectorCluster cannot be decoded; waiting for a change");
                return None;
            }
        };
        if cluster.metadata.uid.as_deref() != Some(self.uid.as_str()) {
            return None;
        }
        let (ns, name, uid) = (&self.key.namespace, &self.key.name, &self.uid);
        let app = caches
            .catalog
            .lookup(ns, &cluster.spec.app, cluster.spec.app_catalog.as_ref())
            .map(|a| (*a).clone());
        self.app_missing = app.is_none();
        let mut observed = Observed {
            app,
            config: caches.global_config(),
            statefulsets: caches.statefulsets.owned(ns, name, uid),
            pods: caches.pods.owned(ns, name, uid),
            services: caches.services.owned(ns, name, uid),
            pvcs: caches.pvcs.owned(ns, name, uid),
            expected_generation_uid: self.tracker.token(),
            guest: self.jobs.view(),
            connections: crate::connections::connected_objects(caches, &cluster),
            status_backup: caches
                .status_backups
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
                .map(|b| (*b).clone()),
            storage_probes: self.storage.probes(),
            cluster,
        };
        self.overlay
            .apply(&mut observed, Instant::now(), self.deps.settings.overlay_ttl);
        Some(observed)
    }

    fn role_actor(&mut self, sts: &str) -> Addr<RoleActor> {
        let api = Arc::clone(&self.deps.ports.api);
        let ns = self.key.namespace.clone();
        self.roles
            .entry(sts.to_string())
            .or_insert_with(|| RoleActor::new(ObjectKey::new(ns, sts), api).start())
            .clone()
    }

    fn run_pass(&mut self, ctx: &mut Context<Self>) {
        self.scheduled = false;
        if self.gone {
            return;
        }
        if self.in_flight {
            self.dirty = true;
            return;
        }
        if let Some(since) = self.queued_since.take() {
            self.metric(MetricEvent::QueueWaited {
                name: CLUSTER_CONTROLLER,
                waited: since.elapsed(),
            });
        }
        let Some(observed) = self.observe() else {
            return;
        };
        self.passes += 1;
        let span = tracing::debug_span!(parent: &self.span, "reconcile", reconcile_id = self.passes,
            generation = observed.cluster.metadata.generation.unwrap_or_default());
        let _enter = span.enter();
        let pass_ctx = PlanContext {
            configcli: self.deps.settings.jobs.configcli.is_some(),
            now: Time(self.deps.ports.clock.now()),
            kd_namespace: self.deps.settings.kd_namespace.clone(),
            new_generation_uid: uuid::Uuid::new_v4().to_string(),
            auth_token_seed: uuid::Uuid::new_v4().to_string(),
        };
        self.deps.register_interest.do_send(RegisterInterest {
            uid: self.uid.clone(),
            keys: self.deps.caches.catalog.candidate_keys(
                &self.key.namespace,
                &observed.cluster.spec.app,
                observed.cluster.spec.app_catalog.as_ref(),
            ),
            recipient: ctx.address().recipient(),
        });
        let started = Instant::now();
        let plan = plan::reconcile(&observed, &pass_ctx);
        tracing::debug!(outcome = ?plan.outcome, commands = plan.commands.len(), status_changed = plan.status_changed, "planned");
        self.requeue = plan.requeue;
        self.poll_storage(&plan.status, ctx);
        let commands = match self.tracker.accept(plan, &observed) {
            Decision::Stale { adopted } => {
                self.pass_started = Some(started);
                self.metric(MetricEvent::ReconcileStarted {
                    controller: CLUSTER_CONTROLLER,
                });
                if adopted {
                    // The cache is past our last write and shows another status: adopt it now.
                    tracing::info!(resource_version = ?observed.cluster.metadata.resource_version,
                        "status replaced by another writer; adopting the stored status");
                    self.dirty = true;
                }
                self.finish(Err(ClusterError::Stale), ctx);
                return;
            }
            Decision::Hold { until } => {
                // Progress the next watch event extends: nothing executed, nothing written;
                // that event (or the timer, at the latest) runs the pass again.
                tracing::debug!("status progress held back to coalesce with the next change");
                self.arm_detail_timer(until, ctx);
                return;
            }
            Decision::Execute(commands) => commands,
        };
        // Configuration jobs start once this pass's writes succeeded (`finish`).
        let commands: Vec<Command> = commands
            .into_iter()
            .filter_map(|c| match c {
                Command::RunGuestJob {
                    pod,
                    container_id,
                    job,
                    ..
                } => {
                    self.jobs.request(JobRequest {
                        pod,
                        container_id,
                        job,
                    });
                    None
                }
                other => Some(other),
            })
            .collect();
        self.in_flight = true;
        self.pass_started = Some(started);
        self.metric(MetricEvent::ReconcileStarted {
            controller: CLUSTER_CONTROLLER,
        });

        // Child actors for the StatefulSets named by the commands.
        for c in &commands {
            let name = match c {
                Command::EnsureStatefulSet(s) => s.metadata.name.clone(),
                Command::PatchStatefulSetMetadata { name, .. } | Command::DeleteStatefulSet { name } => {
                    Some(name.clone())
                }
                Command::SetReplicas { statefulset, .. } => Some(statefulset.clone()),
                _ => None,
            };
            if let Some(n) = name {
                self.role_actor(&n);
            }
        }
        let services = match &self.services {
            Some(a) => a.clone(),
            None => {
                let a = MemberServiceActor::new(self.key.namespace.clone(), Arc::clone(&self.deps.ports.api))
                    .start();
                self.services = Some(a.clone());
                a
            }
        };
        let env = ExecEnv {
            ports: self.deps.ports.clone(),
            involved: self.involved(),
            uid: self.uid.clone(),
            key: self.key.clone(),
            roles: self.roles.clone(),
            services,
            timeout: self.deps.settings.call_timeout,
            write_status: self.deps.write_status.clone(),
            reply_to: ctx.address().recipient(),
            uids: observed_uids(&observed),
        };
        let fut = execute(commands, env).instrument(span.clone());
        drop(_enter);
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| act.executed(res, ctx)));
    }

    fn executed(&mut self, res: Executed, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for s in res.created_sts {
            self.overlay.created_statefulset(s, now);
        }
        for s in res.applied_svc {
            self.overlay.applied_service(s, now);
        }
        if let Some(rv) = res.metadata_rv {
            self.tracker.metadata_patched(rv);
        }
        for (kind, name) in res.foreign {
            self.overlay.foreign(kind, name, now);
        }
        for (kind, name) in res.deleted {
            if kind == OverlayKind::StatefulSet {
                self.roles.remove(&name);
            }
            self.overlay.deleted(kind, name, now);
        }
        match res.result {
            Err(e) => {
                self.tracker.writes_failed();
                self.finish(Err(e), ctx);
            }
            // The pass stays in flight until the StatusWriter answers.
            Ok(true) => {}
            Ok(false) => self.finish_pass(ctx),
        }
    }

    /// Ends a pass whose writes all succeeded: success, unless the planner aborted it.
    fn finish_pass(&mut self, ctx: &mut Context<Self>) {
        let result = self.tracker.finish().map_err(ClusterError::Aborted);
        self.finish(result, ctx);
    }

    fn finish(&mut self, result: Result<(), ClusterError>, ctx: &mut Context<Self>) {
        self.in_flight = false;
        self.publish_token();
        let duration = self.pass_started.take().map(|t| t.elapsed()).unwrap_or_default();
        let metric_result;
        if let Some(h) = self.retry_timer.take() {
            ctx.cancel_future(h);
        }
        match result {
            Err(ClusterError::Stale) => {
                // Not a failure: the cache has not shown our last status write yet.
                self.jobs.pass_failed();
                metric_result = ReconcileResult::RequeueAfter;
                self.await_cache(ctx);
            }
            Err(ClusterError::Status {
                source: ApiError::Conflict { .. },
            }) if self.dirty => {
                // The change that made the write conflict already triggered a pass.
                self.jobs.pass_failed();
                metric_result = ReconcileResult::RequeueAfter;
                self.metric(MetricEvent::ApiError { category: "conflict" });
            }
            Err(ClusterError::Status {
                source: ApiError::Conflict { .. },
            }) => {
                self.jobs.pass_failed();
                metric_result = ReconcileResult::RequeueAfter;
                self.metric(MetricEvent::ApiError { category: "conflict" });
                self.await_cache(ctx);
            }
            Ok(()) => {
                self.retrier.on_success();
                self.cache_wait.on_success();
                if let Some(due) = self.tracker.take_deferred() {
                    self.arm_detail_timer(due, ctx);
                }
                metric_result = ReconcileResult::Success;
                self.start_jobs(ctx);
                if !std::mem::take(&mut self.requeue) {
                    self.requeue_streak = 0;
                } else if self.requeue_timer.is_none() {
                    // A failing notification or an unresponsive systemd is retried with a doubling
                    // delay (spec 7 R13), capped at 64 times the base.
                    let delay = self.deps.settings.requeue_after * 2u32.pow(self.requeue_streak.min(6));
                    self.requeue_streak += 1;
                    self.requeue_timer = Some(ctx.run_later(delay, |act, ctx| {
                        act.requeue_timer = None;
                        act.schedule(ctx);
                    }));
                }
                if let Some(h) = self.resync_timer.take() {
                    ctx.cancel_future(h);
                }
                self.resync_timer = Some(ctx.run_later(self.deps.settings.resync, |act, ctx| {
                    act.resync_timer = None;
                    act.schedule(ctx);
                }));
            }
            Err(e) => {
                self.jobs.pass_failed();
                let class = e.class(self.app_missing);
                let decision = self.retrier.on_failure(class);
                if !matches!(e, ClusterError::Stale) {
                    tracing::warn!(parent: &self.span, error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string),
                        attempts = self.retrier.attempts(), ?decision, "pass failed");
                }
                metric_result = match decision {
                    RetryDecision::AwaitChange => ReconcileResult::Error,
                    _ if matches!(e, ClusterError::Stale) => ReconcileResult::RequeueAfter,
                    _ => ReconcileResult::Error,
                };
                if let ClusterError::Command { source, .. }
                | ClusterError::Metadata { source }
                | ClusterError::Status { source } = &e
                {
                    self.metric(MetricEvent::ApiError {
                        category: source.category(),
                    });
                }
                match decision {
                    RetryDecision::Backoff(d) | RetryDecision::Requeue(d) => {
                        self.retry_timer = Some(ctx.run_later(d, |act, ctx| {
                            act.retry_timer = None;
                            act.schedule(ctx);
                        }));
                    }
                    RetryDecision::AwaitChange => {}
                }
            }
        }
        self.metric(MetricEvent::ReconcileFinished {
            controller: CLUSTER_CONTROLLER,
            result: metric_result,
            duration,
        });
        // After failed passes too: a cluster that keeps failing is the one to watch.
        self.report_state();
        if self.dirty {
            self.dirty = false;
            self.schedule(ctx);
        }
    }

    /// Runs a pass at `due` (unless one is armed already) to write a held-back status.
    fn arm_detail_timer(&mut self, due: Instant, ctx: &mut Context<Self>) {
        if self.detail_timer.is_none() {
            let delay = due.saturating_duration_since(Instant::now());
            self.detail_timer = Some(ctx.run_later(delay, |act, ctx| {
                act.detail_timer = None;
                act.schedule(ctx);
            }));
        }
    }

    /// The resourceVersion of the kdcluster in the cache.
    fn cached_resource_version(&self) -> Option<String> {
        let guard = self.deps.caches.cluster(&self.key)?;
        guard.0.as_ref().ok()?.metadata.resource_version.clone()
    }

    /// Waits for the cache to catch up (its watch event triggers the next pass); a jittered,
    /// short, capped timer re-checks in case no event comes.
    fn await_cache(&mut self, ctx: &mut Context<Self>) {
        let delay = match self.cache_wait.on_failure(FailureClass::Transient) {
            RetryDecision::Backoff(d) | RetryDecision::Requeue(d) => d,
            RetryDecision::AwaitChange => self.deps.settings.cache_recheck,
        };
        self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.retry_timer = None;
            act.schedule(ctx);
        }));
    }

    /// Shares the status token with the admission webhook (rule C-7) through the caches; a
    /// token already recorded keeps its "validated" mark.
    fn publish_token(&self) {
        let tokens = &self.deps.caches.tokens;
        match self.tracker.token() {
            Some(_) if self.gone => tokens.forget(TokenTable::Cluster, &self.uid),
            Some(t) => {
                if tokens
                    .get(TokenTable::Cluster, &self.uid)
                    .is_none_or(|old| old.generation_uid != t)
                {
                    tokens.record(TokenTable::Cluster, &self.uid, &t);
                }
            }
            None => tokens.forget(TokenTable::Cluster, &self.uid),
        }
    }

    /// Starts the jobs the last (successful) pass asked for, one ConfigJobActor each.
    fn start_jobs(&mut self, ctx: &mut Context<Self>) {
        let requests = self.jobs.pass_succeeded();
        if requests.is_empty() {
            return;
        }
        let Some(guest) = self.deps.guest.clone() else {
            tracing::warn!(parent: &self.span, jobs = requests.len(),
                "members need in-guest configuration but this operator has no exec port; they stay in creating");
            return;
        };
        for (id, req) in requests {
            let spec = JobSpec {
                id,
                pod: ObjectKey::new(self.key.namespace.clone(), req.pod.clone()),
                container_id: req.container_id,
                job: req.job.clone(),
            };
            let addr = ConfigJobActor::new(
                spec,
                Arc::clone(&guest.exec),
                Arc::clone(&guest.probe),
                self.deps.settings.jobs.clone(),
                ctx.address().recipient(),
            )
            .start();
            self.jobs.started(id, req.pod, req.job, addr);
        }
    }

    /// Feeds the per-cluster progress metrics: the cached object, whole (the metrics actor
    /// derives every series from it).
    fn report_state(&self) {
        let Some(guard) = self.deps.caches.cluster(&self.key) else {
            return;
        };
        let Ok(cluster) = &guard.0 else {
            return;
        };
        self.metric(MetricEvent::ClusterObserved {
            uid: self.uid.clone(),
            cluster: Box::new(cluster.clone()),
        });
    }
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        tracing::debug!(parent: &self.span, "cluster actor started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.in_flight {
            self.metric(MetricEvent::ReconcileAbandoned {
                controller: CLUSTER_CONTROLLER,
            });
        }
        for job in self.jobs.drain_running() {
            job.do_send(CancelJob);
        }
        self.deps.drop_interest.do_send(DropInterest {
            uid: self.uid.clone(),
        });
        if self.gone {
            self.deps.caches.tokens.forget(TokenTable::Cluster, &self.uid);
            self.deps.forget_status.do_send(ForgetCluster {
                uid: self.uid.clone(),
            });
            self.metric(MetricEvent::ClusterGone {
                uid: self.uid.clone(),
            });
        }
        tracing::debug!(parent: &self.span, "cluster actor stopped");
    }
}

impl Handler<OwnedDeleted> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: OwnedDeleted, _ctx: &mut Self::Context) {
        self.overlay.gone(msg.kind, &msg.name, msg.uid.as_deref());
    }
}

impl Handler<Trigger> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: Trigger, ctx: &mut Self::Context) {
        if self.pending.swap(false, Ordering::SeqCst) {
            // The watcher's queued trigger (counted in `workqueue_depth`) is taken.
            self.metric(MetricEvent::QueueTaken {
                name: CLUSTER_CONTROLLER,
                waited: None,
            });
        }
        self.queued_since = Some(self.queued_since.map_or(msg.queued_at, |t| t.min(msg.queued_at)));
        tracing::trace!(parent: &self.span, reason = msg.reason.as_str(), "trigger");
        if msg.reason == TriggerReason::AppChanged || msg.reason == TriggerReason::ConfigChanged {
            // A dependency changed: any "wait for a change" is over.
            self.retrier.on_success();
        }
        self.schedule(ctx);
    }
}

impl Handler<RunPass> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _msg: RunPass, ctx: &mut Self::Context) {
        self.run_pass(ctx);
    }
}

impl Handler<StatusWriteOutcome> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: StatusWriteOutcome, ctx: &mut Self::Context) {
        if matches!(msg, StatusWriteOutcome::Superseded { .. }) {
            return;
        }
        match msg {
            StatusWriteOutcome::Written { .. } => {
                self.tracker.status_written();
                self.finish_pass(ctx);
            }
            StatusWriteOutcome::Conflict {
                uid,
                resource_version,
            } => {
                // The object moved on: re-plan from the fresh cache (never overlay a stale
                // status, R25) at once when the cache already shows the change, else on its
                // watch event (the recheck timer is the safety net).
                let cached = self.cached_resource_version();
                let moved = Tracker::cache_moved_past(&resource_version, cached.as_deref());
                tracing::debug!(parent: &self.span, precondition = %resource_version, cached = ?cached,
                    moved, "status write conflict");
                if moved {
                    self.dirty = true;
                }
                self.tracker.writes_failed();
                self.finish(
                    Err(ClusterError::Status {
                        source: ApiError::Conflict {
                            kind: "KubeDirectorCluster".into(),
                            key: self.key.to_string(),
                            message: format!("cluster {uid} changed since it was read"),
                        },
                    }),
                    ctx,
                );
            }
            StatusWriteOutcome::Gone { .. } => {
                self.tracker.writes_failed();
                self.finish(Ok(()), ctx);
            }
            StatusWriteOutcome::Failed { error, .. } => {
                self.tracker.writes_failed();
                self.finish(Err(ClusterError::Status { source: error }), ctx);
            }
            StatusWriteOutcome::Superseded { .. } => {}
        }
    }
}

/// The `kubedirector_exec_*` event of a finished configuration job.
fn exec_metric(msg: &JobFinished) -> MetricEvent {
    use crate::{
        config_job::JobError,
        metrics::{ExecOperation, ExecResult},
        plan::config::script::GuestReport,
    };
    let operation = match msg.operation {
        "configmeta" => ExecOperation::ConfigMeta,
        "notify" => ExecOperation::Notify,
        _ => ExecOperation::StartScript,
    };
    let result = match &msg.result {
        Ok(
            GuestReport::Configured { exit: 0, .. }
            | GuestReport::ConfigWritten
            | GuestReport::Notified { failed: None, .. },
        ) => ExecResult::Success,
        Ok(_) => ExecResult::Failure,
        Err(JobError::Exec(e)) if e.contains("timed out") => ExecResult::Timeout,
        Err(_) => ExecResult::Error,
    };
    MetricEvent::ExecFinished {
        operation,
        result,
        duration: msg.duration,
    }
}

impl Handler<JobFinished> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: JobFinished, ctx: &mut Self::Context) {
        let outcome = match &msg.result {
            Ok(_) => "ok",
            Err(e) => e.category(),
        };
        tracing::debug!(parent: &self.span, pod = %msg.pod, operation = msg.operation, outcome,
            execs = msg.execs, duration_ms = u64::try_from(msg.duration.as_millis()).unwrap_or(u64::MAX), "configuration job finished");
        self.metric(exec_metric(&msg));
        if self.jobs.finished(&msg) {
            self.schedule(ctx);
        }
    }
}

impl Handler<Shutdown> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The kdcluster was deleted: stop for good and drop everything kept for it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ClusterGone;

impl Handler<ClusterGone> for ClusterActor {
    type Result = ();

    fn handle(&mut self, _msg: ClusterGone, ctx: &mut Self::Context) {
        self.gone = true;
        ctx.stop();
    }
}
