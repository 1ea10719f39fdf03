//! Fault injection and request accounting, shared by the HTTP server, the store and the
//! simulated node components (which read the pod/exec hooks).
//!
//! Everything here is interior-mutable and cheap to share (`Arc<Faults>`, `Arc<Metrics>`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One error-injection rule: requests matching `verb` and `resource` fail with `code` with
/// probability `rate` (0.0..=1.0). Empty/`*` matches any verb or resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRule {
    /// Verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...) or `*`.
    #[serde(default)]
    pub verb: String,
    /// Resource plural (`pods`, `statefulsets`, `pods/status`...) or `*`.
    #[serde(default)]
    pub resource: String,
    /// Probability of failing a matching request.
    #[serde(default = "one")]
    pub rate: f64,
    /// HTTP status code to answer (default 500).
    #[serde(default = "default_code")]
    pub code: u16,
    /// Remaining number of injections (`None` = unlimited).
    #[serde(default)]
    pub count: Option<u64>,
}

fn one() -> f64 {
    1.0
}
fn default_code() -> u16 {
    500
}

/// A latency rule: matching requests are delayed by `millis`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyRule {
    /// Verb or `*`.
    #[serde(default)]
    pub verb: String,
    /// Resource or `*`.
    #[serde(default)]
    pub resource: String,
    /// Delay in milliseconds.
    pub millis: u64,
}

/// Failure hooks consumed by the simulated kubelet / exec implementation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodFaults {
    /// Probability that an exec fails to start (the exec handler answers an error).
    #[serde(default)]
    pub exec_failure_rate: f64,
    /// Exit code forced on execs whose command line contains the given substring.
    #[serde(default)]
    pub exec_exit_codes: BTreeMap<String, i32>,
    /// Pods (`namespace/name`) whose containers should crash/restart once.
    #[serde(default)]
    pub crash_pods: Vec<String>,
    /// Pods (`namespace/name`) that should fail to start (stay Pending / CrashLoop).
    #[serde(default)]
    pub fail_start_pods: Vec<String>,
    /// The next this many execs fail to start (the exec handler answers an error), then execs
    /// run normally again: a deterministic [`Self::exec_failure_rate`].
    #[serde(default)]
    pub exec_failures: u64,
    /// The next this many execs hang: the connection is upgraded and announced, the command never
    /// runs and nothing more is sent until the client gives up (an exec stuck in the container
    /// runtime or a node that stopped answering).
    #[serde(default)]
    pub exec_hangs: u64,
}

/// The complete, serialisable fault configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultConfig {
    /// Error rules.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// Latency rules.
    #[serde(default)]
    pub latency: Vec<LatencyRule>,
    /// Probability that an update/patch answers 409 Conflict although it would succeed.
    #[serde(default)]
    pub conflict_rate: f64,
    /// Pod and exec hooks.
    #[serde(default)]
    pub pods: PodFaults,
}

/// Live fault state.
#[derive(Debug, Default)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    drop_watches: AtomicU64,
    force_gone_next_watch: AtomicBool,
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

    /// Clear everything.
    pub fn clear(&self) {
        *self.lock() = FaultConfig::default();
        self.drop_watches.store(0, Ordering::SeqCst);
        self.force_gone_next_watch.store(false, Ordering::SeqCst);
    }

    /// Drop every open watch stream now (bumps a generation counter watchers observe).
    pub fn drop_watches(&self) {
        self.drop_watches.fetch_add(1, Ordering::SeqCst);
    }

    /// Current drop generation.
    pub fn drop_generation(&self) -> u64 {
        self.drop_watches.load(Ordering::SeqCst)
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
        for rule in c.errors.iter_mut() {
            if matches(&rule.verb, verb) && matches(&rule.resource, resource) {
                if rule.count == Some(0) {
                    continue;
                }
                if rand::random::<f64>() < rule.rate {
                    if let Some(n) = rule.count.as_mut() {
                        *n -= 1;
                    }
                    return Some(rule.code);
                }
            }
        }
        None
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

/// Request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsSnapshot>,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// Total requests.
    pub total: u64,
    /// By verb.
    pub by_verb: BTreeMap<String, u64>,
    /// By resource (`pods`, `statefulsets.apps`, `pods/status`...).
    pub by_resource: BTreeMap<String, u64>,
    /// By `verb resource`.
    pub by_verb_resource: BTreeMap<String, u64>,
    /// By client (user agent, first token).
    pub by_client: BTreeMap<String, u64>,
    /// By field manager (writes that named one).
    pub by_field_manager: BTreeMap<String, u64>,
    /// By `client verb resource`.
    pub by_client_verb_resource: BTreeMap<String, u64>,
}

impl Metrics {
    /// Count one request.
    pub fn record(&self, verb: &str, resource: &str, client: &str, field_manager: Option<&str>) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.total += 1;
        *m.by_verb.entry(verb.to_string()).or_default() += 1;
        if !resource.is_empty() {
            *m.by_resource.entry(resource.to_string()).or_default() += 1;
        }
        *m.by_verb_resource
            .entry(format!("{verb} {resource}"))
            .or_default() += 1;
        *m.by_client.entry(client.to_string()).or_default() += 1;
        if let Some(fm) = field_manager {
            *m.by_field_manager.entry(fm.to_string()).or_default() += 1;
        }
        *m.by_client_verb_resource
            .entry(format!("{client} {verb} {resource}"))
            .or_default() += 1;
    }

    /// Snapshot.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reset all counters.
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = MetricsSnapshot::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn metrics_count() {
        let m = Metrics::default();
        m.record("get", "pods", "kubectl", None);
        m.record("get", "pods", "kubectl", Some("x"));
        let s = m.snapshot();
        assert_eq!(s.total, 2);
        assert_eq!(s.by_verb_resource["get pods"], 2);
        assert_eq!(s.by_field_manager["x"], 1);
        m.reset();
        assert_eq!(m.snapshot().total, 0);
    }
}
