//! The ClusterActor's bookkeeping between passes, as plain data and functions (no actix, no
//! clock, no I/O), so every decision the actor makes about a pass is unit-tested here:
//!
//! * [`Tracker::accept`] turns a [`Plan`] into the commands to execute: the planner's commands
//!   with repeated periodic events dropped ([`PeriodicEvents`], spec R23), then the kdcluster
//!   metadata patch ([`metadata_patch`]: finalizer and annotations) and the status write, both as
//!   [`Command`]s, last; a stale plan counts towards adopting the stored token;
//! * the status token (`generationUID` last written, spec 3.2 step 7 / R25): remembered once
//!   the status write succeeded ([`Tracker::status_written`]), adopted without a write after a
//!   restart, forgotten on deletion or when the cache has moved past our last write and shows
//!   someone else's status ([`Tracker::accept`] on a stale plan);
//! * the pending status and the aborted-pass message, kept until the pass ends;
//! * status coalescing: a status change that only moves observation details (container states,
//!   scheduling messages, the rollup flags) is held back for up to a window and written with the
//!   next real change, or alone once the window has passed ([`detail_only`]);
//! * [`Overlay`]: read-your-writes for objects the cache has not shown yet.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::plan::{Command, FinalizerChange, MetadataPatch, Observed, Outcome, Plan, TokenUpdate};
use kubedirector_crds::wire::FINALIZER;

mod coalesce;
mod overlay;
pub use coalesce::{detail_only, progress_only};
pub use overlay::{Overlay, OverlayKind};

/// Event messages upstream repeats on every pass while waiting (spec R23), by prefix; the
/// restore pass's waiting messages (spec 3.15) and the conflict with someone else's object of one
/// of our names among them.
const PERIODIC: [&str; 9] = [
    "waiting for replicas count",
    "initial config ongoing",
    "cluster spec change processing blocked",
    "being restored: awaiting",
    "being restored: cluster service",
    "being restored: statefulset",
    "being restored: member service",
    "being restored: connected",
    crate::plan::NOT_OURS,
];

/// How many distinct periodic messages are remembered before the memory is reset.
const PERIODIC_MEMORY: usize = 256;

/// Spec R23: the messages upstream repeats on every pass while waiting are recorded once per
/// spec generation. Every other event is always recorded.
#[derive(Debug, Default)]
pub struct PeriodicEvents {
    generation: i64,
    seen: HashSet<String>,
}

impl PeriodicEvents {
    /// `true` when an event with `message` seen at `generation` is to be recorded.
    pub fn first(&mut self, generation: i64, message: &str) -> bool {
        if !PERIODIC.iter().any(|p| message.starts_with(p)) {
            return true;
        }
        if self.generation != generation || self.seen.len() > PERIODIC_MEMORY {
            self.generation = generation;
            self.seen.clear();
        }
        self.seen.insert(message.to_string())
    }
}

/// The metadata patch that applies a plan's finalizer change and annotations to the kdcluster
/// whose metadata is `meta` (precondition: its resourceVersion). Empty when nothing changes.
pub fn metadata_patch(
    finalizer: FinalizerChange,
    annotations: &std::collections::BTreeMap<String, Option<String>>,
    meta: &ObjectMeta,
) -> MetadataPatch {
    let mut patch = MetadataPatch {
        resource_version: meta.resource_version.clone(),
        annotations: annotations.clone(),
        ..Default::default()
    };
    let current: Vec<String> = meta.finalizers.clone().unwrap_or_default();
    let has = current.iter().any(|f| f == FINALIZER);
    match finalizer {
        FinalizerChange::None => {}
        FinalizerChange::Add if !has => {
            let mut f = current;
            f.push(FINALIZER.to_string());
            patch.finalizers = Some(f);
        }
        FinalizerChange::Remove if has => {
            patch.finalizers = Some(current.into_iter().filter(|f| f != FINALIZER).collect());
        }
        FinalizerChange::Add | FinalizerChange::Remove => {}
    }
    patch
}

/// What the actor does with a plan.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// The cache is stale (R25): no side effects; retry. `adopted` is `true` when the token
    /// was just dropped so that the next pass adopts the stored status.
    Stale {
        /// The stored token is adopted on the next pass.
        adopted: bool,
    },
    /// Execute these commands in order.
    Execute(Vec<Command>),
    /// Drop this plan unexecuted (as if the pass had not run): it only reports progress that
    /// the next watch event is about to extend. Run a pass by `until` at the latest.
    Hold {
        /// When the held progress must be written even if nothing else happens.
        until: Instant,
    },
}

/// Per-kdcluster bookkeeping of the ClusterActor. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Tracker {
    token: Option<String>,
    periodic: PeriodicEvents,
    pending_token: Option<TokenUpdate>,
    /// The resourceVersions the kdcluster had before the pending status write landed: the one
    /// the pass observed and the one our own metadata patch produced.
    pending_from: Vec<String>,
    /// [`Self::pending_from`] of the last status write that succeeded: while the cache shows
    /// one of these versions, it has simply not caught up with our write yet.
    written_from: Vec<String>,
    aborted: Option<String>,
    /// How long a details-only status change may wait for a real one ([`detail_only`]).
    detail_window: Duration,
    /// When the oldest held-back details-only change was first planned.
    detail_since: Option<Instant>,
    /// Set by a pass that held its status back: when a pass must run to write it.
    deferred: Option<Instant>,
}

impl Tracker {
    /// A tracker with no token (a new or adopted cluster) that writes every status change.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that holds details-only status changes back for up to `window`.
    pub fn with_detail_window(window: Duration) -> Self {
        Self {
            detail_window: window,
            ..Self::default()
        }
    }

    /// Takes the time by which a pass must run to write a held-back status, if the last pass
    /// held one back.
    pub fn take_deferred(&mut self) -> Option<Instant> {
        self.deferred.take()
    }

    /// The `generationUID` this actor last wrote (or adopted): [`Observed::expected_generation_uid`].
    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// Takes the plan computed from `observed` and returns what to do with it.
    pub fn accept(&mut self, plan: Plan, observed: &Observed) -> Decision {
        self.accept_at(plan, observed, Instant::now())
    }

    /// [`Self::accept`] at time `now` (coalescing of details-only changes).
    pub fn accept_at(&mut self, plan: Plan, observed: &Observed, now: Instant) -> Decision {
        self.deferred = None;
        // A restore pass (spec 3.15) is executed like any other, never held back.
        if plan.outcome == Outcome::Stale {
            // Our status write moved the object from one of `written_from` to its successor
            // (the write's precondition). A cache still at one of those versions has not
            // shown our write yet: wait for its watch event. A cache at any other version is
            // past our write and carries someone else's status (a restore, an edit):
            // adopt it now, since waiting would never end.
            let cached = observed.cluster.metadata.resource_version.as_deref();
            let behind = cached.is_some_and(|rv| self.written_from.iter().any(|w| w == rv));
            if !behind {
                self.token = None;
                self.written_from.clear();
            }
            return Decision::Stale { adopted: !behind };
        }
        let meta = &observed.cluster.metadata;
        let generation = meta.generation.unwrap_or_default();
        if let Some(until) = self.hold_until(&plan, observed, now) {
            return Decision::Hold { until };
        }
        let mut commands = plan.commands;
        commands.retain(|c| match c {
            Command::Event(ev) => self.periodic.first(generation, &ev.message),
            _ => true,
        });
        let mut patch = metadata_patch(plan.finalizer, &plan.annotations, meta);
        patch.labels = plan.labels;
        if !patch.is_empty() {
            commands.push(Command::PatchClusterMetadata(patch));
        }
        let deleted = plan.outcome == Outcome::Deleted;
        self.pending_token = None;
        let hold = plan.status_changed
            && !deleted
            && plan.outcome == Outcome::Done
            && !self.detail_window.is_zero()
            && detail_only(observed.cluster.status.as_ref(), &plan.status)
            && {
                let since = *self.detail_since.get_or_insert(now);
                let due = since + self.detail_window;
                let hold = now < due;
                if hold {
                    self.deferred = Some(due);
                }
                hold
            };
        if hold {
            // Written later (with the next real change or when due); the token stays that of
            // the status in the cache.
        } else if plan.status_changed && !deleted {
            self.detail_since = None;
            match serde_json::to_value(&plan.status) {
                Ok(status) => {
                    commands.push(Command::WriteStatus {
                        status,
                        resource_version: meta.resource_version.clone(),
                    });
                    self.pending_token = Some(plan.token);
                    self.pending_from = meta.resource_version.iter().cloned().collect();
                }
                Err(e) => tracing::error!(error = %e, "status does not serialize"),
            }
        } else if deleted || plan.token == TokenUpdate::Forget {
            self.token = None;
        } else if let TokenUpdate::Set(t) = plan.token {
            // Adoption without a write (operator restart).
            self.token = Some(t);
        }
        // Like upstream's epilogue, an aborted pass still persists what it has (status,
        // finalizer); the retry with backoff comes after.
        self.aborted = match plan.outcome {
            Outcome::Failed(msg) => Some(msg),
            _ => None,
        };
        Decision::Execute(commands)
    }

    /// `Some(due)` when `plan` may be dropped unexecuted: it changes the status only by member
    /// progress or observation details, has nothing to do but record events, and the window
    /// since the first such plan has not passed.
    fn hold_until(&mut self, plan: &Plan, observed: &Observed, now: Instant) -> Option<Instant> {
        let stored = observed.cluster.status.as_ref();
        let holdable = plan.status_changed
            && !self.detail_window.is_zero()
            && plan.outcome == Outcome::Done
            && plan.finalizer == FinalizerChange::None
            && plan.annotations.is_empty()
            && observed.guest.is_empty()
            && plan.commands.iter().all(|c| matches!(c, Command::Event(_)))
            && (detail_only(stored, &plan.status) || progress_only(stored, &plan.status));
        if !holdable {
            return None;
        }
        let due = *self.detail_since.get_or_insert(now) + self.detail_window;
        (now < due).then_some(due)
    }

    /// The pass's metadata patch succeeded and left the kdcluster at `resource_version`, the
    /// precondition of the status write that follows it.
    pub fn metadata_patched(&mut self, resource_version: String) {
        if self.pending_token.is_some() {
            self.pending_from.push(resource_version);
        }
    }

    /// The status write of the pass succeeded: remember its token, and the versions the cache
    /// may still show until it catches up with the write.
    pub fn status_written(&mut self) {
        if let Some(TokenUpdate::Set(t)) = self.pending_token.take() {
            self.token = Some(t);
            self.written_from = std::mem::take(&mut self.pending_from);
        }
    }

    /// The pass's writes failed or the status was not written: nothing to remember, nothing
    /// left to report.
    pub fn writes_failed(&mut self) {
        self.pending_token = None;
        self.pending_from.clear();
        self.aborted = None;
    }

    /// `true` when the cache shows a kdcluster newer than `precondition`, the resourceVersion a
    /// rejected status write was computed from: the change that made it conflict is already
    /// visible, so a new pass can re-plan right away instead of waiting for a watch event.
    pub fn cache_moved_past(precondition: &str, cached: Option<&str>) -> bool {
        cached.is_some_and(|rv| rv != precondition)
    }

    /// The pass's writes all succeeded (or no status was to be written): `Err` with the
    /// planner's message when the planner aborted the pass.
    pub fn finish(&mut self) -> Result<(), String> {
        self.pending_token = None;
        self.aborted.take().map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kubedirector_crds::cluster::{ClusterState, KubeDirectorClusterStatus};

    use super::*;
    use crate::plan::{EventReason, PlanEvent};
    use kubedirector_crds::wire::ANNOTATION_STATUS_BACKUP_EXISTS;

    fn meta(finalizers: &[&str], rv: &str) -> ObjectMeta {
        ObjectMeta {
            finalizers: Some(finalizers.iter().map(|f| (*f).to_owned()).collect()),
            resource_version: Some(rv.to_owned()),
            generation: Some(3),
            ..Default::default()
        }
    }

    fn observed(finalizers: &[&str], rv: &str) -> Observed {
        let mut o = Observed::default();
        o.cluster.metadata = meta(finalizers, rv);
        o
    }

    fn event(msg: &str) -> Command {
        Command::Event(PlanEvent::normal(EventReason::Role, msg))
    }

    fn plan(outcome: Outcome) -> Plan {
        Plan::noop(KubeDirectorClusterStatus::default(), outcome)
    }

    fn changed(token: &str) -> Plan {
        let mut p = plan(Outcome::Done);
        p.status.state = ClusterState::Creating;
        p.status.generation_uid = token.to_owned();
        p.status_changed = true;
        p.token = TokenUpdate::Set(token.to_owned());
        p
    }

    fn commands(d: Decision) -> Vec<Command> {
        match d {
            Decision::Execute(c) => c,
            other => panic!("not executed: {other:?}"),
        }
    }

    #[test]
    fn periodic_events_are_recorded_once_per_generation() {
        let mut p = PeriodicEvents::default();
        let waiting = "waiting for replicas count for role{x}: 0 -> 1";
        assert!(p.first(1, waiting));
        assert!(!p.first(1, waiting));
        assert!(p.first(1, "waiting for replicas count for role{y}: 0 -> 1"));
        assert!(p.first(2, waiting), "a new generation records it again");
        assert!(p.first(2, "stable"));
        assert!(p.first(2, "stable"), "other events are always recorded");
        let awaiting = "being restored: awaiting kdapp x (auto catalog)";
        assert!(p.first(2, awaiting));
        assert!(!p.first(2, awaiting));
        assert!(p.first(2, "being restored: kdstatusbackup is present"));
        assert!(p.first(2, "being restored: kdstatusbackup is present"));
    }

    #[test]
    fn finalizer_is_added_only_when_missing_and_removed_only_when_present() {
        let none = BTreeMap::new();
        let add = metadata_patch(FinalizerChange::Add, &none, &meta(&["other"], "7"));
        assert_eq!(
            add.finalizers,
            Some(vec!["other".to_owned(), FINALIZER.to_owned()])
        );
        assert_eq!(add.resource_version.as_deref(), Some("7"));
        assert!(metadata_patch(FinalizerChange::Add, &none, &meta(&[FINALIZER], "7")).is_empty());
        let remove = metadata_patch(FinalizerChange::Remove, &none, &meta(&["a", FINALIZER, "b"], "7"));
        assert_eq!(remove.finalizers, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(metadata_patch(FinalizerChange::Remove, &none, &meta(&["a"], "7")).is_empty());
        assert!(metadata_patch(FinalizerChange::None, &none, &meta(&[], "7")).is_empty());
        let ann = BTreeMap::from([(
            ANNOTATION_STATUS_BACKUP_EXISTS.to_owned(),
            Some("false".to_owned()),
        )]);
        let patch = metadata_patch(FinalizerChange::None, &ann, &meta(&[], "7"));
        assert_eq!(patch.annotations, ann);
        assert_eq!(patch.finalizers, None);
    }

    #[test]
    fn plan_commands_are_followed_by_the_metadata_patch_then_the_status_write() {
        let mut t = Tracker::new();
        let mut p = changed("g1");
        p.finalizer = FinalizerChange::Add;
        p.commands = vec![event("new"), Command::DeletePvc { name: "p".into() }];
        let c = commands(t.accept(p, &observed(&[], "5")));
        assert_eq!(c.len(), 4);
        assert_eq!(c[..2], [event("new"), Command::DeletePvc { name: "p".into() }]);
        assert!(
            matches!(&c[2], Command::PatchClusterMetadata(m) if m.finalizers == Some(vec![FINALIZER.to_owned()]))
        );
        match &c[3] {
            Command::WriteStatus {
                status,
                resource_version,
            } => {
                assert_eq!(status["generationUID"], "g1");
                assert_eq!(resource_version.as_deref(), Some("5"));
            }
            other => panic!("not a status write: {other:?}"),
        }
    }

    #[test]
    fn repeated_waiting_events_are_dropped_from_the_commands() {
        let mut t = Tracker::new();
        let waiting = "waiting for replicas count for role{x}: 0 -> 1";
        let mut p = plan(Outcome::Done);
        p.commands = vec![event(waiting)];
        assert_eq!(
            commands(t.accept(p.clone(), &observed(&[FINALIZER], "1"))),
            vec![event(waiting)]
        );
        assert!(commands(t.accept(p, &observed(&[FINALIZER], "2"))).is_empty());
    }

    #[test]
    fn token_is_remembered_only_after_the_status_write_succeeded() {
        let mut t = Tracker::new();
        t.accept(changed("g1"), &observed(&[FINALIZER], "1"));
        assert_eq!(t.token(), None);
        t.writes_failed();
        t.status_written();
        assert_eq!(t.token(), None, "a failed write leaves nothing pending");
        t.accept(changed("g2"), &observed(&[FINALIZER], "1"));
        t.status_written();
        assert_eq!(t.token().as_deref(), Some("g2"));
        assert_eq!(t.finish(), Ok(()));
    }

    #[test]
    fn stored_token_is_adopted_without_a_write_and_forgotten_on_deletion() {
        let mut t = Tracker::new();
        let mut p = plan(Outcome::Done);
        p.token = TokenUpdate::Set("stored".into());
        assert!(commands(t.accept(p, &observed(&[FINALIZER], "1"))).is_empty());
        assert_eq!(t.token().as_deref(), Some("stored"));
        let mut p = plan(Outcome::Deleted);
        p.finalizer = FinalizerChange::Remove;
        p.status_changed = true;
        let c = commands(t.accept(p, &observed(&[FINALIZER], "2")));
        assert!(
            matches!(c.as_slice(), [Command::PatchClusterMetadata(_)]),
            "no status write on deletion"
        );
        assert_eq!(t.token(), None);
    }

    #[test]
    fn a_cache_behind_our_write_waits_and_one_past_it_adopts_the_stored_token() {
        let mut t = Tracker::new();
        let mut p = changed("g1");
        p.finalizer = FinalizerChange::Add;
        t.accept(p, &observed(&[], "1"));
        // Our metadata patch moved the object to 2, the status write to 3.
        t.metadata_patched("2".into());
        t.status_written();
        for _ in 0..20 {
            for behind in ["1", "2"] {
                assert_eq!(
                    t.accept(plan(Outcome::Stale), &observed(&[], behind)),
                    Decision::Stale { adopted: false },
                    "however many passes the cache lags at {behind}, the token is kept"
                );
            }
        }
        assert_eq!(t.token().as_deref(), Some("g1"));
        // The cache is at 3 with our token: a normal pass.
        t.accept(plan(Outcome::Done), &observed(&[FINALIZER], "3"));
        assert_eq!(t.token().as_deref(), Some("g1"));
        // Later someone else replaced the status (version 4 with another token): adopted at once.
        assert_eq!(
            t.accept(plan(Outcome::Stale), &observed(&[FINALIZER], "4")),
            Decision::Stale { adopted: true }
        );
        assert_eq!(t.token(), None);
    }

    #[test]
    fn a_restore_pass_writes_its_status_and_removes_the_label_last() {
        let mut t = Tracker::with_detail_window(std::time::Duration::from_secs(60));
        let mut p = changed("r1");
        p.outcome = Outcome::Restoring;
        p.commands = vec![event("being restored: kdstatusbackup is present")];
        let c = commands(t.accept(p, &observed(&[], "4")));
        assert!(
            matches!(c.last(), Some(Command::WriteStatus { .. })),
            "never held back"
        );
        t.status_written();
        assert_eq!(t.token().as_deref(), Some("r1"));
        let mut p = plan(Outcome::Restoring);
        p.labels
            .insert(kubedirector_crds::wire::LABEL_RESTORING.to_owned(), None);
        let c = commands(t.accept(p, &observed(&[], "5")));
        match c.as_slice() {
            [Command::PatchClusterMetadata(m)] => {
                assert!(m.ends_restore());
                assert_eq!(m.resource_version.as_deref(), Some("5"));
                assert_eq!(m.finalizers, None, "no finalizer handling while restoring");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_status_write_leaves_the_versions_of_the_last_good_write() {
        let mut t = Tracker::new();
        t.accept(changed("g1"), &observed(&[FINALIZER], "5"));
        t.status_written();
        t.accept(changed("g2"), &observed(&[FINALIZER], "6"));
        t.writes_failed();
        assert_eq!(
            t.accept(plan(Outcome::Stale), &observed(&[FINALIZER], "5")),
            Decision::Stale { adopted: false }
        );
        assert_eq!(
            t.accept(plan(Outcome::Stale), &observed(&[FINALIZER], "6")),
            Decision::Stale { adopted: true },
            "6 is past our write of g1 (5 -> 6) and does not carry it"
        );
    }

    #[test]
    fn a_conflict_is_replanned_at_once_when_the_cache_shows_a_newer_version() {
        assert!(Tracker::cache_moved_past("5", Some("6")));
        assert!(!Tracker::cache_moved_past("5", Some("5")));
        assert!(!Tracker::cache_moved_past("5", None));
    }

    #[test]
    fn aborted_pass_still_writes_then_finishes_with_the_planner_message() {
        let mut t = Tracker::new();
        let mut p = changed("g1");
        p.outcome = Outcome::Failed("failed to sync roles: x".into());
        let c = commands(t.accept(p, &observed(&[FINALIZER], "1")));
        assert!(matches!(c.last(), Some(Command::WriteStatus { .. })));
        t.status_written();
        assert_eq!(t.finish(), Err("failed to sync roles: x".to_owned()));
        assert_eq!(t.finish(), Ok(()));
        let mut p = plan(Outcome::Failed("x".into()));
        p.status_changed = false;
        t.accept(p, &observed(&[FINALIZER], "1"));
        t.writes_failed();
        assert_eq!(t.finish(), Ok(()), "a failed write reports its own error instead");
    }
}
