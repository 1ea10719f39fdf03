//! Status coalescing, as pure functions: which status changes only report what a pass observed
//! ([`detail_only`]) or member progress the next watch event is about to extend
//! ([`progress_only`]), so the [`Tracker`](super::Tracker) may hold them back for a short window
//! and write them with the next real change.

use kubedirector_crds::cluster::KubeDirectorClusterStatus;

/// The status without what a pass merely observes (container states, scheduling messages, the
/// rollup derived from them, the token): what a reader acts on.
fn significant(status: &KubeDirectorClusterStatus) -> KubeDirectorClusterStatus {
    let mut s = status.clone();
    s.generation_uid.clear();
    s.member_state_rollup = Default::default();
    for m in s.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
        m.state_detail.last_known_container_state = None;
        m.state_detail.scheduling_error_message = None;
    }
    s
}

/// `true` when `new` differs from the stored status `old` only in observation details: no
/// state, member, node id, generation or configuration detail changed.
pub fn detail_only(old: Option<&KubeDirectorClusterStatus>, new: &KubeDirectorClusterStatus) -> bool {
    old.is_some_and(|old| significant(old) == significant(new))
}

/// `true` when `new` only moves members forward (and observation details) while the cluster's
/// state, generation, node ids and membership stay as in `old`, and some member is still on its
/// way: a pass whose result the next sibling member's progress will supersede.
pub fn progress_only(old: Option<&KubeDirectorClusterStatus>, new: &KubeDirectorClusterStatus) -> bool {
    use kubedirector_crds::cluster::MemberState;
    let Some(old) = old else { return false };
    let pods = |s: &KubeDirectorClusterStatus| -> Vec<(String, String, i64)> {
        s.roles
            .iter()
            .flat_map(|r| r.members.iter().map(|m| (r.id.clone(), m.pod.clone(), m.node_id)))
            .collect()
    };
    old.state == new.state
        && old.spec_generation_to_process == new.spec_generation_to_process
        && old.last_node_id == new.last_node_id
        && old.cluster_service == new.cluster_service
        && pods(old) == pods(new)
        && new
            .roles
            .iter()
            .flat_map(|r| r.members.iter())
            .any(|m| !matches!(m.state, MemberState::Configured | MemberState::ConfigError))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use kubedirector_crds::cluster::KubeDirectorClusterStatus;

    use super::*;
    use crate::plan::Observed;
    use crate::plan::{Command, EventReason, Outcome, Plan, PlanEvent, TokenUpdate};
    use crate::tracker::{Decision, Tracker};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kubedirector_crds::cluster::ClusterState;
    use kubedirector_crds::wire::FINALIZER;

    fn observed(finalizers: &[&str], rv: &str) -> Observed {
        let mut o = Observed::default();
        o.cluster.metadata = ObjectMeta {
            finalizers: Some(finalizers.iter().map(|f| (*f).to_owned()).collect()),
            resource_version: Some(rv.to_owned()),
            generation: Some(3),
            ..Default::default()
        };
        o
    }

    fn event(msg: &str) -> Command {
        Command::Event(PlanEvent::normal(EventReason::Role, msg))
    }

    fn changed(token: &str) -> Plan {
        let mut p = Plan::noop(KubeDirectorClusterStatus::default(), Outcome::Done);
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

    fn with_container_state(
        status: &KubeDirectorClusterStatus,
        cs: kubedirector_crds::cluster::ContainerState,
    ) -> KubeDirectorClusterStatus {
        let mut s = status.clone();
        s.roles[0].members[0].state_detail.last_known_container_state = Some(cs);
        s.member_state_rollup.members_waiting = true;
        s
    }

    #[test]
    fn details_only_changes_are_held_back_for_the_window_then_written() {
        use kubedirector_crds::cluster::{ContainerState, MemberState, MemberStatus, RoleStatus};
        let window = Duration::from_secs(2);
        let mut t = Tracker::with_detail_window(window);
        let stored = KubeDirectorClusterStatus {
            generation_uid: "g0".into(),
            roles: vec![RoleStatus {
                id: "r".into(),
                members: vec![MemberStatus {
                    pod: "p-0".into(),
                    state: MemberState::CreatePending,
                    ..MemberStatus::default()
                }],
                ..RoleStatus::default()
            }],
            ..KubeDirectorClusterStatus::default()
        };
        let mut obs = observed(&[FINALIZER], "4");
        obs.cluster.status = Some(stored.clone());
        let detail = |uid: &str| {
            let mut p = changed(uid);
            p.status = with_container_state(&stored, ContainerState::Waiting);
            p.status.generation_uid = uid.into();
            p
        };
        let t0 = Instant::now();
        // Nothing but the status to do: the whole plan is dropped, to run again later.
        assert_eq!(
            t.accept_at(detail("g1"), &obs, t0),
            Decision::Hold { until: t0 + window }
        );
        assert_eq!(t.token(), None, "no token from a status that was not written");
        // With other work, that work runs and only the status waits (the window counts from
        // the first held-back change).
        let mut busy = detail("g2");
        busy.commands = vec![Command::DeletePvc { name: "p".into() }];
        let c = commands(t.accept_at(busy, &obs, t0 + Duration::from_secs(1)));
        assert_eq!(c, vec![Command::DeletePvc { name: "p".into() }]);
        assert_eq!(t.take_deferred(), Some(t0 + window));
        // Due: written.
        let c = commands(t.accept_at(detail("g3"), &obs, t0 + window));
        assert!(matches!(c.as_slice(), [Command::WriteStatus { .. }]), "{c:?}");
        assert_eq!(t.take_deferred(), None);
        t.status_written();
        // A real change (a member state) is written at once, details and all.
        let mut real = changed("g4");
        real.status = with_container_state(&stored, ContainerState::Running);
        real.status.roles[0].members[0].state = MemberState::Configured;
        let c = commands(t.accept_at(real, &obs, t0 + window));
        assert!(matches!(c.as_slice(), [Command::WriteStatus { .. }]), "{c:?}");
        assert_eq!(t.take_deferred(), None);
    }

    #[test]
    fn member_progress_is_held_until_the_last_member_or_the_window() {
        use kubedirector_crds::cluster::{ClusterState, MemberState, MemberStatus, RoleStatus};
        let window = Duration::from_secs(3);
        let mut t = Tracker::with_detail_window(window);
        let member = |pod: &str, state| MemberStatus {
            pod: pod.into(),
            state,
            ..MemberStatus::default()
        };
        let state = |configured: bool| {
            if configured {
                MemberState::Configured
            } else {
                MemberState::CreatePending
            }
        };
        let status = |states: [bool; 2], cluster: ClusterState| KubeDirectorClusterStatus {
            state: cluster,
            roles: vec![RoleStatus {
                id: "r".into(),
                members: vec![member("p-0", state(states[0])), member("p-1", state(states[1]))],
                ..RoleStatus::default()
            }],
            ..KubeDirectorClusterStatus::default()
        };
        let (pending, done) = (false, true);
        let mut obs = observed(&[FINALIZER], "4");
        obs.cluster.status = Some(status([pending, pending], ClusterState::Creating));
        let progress = |states, cluster| {
            let mut p = changed("g");
            p.status = status(states, cluster);
            p.commands = vec![event("initial config skipped")];
            p
        };
        let t0 = Instant::now();
        assert_eq!(
            t.accept_at(progress([done, pending], ClusterState::Creating), &obs, t0),
            Decision::Hold { until: t0 + window },
            "one member of two: the other one's event is about to follow"
        );
        // The last member: the cluster becomes configured, written at once with the events.
        let c = commands(t.accept_at(progress([done, done], ClusterState::Configured), &obs, t0));
        assert!(matches!(c.last(), Some(Command::WriteStatus { .. })), "{c:?}");
        assert!(c.contains(&event("initial config skipped")));
        t.status_written();
        // A second member that never comes: the first one's progress is written when due.
        let mut t = Tracker::with_detail_window(window);
        let p = progress([done, pending], ClusterState::Creating);
        assert!(matches!(t.accept_at(p.clone(), &obs, t0), Decision::Hold { .. }));
        assert!(matches!(
            commands(t.accept_at(p, &obs, t0 + window)).last(),
            Some(Command::WriteStatus { .. })
        ));
        // A new member (scale-up) is never held.
        let mut grown = progress([pending, pending], ClusterState::Creating);
        grown.status.roles[0]
            .members
            .push(member("p-2", MemberState::CreatePending));
        assert!(!progress_only(obs.cluster.status.as_ref(), &grown.status));
    }

    #[test]
    fn details_only_compares_everything_but_observations() {
        use kubedirector_crds::cluster::ContainerState;
        let s = KubeDirectorClusterStatus {
            roles: vec![kubedirector_crds::cluster::RoleStatus {
                members: vec![Default::default()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(detail_only(
            Some(&s),
            &with_container_state(&s, ContainerState::Absent)
        ));
        assert!(!detail_only(None, &s), "a first status is always written");
        let mut other = s.clone();
        other.last_node_id = 9;
        assert!(!detail_only(Some(&s), &other));
    }
}
