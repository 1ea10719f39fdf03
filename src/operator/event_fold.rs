//! Event folding (issue 13), as client-go's event recorder does it (`EventCorrelator`'s
//! `eventLogger`): an Event with the same source, involved object, type, reason and message as
//! one recorded before is not created again; the existing Event is patched instead, with its
//! `count` incremented and `lastTimestamp` moved to now. A bounded least-recently-used memory
//! (client-go's 4096 entries) remembers the recorded Events by that key.
//!
//! Pure bookkeeping: [`EventFolder::observe`] decides create or patch, the caller performs the
//! request and reports the outcome with [`EventFolder::recorded`] / [`EventFolder::forget`].
//! Like client-go, a patch that finds the Event gone (expired by the API server's event TTL, or
//! deleted) falls back to creating it with the same count.
//!
//! Not done: client-go's aggregation of *similar* events (same object and reason, different
//! messages, more than 10 in 10 minutes, folded into one `(combined from similar events)`
//! Event) and its spam filter (token bucket per object); the operator already records its
//! periodic messages once per generation (R23).

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// client-go's `maxLruCacheEntries`.
pub const MAX_ENTRIES: usize = 4096;

/// What identifies "the same event" (client-go's `getEventKey`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// Source component.
    pub component: String,
    /// Involved object: apiVersion, kind, namespace, name, uid.
    pub object: [String; 5],
    /// `Normal` / `Warning`.
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// The decision for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fold {
    /// Create a new Event named `name` with `count: 1`.
    Create {
        /// The new Event's name.
        name: String,
    },
    /// Patch the Event `name` (recorded before) to `count` and the new `lastTimestamp`.
    Patch {
        /// The existing Event's name.
        name: String,
        /// Its new count.
        count: i32,
    },
}

#[derive(Debug)]
struct Entry {
    name: String,
    count: i32,
    used: u64,
}

/// The recorder's memory of recorded Events. See the [module docs](self).
#[derive(Debug)]
pub struct EventFolder {
    entries: HashMap<EventKey, Entry>,
    capacity: usize,
    clock: u64,
}

impl Default for EventFolder {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl EventFolder {
    /// A memory of at most `capacity` Events (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Decides how to record an event with `key`; `new_name` is the name a new Event gets. The
    /// decision is remembered at once (the next identical event patches this one even before
    /// the request is answered).
    pub fn observe(&mut self, key: EventKey, new_name: &str) -> Fold {
        self.clock += 1;
        if let Some(e) = self.entries.get_mut(&key) {
            e.count = e.count.saturating_add(1);
            e.used = self.clock;
            return Fold::Patch {
                name: e.name.clone(),
                count: e.count,
            };
        }
        if self.entries.len() >= self.capacity {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                name: new_name.to_owned(),
                count: 1,
                used: self.clock,
            },
        );
        Fold::Create {
            name: new_name.to_owned(),
        }
    }

    /// The Event for `key` is now stored as `name` with `count` (after a create, a patch, or a
    /// create that replaced a vanished Event).
    pub fn recorded(&mut self, key: &EventKey, name: &str, count: i32) {
        if let Some(e) = self.entries.get_mut(key) {
            e.name = name.to_owned();
            e.count = e.count.max(count);
        }
    }

    /// Recording failed: forget the key, so the next identical event creates a new Event.
    pub fn forget(&mut self, key: &EventKey) {
        self.entries.remove(key);
    }

    /// How many Events are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The strategic merge patch client-go sends for a repeated event: the new count, the new
/// `lastTimestamp` and the message.
pub fn patch_body(count: i32, last_timestamp: &Time, message: &str) -> serde_json::Value {
    serde_json::json!({
        "count": count,
        "lastTimestamp": last_timestamp,
        "message": message,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    fn key(reason: &str, message: &str) -> EventKey {
        EventKey {
            component: "kubedirector".into(),
            object: [
                "kubedirector.hpe.com/v1beta1".into(),
                "KubeDirectorCluster".into(),
                "ns".into(),
                "c".into(),
                "uid-1".into(),
            ],
            type_: "Normal".into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn the_same_event_patches_the_first_with_a_growing_count() {
        let mut f = EventFolder::default();
        assert_eq!(
            f.observe(key("Cluster", "stable"), "c.1"),
            Fold::Create { name: "c.1".into() }
        );
        f.recorded(&key("Cluster", "stable"), "c.1", 1);
        assert_eq!(
            f.observe(key("Cluster", "stable"), "c.2"),
            Fold::Patch {
                name: "c.1".into(),
                count: 2
            }
        );
        assert_eq!(
            f.observe(key("Cluster", "stable"), "c.3"),
            Fold::Patch {
                name: "c.1".into(),
                count: 3
            }
        );
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn any_difference_in_the_key_is_a_new_event() {
        let mut f = EventFolder::default();
        assert!(matches!(
            f.observe(key("Cluster", "stable"), "a"),
            Fold::Create { .. }
        ));
        assert!(matches!(
            f.observe(key("Cluster", "new"), "b"),
            Fold::Create { .. }
        ));
        assert!(matches!(
            f.observe(key("Role", "stable"), "c"),
            Fold::Create { .. }
        ));
        let mut other = key("Cluster", "stable");
        other.object[4] = "uid-2".into();
        assert!(matches!(f.observe(other, "d"), Fold::Create { .. }));
        let mut warning = key("Cluster", "stable");
        warning.type_ = "Warning".into();
        assert!(matches!(f.observe(warning, "e"), Fold::Create { .. }));
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn a_failed_record_is_forgotten_and_created_again() {
        let mut f = EventFolder::default();
        f.observe(key("Cluster", "x"), "a");
        f.forget(&key("Cluster", "x"));
        assert_eq!(
            f.observe(key("Cluster", "x"), "b"),
            Fold::Create { name: "b".into() }
        );
        assert!(!f.is_empty());
    }

    #[test]
    fn the_memory_is_bounded_and_evicts_the_least_recently_used() {
        let mut f = EventFolder::with_capacity(2);
        f.observe(key("R", "a"), "a");
        f.observe(key("R", "b"), "b");
        // `a` used again: `b` is now the oldest.
        assert!(matches!(
            f.observe(key("R", "a"), "a2"),
            Fold::Patch { count: 2, .. }
        ));
        f.observe(key("R", "c"), "c");
        assert_eq!(f.len(), 2);
        assert!(matches!(
            f.observe(key("R", "a"), "a3"),
            Fold::Patch { count: 3, .. }
        ));
        assert!(
            matches!(f.observe(key("R", "b"), "b2"), Fold::Create { .. }),
            "evicted"
        );
    }

    #[test]
    fn recorded_keeps_the_server_side_name_and_never_lowers_the_count() {
        let mut f = EventFolder::default();
        f.observe(key("R", "a"), "a");
        f.observe(key("R", "a"), "a");
        // The patch found the event gone and created `a-new` with count 2.
        f.recorded(&key("R", "a"), "a-new", 2);
        assert_eq!(
            f.observe(key("R", "a"), "zzz"),
            Fold::Patch {
                name: "a-new".into(),
                count: 3
            }
        );
        f.recorded(&key("R", "a"), "a-new", 1);
        assert!(matches!(
            f.observe(key("R", "a"), "zzz"),
            Fold::Patch { count: 4, .. }
        ));
    }

    #[test]
    fn patch_body_is_client_gos() {
        let t: Time = serde_json::from_value(serde_json::json!("2026-01-01T00:00:00Z")).unwrap();
        let b = patch_body(3, &t, "stable");
        assert_eq!(
            b,
            serde_json::json!({"count": 3, "lastTimestamp": "2026-01-01T00:00:00Z", "message": "stable"})
        );
    }
}
