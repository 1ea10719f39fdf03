//! Member sync (spec 3.4, 3.11, step 16): replicas settling, `create pending` -> `creating` once
//! the pod runs, `creating` -> `configured` (through the setup job of [`super::configure`] for
//! roles that need in-pod work), notify generation, `delete pending` -> `deleting`, and the
//! removal of a deleted member's service and claims.

use kubedirector_crds::cluster::{MemberState, MemberStatus, RoleSpec};

use super::super::names;
use super::super::objects::service::NO_SERVICE;
use super::super::{Command, EventReason, PlanEvent};
use super::configure::NotifyOp;
use super::observe::{app_container_id, pod_phase};
use super::orphans::owned_by;
use super::Pass;

/// How many of `members` are in one of `states`.
pub(super) fn count_states(members: &[MemberStatus], states: &[MemberState]) -> usize {
    members.iter().filter(|m| states.contains(&m.state)).count()
}

/// States counted as "requested" replicas (spec 3.11).
pub(super) const REPLICA_STATES: &[MemberState] = &[
    MemberState::CreatePending,
    MemberState::Creating,
    MemberState::Configured,
    MemberState::ConfigError,
];

impl Pass<'_> {
    pub(super) fn sync_members(&mut self) {
        // Step 15 and 3.11 steps 1-2: configmeta, its refresh on configured members, the barrier.
        self.build_configmeta();
        let blocked = self.refresh_configured_members();
        self.reconnect_members();
        for (role_id, spec) in self.role_order() {
            let Some(idx) = self.role_index(&role_id) else {
                continue;
            };
            if blocked {
                // Only already running setups are followed; none starts (spec 3.11 step 2).
                self.handle_creating(idx, &role_id, spec, false);
                continue;
            }
            self.handle_create_pending(idx, &role_id);
            self.handle_creating(idx, &role_id, spec, true);
            self.handle_delete_pending(idx, &role_id);
            self.handle_deleting(idx, &role_id);
        }
        self.run_notifications();
    }

    /// Brings the StatefulSet's `spec.replicas` to the requested member count. Returns `true`
    /// when the replicas are settled (`spec.replicas` and `status.replicas` both match).
    pub(super) fn settle_replicas(&mut self, idx: usize, role_id: &str, wait_for_status: bool) -> bool {
        let role = &self.status.roles[idx];
        let want = i32::try_from(count_states(&role.members, REPLICA_STATES)).unwrap_or(i32::MAX);
        let Some(sts) = self
            .obs
            .statefulsets
            .get(&role.stateful_set)
            .filter(|s| super::orphans::ours(&s.metadata, self.info.uid(), self.info.name()))
        else {
            // Missing, or someone else's of that name (never scaled; see `sync_roles`).
            return false;
        };
        let name = role.stateful_set.clone();
        if self
            .commands
            .iter()
            .any(|c| matches!(c, Command::SetReplicas { statefulset, .. } if *statefulset == name))
        {
            // Already changed by another handler of this pass.
            return false;
        }
        let spec_replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if spec_replicas != want {
            self.normal(
                EventReason::Role,
                format!("changing replicas count for role{{{role_id}}}: {spec_replicas} -> {want}"),
            );
            self.commands.push(Command::SetReplicas {
                statefulset: name,
                replicas: want,
            });
            return false;
        }
        if wait_for_status {
            let status_replicas = sts.status.as_ref().map(|s| s.replicas).unwrap_or(0);
            if status_replicas != spec_replicas {
                self.normal(
                    EventReason::Role,
                    format!("waiting for replicas count for role{{{role_id}}}: {status_replicas} -> {spec_replicas}"),
                );
                return false;
            }
        }
        true
    }

    pub(super) fn handle_create_pending(&mut self, idx: usize, role_id: &str) {
        if !self.status.roles[idx]
            .members
            .iter()
            .any(|m| m.state == MemberState::CreatePending)
        {
            return;
        }
        if !self.settle_replicas(idx, role_id, true) {
            return;
        }
        let mut events = Vec::new();
        for m in &mut self.status.roles[idx].members {
            if m.state != MemberState::CreatePending {
                continue;
            }
            match self.obs.pods.get(&m.pod) {
                None => events.push(PlanEvent::normal(
                    EventReason::Member,
                    format!(
                        "failed to find member{{{}}} in role{{{role_id}}}; will retry",
                        m.pod
                    ),
                )),
                Some(pod) => {
                    if pod_phase(pod) == "Running" {
                        if let Some(id) = app_container_id(pod) {
                            m.state = MemberState::Creating;
                            m.state_detail.configuring_container = Some(id.to_owned());
                        }
                    }
                }
            }
        }
        for e in events {
            self.event(e);
        }
    }

    pub(super) fn handle_creating(
        &mut self,
        idx: usize,
        role_id: &str,
        spec: Option<&RoleSpec>,
        can_start: bool,
    ) {
        let needs_setup =
            self.info.role_has_setup_package(role_id) || spec.is_some_and(|s| !s.file_injections.is_empty());
        let left = if needs_setup {
            self.configure_creating(idx, role_id, spec, can_start)
        } else {
            let mut events = Vec::new();
            let mut left = Vec::new();
            for (i, m) in self.status.roles[idx].members.iter_mut().enumerate() {
                if m.state != MemberState::Creating {
                    continue;
                }
                m.state = MemberState::Configured;
                left.push(i);
                events.push(PlanEvent::normal(
                    EventReason::Member,
                    format!(
                        "initial config skipped for member{{{}}} in role{{{role_id}}}",
                        m.pod
                    ),
                ));
            }
            for e in events {
                self.event(e);
            }
            left
        };
        if !left.is_empty() {
            // The batch finished: its new members (never configured before; restarts excluded,
            // config errors included) are announced with addnodes (spec 4.5).
            let fqdns: Vec<String> = left
                .iter()
                .filter_map(|&i| self.status.roles[idx].members.get(i))
                .filter(|m| {
                    m.state_detail
                        .last_configured_container
                        .as_deref()
                        .unwrap_or("")
                        .is_empty()
                })
                .map(|m| self.fqdn(&m.pod))
                .collect();
            self.generate_notifies(NotifyOp::AddNodes, role_id, &fqdns);
            for i in left {
                if let Some(m) = self.status.roles[idx].members.get_mut(i) {
                    m.state_detail.last_configured_container = m.state_detail.configuring_container.take();
                }
            }
        }
    }

    /// Notification generation after a role's `creating` batch finished or its `delete pending`
    /// members are processed (spec 4.5): every role (in processing order) that has members in
    /// `configured`, `create pending` or `creating` is a notification target; roles without a
    /// setup package are skipped with the Normal event `notify skipped for members in role{<id>}`;
    /// the members of the others get `op` queued (`stateDetail.pendingNotifyCmds`).
    pub(super) fn generate_notifies(&mut self, op: NotifyOp, role: &str, fqdns: &[String]) {
        for (role_id, _) in self.role_order() {
            let Some(idx) = self.role_index(&role_id) else {
                continue;
            };
            let targets = count_states(
                &self.status.roles[idx].members,
                &[
                    MemberState::Configured,
                    MemberState::CreatePending,
                    MemberState::Creating,
                ],
            );
            if targets > 0 && !self.info.role_has_setup_package(&role_id) {
                self.normal(
                    EventReason::Role,
                    format!("notify skipped for members in role{{{role_id}}}"),
                );
            }
        }
        self.queue_notifications(op, role, fqdns);
    }

    pub(super) fn handle_delete_pending(&mut self, idx: usize, role_id: &str) {
        let fqdns: Vec<String> = self.status.roles[idx]
            .members
            .iter()
            .filter(|m| m.state == MemberState::DeletePending)
            .map(|m| self.fqdn(&m.pod))
            .collect();
        if fqdns.is_empty() {
            return;
        }
        // delnodes notifications are generated before the members move on (spec 3.11).
        self.generate_notifies(NotifyOp::DelNodes, role_id, &fqdns);
        for m in &mut self.status.roles[idx].members {
            if m.state == MemberState::DeletePending {
                m.state = MemberState::Deleting;
            }
        }
    }

    pub(super) fn handle_deleting(&mut self, idx: usize, role_id: &str) {
        if !self.status.roles[idx]
            .members
            .iter()
            .any(|m| m.state == MemberState::Deleting && !m.pod.is_empty())
        {
            return;
        }
        if self
            .obs
            .statefulsets
            .contains_key(&self.status.roles[idx].stateful_set)
            && !self.settle_replicas(idx, role_id, false)
        {
            return;
        }
        let mut commands = Vec::new();
        for m in &mut self.status.roles[idx].members {
            if m.state != MemberState::Deleting || m.pod.is_empty() || self.obs.pods.contains_key(&m.pod) {
                continue;
            }
            let mut cleared = true;
            // A member whose service name never reached the status (crash after the create)
            // still gets its deterministic service deleted.
            let service = if m.service.is_empty() {
                names::member_service_name(self.info.naming_scheme, &m.pod)
            } else {
                m.service.clone()
            };
            let ours = self
                .obs
                .services
                .get(&service)
                .is_some_and(|svc| !m.service.is_empty() || owned_by(&svc.metadata, self.info.uid()));
            if service != NO_SERVICE && ours {
                commands.push(Command::DeleteService { name: service });
                cleared = false;
            }
            let mut claims: Vec<String> = m.pvc.iter().filter(|p| !p.is_empty()).cloned().collect();
            claims.extend((0..m.block_device_paths.len()).map(|i| names::block_pvc_name(i, &m.pod)));
            for claim in claims {
                if self.obs.pvcs.contains_key(&claim) {
                    commands.push(Command::DeletePvc { name: claim });
                    cleared = false;
                }
            }
            if cleared {
                m.pod.clear();
            }
        }
        self.commands.extend(commands);
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::config::script::GuestJob;
    use crate::plan::testing::*;
    use crate::plan::*;
    use kubedirector_crds::cluster::*;

    #[test]
    fn no_setup_package_members_reach_configured_and_cluster_becomes_stable() {
        let mut sim = Sim::new(cluster_centos(2), app_centos());
        let plans = sim.converge(20);
        let st = sim.status();
        assert_eq!(st.state, ClusterState::Configured);
        assert_eq!(states(&sim, "vanilla_centos"), vec!["configured", "configured"]);
        for m in members(&sim, "vanilla_centos") {
            assert_eq!(
                m.state_detail.last_configured_container,
                Some(format!("cid-{}-0", m.pod))
            );
            assert_eq!(m.state_detail.configuring_container, None);
            assert_eq!(
                m.state_detail.last_known_container_state,
                Some(ContainerState::Running)
            );
            assert_eq!(m.state_detail.last_config_data_generation, None);
        }
        assert_eq!(st.member_state_rollup, MemberStateRollup::default());
        let msgs = messages(&plans);
        let sts = st.roles[0].stateful_set.clone();
        for expected in [
            "new".to_owned(),
            "creating role{vanilla_centos}".to_owned(),
            "changing replicas count for role{vanilla_centos}: 0 -> 2".to_owned(),
            format!("initial config skipped for member{{{sts}-0}} in role{{vanilla_centos}}"),
            "notify skipped for members in role{vanilla_centos}".to_owned(),
            "stable".to_owned(),
        ] {
            assert!(msgs.contains(&expected), "missing {expected:?} in {msgs:?}");
        }
        assert_eq!(msgs.iter().filter(|m| *m == "stable").count(), 1);
        assert!(
            plans
                .iter()
                .flat_map(|p| &p.commands)
                .all(|c| !matches!(c, Command::SetReplicas { .. })),
            "the StatefulSet is created with its final replicas, never patched up to them"
        );
        // Converged: a further pass changes nothing.
        let plan = sim.pass();
        assert!(!plan.status_changed);
        assert!(plan.commands.is_empty(), "{:?}", plan.commands);
        assert_eq!(plan.verdict, Some(Verdict::StableReady));
    }

    #[test]
    fn setup_package_members_are_configured_through_one_setup_job_each() {
        let mut sim = Sim::new(cluster_spark(), app_spark());
        sim.converge(30);
        assert_eq!(states(&sim, "spark-worker"), vec!["configured", "configured"]);
        assert_eq!(sim.status().state, ClusterState::Configured);
        let w = sim.status().roles[1].stateful_set.clone();
        let setups: Vec<(String, String)> = sim
            .guest_log
            .iter()
            .filter(|(_, _, job)| matches!(job, GuestJob::Setup(_)))
            .map(|(pod, cid, _)| (pod.clone(), cid.clone()))
            .collect();
        assert_eq!(setups.len(), 3, "{setups:?}");
        assert!(setups.contains(&(format!("{w}-0"), format!("cid-{w}-0-0"))));
        assert_eq!(sim.guest_log.len(), 3, "no other job on a fresh cluster");
        let m = &members(&sim, "spark-worker")[0];
        assert_eq!(m.state_detail.last_setup_generation, Some(1));
        assert_eq!(m.state_detail.last_config_data_generation, Some(1));
    }

    #[test]
    fn scale_down_removes_highest_ordinals_and_their_service_and_claims() {
        let mut sim = Sim::new(with_storage(cluster_centos(3), 0, 2), app_centos());
        sim.converge(20);
        assert_eq!(sim.status().state, ClusterState::Configured);
        let sts = sim.status().roles[0].stateful_set.clone();
        assert!(sim.obs.pvcs.contains_key(&format!("b1-{sts}-2")));
        sim.set_members("vanilla_centos", 1);
        let plan = sim.pass();
        assert!(msgs(&plan).contains(&"shrinking role{vanilla_centos}".to_owned()));
        // delete pending -> deleting in the same pass, replicas lowered.
        assert_eq!(
            states(&sim, "vanilla_centos"),
            vec!["configured", "deleting", "deleting"]
        );
        assert!(plan.commands.contains(&Command::SetReplicas {
            statefulset: sts.clone(),
            replicas: 1
        }));
        assert!(msgs(&plan).contains(&"changing replicas count for role{vanilla_centos}: 3 -> 1".to_owned()));
        assert!(!plan
            .commands
            .iter()
            .any(|c| matches!(c, Command::DeleteService { .. } | Command::DeletePvc { .. })));
        // Pods go away; then service and all claims of the departed members are deleted.
        sim.kube();
        let plan = sim.pass();
        let mut deletes: Vec<String> = plan
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::DeleteService { name } => Some(format!("svc {name}")),
                Command::DeletePvc { name } => Some(format!("pvc {name}")),
                _ => None,
            })
            .collect();
        deletes.sort();
        let mut want = Vec::new();
        for i in 1..3 {
            want.push(format!("pvc b0-{sts}-{i}"));
            want.push(format!("pvc b1-{sts}-{i}"));
            want.push(format!("pvc p-{sts}-{i}"));
            want.push(format!("svc s-{sts}-{i}"));
        }
        want.sort();
        assert_eq!(deletes, want);
        assert_eq!(
            members(&sim, "vanilla_centos").len(),
            3,
            "entries stay until deletions are observed"
        );
        let plan = sim.pass();
        assert!(plan.status_changed);
        assert_eq!(states(&sim, "vanilla_centos"), vec!["configured"]);
        assert!(!sim.obs.pvcs.contains_key(&format!("p-{sts}-1")));
        sim.converge(10);
        assert_eq!(sim.status().state, ClusterState::Configured);
        assert_eq!(sim.status().last_node_id, 3, "node ids are never reused");
    }

    #[test]
    fn notify_skipped_is_reported_for_every_role_without_a_setup_package() {
        let mut c = cluster_centos(1);
        let mut extra = c.spec.roles[0].clone();
        extra.id = "other".into();
        c.spec.roles.push(extra);
        let mut app = app_centos();
        let mut r = app.spec.roles[0].clone();
        r.id = "other".into();
        app.spec.roles.push(r);
        let mut sim = Sim::new(c, app);
        sim.converge(20);
        assert_eq!(sim.status().state, ClusterState::Configured);
        let skipped = |plans: &[Plan]| {
            messages(plans)
                .into_iter()
                .filter(|m| m.starts_with("notify skipped"))
                .collect::<Vec<_>>()
        };
        // A batch of `other` finishes: both roles are notification targets (spec 4.5).
        sim.set_members("other", 2);
        let plans = sim.converge(20);
        assert_eq!(
            skipped(&plans),
            vec![
                "notify skipped for members in role{vanilla_centos}",
                "notify skipped for members in role{other}"
            ]
        );
        // Delete-pending members are processed: delnodes generation, same targets.
        sim.set_members("other", 1);
        let plan = sim.pass();
        assert_eq!(
            skipped(std::slice::from_ref(&plan)),
            vec![
                "notify skipped for members in role{vanilla_centos}",
                "notify skipped for members in role{other}"
            ]
        );
    }

    #[test]
    fn waiting_for_replicas_and_missing_pods_emit_events() {
        let mut sim = Sim::new(cluster_centos(1), app_centos());
        sim.pass();
        sim.pass(); // the StatefulSet is created with 1 replica
                    // The controller has not caught up yet.
        let plan = sim.pass();
        assert!(
            msgs(&plan).contains(&"waiting for replicas count for role{vanilla_centos}: 0 -> 1".to_owned())
        );
        let sts = sim.status().roles[0].stateful_set.clone();
        sim.obs
            .statefulsets
            .get_mut(&sts)
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .replicas = 1;
        let plan = sim.pass();
        assert!(msgs(&plan).contains(&format!(
            "failed to find member{{{sts}-0}} in role{{vanilla_centos}}; will retry"
        )));
        assert_eq!(states(&sim, "vanilla_centos"), vec!["create pending"]);
    }

    #[test]
    fn replicas_edited_by_hand_on_a_stable_cluster_are_restored() {
        let mut sim = configured_centos(2, false);
        let sts = sim.status().roles[0].stateful_set.clone();
        let edited = sts_with_replicas(sim.obs.statefulsets[&sts].clone(), 5);
        sim.obs.statefulsets.insert(sts.clone(), edited);
        let plan = sim.pass();
        assert!(plan.commands.contains(&Command::SetReplicas {
            statefulset: sts.clone(),
            replicas: 2
        }));
        assert!(msgs(&plan).contains(&"changing replicas count for role{vanilla_centos}: 5 -> 2".to_owned()));
        assert_eq!(plan.status.state, ClusterState::Configured);
        // Once the StatefulSet is back at 2, nothing more is written.
        sim.apply(&plan);
        sim.kube();
        let plan = sim.pass();
        assert!(!plan
            .commands
            .iter()
            .any(|c| matches!(c, Command::SetReplicas { .. })));
    }

    #[test]
    fn restart_and_shrink_in_one_pass_set_replicas_once() {
        let mut sim = configured_centos(3, false);
        let sts = sim.status().roles[0].stateful_set.clone();
        // Member 0 restarts (back to create pending) while the role shrinks to 1.
        sim.restart(&format!("{sts}-0"));
        sim.set_members("vanilla_centos", 1);
        let plan = sim.pass();
        let sets: Vec<&Command> = plan
            .commands
            .iter()
            .filter(|c| matches!(c, Command::SetReplicas { .. }))
            .collect();
        assert_eq!(
            sets,
            vec![&Command::SetReplicas {
                statefulset: sts,
                replicas: 1
            }]
        );
        sim.kube();
        sim.converge(20);
        assert_eq!(states(&sim, "vanilla_centos"), vec!["configured"]);
        assert_eq!(sim.status().state, ClusterState::Configured);
    }
}
