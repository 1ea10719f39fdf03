//! ClusterActor: one per KubeDirectorCluster, a thin adapter over the pure planner
//! ([`crate::plan::reconcile`]).
//!
//! Who sends: the WatcherActor ([`Trigger`] on every relevant watch event, coalesced through a
//! shared "pending" flag, and [`Shutdown`] after the cluster is gone), the CatalogActor
//! ([`Trigger`] when the kdapp changes), the StatusWriter ([`StatusWriteOutcome`]).
//!
//! A pass: observe (the reflector caches plus the actor's read-your-writes overlay) → plan →
//! execute the commands in order (StatefulSet writes through one [`RoleActor`] per role,
//! Services and PVC deletions through the [`MemberServiceActor`], events through the
//! [`EventRecorder`](crate::ports::EventRecorder) port) → metadata patch (finalizer,
//! annotations) → status through the StatusWriter. The mailbox is never blocked: execution is a
//! spawned actor future whose result comes back into the actor; an `in_flight` flag keeps passes
//! from interleaving and a `dirty` flag re-runs the pass once when triggers arrived meanwhile.
//!
//! Errors (STYLE R9, through [`crate::retry`]): 409/429/5xx/transport → exponential backoff with
//! jitter and a re-trigger; invalid object or missing app → wait for a change (the Warning event
//! comes from the planner); anything else → bounded requeue. A stale cache (the status token
//! does not match the last status this actor wrote, spec R25) means no side effects at all.
//! `StartMemberSetup` commands are logged at debug level only (configuration injection is not
//! implemented yet).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::Resource;
use kubedirector_crds::KubeDirectorCluster;
use tracing::Instrument;

use crate::{
    caches::Caches,
    catalog::{DropInterest, RegisterInterest},
    member_service::{MemberServiceActor, MemberWrite},
    messages::{Shutdown, Trigger, TriggerReason},
    metrics::{MetricEvent, ReconcileResult, CLUSTER_CONTROLLER},
    plan::{self, Command, FinalizerChange, Observed, Outcome, PlanContext, TokenUpdate},
    ports::{ApiError, EventRecord, EventType, InvolvedObject, MetadataPatch, ObjectKey, Ports},
    retry::{FailureClass, Retrier, RetryDecision},
    role::{RoleActor, RoleWrite, RoleWritten},
    status_writer::{ForgetCluster, StatusWriteOutcome, WriteStatus},
};

/// Errors of a cluster pass.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A command's API call failed.
    #[error("{command} failed")]
    Command {
        /// Which command (kind and object name).
        command: String,
        /// Cause.
        #[source]
        source: ApiError,
    },
    /// A child actor did not answer.
    #[error("{actor} did not answer")]
    Mailbox {
        /// Child actor type.
        actor: &'static str,
        /// Cause.
        #[source]
        source: MailboxError,
    },
    /// The metadata patch (finalizer, annotations) failed.
    #[error("metadata patch failed")]
    Metadata {
        /// Cause.
        #[source]
        source: ApiError,
    },
    /// The status write was rejected or the object changed under it.
    #[error("status write failed")]
    Status {
        /// Cause.
        #[source]
        source: ApiError,
    },
    /// The planner aborted the pass (spec 3.2 `failed to sync …`).
    #[error("pass aborted: {0}")]
    Aborted(String),
    /// The cache is older than our last status write (spec R25).
    #[error("cache is stale")]
    Stale,
}

impl ClusterError {
    /// Bounded label.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Command { source, .. }
            | ClusterError::Metadata { source }
            | ClusterError::Status { source } => source.category(),
            ClusterError::Mailbox { .. } => "mailbox",
            ClusterError::Aborted(_) => "aborted",
            ClusterError::Stale => "stale",
        }
    }

    fn class(&self, app_missing: bool) -> FailureClass {
        match self {
            ClusterError::Command { source, .. }
            | ClusterError::Metadata { source }
            | ClusterError::Status { source } => {
                if source.is_transient() {
                    FailureClass::Transient
                } else if matches!(source, ApiError::Rejected { .. }) {
                    FailureClass::NeedsChange
                } else {
                    FailureClass::Other
                }
            }
            ClusterError::Aborted(_) if app_missing => FailureClass::NeedsChange,
            ClusterError::Aborted(_) | ClusterError::Stale => FailureClass::Transient,
            ClusterError::Mailbox { .. } => FailureClass::Other,
        }
    }
}

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
    /// After this many consecutive stale passes, adopt the stored status token.
    pub stale_adopt_after: u32,
    /// Run no pass before every watch (all seven kinds) has delivered its initial list, so no
    /// pass sees a half-filled cache (e.g. "app does not exist" at start-up).
    pub initial_sync: bool,
    /// Delay between the first trigger and the pass it schedules, so a burst of watch events
    /// (pods starting together, a relist) is observed by one pass and costs one status write.
    pub debounce: Duration,
    /// Number of watch streams per namespaced kind (one per watched namespace, 1 for all).
    pub watch_scopes: usize,
    /// Number of kdapp watch streams (the watched namespaces plus the KubeDirector one).
    pub app_scopes: usize,
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
            stale_adopt_after: 8,
            initial_sync: true,
            debounce: Duration::from_millis(50),
            watch_scopes: 1,
            app_scopes: 1,
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
}

/// Internal: run a pass now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct RunPass;

/// Internal: the execution of a plan finished.
struct Executed {
    result: Result<Option<String>, ClusterError>,
    created_sts: Vec<StatefulSet>,
    applied_svc: Vec<Service>,
    deleted: Vec<(&'static str, String)>,
}

/// What the actor writes back after a plan executed.
struct PendingStatus {
    status: serde_json::Value,
    token: TokenUpdate,
}

/// Read-your-writes overlay: objects written by this actor that the cache has not shown yet.
#[derive(Default)]
struct Overlay {
    statefulsets: HashMap<String, (StatefulSet, Instant)>,
    services: HashMap<String, (Service, Instant)>,
    deleted: HashMap<(&'static str, String), Instant>,
}

impl Overlay {
    fn apply(&mut self, observed: &mut Observed, ttl: Duration) {
        let now = Instant::now();
        self.statefulsets
            .retain(|name, (_, t)| !observed.statefulsets.contains_key(name) && now - *t < ttl);
        self.services
            .retain(|name, (_, t)| !observed.services.contains_key(name) && now - *t < ttl);
        for (name, (o, _)) in &self.statefulsets {
            observed.statefulsets.insert(name.clone(), o.clone());
        }
        for (name, (o, _)) in &self.services {
            observed.services.insert(name.clone(), o.clone());
        }
        self.deleted.retain(|(kind, name), t| {
            let present = match *kind {
                "StatefulSet" => observed.statefulsets.remove(name).is_some(),
                "Service" => observed.services.remove(name).is_some(),
                "PersistentVolumeClaim" => observed.pvcs.remove(name).is_some(),
                _ => false,
            };
            present && now - *t < ttl
        });
    }
}

/// The per-cluster actor.
pub struct ClusterActor {
    uid: String,
    key: ObjectKey,
    deps: ClusterDeps,
    pending: Arc<AtomicBool>,
    token: Option<String>,
    retrier: Retrier,
    in_flight: bool,
    dirty: bool,
    scheduled: bool,
    stale_passes: u32,
    roles: HashMap<String, Addr<RoleActor>>,
    services: Option<Addr<MemberServiceActor>>,
    overlay: Overlay,
    retry_timer: Option<SpawnHandle>,
    resync_timer: Option<SpawnHandle>,
    pass_started: Option<Instant>,
    pending_status: Option<PendingStatus>,
    app_missing: bool,
    observed_rv: Option<String>,
    aborted: Option<String>,
    passes: u64,
    periodic_events: (i64, std::collections::HashSet<String>),
    span: tracing::Span,
    gone: bool,
}

impl ClusterActor {
    /// The actor of the kdcluster `key` with uid `uid`. `pending` is the coalescing flag shared
    /// with the WatcherActor: set by the watcher when it queues a [`Trigger`], cleared here when
    /// the trigger is taken.
    pub fn new(uid: String, key: ObjectKey, deps: ClusterDeps, pending: Arc<AtomicBool>) -> Self {
        let span = tracing::info_span!("cluster", k8s.namespace = %key.namespace, k8s.name = %key.name, k8s.uid = %uid);
        let retrier = Retrier::with_intervals(deps.settings.retry_initial, deps.settings.retry_max);
        Self {
            uid,
            key,
            deps,
            pending,
            token: None,
            retrier,
            in_flight: false,
            dirty: false,
            scheduled: false,
            stale_passes: 0,
            roles: HashMap::new(),
            services: None,
            overlay: Overlay::default(),
            retry_timer: None,
            resync_timer: None,
            pass_started: None,
            pending_status: None,
            app_missing: false,
            observed_rv: None,
            aborted: None,
            passes: 0,
            periodic_events: (0, std::collections::HashSet::new()),
            span,
            gone: false,
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
            statefulsets: Caches::owned(&caches.statefulsets, ns, name, uid),
            pods: Caches::owned(&caches.pods, ns, name, uid),
            services: Caches::owned(&caches.services, ns, name, uid),
            pvcs: Caches::owned(&caches.pvcs, ns, name, uid),
            expected_generation_uid: self.token.clone(),
            cluster,
        };
        self.overlay.apply(&mut observed, self.deps.settings.overlay_ttl);
        Some(observed)
    }

    /// Spec R23: the messages upstream repeats on every pass while waiting are recorded once per
    /// spec generation. Every other event is always recorded.
    fn first_periodic_event(&mut self, generation: i64, message: &str) -> bool {
        const PERIODIC: [&str; 3] = [
            "waiting for replicas count",
            "initial config ongoing",
            "cluster spec change processing blocked",
        ];
        if !PERIODIC.iter().any(|p| message.starts_with(p)) {
            return true;
        }
        let (seen_generation, seen) = &mut self.periodic_events;
        if *seen_generation != generation || seen.len() > 256 {
            *seen_generation = generation;
            seen.clear();
        }
        seen.insert(message.to_string())
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
        let Some(observed) = self.observe() else {
            return;
        };
        self.passes += 1;
        let span = tracing::debug_span!(parent: &self.span, "reconcile", reconcile_id = self.passes,
            generation = observed.cluster.metadata.generation.unwrap_or_default());
        let _enter = span.enter();
        let pass_ctx = PlanContext {
            now: Time(self.deps.ports.clock.now()),
            kd_namespace: self.deps.settings.kd_namespace.clone(),
            new_generation_uid: uuid::Uuid::new_v4().to_string(),
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
        match &plan.outcome {
            Outcome::Stale => {
                self.stale_passes += 1;
                if self.stale_passes >= self.deps.settings.stale_adopt_after {
                    tracing::warn!("status token never caught up; adopting the stored status");
                    self.token = None;
                    self.stale_passes = 0;
                }
                self.pass_started = Some(started);
                self.metric(MetricEvent::ReconcileStarted {
                    controller: CLUSTER_CONTROLLER,
                });
                self.finish(Err(ClusterError::Stale), ctx);
                return;
            }
            Outcome::Restoring => {
                tracing::debug!("restoring; restore pass not handled by this operator version");
                return;
            }
            _ => self.stale_passes = 0,
        }
        self.in_flight = true;
        self.pass_started = Some(started);
        self.metric(MetricEvent::ReconcileStarted {
            controller: CLUSTER_CONTROLLER,
        });
        self.observed_rv = observed.cluster.metadata.resource_version.clone();

        // Child actors for the StatefulSets named by the commands.
        for c in &plan.commands {
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
        let generation = observed.cluster.metadata.generation.unwrap_or_default();
        let mut commands = plan.commands;
        commands.retain(|c| match c {
            Command::Event(ev) => self.first_periodic_event(generation, &ev.message),
            _ => true,
        });
        let roles = self.roles.clone();
        let services = match &self.services {
            Some(a) => a.clone(),
            None => {
                let a = MemberServiceActor::new(self.key.namespace.clone(), Arc::clone(&self.deps.ports.api))
                    .start();
                self.services = Some(a.clone());
                a
            }
        };

        let mut meta = MetadataPatch {
            resource_version: observed.cluster.metadata.resource_version.clone(),
            annotations: plan.annotations.clone(),
            ..Default::default()
        };
        let current: Vec<String> = observed.cluster.metadata.finalizers.clone().unwrap_or_default();
        match plan.finalizer {
            FinalizerChange::None => {}
            FinalizerChange::Add => {
                if !current.iter().any(|f| f == plan::FINALIZER) {
                    let mut f = current.clone();
                    f.push(plan::FINALIZER.to_string());
                    meta.finalizers = Some(f);
                }
            }
            FinalizerChange::Remove => {
                if current.iter().any(|f| f == plan::FINALIZER) {
                    meta.finalizers = Some(current.into_iter().filter(|f| f != plan::FINALIZER).collect());
                }
            }
        }
        let deleted = plan.outcome == Outcome::Deleted;
        self.pending_status = if plan.status_changed && !deleted {
            match serde_json::to_value(&plan.status) {
                Ok(status) => Some(PendingStatus {
                    status,
                    token: plan.token.clone(),
                }),
                Err(e) => {
                    tracing::error!(error = %e, "status does not serialize");
                    None
                }
            }
        } else {
            if deleted || matches!(plan.token, TokenUpdate::Forget) {
                self.token = None;
            } else if let TokenUpdate::Set(t) = &plan.token {
                // Adoption without a write (operator restart).
                self.token = Some(t.clone());
            }
            None
        };
        // Like upstream's epilogue, an aborted pass still persists what it has (status,
        // finalizer); the retry with backoff comes after.
        self.aborted = match &plan.outcome {
            Outcome::Failed(msg) => Some(msg.clone()),
            _ => None,
        };
        let fut = execute(
            commands,
            ExecEnv {
                ports: self.deps.ports.clone(),
                involved: self.involved(),
                key: self.key.clone(),
                roles,
                services,
                timeout: self.deps.settings.call_timeout,
                meta,
            },
        )
        .instrument(span.clone());
        drop(_enter);
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| act.executed(res, ctx)));
    }

    fn executed(&mut self, res: Executed, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for s in res.created_sts {
            if let Some(n) = s.metadata.name.clone() {
                self.overlay.deleted.remove(&("StatefulSet", n.clone()));
                self.overlay.statefulsets.insert(n, (s, now));
            }
        }
        for s in res.applied_svc {
            if let Some(n) = s.metadata.name.clone() {
                self.overlay.deleted.remove(&("Service", n.clone()));
                self.overlay.services.insert(n, (s, now));
            }
        }
        for (kind, name) in res.deleted {
            match kind {
                "StatefulSet" => {
                    self.overlay.statefulsets.remove(&name);
                    self.roles.remove(&name);
                }
                "Service" => {
                    self.overlay.services.remove(&name);
                }
                _ => {}
            }
            self.overlay.deleted.insert((kind, name), now);
        }
        match res.result {
            Err(e) => {
                self.pending_status = None;
                self.aborted = None;
                self.finish(Err(e), ctx);
            }
            Ok(new_rv) => {
                let Some(pending) = self.pending_status.as_ref() else {
                    self.finish_pass(ctx);
                    return;
                };
                // The precondition is the version the status was computed from (or our own
                // metadata patch on top of it): never a newer cached version (R25).
                let Some(rv) = new_rv.or_else(|| self.observed_rv.clone()) else {
                    self.pending_status = None;
                    self.finish_pass(ctx);
                    return;
                };
                // The pass stays in flight until the StatusWriter answers.
                self.deps.write_status.do_send(WriteStatus {
                    uid: self.uid.clone(),
                    key: self.key.clone(),
                    resource_version: rv,
                    status: pending.status.clone(),
                    reply_to: Some(ctx.address().recipient()),
                });
            }
        }
    }

    /// Ends a pass whose writes all succeeded: success, unless the planner aborted it.
    fn finish_pass(&mut self, ctx: &mut Context<Self>) {
        match self.aborted.take() {
            Some(msg) => self.finish(Err(ClusterError::Aborted(msg)), ctx),
            None => self.finish(Ok(()), ctx),
        }
    }

    fn finish(&mut self, result: Result<(), ClusterError>, ctx: &mut Context<Self>) {
        self.in_flight = false;
        let duration = self.pass_started.take().map(|t| t.elapsed()).unwrap_or_default();
        let metric_result;
        if let Some(h) = self.retry_timer.take() {
            ctx.cancel_future(h);
        }
        match result {
            Ok(()) => {
                self.retrier.on_success();
                metric_result = ReconcileResult::Success;
                if let Some(h) = self.resync_timer.take() {
                    ctx.cancel_future(h);
                }
                self.resync_timer = Some(ctx.run_later(self.deps.settings.resync, |act, ctx| {
                    act.resync_timer = None;
                    act.schedule(ctx);
                }));
            }
            Err(e) => {
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

struct ExecEnv {
    ports: Ports,
    involved: InvolvedObject,
    key: ObjectKey,
    roles: HashMap<String, Addr<RoleActor>>,
    services: Addr<MemberServiceActor>,
    timeout: Duration,
    meta: MetadataPatch,
}

/// Executes the commands in order, then the metadata patch. Returns the new resourceVersion
/// of the kdcluster when the metadata patch ran.
async fn execute(commands: Vec<Command>, env: ExecEnv) -> Executed {
    let mut out = Executed {
        result: Ok(None),
        created_sts: Vec::new(),
        applied_svc: Vec::new(),
        deleted: Vec::new(),
    };
    let role = |name: &str| env.roles.get(name).cloned();
    for command in commands {
        let step: Result<(), ClusterError> = async {
            match command {
                Command::Event(ev) => {
                    let record = EventRecord {
                        involved: env.involved.clone(),
                        event_type: match ev.type_ {
                            plan::EventType::Normal => EventType::Normal,
                            plan::EventType::Warning => EventType::Warning,
                        },
                        reason: ev.reason.as_str().to_string(),
                        message: ev.message,
                    };
                    if let Err(e) = env.ports.events.record(record).await {
                        tracing::warn!(error = %e, "event not recorded");
                    }
                    Ok(())
                }
                Command::EnsureStatefulSet(sts) => {
                    let name = sts.metadata.name.clone().unwrap_or_default();
                    let stored = role_call(role(&name), RoleWrite::Create(Box::new(sts)), env.timeout, &name).await?;
                    if let RoleWritten::Stored(s) = stored {
                        out.created_sts.push(*s);
                    }
                    Ok(())
                }
                Command::PatchStatefulSetMetadata { name, metadata } => {
                    role_call(role(&name), RoleWrite::PatchMetadata(Box::new(metadata)), env.timeout, &name)
                        .await
                        .map(|_| ())
                }
                Command::SetReplicas {
                    statefulset,
                    replicas,
                } => role_call(role(&statefulset), RoleWrite::SetReplicas(replicas), env.timeout, &statefulset)
                    .await
                    .map(|_| ()),
                Command::DeleteStatefulSet { name } => {
                    role_call(role(&name), RoleWrite::Delete, env.timeout, &name).await?;
                    out.deleted.push(("StatefulSet", name));
                    Ok(())
                }
                Command::EnsureHeadlessService(svc) | Command::EnsureMemberService(svc) => {
                    let name = svc.metadata.name.clone().unwrap_or_default();
                    let stored = service_call(&env, MemberWrite::ApplyService(Box::new(svc)), &name).await?;
                    if let Some(s) = stored {
                        out.applied_svc.push(s);
                    }
                    Ok(())
                }
                Command::DeleteService { name } => {
                    service_call(&env, MemberWrite::DeleteService(name.clone()), &name).await?;
                    out.deleted.push(("Service", name));
                    Ok(())
                }
                Command::DeletePvc { name } => {
                    service_call(&env, MemberWrite::DeletePvc(name.clone()), &name).await?;
                    out.deleted.push(("PersistentVolumeClaim", name));
                    Ok(())
                }
                Command::StartMemberSetup {
                    role,
                    pod,
                    container_id,
                } => {
                    tracing::debug!(%role, %pod, %container_id, "member setup requested (configuration injection not implemented yet)");
                    Ok(())
                }
            }
        }
        .await;
        if let Err(e) = step {
            out.result = Err(e);
            return out;
        }
    }
    if !env.meta.is_empty() {
        match env
            .ports
            .api
            .patch_cluster_metadata(env.key.clone(), env.meta.clone())
            .await
        {
            Ok(rv) => out.result = Ok(Some(rv)),
            Err(source) => out.result = Err(ClusterError::Metadata { source }),
        }
    }
    out
}

async fn role_call(
    addr: Option<Addr<RoleActor>>,
    msg: RoleWrite,
    timeout: Duration,
    name: &str,
) -> Result<RoleWritten, ClusterError> {
    let Some(addr) = addr else {
        return Err(ClusterError::Aborted(format!(
            "no role actor for StatefulSet {name}"
        )));
    };
    let what = match &msg {
        RoleWrite::Create(_) => "create",
        RoleWrite::PatchMetadata(_) => "patch",
        RoleWrite::SetReplicas(_) => "scale",
        RoleWrite::Delete => "delete",
    };
    match addr.send(msg).timeout(timeout).await {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(source)) => Err(ClusterError::Command {
            command: format!("{what} StatefulSet {name}"),
            source,
        }),
        Err(source) => Err(ClusterError::Mailbox {
            actor: "role",
            source,
        }),
    }
}

async fn service_call(env: &ExecEnv, msg: MemberWrite, name: &str) -> Result<Option<Service>, ClusterError> {
    let what = match &msg {
        MemberWrite::ApplyService(_) => "apply Service",
        MemberWrite::DeleteService(_) => "delete Service",
        MemberWrite::DeletePvc(_) => "delete PVC",
    };
    match env.services.send(msg).timeout(env.timeout).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ClusterError::Command {
            command: format!("{what} {name}"),
            source,
        }),
        Err(source) => Err(ClusterError::Mailbox {
            actor: "member_service",
            source,
        }),
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
        self.deps.drop_interest.do_send(DropInterest {
            uid: self.uid.clone(),
        });
        if self.gone {
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
        let pending = self.pending_status.take();
        match msg {
            StatusWriteOutcome::Written { .. } => {
                if let Some(PendingStatus {
                    token: TokenUpdate::Set(t),
                    ..
                }) = pending
                {
                    self.token = Some(t);
                }
                self.finish_pass(ctx);
            }
            StatusWriteOutcome::Conflict { uid } => {
                // The object moved on: its watch event re-triggers a pass that re-plans from the
                // fresh cache (never overlay a stale status, R25); the backoff is the safety net.
                self.aborted = None;
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
                self.aborted = None;
                self.finish(Ok(()), ctx);
            }
            StatusWriteOutcome::Failed { error, .. } => {
                self.aborted = None;
                self.finish(Err(ClusterError::Status { source: error }), ctx);
            }
            StatusWriteOutcome::Superseded { .. } => {}
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
