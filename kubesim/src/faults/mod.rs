//! Fault injection and request accounting, shared by the HTTP server, the store and the
//! simulated node components (which read the pod/exec hooks).
//!
//! Everything here is interior-mutable and cheap to share (`Arc<Faults>`, `Arc<Metrics>`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

mod config;
mod metrics;
pub use config::{ErrorRule, FaultConfig, LatencyRule, PodFaults, ThrottleRule};
pub use metrics::{Metrics, MetricsSnapshot};

/// What an injected failure looks like on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Refused before the handler ran: this status code with a `Status` body.
    Error(u16),
    /// Refused by the overload filters: 429, plain-text body, `Retry-After` seconds.
    Throttled(u64),
}

/// How open watches are disturbed (see [`Faults::watch_control`]). Each counter is bumped by
/// one fault; a watch compares them with the values it started with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchControl {
    /// Bumped by [`Faults::drop_watches`]: open watches close.
    pub drop_gen: u64,
    /// Bumped by [`Faults::expire_watches`]: open watches end with a 410 `Expired` ERROR event.
    pub expire_gen: u64,
    /// Bumped by [`Faults::stall_watches`]: open watches stop delivering while `stall` holds.
    pub stall_gen: u64,
    /// The current stall.
    pub stall: Stall,
}

/// A watch stall: open watches stay connected and deliver nothing (no event, no bookmark, no
/// close) until it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stall {
    /// No stall.
    #[default]
    None,
    /// Until this instant.
    Until(tokio::time::Instant),
    /// Until [`Faults::clear_watch_stall`] or [`Faults::clear`].
    UntilCleared,
}

impl WatchControl {
    /// Whether a watch that started under `start` is stalled now.
    pub fn stalls(&self, start: &WatchControl) -> bool {
        self.stall_gen != start.stall_gen
            && match self.stall {
                Stall::None => false,
                Stall::Until(t) => tokio::time::Instant::now() < t,
                Stall::UntilCleared => true,
            }
    }
}

/// Live fault state.
#[derive(Debug)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    watch: watch::Sender<WatchControl>,
    force_gone_next_watch: AtomicBool,
    expire_continue: AtomicU64,
    stale_lists_at: Mutex<Option<u64>>,
    stale_lists_served: AtomicU64,
    throttled: Mutex<Vec<Throttled>>,
    refused: Mutex<BTreeMap<String, u64>>,
}

/// One request refused by a [`ThrottleRule`] (see [`Faults::throttled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// When it arrived.
    pub at: tokio::time::Instant,
    /// The client (user agent up to the first `/`).
    pub client: String,
    /// `METHOD path?query`: a client retrying the same request repeats it.
    pub request: String,
    /// The `Retry-After` it was given, in seconds.
    pub retry_after_seconds: u64,
}

/// At most this many refusals are remembered.
const THROTTLED_KEPT: usize = 10_000;

impl Default for Faults {
    fn default() -> Self {
        Faults {
            config: Mutex::default(),
            watch: watch::Sender::new(WatchControl::default()),
            force_gone_next_watch: AtomicBool::new(false),
            expire_continue: AtomicU64::new(0),
            stale_lists_at: Mutex::new(None),
            stale_lists_served: AtomicU64::new(0),
            throttled: Mutex::new(Vec::new()),
            refused: Mutex::new(BTreeMap::new()),
        }
    }
}

fn take_rule(rate: f64, count: &mut Option<u64>) -> bool {
    if *count == Some(0) || rand::random::<f64>() >= rate {
        return false;
    }
    if let Some(n) = count.as_mut() {
        *n -= 1;
    }
    true
}

fn take_one(n: &mut u64) -> bool {
    let hit = *n > 0;
    *n = n.saturating_sub(1);
    hit
}

fn matches(rule: &str, actual: &str) -> bool {
    rule.is_empty() || rule == "*" || rule == actual
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Snapshot of the configuration.
    pub fn config(&self) -> FaultConfig {
        self.lock().clone()
    }

    /// Replace the configuration.
    pub fn set_config(&self, c: FaultConfig) {
        *self.lock() = c;
    }

    /// Add one error rule.
    pub fn add_error(&self, rule: ErrorRule) {
        self.lock().errors.push(rule);
    }

    /// Add one latency rule.
    pub fn add_latency(&self, rule: LatencyRule) {
        self.lock().latency.push(rule);
    }

    /// Set the forced-conflict rate.
    pub fn set_conflict_rate(&self, rate: f64) {
        self.lock().conflict_rate = rate;
    }

    /// Pod/exec hooks (read by the node simulation).
    pub fn pod_faults(&self) -> PodFaults {
        self.lock().pods.clone()
    }

    /// Replace pod/exec hooks.
    pub fn set_pod_faults(&self, p: PodFaults) {
        self.lock().pods = p;
    }

    /// Consumes one of [`PodFaults::exec_failures`]: true when this exec is to fail to start.
    pub fn take_exec_failure(&self) -> bool {
        take_one(&mut self.lock().pods.exec_failures)
    }

    /// Consumes one of [`PodFaults::exec_hangs`]: true when this exec is to hang.
    pub fn take_exec_hang(&self) -> bool {
        take_one(&mut self.lock().pods.exec_hangs)
    }

    /// Add one commit-then-fail rule (see [`FaultConfig::after_commit`]).
    pub fn add_error_after_commit(&self, rule: ErrorRule) {
        self.lock().after_commit.push(rule);
    }

    /// Add one 429 rule.
    pub fn add_throttle(&self, rule: ThrottleRule) {
        self.lock().throttle.push(rule);
    }

    /// Clear everything (an ongoing watch stall ends; stale lists stop).
    pub fn clear(&self) {
        *self.lock() = FaultConfig::default();
        self.force_gone_next_watch.store(false, Ordering::SeqCst);
        self.expire_continue.store(0, Ordering::SeqCst);
        *self.stale_lists_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.clear_watch_stall();
    }

    /// Drop every open watch stream now (bumps a generation counter watchers observe).
    pub fn drop_watches(&self) {
        self.watch.send_modify(|c| c.drop_gen += 1);
    }

    /// Current drop generation.
    pub fn drop_generation(&self) -> u64 {
        self.watch.borrow().drop_gen
    }

    /// The watch disturbances: a watch keeps the value it started with and reacts to changes.
    pub fn watch_control(&self) -> watch::Receiver<WatchControl> {
        self.watch.subscribe()
    }

    /// End every open watch with an ERROR event carrying a 410 `Expired` Status, as the API
    /// server does when the history it was streaming from is compacted (use
    /// `Store::expire_watches`, which compacts too).
    pub fn expire_watches(&self) {
        self.watch.send_modify(|c| c.expire_gen += 1);
    }

    /// Stall every open watch: connected, but silent (no event, no bookmark, no close) for
    /// `duration`, or until cleared when `None`. Watches opened afterwards are not stalled.
    pub fn stall_watches(&self, duration: Option<Duration>) {
        self.watch.send_modify(|c| {
            c.stall_gen += 1;
            c.stall = match duration {
                Some(d) => Stall::Until(tokio::time::Instant::now() + d),
                None => Stall::UntilCleared,
            };
        });
    }

    /// End a watch stall (the stalled watches deliver what they held back).
    pub fn clear_watch_stall(&self) {
        self.watch.send_modify(|c| c.stall = Stall::None);
    }

    /// The next `n` list requests carrying a `continue` token are answered 410 `Expired`, as
    /// when the history was compacted past the token between two pages.
    pub fn expire_continue_tokens(&self, n: u64) {
        self.expire_continue.store(n, Ordering::SeqCst);
    }

    /// Forced expiries of continue tokens not yet consumed.
    pub fn expired_continue_pending(&self) -> u64 {
        self.expire_continue.load(Ordering::SeqCst)
    }

    /// Consume one forced expiry of a continue token.
    pub fn take_expired_continue(&self) -> bool {
        self.expire_continue
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Serve lists with `resourceVersion=0` ("any version", which the API server answers from
    /// its watch cache, possibly stale) as of `rv` (`None`: current again), as a lagging API
    /// server would; the client's watch then resumes from `rv` and gets old events replayed.
    pub fn serve_stale_lists(&self, rv: Option<u64>) {
        *self.stale_lists_at.lock().unwrap_or_else(|e| e.into_inner()) = rv;
    }

    /// The stale resourceVersion lists with `resourceVersion=0` are served at, if any.
    pub fn stale_lists_at(&self) -> Option<u64> {
        *self.stale_lists_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one list answered from the stale version (the server calls this).
    pub fn record_stale_list(&self) {
        self.stale_lists_served.fetch_add(1, Ordering::SeqCst);
    }

    /// How many lists were answered from a stale version so far.
    pub fn stale_lists_served(&self) -> u64 {
        self.stale_lists_served.load(Ordering::SeqCst)
    }

    /// Make the next watch request fail with 410 Gone.
    pub fn force_gone_next_watch(&self) {
        self.force_gone_next_watch.store(true, Ordering::SeqCst);
    }

    /// Consume the forced-410 flag.
    pub fn take_force_gone(&self) -> bool {
        self.force_gone_next_watch.swap(false, Ordering::SeqCst)
    }

    /// Decide whether a request fails: returns the status code to answer.
    pub fn injected_error(&self, verb: &str, resource: &str) -> Option<u16> {
        let mut c = self.lock();
        c.errors
            .iter_mut()
            .filter(|r| matches(&r.verb, verb) && matches(&r.resource, resource))
            .find_map(|r| take_rule(r.rate, &mut r.count).then_some(r.code))
    }

    /// Decide whether a request is refused before its handler runs (throttling first, as the
    /// filters run before the handlers).
    pub fn injected(&self, verb: &str, resource: &str) -> Option<Injected> {
        let throttled = {
            let mut c = self.lock();
            c.throttle
                .iter_mut()
                .filter(|r| matches(&r.verb, verb) && matches(&r.resource, resource))
                .find_map(|r| take_rule(r.rate, &mut r.count).then_some(r.retry_after_seconds))
        };
        match throttled {
            Some(s) => Some(Injected::Throttled(s)),
            None => self.injected_error(verb, resource).map(Injected::Error),
        }
    }

    /// Remember one refusal (the server calls this for every [`Injected::Throttled`]).
    pub fn record_throttled(&self, client: &str, request: String, retry_after_seconds: u64) {
        let mut t = self.throttled.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() < THROTTLED_KEPT {
            t.push(Throttled {
                at: tokio::time::Instant::now(),
                client: client.to_string(),
                request,
                retry_after_seconds,
            });
        }
    }

    /// The requests refused with 429 so far, oldest first (kept across [`Faults::clear`], so a
    /// test can read them after ending the storm).
    pub fn throttled(&self) -> Vec<Throttled> {
        self.throttled.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Count one request refused before its handler ran (an error rule or throttling), by
    /// `client verb resource` as [`Metrics`] counts requests.
    pub fn record_refused(&self, client: &str, verb: &str, resource: &str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{client} {verb} {resource}"))
            .or_default() += 1;
    }

    /// Requests refused before their handler ran, by `client verb resource` (kept across
    /// [`Faults::clear`]): nothing of them was stored.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Decide whether a request, once committed, is answered with an error anyway: the code.
    pub fn error_after_commit(&self, verb: &str, resource: &str) -> Option<u16> {
        let mut c = self.lock();
        c.after_commit
            .iter_mut()
            .filter(|r| matches(&r.verb, verb) && matches(&r.resource, resource))
            .find_map(|r| take_rule(r.rate, &mut r.count).then_some(r.code))
    }

    /// The injected latency for a request.
    pub fn latency(&self, verb: &str, resource: &str) -> Option<Duration> {
        let c = self.lock();
        let ms: u64 = c
            .latency
            .iter()
            .filter(|r| matches(&r.verb, verb) && matches(&r.resource, resource))
            .map(|r| r.millis)
            .sum();
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Whether to force a conflict on this write.
    pub fn force_conflict(&self) -> bool {
        let rate = self.lock().conflict_rate;
        rate > 0.0 && rand::random::<f64>() < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_and_hangs_are_counted_down() {
        let f = Faults::default();
        assert!(!f.take_exec_hang());
        f.set_pod_faults(PodFaults {
            exec_failures: 1,
            exec_hangs: 2,
            ..PodFaults::default()
        });
        assert!(f.take_exec_failure());
        assert!(!f.take_exec_failure());
        assert!(f.take_exec_hang());
        assert!(f.take_exec_hang());
        assert!(!f.take_exec_hang());
        assert_eq!(f.pod_faults().exec_hangs, 0);
    }

    #[test]
    fn error_rule_count_is_consumed() {
        let f = Faults::default();
        f.add_error(ErrorRule {
            verb: "get".into(),
            resource: "pods".into(),
            rate: 1.0,
            code: 503,
            count: Some(1),
        });
        assert_eq!(f.injected_error("list", "pods"), None);
        assert_eq!(f.injected_error("get", "pods"), Some(503));
        assert_eq!(f.injected_error("get", "pods"), None);
    }

    fn rule(verb: &str, resource: &str, code: u16, count: Option<u64>) -> ErrorRule {
        ErrorRule {
            verb: verb.into(),
            resource: resource.into(),
            rate: 1.0,
            code,
            count,
        }
    }

    #[test]
    fn throttling_comes_before_errors_and_counts_down() {
        let f = Faults::default();
        f.add_error(rule("*", "*", 500, None));
        f.add_throttle(ThrottleRule {
            verb: "patch".into(),
            resource: "services".into(),
            rate: 1.0,
            retry_after_seconds: 3,
            count: Some(2),
        });
        assert_eq!(f.injected("patch", "services"), Some(Injected::Throttled(3)));
        assert_eq!(f.injected("patch", "services"), Some(Injected::Throttled(3)));
        assert_eq!(f.injected("patch", "services"), Some(Injected::Error(500)));
        assert_eq!(f.injected("get", "pods"), Some(Injected::Error(500)));
        f.record_throttled("kubedirector", "PATCH /api/v1/x".into(), 3);
        f.clear();
        assert_eq!(f.injected("patch", "services"), None);
        assert_eq!(f.throttled().len(), 1, "the log survives clear");
        f.record_refused("kubedirector", "patch", "services");
        f.record_refused("kubedirector", "patch", "services");
        assert_eq!(f.refused()["kubedirector patch services"], 2);
    }

    #[test]
    fn after_commit_rules_are_separate_from_plain_errors() {
        let f = Faults::default();
        f.add_error_after_commit(rule("create", "statefulsets", 504, Some(1)));
        assert_eq!(
            f.injected("create", "statefulsets"),
            None,
            "not refused before the handler"
        );
        assert_eq!(f.error_after_commit("create", "services"), None);
        assert_eq!(f.error_after_commit("create", "statefulsets"), Some(504));
        assert_eq!(f.error_after_commit("create", "statefulsets"), None);
    }

    #[test]
    fn stalls_apply_to_watches_open_before_them_until_they_end() {
        let f = Faults::default();
        let rx = f.watch_control();
        let before = *rx.borrow();
        assert!(!before.stalls(&before));
        f.stall_watches(None);
        let during = *rx.borrow();
        assert!(during.stalls(&before), "a watch open before the stall is held");
        assert!(!during.stalls(&during), "a watch opened during the stall is not");
        f.clear_watch_stall();
        assert!(!rx.borrow().stalls(&before));
        f.stall_watches(Some(Duration::from_secs(600)));
        assert!(rx.borrow().stalls(&before));
        let ended = WatchControl {
            stall: Stall::Until(tokio::time::Instant::now()),
            ..*rx.borrow()
        };
        assert!(!ended.stalls(&before), "a timed stall ends by itself");
        f.drop_watches();
        f.expire_watches();
        let now = *rx.borrow();
        assert_eq!(
            (now.drop_gen, now.expire_gen),
            (before.drop_gen + 1, before.expire_gen + 1)
        );
        assert_eq!(f.drop_generation(), now.drop_gen);
    }

    #[test]
    fn continue_expiry_and_stale_lists_are_consumed_and_cleared() {
        let f = Faults::default();
        assert!(!f.take_expired_continue());
        f.expire_continue_tokens(2);
        assert!(f.take_expired_continue());
        assert_eq!(f.expired_continue_pending(), 1);
        assert!(f.take_expired_continue());
        assert!(!f.take_expired_continue());
        assert_eq!(f.expired_continue_pending(), 0);
        f.serve_stale_lists(Some(7));
        assert_eq!(f.stale_lists_at(), Some(7));
        f.clear();
        assert_eq!(f.stale_lists_at(), None);
    }
}
