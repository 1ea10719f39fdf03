//! Spec 7 R4: the reconciler, not the webhook, moves a cluster to `spec modified`. Upstream's
//! webhook patched the state into the status on a main-resource write, which the API server
//! discards (status subresource), so the "one spec change at a time" guard rarely worked.

use kubedirector_crds::cluster::ClusterState;

use super::Pass;
use crate::plan::EventReason;

impl Pass<'_> {
    /// Spec 7 R4 (upstream's webhook patched `spec modified` into a status the API server
    /// discards): records `metadata.generation` in `status.observedGeneration`. A generation ahead
    /// of the recorded one is a spec change: the state becomes `spec modified` and nothing else
    /// happens in this pass, so that state is stored (and the webhook's C-10 check sees it); the
    /// next pass handles the change and moves to `updating` or `configured` (spec 3.3). A
    /// `creating` cluster stays `creating` (sticky until first stable), and a status without the
    /// field (written by an older version) just gets it.
    pub(super) fn observe_generation(&mut self) -> bool {
        let Some(generation) = self.obs.cluster.metadata.generation else {
            return false;
        };
        match self.status.observed_generation {
            Some(seen) if seen >= generation => false,
            Some(_) if self.status.state != ClusterState::Creating => {
                self.status.observed_generation = Some(generation);
                self.status.state = ClusterState::SpecModified;
                self.normal(EventReason::Cluster, "spec modified");
                // Our own status write announces the next pass; this is the safety net.
                self.requeue = true;
                true
            }
            _ => {
                self.status.observed_generation = Some(generation);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::testing::*;
    use crate::plan::*;
    use kubedirector_crds::cluster::*;

    fn bump_generation(sim: &mut Sim) -> i64 {
        let g = sim.obs.cluster.metadata.generation.unwrap_or(1) + 1;
        sim.obs.cluster.metadata.generation = Some(g);
        g
    }

    fn configured_at_generation_1(n: i32) -> Sim {
        let mut c = cluster_centos(n);
        c.metadata.generation = Some(1);
        let mut sim = Sim::new(c, app_centos());
        sim.converge(20);
        assert_eq!(sim.status().state, ClusterState::Configured);
        sim
    }

    #[test]
    fn the_first_pass_records_the_generation_it_saw() {
        let mut c = cluster_centos(1);
        c.metadata.generation = Some(3);
        let mut sim = Sim::new(c, app_centos());
        let plan = sim.pass();
        assert_eq!(plan.status.state, ClusterState::Creating);
        assert_eq!(plan.status.observed_generation, Some(3));
    }

    #[test]
    fn a_spec_change_is_acknowledged_as_spec_modified_alone_then_handled() {
        let mut sim = configured_at_generation_1(1);
        assert_eq!(sim.status().observed_generation, Some(1));
        sim.set_members("vanilla_centos", 2);
        let g = bump_generation(&mut sim);

        let ack = sim.pass();
        assert!(ack.status_changed);
        assert_eq!(ack.status.state, ClusterState::SpecModified);
        assert_eq!(ack.status.observed_generation, Some(g));
        assert_eq!(msgs(&ack), vec!["spec modified"]);
        assert!(
            ack.commands.iter().all(|c| matches!(c, Command::Event(_))),
            "the acknowledging pass changes nothing else: {:?}",
            ack.commands
        );
        assert_eq!(members(&sim, "vanilla_centos").len(), 1);
        assert!(ack.requeue);

        // The next passes handle the change: updating, then configured with two members.
        let plans = sim.converge(20);
        assert_eq!(plans[0].status.state, ClusterState::Updating);
        assert!(plans.iter().all(|p| p.status.state != ClusterState::SpecModified));
        assert_eq!(sim.status().state, ClusterState::Configured);
        assert_eq!(sim.status().observed_generation, Some(g));
        assert_eq!(states(&sim, "vanilla_centos"), vec!["configured", "configured"]);
    }

    #[test]
    fn a_spec_change_without_membership_change_goes_back_to_configured() {
        let mut sim = configured_at_generation_1(1);
        let g = bump_generation(&mut sim);
        assert_eq!(sim.pass().status.state, ClusterState::SpecModified);
        let next = sim.pass();
        assert_eq!(next.status.state, ClusterState::Configured);
        assert_eq!(next.status.observed_generation, Some(g));
        assert!(sim
            .converge(5)
            .iter()
            .all(|p| !p.status_changed || p.status.state == ClusterState::Configured));
    }

    #[test]
    fn a_creating_cluster_stays_creating_and_an_old_status_just_gets_the_field() {
        let mut c = cluster_centos(1);
        c.metadata.generation = Some(1);
        let mut sim = Sim::new(c, app_centos());
        sim.pass();
        bump_generation(&mut sim);
        let plan = sim.pass();
        assert_eq!(plan.status.state, ClusterState::Creating);
        assert_eq!(plan.status.observed_generation, Some(2));
        assert!(!msgs(&plan).contains(&"spec modified".to_owned()));

        // A status written before the field existed: recorded, no `spec modified`.
        let mut sim = configured_at_generation_1(1);
        sim.obs.cluster.status.as_mut().unwrap().observed_generation = None;
        bump_generation(&mut sim);
        let plan = sim.pass();
        assert_eq!(plan.status.state, ClusterState::Configured);
        assert_eq!(plan.status.observed_generation, Some(2));
    }

    #[test]
    fn an_object_without_generation_is_left_alone() {
        let mut sim = configured_centos(1, false);
        let plan = sim.pass();
        assert_eq!(plan.status.observed_generation, None);
        assert_eq!(plan.status.state, ClusterState::Configured);
    }
}
