//! Configuration injection inside the pass (spec 3.2 step 15, 3.11 steps 1-2, 4.4-4.7): the
//! configmeta of the pass, the refresh of configured members and the barrier, the setup job of a
//! `creating` member, addnodes/delnodes queueing and notification execution with the generation
//! fast-forward. The per-member decisions themselves are the pure functions of
//! [`crate::plan::config::member`]; this file feeds them from the observation and collects their
//! jobs and events.
//!
//! Deviation from upstream (spec 3.11 step 2, R14): the barrier only waits for *configured*
//! members to hold the current configmeta. A `create pending` or `creating` member behind the
//! generation does not block, because its setup writes the current configmeta anyway; upstream
//! deadlocks on a restarting member whose generation fell behind.

use kubedirector_crds::app::EventName;
use kubedirector_crds::cluster::{MemberState, RoleSpec};

use super::super::config::configmeta::{Configmeta, ConfigmetaSource};
use super::super::config::member::{self, Step};
use super::super::config::script::{GuestJob, SetupJob};
use super::super::{names, Command};
use super::Pass;

/// Which notification a batch needs (spec 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NotifyOp {
    /// New members finished their setup.
    AddNodes,
    /// Members are being removed.
    DelNodes,
}

impl NotifyOp {
    fn wire(self) -> &'static str {
        match self {
            NotifyOp::AddNodes => "addnodes",
            NotifyOp::DelNodes => "delnodes",
        }
    }

    fn event(self) -> EventName {
        match self {
            NotifyOp::AddNodes => EventName::AddNodes,
            NotifyOp::DelNodes => EventName::DelNodes,
        }
    }
}

impl Pass<'_> {
    /// Step 15: the configmeta generator over the intended members, when any role of the app
    /// has a setup package (nothing else reads it).
    pub(super) fn build_configmeta(&mut self) {
        let Some(app) = self.info.app else { return };
        if !self
            .info
            .roles()
            .iter()
            .any(|r| self.info.role_has_setup_package(&r.id))
        {
            return;
        }
        let src = ConfigmetaSource {
            cluster: self.info.cluster,
            app,
            status: &self.status,
            domain_base: self.info.config.cluster_svc_domain_base_or_default(),
            master_key: self.info.config.master_encryption_key.as_deref(),
        };
        let connections = self.connections_value();
        self.configmeta = Some(Configmeta::build(&src, Some(connections)));
    }

    /// `<pod>.<headless service>.<namespace><domain base>`.
    pub(super) fn fqdn(&self, pod: &str) -> String {
        names::fqdn(
            pod,
            &self.status.cluster_service,
            self.info.namespace(),
            self.info.config.cluster_svc_domain_base_or_default(),
        )
    }

    pub(super) fn guest_command(&mut self, role: &str, pod: &str, container_id: String, step: Step) {
        for e in step.events {
            self.event(e);
        }
        self.requeue |= step.requeue;
        if let Some(job) = step.job {
            self.commands.push(Command::RunGuestJob {
                role: role.to_owned(),
                pod: pod.to_owned(),
                container_id,
                job,
            });
        }
    }

    /// Spec 3.11 steps 1-2: configured members behind the generation get the new configmeta.
    /// Returns `true` while the barrier holds (some configured member is still behind).
    pub(super) fn refresh_configured_members(&mut self) -> bool {
        let Some(cm) = self.configmeta.take() else {
            return false;
        };
        let generation = self.generation();
        let mut blocked = false;
        for idx in 0..self.status.roles.len() {
            let role_id = self.status.roles[idx].id.clone();
            for mi in 0..self.status.roles[idx].members.len() {
                let m = &mut self.status.roles[idx].members[mi];
                if m.state != MemberState::Configured {
                    continue;
                }
                let pod = m.pod.clone();
                let cid = m
                    .state_detail
                    .last_configured_container
                    .clone()
                    .unwrap_or_default();
                let step = member::refresh(
                    m,
                    &role_id,
                    self.obs.guest.get(&pod),
                    generation,
                    &cm.for_member(&pod),
                );
                if m.state_detail
                    .last_config_data_generation
                    .is_some_and(|g| g != generation)
                {
                    blocked = true;
                }
                self.guest_command(&role_id, &pod, cid, step);
            }
        }
        self.configmeta = Some(cm);
        if blocked {
            self.normal(
                super::super::EventReason::Cluster,
                "cluster spec change processing blocked on member updates",
            );
        }
        blocked
    }

    /// The setup job of a member of `role_id` (spec 4.4), configmeta rendered for `pod`.
    fn setup_job(&self, role_id: &str, spec: Option<&RoleSpec>, pod: &str) -> SetupJob {
        let app = self.info.app.map(|a| &a.spec);
        let package = app.and_then(|a| a.role_setup_package(role_id));
        let event_list = app.and_then(|a| a.role_event_list(role_id));
        SetupJob {
            configmeta: self
                .configmeta
                .as_ref()
                .map(|c| c.for_member(pod))
                .unwrap_or_default(),
            generation: self.generation(),
            package_url: package.map(|p| p.package_url.clone()),
            new_layout: package.is_some_and(|p| p.uses_new_setup_layout()),
            run_configure: event_list.is_none_or(|l| l.contains(&EventName::Configure)),
            systemd: app.is_some_and(|a| a.requires_systemd()),
            restart: false,
            file_injections: spec.map(|s| s.file_injections.clone()).unwrap_or_default(),
            max_log_size: app.map_or(0, |a| a.role_max_log_size_dump(role_id)),
        }
    }

    /// `creating` handling of a role with in-guest work (spec 4.4). Returns the indexes of the
    /// members that left `creating` in this pass.
    pub(super) fn configure_creating(
        &mut self,
        idx: usize,
        role_id: &str,
        spec: Option<&RoleSpec>,
        can_start: bool,
    ) -> Vec<usize> {
        let mut left = Vec::new();
        for mi in 0..self.status.roles[idx].members.len() {
            if self.status.roles[idx].members[mi].state != MemberState::Creating {
                continue;
            }
            let pod = self.status.roles[idx].members[mi].pod.clone();
            let job = self.setup_job(role_id, spec, &pod);
            let m = &mut self.status.roles[idx].members[mi];
            let cid = m.state_detail.configuring_container.clone().unwrap_or_default();
            let mut step = member::creating(m, role_id, self.obs.guest.get(&pod), &job, can_start);
            if m.state != MemberState::Creating {
                left.push(mi);
            }
            if !self.configcli && matches!(&step.job, Some(GuestJob::Setup(j)) if j.package_url.is_some()) {
                step.events.push(super::super::PlanEvent::warning(
                    super::super::EventReason::Member,
                    format!(
                        "configcli not installed in member{{{pod}}}: the operator has no configcli tarball"
                    ),
                ));
            }
            self.guest_command(role_id, &pod, cid, step);
        }
        left
    }

    /// Queues `op` for `fqdns` (members of `role_id`) on every target member (spec 4.5).
    pub(super) fn queue_notifications(&mut self, op: NotifyOp, role_id: &str, fqdns: &[String]) {
        if fqdns.is_empty() {
            return;
        }
        let generation = self.generation();
        let cmd = member::notify_cmd(op.wire(), role_id, fqdns);
        for idx in 0..self.status.roles.len() {
            let target_role = self.status.roles[idx].id.clone();
            if !self.info.role_has_setup_package(&target_role) {
                continue;
            }
            let allowed = self
                .info
                .app
                .and_then(|a| a.spec.role_event_list(&target_role))
                .is_none_or(|l| l.contains(&op.event()));
            if !allowed {
                continue;
            }
            for m in &mut self.status.roles[idx].members {
                if member::is_notify_target(m, generation) {
                    m.state_detail.pending_notify_cmds.push(cmd.clone());
                }
            }
        }
    }

    /// Notification execution and the generation fast-forward (spec 4.5, the epilogue of every
    /// pass that reaches member sync).
    pub(super) fn run_notifications(&mut self) {
        let max_log =
            |pass: &Self, role: &str| pass.info.app.map_or(0, |a| a.spec.role_max_log_size_dump(role));
        let stored = self.obs.cluster.status.as_ref();
        for idx in 0..self.status.roles.len() {
            let role_id = self.status.roles[idx].id.clone();
            let log = max_log(self, &role_id);
            for mi in 0..self.status.roles[idx].members.len() {
                let pod = self.status.roles[idx].members[mi].pod.clone();
                let queue = stored
                    .and_then(|s| s.roles.iter().find(|r| r.id == role_id))
                    .and_then(|r| r.members.iter().find(|m| m.pod == pod))
                    .map(|m| m.state_detail.pending_notify_cmds.clone())
                    .unwrap_or_default();
                let m = &mut self.status.roles[idx].members[mi];
                let cid = m
                    .state_detail
                    .last_configured_container
                    .clone()
                    .unwrap_or_default();
                let step = member::notify(m, self.obs.guest.get(&pod), &queue, log);
                self.guest_command(&role_id, &pod, cid, step);
            }
        }
        let transitional = self.status.roles.iter().flat_map(|r| r.members.iter()).any(|m| {
            matches!(
                m.state,
                MemberState::CreatePending
                    | MemberState::Creating
                    | MemberState::DeletePending
                    | MemberState::Deleting
            )
        });
        if transitional {
            return;
        }
        let busy: Vec<String> = self
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::RunGuestJob {
                    pod,
                    job: GuestJob::WriteConfigmeta { .. },
                    ..
                } => Some(pod.clone()),
                _ => None,
            })
            .collect();
        for m in self.status.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
            let d = &mut m.state_detail;
            if m.state == MemberState::Configured
                && d.pending_notify_cmds.is_empty()
                && d.last_setup_generation.is_some()
                && !busy.contains(&m.pod)
                && !self.awaiting_reconnect.contains(&m.pod)
                && !self.obs.guest.get(&m.pod).is_some_and(|g| g.busy)
            {
                d.last_setup_generation = d.last_config_data_generation;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kubedirector_crds::cluster::*;

    use crate::plan::config::script::{GuestJob, SetupJob};
    use crate::plan::testing::*;

    /// The jobs of `sim` from `from` on, as `(pod, kind, detail)`.
    fn jobs(sim: &Sim, from: usize) -> Vec<(String, &'static str, String)> {
        sim.guest_log[from..]
            .iter()
            .map(|(pod, _, job)| match job {
                GuestJob::Setup(s) => (pod.clone(), "setup", s.generation.to_string()),
                GuestJob::WriteConfigmeta { generation, .. } => {
                    (pod.clone(), "configmeta", generation.to_string())
                }
                GuestJob::Reconnect { version, .. } => (pod.clone(), "reconnect", version.to_string()),
                GuestJob::Notify { cmds, .. } => (
                    pod.clone(),
                    "notify",
                    cmds.iter()
                        .map(|c| c.arguments.join(" "))
                        .collect::<Vec<_>>()
                        .join(" | "),
                ),
            })
            .collect()
    }

    fn setup_of(sim: &Sim, pod: &str) -> SetupJob {
        sim.guest_log
            .iter()
            .find_map(|(p, _, j)| match j {
                GuestJob::Setup(s) if p == pod => Some((**s).clone()),
                _ => None,
            })
            .expect("a setup job")
    }

    #[test]
    fn the_setup_job_carries_the_members_configmeta_and_the_apps_package() {
        let mut sim = Sim::new(cluster_spark(), app_spark());
        sim.converge(30);
        let w = sim.status().roles[1].stateful_set.clone();
        let job = setup_of(&sim, &format!("{w}-1"));
        assert_eq!(
            job.package_url.as_deref(),
            Some("file:///opt/configscripts/appconfig-5.2.0.35.tgz")
        );
        assert!(job.systemd, "spark245 requires systemd");
        assert!(job.run_configure);
        let cm: serde_json::Value = serde_json::from_str(&job.configmeta).unwrap();
        assert_eq!(cm["node"]["role_id"], "spark-worker");
        assert_eq!(
            cm["node"]["fqdn"],
            format!("{w}-1.{}.ns1.svc.cluster.local", sim.status().cluster_service)
        );
        assert_eq!(
            cm["nodegroups"]["1"]["roles"]["spark-worker"]["node_ids"],
            serde_json::json!(["2", "3"])
        );
    }

    #[test]
    fn scale_out_refreshes_existing_members_first_then_announces_new_members_to_the_others_only() {
        let mut sim = Sim::new(cluster_spark(), app_spark());
        sim.converge(30);
        let w = sim.status().roles[1].stateful_set.clone();
        let m = sim.status().roles[0].members[0].pod.clone();
        let before = sim.guest_log.len();
        sim.set_members("spark-worker", 3);
        sim.converge(40);
        assert_eq!(sim.status().state, ClusterState::Configured);
        let new = format!("{w}-2");
        let fqdn = format!("{new}.{}.ns1.svc.cluster.local", sim.status().cluster_service);
        let log = jobs(&sim, before);
        let refreshes: Vec<&String> = log.iter().filter(|j| j.1 == "configmeta").map(|j| &j.0).collect();
        assert_eq!(refreshes.len(), 3, "{log:?}");
        let setup_at = log
            .iter()
            .position(|j| j.0 == new && j.1 == "setup")
            .expect("setup of the new member");
        assert!(
            log[..setup_at].iter().filter(|j| j.1 == "configmeta").count() == 3,
            "refresh before setup: {log:?}"
        );
        let notified: Vec<(&String, &String)> = log
            .iter()
            .filter(|j| j.1 == "notify")
            .map(|j| (&j.0, &j.2))
            .collect();
        let want = format!("--addnodes --nodegroup 1 --role spark-worker --fqdns {fqdn}");
        assert_eq!(notified.len(), 3, "{log:?}");
        assert!(notified.iter().all(|(_, args)| **args == want), "{notified:?}");
        assert!(
            notified.iter().all(|(pod, _)| **pod != new),
            "never told about itself"
        );
        assert!(notified.iter().any(|(pod, _)| **pod == m));
        for mm in sim.status().roles.iter().flat_map(|r| r.members.iter()) {
            assert_eq!(mm.state_detail.last_setup_generation, Some(2), "{}", mm.pod);
            assert!(mm.state_detail.pending_notify_cmds.is_empty());
        }
    }

    #[test]
    fn scale_in_announces_departing_members_with_delnodes() {
        let mut sim = Sim::new(cluster_spark(), app_spark());
        sim.converge(30);
        let w = sim.status().roles[1].stateful_set.clone();
        let before = sim.guest_log.len();
        sim.set_members("spark-worker", 1);
        sim.converge(40);
        assert_eq!(sim.status().state, ClusterState::Configured);
        assert_eq!(states(&sim, "spark-worker"), vec!["configured"]);
        let gone = format!("{w}-1.{}.ns1.svc.cluster.local", sim.status().cluster_service);
        let log = jobs(&sim, before);
        let notified: Vec<&(String, &str, String)> = log.iter().filter(|j| j.1 == "notify").collect();
        assert_eq!(notified.len(), 2, "{log:?}");
        assert!(notified
            .iter()
            .all(|j| j.2 == format!("--delnodes --nodegroup 1 --role spark-worker --fqdns {gone}")));
        assert!(notified.iter().all(|j| j.0 != format!("{w}-1")));
    }

    #[test]
    fn a_failing_configure_puts_the_member_in_config_error_and_the_cluster_still_settles() {
        let mut sim = Sim::new(cluster_spark(), app_spark());
        // The pod names are deterministic: fail the second worker's configure.
        let mut probe = Sim::new(cluster_spark(), app_spark());
        probe.converge(30);
        let w = probe.status().roles[1].stateful_set.clone();
        sim.configure_exit.insert(format!("{w}-1"), 7);
        let plans = sim.converge(30);
        assert_eq!(states(&sim, "spark-worker"), vec!["configured", "config error"]);
        let failed = &members(&sim, "spark-worker")[1];
        assert_eq!(
            failed.state_detail.config_error_detail.as_deref(),
            Some("execution of app config failed: configure failed with exit status {7}")
        );
        assert!(sim.status().member_state_rollup.config_errors);
        assert!(messages(&plans).iter().any(|m| m.starts_with(&format!(
            "startscript --configure exited with status 7 in member{{{w}-1}}"
        ))));
    }

    #[test]
    fn a_restarted_member_without_storage_is_set_up_again_and_nobody_is_notified() {
        let mut sim = Sim::new(cluster_spark(), app_spark());
        sim.converge(30);
        let w = sim.status().roles[1].stateful_set.clone();
        let before = sim.guest_log.len();
        sim.restart(&format!("{w}-0"));
        sim.converge(30);
        assert_eq!(sim.status().state, ClusterState::Configured);
        let log = jobs(&sim, before);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(
            (log[0].0.as_str(), log[0].1),
            (format!("{w}-0").as_str(), "setup")
        );
    }
}
