//! Objects this kdcluster owns that the status does not name (R10/R17): the orphan sweep at the end
//! of a pass, and the ownership checks behind adopting an object found under a deterministic name
//! (a create retried after a crash) instead of creating a duplicate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::objects::LABEL_CLUSTER;
use super::super::Command;
use super::Pass;

/// How many name attempts are tried before giving up on finding a free deterministic name.
pub(super) const MAX_NAME_ATTEMPTS: u32 = 64;

/// `true` when `meta` names the object with uid `uid` among its owners.
pub(super) fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

/// Whether an object found under one of this kdcluster's names (`cluster`, uid `uid`) is its
/// own and may be written to: owned by it, or carrying its `kdcluster` label and no other
/// controller (an owner reference stripped by hand is restored; upstream adopts by labels).
/// Someone else's (another controller, a predecessor of the same name included, or none of
/// our labels) is never written to, scaled or deleted.
pub(super) fn ours(meta: &ObjectMeta, uid: &str, cluster: &str) -> bool {
    owned_by(meta, uid)
        || (meta
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_CLUSTER))
            .is_some_and(|c| c == cluster)
            && !meta
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.controller == Some(true) && r.uid != uid))
}

impl Pass<'_> {
    /// Deletes objects this kdcluster owns (owner uid) that the status no longer names: a
    /// StatefulSet or service created by a pass whose status write was lost and whose role or
    /// member has gone since (R17/R10 "delete orphans"). PVCs are never swept.
    pub(super) fn sweep_orphans(&mut self) {
        let uid = self.info.uid().to_owned();
        let deleting_sts: Vec<String> = self
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::DeleteStatefulSet { name } => Some(name.clone()),
                _ => None,
            })
            .collect();
        let mut orphans = Vec::new();
        for (name, sts) in &self.obs.statefulsets {
            let referenced = self.status.roles.iter().any(|r| r.stateful_set == *name);
            if !referenced
                && sts.metadata.deletion_timestamp.is_none()
                && owned_by(&sts.metadata, &uid)
                && !deleting_sts.contains(name)
            {
                orphans.push(Command::DeleteStatefulSet { name: name.clone() });
            }
        }
        let deleting_svc: Vec<String> = self
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::DeleteService { name } => Some(name.clone()),
                _ => None,
            })
            .collect();
        for (name, svc) in &self.obs.services {
            let referenced = *name == self.status.cluster_service
                || self
                    .status
                    .roles
                    .iter()
                    .flat_map(|r| r.members.iter())
                    .any(|m| m.service == *name);
            if !referenced
                && svc.metadata.deletion_timestamp.is_none()
                && owned_by(&svc.metadata, &uid)
                && !deleting_svc.contains(name)
            {
                orphans.push(Command::DeleteService { name: name.clone() });
            }
        }
        self.commands.extend(orphans);
    }

    pub(super) fn adoptable(&self, meta: &ObjectMeta) -> bool {
        meta.deletion_timestamp.is_none()
            && owned_by(meta, self.info.uid())
            && meta
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CLUSTER))
                .map(String::as_str)
                == Some(self.info.name())
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::testing::*;
    use crate::plan::*;

    #[test]
    fn drifted_objects_are_restored() {
        let mut sim = configured_centos(1, false);
        let svc_name = members(&sim, "vanilla_centos")[0].service.clone();
        let sts_name = sim.status().roles[0].stateful_set.clone();
        sim.obs
            .services
            .get_mut(&svc_name)
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .ports
            .as_mut()
            .unwrap()[0]
            .port = 2222;
        sim.obs
            .statefulsets
            .get_mut(&sts_name)
            .unwrap()
            .metadata
            .owner_references = None;
        let plan = sim.pass();
        assert!(plan.commands.iter().any(|c| matches!(c, Command::EnsureMemberService(s) if s.metadata.name.as_deref() == Some(svc_name.as_str()))));
        assert!(plan
            .commands
            .iter()
            .any(|c| matches!(c, Command::PatchStatefulSetMetadata { name, .. } if *name == sts_name)));
        let plan = sim.pass();
        assert!(plan.commands.is_empty(), "{:?}", plan.commands);
    }

    #[test]
    fn statefulset_created_before_a_crash_is_adopted_not_duplicated() {
        let mut sim = Sim::new(cluster_centos(1), app_centos());
        sim.pass();
        let before = sim.obs.clone();
        sim.pass(); // creates headless service + StatefulSet
                    // Crash: the objects exist but the status write was lost.
        let created = sim.obs.statefulsets.clone();
        let services = sim.obs.services.clone();
        sim.obs = before;
        sim.obs.statefulsets = created.clone();
        sim.obs.services = services;
        let plan = sim.pass();
        assert!(!plan.commands.iter().any(is_create), "{:?}", plan.commands);
        assert_eq!(plan.status.roles[0].stateful_set, *created.keys().next().unwrap());
    }

    #[test]
    fn foreign_object_with_the_deterministic_name_is_skipped() {
        let mut sim = Sim::new(cluster_centos(1), app_centos());
        sim.pass();
        let info_uid = "uid-centos";
        let taken =
            names::statefulset_name(names::NamingScheme::Uid, "centos", info_uid, "vanilla_centos", 0);
        let mut foreign = StatefulSet::default();
        foreign.metadata.name = Some(taken.clone());
        sim.obs.statefulsets.insert(taken.clone(), foreign);
        let plan = sim.pass();
        let name = plan.status.roles[0].stateful_set.clone();
        assert_ne!(name, taken);
        assert_eq!(
            name,
            names::statefulset_name(names::NamingScheme::Uid, "centos", info_uid, "vanilla_centos", 1)
        );
    }

    #[test]
    fn orphans_owned_by_the_cluster_are_swept_but_foreign_objects_kept() {
        let mut sim = configured_centos(1, false);
        let sts_name = sim.status().roles[0].stateful_set.clone();
        let mut orphan = sim.obs.statefulsets[&sts_name].clone();
        orphan.metadata.name = Some("kdss-zzzzz".into());
        sim.obs.statefulsets.insert("kdss-zzzzz".into(), orphan);
        let svc_name = members(&sim, "vanilla_centos")[0].service.clone();
        let mut orphan_svc = sim.obs.services[&svc_name].clone();
        orphan_svc.metadata.name = Some("s-kdss-zzzzz-0".into());
        sim.obs
            .services
            .insert("s-kdss-zzzzz-0".into(), orphan_svc.clone());
        let mut foreign = orphan_svc;
        foreign.metadata.name = Some("users-own".into());
        foreign.metadata.owner_references = None;
        sim.obs.services.insert("users-own".into(), foreign);
        let plan = sim.pass();
        assert!(plan.commands.contains(&Command::DeleteStatefulSet {
            name: "kdss-zzzzz".into()
        }));
        assert!(plan.commands.contains(&Command::DeleteService {
            name: "s-kdss-zzzzz-0".into()
        }));
        assert!(!plan.commands.contains(&Command::DeleteService {
            name: "users-own".into()
        }));
        assert!(!plan
            .commands
            .contains(&Command::DeleteStatefulSet { name: sts_name }));
        assert!(!plan.commands.contains(&Command::DeleteService { name: svc_name }));
        let plan = sim.pass();
        assert!(plan.commands.is_empty(), "{:?}", plan.commands);
    }
}
