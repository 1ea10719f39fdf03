//! Per-cluster progress series, derived from one observed KubeDirectorCluster (status + spec)
//! by a pure function, so the feed is one [`super::MetricEvent::ClusterObserved`] per pass.
//!
//! Labels are bounded: namespace, cluster, app, role and the wire state names; never a member or
//! pod name.

use std::collections::BTreeMap;

use kubedirector_crds::{ClusterState, KubeDirectorCluster, MemberState};

/// Everything exported for one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSeries {
    /// Namespace.
    pub namespace: String,
    /// Cluster name.
    pub cluster: String,
    /// KubeDirectorApp name (`spec.app`).
    pub app: String,
    /// `status.state` (empty when the operator has not written a status yet).
    pub state: String,
    /// Per role, in spec order, then roles only present in the status.
    pub roles: Vec<RoleSeries>,
    /// `status.specGenerationToProcess` (the configuration generation), if set.
    pub config_generation: Option<i64>,
    /// `metadata.generation`.
    pub generation: i64,
    /// Notifications queued for members and not yet delivered.
    pub pending_notifications: i64,
    /// `metadata.creationTimestamp` as Unix seconds.
    pub created: Option<f64>,
}

/// Member counts of one role.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSeries {
    /// Role id.
    pub role: String,
    /// `spec.roles[].members` (0 when the role was removed from the spec).
    pub desired: i64,
    /// Member wire state → count, with every known state present (0 when none).
    pub members: BTreeMap<String, i64>,
}

impl RoleSeries {
    fn new(role: &str, desired: i64) -> Self {
        let members = MemberState::KNOWN
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        Self {
            role: role.to_string(),
            desired,
            members,
        }
    }

    /// Members in `state` (wire name).
    pub fn count(&self, state: &str) -> i64 {
        self.members.get(state).copied().unwrap_or(0)
    }
}

/// The cluster states exported one-hot (`kubedirector_cluster_state`), plus the current one when
/// it is not one of these.
pub fn one_hot_states(current: &str) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = ClusterState::KNOWN
        .iter()
        .map(|s| (s.as_str().to_string(), i64::from(s.as_str() == current)))
        .collect();
    if !out.iter().any(|(s, _)| s == current) {
        out.push((current.to_string(), 1));
    }
    out
}

/// Derives the series of `cluster`. `None` when the object has no name or namespace.
pub fn derive(cluster: &KubeDirectorCluster) -> Option<ClusterSeries> {
    let meta = &cluster.metadata;
    let (namespace, name) = (meta.namespace.clone()?, meta.name.clone()?);
    let mut roles: Vec<RoleSeries> = cluster
        .spec
        .roles
        .iter()
        .map(|r| RoleSeries::new(&r.id, i64::from(r.members.unwrap_or(0).max(0))))
        .collect();
    let mut pending_notifications = 0i64;
    let status = cluster.status.as_ref();
    for rs in status.map(|s| s.roles.as_slice()).unwrap_or_default() {
        let idx = match roles.iter().position(|r| r.role == rs.id) {
            Some(i) => i,
            None => {
                roles.push(RoleSeries::new(&rs.id, 0));
                roles.len() - 1
            }
        };
        for m in &rs.members {
            // Members not yet given a state count as `create pending`, like the planner treats them.
            let state = match m.state.as_str() {
                "" => MemberState::CreatePending.as_str(),
                s => s,
            };
            *roles[idx].members.entry(state.to_string()).or_default() += 1;
            pending_notifications +=
                i64::try_from(m.state_detail.pending_notify_cmds.len()).unwrap_or(i64::MAX);
        }
    }
    Some(ClusterSeries {
        namespace,
        cluster: name,
        app: cluster.spec.app.clone(),
        state: status.map(|s| s.state.as_str().to_string()).unwrap_or_default(),
        roles,
        config_generation: status.and_then(|s| s.spec_generation_to_process),
        generation: meta.generation.unwrap_or_default(),
        pending_notifications,
        created: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond() as f64 / 1000.0),
    })
}

/// What the metrics actor remembers of a cluster between observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    /// The last series exported.
    pub series: ClusterSeries,
    /// When `series.state` was entered (Unix seconds; an estimate for clusters first seen
    /// after an operator restart).
    pub state_since: f64,
}

/// The result of observing a cluster again.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new tracked value.
    pub tracked: Tracked,
    /// Seconds from creation to `configured`, when this observation is the cluster's first
    /// `configured` after having been seen `creating`.
    pub time_to_configured: Option<f64>,
}

/// Folds a new observation into what was known (`previous`), at time `now` (Unix seconds).
///
/// A state change restarts the "since" clock. A cluster first seen in `creating` (or with no
/// status yet) is assumed to have been creating since its creation; one first seen in another
/// state starts its clock now (its history is unknown, e.g. after an operator restart).
pub fn observe(previous: Option<&Tracked>, series: ClusterSeries, now: f64) -> Transition {
    let configured = ClusterState::Configured.as_str();
    let creating = ClusterState::Creating.as_str();
    let (state_since, time_to_configured) = match previous {
        Some(p) if p.series.state == series.state => (p.state_since, None),
        Some(p) => {
            let first_configured =
                series.state == configured && (p.series.state == creating || p.series.state.is_empty());
            let ttc = first_configured
                .then(|| series.created.map(|c| (now - c).max(0.0)))
                .flatten();
            (now, ttc)
        }
        None if series.state == creating || series.state.is_empty() => {
            (series.created.map_or(now, |c| c.min(now)), None)
        }
        None => (now, None),
    };
    Transition {
        tracked: Tracked { series, state_since },
        time_to_configured,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cluster(status: serde_json::Value) -> KubeDirectorCluster {
        serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1",
            "kind": "KubeDirectorCluster",
            "metadata": {"name": "c1", "namespace": "team", "uid": "u1", "generation": 3,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"app": "centos7x", "roles": [
                {"id": "controller", "members": 1, "resources": {}},
                {"id": "worker", "members": 3, "resources": {}}
            ]},
            "status": status
        }))
        .unwrap()
    }

    const CREATED: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z

    fn member(state: &str, notifies: usize) -> serde_json::Value {
        let cmds: Vec<_> = (0..notifies)
            .map(|_| json!({"arguments": ["--addnodes"]}))
            .collect();
        json!({"pod": "p", "service": "s", "state": state, "nodeID": 1,
               "stateDetail": {"pendingNotifyCmds": cmds}})
    }

    #[test]
    fn members_are_counted_per_role_and_state_with_desired_from_the_spec() {
        let c = cluster(json!({
            "state": "creating", "specGenerationToProcess": 3, "generationUID": "g",
            "clusterService": "", "lastNodeID": 4, "memberStateRollup": {},
            "roles": [
                {"id": "controller", "statefulSet": "kdss-a", "members": [member("configured", 0)]},
                {"id": "worker", "statefulSet": "kdss-b", "members": [
                    member("configured", 1), member("creating", 0), member("config error", 2)]},
                {"id": "gone", "statefulSet": "kdss-c", "members": [member("deleting", 0)]}
            ]
        }));
        let s = derive(&c).unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.cluster.as_str(), s.app.as_str()),
            ("team", "c1", "centos7x")
        );
        assert_eq!(s.state, "creating");
        assert_eq!(s.config_generation, Some(3));
        assert_eq!(s.generation, 3);
        assert_eq!(s.pending_notifications, 3);
        assert_eq!(s.created, Some(CREATED));
        let roles: Vec<_> = s.roles.iter().map(|r| (r.role.as_str(), r.desired)).collect();
        assert_eq!(roles, [("controller", 1), ("worker", 3), ("gone", 0)]);
        let w = &s.roles[1];
        assert_eq!(
            (
                w.count("configured"),
                w.count("creating"),
                w.count("config error")
            ),
            (1, 1, 1)
        );
        assert_eq!(w.count("create pending"), 0);
        assert_eq!(
            w.members.len(),
            MemberState::KNOWN.len(),
            "every known state is exported"
        );
        assert_eq!(s.roles[2].count("deleting"), 1);
    }

    #[test]
    fn a_cluster_without_status_has_desired_members_and_no_state() {
        let mut c = cluster(json!(null));
        c.status = None;
        let s = derive(&c).unwrap();
        assert_eq!(s.state, "");
        assert_eq!(s.config_generation, None);
        assert_eq!(s.roles.iter().map(|r| r.desired).sum::<i64>(), 4);
        assert!(s.roles.iter().all(|r| r.members.values().all(|n| *n == 0)));
        c.metadata.namespace = None;
        assert_eq!(derive(&c), None);
    }

    #[test]
    fn state_is_one_hot_over_known_states_and_keeps_an_unknown_one() {
        let hot = one_hot_states("configured");
        assert_eq!(hot.iter().filter(|(_, v)| *v == 1).count(), 1);
        assert!(hot.contains(&("configured".to_string(), 1)));
        assert!(hot.contains(&("creating".to_string(), 0)));
        let odd = one_hot_states("restoring");
        assert!(odd.contains(&("restoring".to_string(), 1)));
        assert_eq!(odd.iter().map(|(_, v)| v).sum::<i64>(), 1);
    }

    fn series(state: &str) -> ClusterSeries {
        let mut s = derive(&cluster(json!({"state": state}))).unwrap();
        s.state = state.to_string();
        s
    }

    #[test]
    fn time_to_configured_is_observed_once_on_the_creating_to_configured_transition() {
        let t0 = observe(None, series("creating"), CREATED + 5.0);
        assert_eq!(t0.tracked.state_since, CREATED, "creating since creation");
        assert_eq!(t0.time_to_configured, None);
        let t1 = observe(Some(&t0.tracked), series("creating"), CREATED + 9.0);
        assert_eq!(t1.tracked.state_since, CREATED);
        let t2 = observe(Some(&t1.tracked), series("configured"), CREATED + 42.0);
        assert_eq!(t2.time_to_configured, Some(42.0));
        assert_eq!(t2.tracked.state_since, CREATED + 42.0);
        let t3 = observe(Some(&t2.tracked), series("updating"), CREATED + 50.0);
        let t4 = observe(Some(&t3.tracked), series("configured"), CREATED + 60.0);
        assert_eq!(
            (t3.time_to_configured, t4.time_to_configured),
            (None, None),
            "only the first"
        );
        assert_eq!(t4.tracked.state_since, CREATED + 60.0);
    }

    #[test]
    fn a_cluster_first_seen_configured_is_not_timed_and_starts_its_clock_now() {
        let t = observe(None, series("configured"), CREATED + 100.0);
        assert_eq!(t.time_to_configured, None);
        assert_eq!(t.tracked.state_since, CREATED + 100.0);
    }
}
