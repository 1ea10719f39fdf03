//! Request accounting: what every API request counts under (verb, resource, client, field
//! manager).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

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
    /// By `verb resource` per whole User-Agent value (tells replicas of one client apart when
    /// their user agents differ after the first `/`).
    #[serde(default)]
    pub by_user_agent: BTreeMap<String, BTreeMap<String, u64>>,
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

    /// Count one request under its whole User-Agent value.
    pub fn record_user_agent(&self, user_agent: &str, verb: &str, resource: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.by_user_agent
            .entry(user_agent.to_string())
            .or_default()
            .entry(format!("{verb} {resource}"))
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
    fn metrics_count() {
        let m = Metrics::default();
        m.record("get", "pods", "kubectl", None);
        m.record("get", "pods", "kubectl", Some("x"));
        let s = m.snapshot();
        assert_eq!(s.total, 2);
        assert_eq!(s.by_verb_resource["get pods"], 2);
        assert_eq!(s.by_field_manager["x"], 1);
        m.record_user_agent("op/1 (a)", "update", "leases");
        m.record_user_agent("op/1 (b)", "update", "leases");
        m.record_user_agent("op/1 (a)", "update", "leases");
        let s = m.snapshot();
        assert_eq!(s.by_user_agent["op/1 (a)"]["update leases"], 2);
        assert_eq!(s.by_user_agent["op/1 (b)"]["update leases"], 1);
        m.reset();
        assert_eq!(m.snapshot().total, 0);
    }
}
