//! Container-state observation (spec 3.5, 3.4 container-id changes): the `app` container state of
//! every member, the scheduling error, the re-setup of a member whose container id changed, the
//! `memberStateRollup` and the status compaction of spec 3.13.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use kubedirector_crds::cluster::{ContainerState, KubeDirectorClusterStatus, MemberState, MemberStateRollup};

use super::super::objects::APP_CONTAINER;
use super::super::{storage_progress, EventReason, PlanEvent};
use super::Pass;

/// Recomputes `memberStateRollup` from the member states (spec 3.5).
pub fn rollup(status: &KubeDirectorClusterStatus) -> MemberStateRollup {
    let mut r = MemberStateRollup::default();
    for role in &status.roles {
        for m in &role.members {
            let d = &m.state_detail;
            let cs = d.last_known_container_state.as_ref();
            let down = matches!(
                cs,
                Some(ContainerState::Terminated)
                    | Some(ContainerState::Unresponsive)
                    | Some(ContainerState::Absent)
            );
            let new_member = d.last_configured_container.as_deref().unwrap_or("").is_empty();
            match m.state {
                MemberState::CreatePending => {
                    if new_member {
                        r.membership_changing = true;
                    } else {
                        r.members_restarting = true;
                    }
                    if cs == Some(&ContainerState::Absent) {
                        r.members_waiting = true;
                        if d.scheduling_error_message.is_some() {
                            r.members_not_scheduled = true;
                        }
                    }
                }
                MemberState::Creating => {
                    r.members_down |= down;
                    if new_member {
                        r.membership_changing = true;
                    } else {
                        r.members_restarting = true;
                    }
                }
                MemberState::Configured => r.members_down |= down,
                MemberState::DeletePending => {
                    r.members_down |= down;
                    r.membership_changing = true;
                }
                MemberState::Deleting => r.membership_changing = true,
                MemberState::ConfigError => {
                    r.members_down |= down;
                    r.config_errors = true;
                }
                MemberState::Other(_) => {}
            }
            match cs {
                Some(ContainerState::Initializing) => r.members_initializing = true,
                Some(ContainerState::Waiting) => r.members_waiting = true,
                _ => {}
            }
        }
    }
    r
}

/// Removes role statuses whose `statefulSet` is empty and members whose `pod` is empty, keeping
/// the order (spec 3.13).
pub fn compact(status: &mut KubeDirectorClusterStatus) {
    status.roles.retain(|r| !r.stateful_set.is_empty());
    for role in &mut status.roles {
        role.members.retain(|m| !m.pod.is_empty());
    }
}

/// The `app` container's status in a pod.
fn app_container_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == APP_CONTAINER)
}

/// The `app` container id of a pod, if it reports a non-empty one.
pub fn app_container_id(pod: &Pod) -> Option<&str> {
    app_container_status(pod)
        .and_then(|c| c.container_id.as_deref())
        .filter(|id| !id.is_empty())
}

fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

pub(super) fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Observes the `app` container state of a member (spec 3.5).
pub fn observe_container_state(
    pod: Option<&Pod>,
    detail_generation_stale: bool,
    has_queued: bool,
) -> ContainerState {
    let Some(pod) = pod else {
        return ContainerState::Absent;
    };
    let Some(cs) = app_container_status(pod) else {
        return ContainerState::Absent;
    };
    let Some(state) = cs.state.as_ref() else {
        return ContainerState::Unknown;
    };
    if state.running.is_some() {
        if detail_generation_stale || has_queued {
            return ContainerState::Unresponsive;
        }
        return match pod_condition(pod, "Ready").map(|c| c.status.as_str()) {
            Some("True") => ContainerState::Running,
            Some("False") => ContainerState::Unresponsive,
            _ => ContainerState::Unknown,
        };
    }
    if state.waiting.is_some() {
        let init_running = pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|v| v.first())
            .is_some_and(|first| first.state.as_ref().is_none_or(|s| s.terminated.is_none()));
        return if init_running {
            ContainerState::Initializing
        } else {
            ContainerState::Waiting
        };
    }
    if state.terminated.is_some() {
        return ContainerState::Terminated;
    }
    ContainerState::Unknown
}

/// Epilogue: re-derives the container state of members observed `unresponsive` only because of
/// queued notifications or a stale configmeta generation, once the pass has run them. Without it
/// the pass that configures the last member and marks the cluster stable would report the
/// members it just notified as down (`membersDown`) next to `configured`.
pub fn refresh_resolved_unresponsive(
    status: &mut KubeDirectorClusterStatus,
    pods: &std::collections::BTreeMap<String, Pod>,
    generation: i64,
) {
    for m in status.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
        let d = &mut m.state_detail;
        if d.last_known_container_state != Some(ContainerState::Unresponsive) {
            continue;
        }
        let stale = d.last_config_data_generation.is_some_and(|g| g != generation);
        d.last_known_container_state = Some(observe_container_state(
            pods.get(&m.pod),
            stale,
            !d.pending_notify_cmds.is_empty(),
        ));
    }
}

impl Pass<'_> {
    /// Step 8: observes every member's `app` container, records scheduling errors and moves a
    /// `configured` / `config error` member whose container id changed back to `create pending`.
    pub(super) fn check_container_states(&mut self) {
        let gen = self.generation();
        let mut events = Vec::new();
        for role in &mut self.status.roles {
            for m in &mut role.members {
                if m.pod.is_empty() {
                    continue;
                }
                let d = &mut m.state_detail;
                d.scheduling_error_message = None;
                d.storage_init_progress = None;
                let pod = self.obs.pods.get(&m.pod);
                let stale = d.last_config_data_generation.is_some_and(|g| g != gen);
                let cs = observe_container_state(pod, stale, !d.pending_notify_cmds.is_empty());
                if matches!(m.state, MemberState::Configured | MemberState::ConfigError) {
                    let current = pod.and_then(app_container_id).unwrap_or("");
                    if current != d.last_configured_container.as_deref().unwrap_or("") {
                        m.state = MemberState::CreatePending;
                        if m.pvc.as_deref().unwrap_or("").is_empty() {
                            d.last_config_data_generation = None;
                            d.last_setup_generation = None;
                            d.pending_notify_cmds.clear();
                            events.push(PlanEvent::normal(
                                EventReason::Member,
                                format!(
                                    "container ID has changed for member{{{}}}; no persistent storage, will re-run setup",
                                    m.pod
                                ),
                            ));
                        } else {
                            events.push(PlanEvent::normal(
                                EventReason::Member,
                                format!(
                                    "container ID has changed for member{{{}}}; will re-check setup",
                                    m.pod
                                ),
                            ));
                        }
                    }
                }
                if cs == ContainerState::Initializing {
                    let (shown, warning) = storage_progress::shown(self.obs.storage_probes.get(&m.pod));
                    d.storage_init_progress = shown;
                    events.extend(warning);
                }
                if cs == ContainerState::Absent {
                    if let Some(c) = pod.and_then(|p| pod_condition(p, "PodScheduled")) {
                        if c.reason.as_deref() == Some("Unschedulable") {
                            d.scheduling_error_message = Some(c.message.clone().unwrap_or_default());
                        }
                    }
                }
                d.last_known_container_state = Some(cs);
            }
        }
        for e in events {
            self.event(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::*;
    use kubedirector_crds::cluster::*;

    #[test]
    fn container_id_change_without_pvc_reruns_setup() {
        let mut sim = configured_centos(1, false);
        let pod = members(&sim, "vanilla_centos")[0].pod.clone();
        sim.obs.cluster.status.as_mut().unwrap().roles[0].members[0]
            .state_detail
            .last_setup_generation = Some(1);
        sim.obs.cluster.status.as_mut().unwrap().roles[0].members[0]
            .state_detail
            .last_config_data_generation = Some(1);
        sim.restart(&pod);
        let plan = sim.pass();
        assert!(msgs(&plan).contains(&format!(
            "container ID has changed for member{{{pod}}}; no persistent storage, will re-run setup"
        )));
        let m = &members(&sim, "vanilla_centos")[0];
        // create pending, then (same pass, the pod runs) creating and configured again.
        assert_eq!(m.state, MemberState::Configured);
        assert_eq!(m.state_detail.last_setup_generation, None);
        assert_eq!(m.state_detail.last_config_data_generation, None);
        assert_eq!(
            m.state_detail.last_configured_container,
            Some(format!("cid-{pod}-1"))
        );
    }

    #[test]
    fn container_id_change_with_pvc_rechecks_setup() {
        let mut sim = configured_centos(1, true);
        let pod = members(&sim, "vanilla_centos")[0].pod.clone();
        sim.obs.cluster.status.as_mut().unwrap().roles[0].members[0]
            .state_detail
            .last_setup_generation = Some(1);
        sim.restart(&pod);
        // Make the pod not running yet so the member stays in create pending this pass.
        sim.obs.pods.get_mut(&pod).unwrap().status.as_mut().unwrap().phase = Some("Pending".into());
        let plan = sim.pass();
        assert!(msgs(&plan).contains(&format!(
            "container ID has changed for member{{{pod}}}; will re-check setup"
        )));
        let m = &members(&sim, "vanilla_centos")[0];
        assert_eq!(m.state, MemberState::CreatePending);
        assert_eq!(m.state_detail.last_setup_generation, Some(1));
        assert!(plan.status.member_state_rollup.members_restarting);
        assert!(!plan.status.member_state_rollup.membership_changing);
    }

    #[test]
    fn a_member_notified_in_the_pass_is_not_left_unresponsive() {
        let mut m = kubedirector_crds::cluster::MemberStatus {
            pod: "p".into(),
            state: MemberState::Configured,
            ..Default::default()
        };
        m.state_detail.last_known_container_state = Some(ContainerState::Unresponsive);
        m.state_detail.last_config_data_generation = Some(2);
        let mut status = KubeDirectorClusterStatus {
            roles: vec![kubedirector_crds::cluster::RoleStatus {
                id: "r".into(),
                members: vec![m],
                ..Default::default()
            }],
            ..Default::default()
        };
        let pods: std::collections::BTreeMap<String, Pod> =
            [("p".to_owned(), pod("p", "Running", Some("c"), true))].into();
        // Still behind generation 3: stays unresponsive, and counts as down.
        refresh_resolved_unresponsive(&mut status, &pods, 3);
        let state = |s: &KubeDirectorClusterStatus| {
            s.roles[0].members[0]
                .state_detail
                .last_known_container_state
                .clone()
        };
        assert_eq!(state(&status), Some(ContainerState::Unresponsive));
        assert!(rollup(&status).members_down);
        // Caught up (the pass refreshed configmeta and ran the notifications): running, not down.
        refresh_resolved_unresponsive(&mut status, &pods, 2);
        assert_eq!(state(&status), Some(ContainerState::Running));
        assert!(!rollup(&status).members_down);
        // A pod that really is not ready stays unresponsive.
        let pods: std::collections::BTreeMap<String, Pod> =
            [("p".to_owned(), pod("p", "Running", Some("c"), false))].into();
        status.roles[0].members[0].state_detail.last_known_container_state =
            Some(ContainerState::Unresponsive);
        refresh_resolved_unresponsive(&mut status, &pods, 2);
        assert_eq!(state(&status), Some(ContainerState::Unresponsive));
    }

    #[test]
    fn observe_container_states() {
        let gen_ok = false;
        assert_eq!(
            observe_container_state(None, gen_ok, false),
            ContainerState::Absent
        );
        assert_eq!(
            observe_container_state(Some(&pod("p", "Running", Some("c"), true)), gen_ok, false),
            ContainerState::Running
        );
        assert_eq!(
            observe_container_state(Some(&pod("p", "Running", Some("c"), false)), gen_ok, false),
            ContainerState::Unresponsive
        );
        assert_eq!(
            observe_container_state(Some(&pod("p", "Running", Some("c"), true)), true, false),
            ContainerState::Unresponsive
        );
        assert_eq!(
            observe_container_state(Some(&pod("p", "Running", Some("c"), true)), false, true),
            ContainerState::Unresponsive
        );
        let mut unknown_ready = pod("p", "Running", Some("c"), true);
        unknown_ready.status.as_mut().unwrap().conditions = None;
        assert_eq!(
            observe_container_state(Some(&unknown_ready), gen_ok, false),
            ContainerState::Unknown
        );
        assert_eq!(
            observe_container_state(Some(&pod_waiting("p", true)), gen_ok, false),
            ContainerState::Initializing
        );
        assert_eq!(
            observe_container_state(Some(&pod_waiting("p", false)), gen_ok, false),
            ContainerState::Waiting
        );
        assert_eq!(
            observe_container_state(Some(&pod_terminated("p", "c")), gen_ok, false),
            ContainerState::Terminated
        );
        assert_eq!(
            observe_container_state(Some(&pod("p", "Pending", None, false)), gen_ok, false),
            ContainerState::Absent
        );
    }

    #[test]
    fn unschedulable_pod_sets_scheduling_error_and_rollup_flags() {
        let mut sim = Sim::new(cluster_centos(1), app_centos());
        sim.pass();
        sim.pass();
        let pod_name = members(&sim, "vanilla_centos")[0].pod.clone();
        let mut p = pod(&pod_name, "Pending", None, false);
        p.status.as_mut().unwrap().conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/3 nodes are available".into()),
            ..Default::default()
        }]);
        sim.obs.pods.insert(pod_name, p);
        let plan = sim.pass();
        let m = &plan.status.roles[0].members[0];
        assert_eq!(
            m.state_detail.scheduling_error_message.as_deref(),
            Some("0/3 nodes are available")
        );
        let r = plan.status.member_state_rollup;
        assert!(r.members_not_scheduled && r.members_waiting && r.membership_changing);
        assert!(!r.members_down);
    }

    #[test]
    fn rollup_rules() {
        let member = |state: MemberState, cs: ContainerState, last: Option<&str>| MemberStatus {
            pod: "p".into(),
            state,
            state_detail: kubedirector_crds::cluster::MemberStateDetail {
                last_known_container_state: Some(cs),
                last_configured_container: last.map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        };
        let status_of = |m: MemberStatus| KubeDirectorClusterStatus {
            roles: vec![RoleStatus {
                id: "r".into(),
                stateful_set: "s".into(),
                members: vec![m],
            }],
            ..Default::default()
        };
        let r = rollup(&status_of(member(
            MemberState::Configured,
            ContainerState::Terminated,
            Some("c"),
        )));
        assert_eq!(
            r,
            MemberStateRollup {
                members_down: true,
                ..Default::default()
            }
        );
        let r = rollup(&status_of(member(
            MemberState::ConfigError,
            ContainerState::Running,
            Some("c"),
        )));
        assert_eq!(
            r,
            MemberStateRollup {
                config_errors: true,
                ..Default::default()
            }
        );
        let r = rollup(&status_of(member(
            MemberState::Creating,
            ContainerState::Unresponsive,
            Some("c"),
        )));
        assert_eq!(
            r,
            MemberStateRollup {
                members_down: true,
                members_restarting: true,
                ..Default::default()
            }
        );
        let r = rollup(&status_of(member(
            MemberState::Deleting,
            ContainerState::Absent,
            None,
        )));
        assert_eq!(
            r,
            MemberStateRollup {
                membership_changing: true,
                ..Default::default()
            }
        );
        let r = rollup(&status_of(member(
            MemberState::DeletePending,
            ContainerState::Initializing,
            None,
        )));
        assert_eq!(
            r,
            MemberStateRollup {
                membership_changing: true,
                members_initializing: true,
                ..Default::default()
            }
        );
        let r = rollup(&status_of(member(
            MemberState::CreatePending,
            ContainerState::Waiting,
            None,
        )));
        assert_eq!(
            r,
            MemberStateRollup {
                membership_changing: true,
                members_waiting: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn rollup_down_check_and_waiting_per_state() {
        let member = |state: &str, cs: ContainerState, last: Option<&str>, sched: bool| MemberStatus {
            pod: "p".into(),
            state: MemberState::from_wire(state),
            state_detail: kubedirector_crds::cluster::MemberStateDetail {
                last_known_container_state: Some(cs),
                last_configured_container: last.map(str::to_owned),
                scheduling_error_message: sched.then(|| "unschedulable".to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = |m: MemberStatus| {
            rollup(&KubeDirectorClusterStatus {
                roles: vec![RoleStatus {
                    id: "r".into(),
                    stateful_set: "s".into(),
                    members: vec![m],
                }],
                ..Default::default()
            })
        };
        // create pending: never "down"; an absent container is "waiting" (and "not scheduled"
        // with a scheduling error); a known last container means "restarting".
        let cp = r(member("create pending", ContainerState::Absent, Some("c"), true));
        assert!(cp.members_restarting && cp.members_waiting && cp.members_not_scheduled);
        assert!(!cp.members_down && !cp.membership_changing);
        let cp = r(member("create pending", ContainerState::Terminated, None, true));
        assert!(cp.membership_changing && !cp.members_down && !cp.members_waiting);
        assert!(!cp.members_not_scheduled, "only with an absent container");
        // creating: down check, but an absent container is not "waiting".
        let cr = r(member("creating", ContainerState::Absent, None, false));
        assert!(cr.members_down && cr.membership_changing && !cr.members_waiting);
        // configured / config error / delete pending: down check on terminated, unresponsive,
        // absent only.
        for (cs, down) in [
            (ContainerState::Absent, true),
            (ContainerState::Terminated, true),
            (ContainerState::Unresponsive, true),
            (ContainerState::Unknown, false),
            (ContainerState::Running, false),
            (ContainerState::Waiting, false),
        ] {
            for state in ["configured", "config error", "delete pending"] {
                let x = r(member(state, cs.clone(), Some("c"), false));
                assert_eq!(x.members_down, down, "{state} {cs:?}");
                assert_eq!(x.config_errors, state == "config error");
                assert_eq!(x.membership_changing, state == "delete pending");
                assert_eq!(x.members_waiting, cs == ContainerState::Waiting);
            }
        }
        // deleting: never down.
        let d = r(member("deleting", ContainerState::Terminated, Some("c"), false));
        assert!(d.membership_changing && !d.members_down);
        // Unknown member states contribute nothing but the container flags.
        let o = r(member("bogus", ContainerState::Initializing, None, false));
        assert_eq!(
            o,
            MemberStateRollup {
                members_initializing: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn compaction_drops_empty_roles_and_members_in_order() {
        let m = |p: &str| MemberStatus {
            pod: p.into(),
            ..Default::default()
        };
        let mut st = KubeDirectorClusterStatus {
            roles: vec![
                RoleStatus {
                    id: "a".into(),
                    stateful_set: "".into(),
                    members: vec![m("x")],
                },
                RoleStatus {
                    id: "b".into(),
                    stateful_set: "s".into(),
                    members: vec![m("1"), m(""), m("3")],
                },
            ],
            ..Default::default()
        };
        compact(&mut st);
        assert_eq!(st.roles.len(), 1);
        assert_eq!(
            st.roles[0]
                .members
                .iter()
                .map(|m| m.pod.as_str())
                .collect::<Vec<_>>(),
            vec!["1", "3"]
        );
    }
}
