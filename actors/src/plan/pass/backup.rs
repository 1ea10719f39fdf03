//! Status backup (spec 3.13, feature F73): with kdconfig `backupClusterStatus`, the
//! kdstatusbackup named like the kdcluster holds a verbatim copy of the status being written
//! (written before the status itself); without it, an existing backup is deleted. The backup is
//! owned by the kdcluster, so it is garbage-collected with it.
//!
//! A backup that is not owned by this kdcluster alone (a restored kdcluster's, whose backup
//! was orphaned or restored by a backup tool, spec 3.15) gets the controller reference again.
//!
//! Difference from upstream: the backup is compared with the observed one (watch cache), so it is
//! also brought in step when backups are switched on for a quiescent kdcluster, and nothing is
//! written or deleted when it already matches (upstream issues a best-effort delete on every
//! status write while backups are off).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubedirector_crds::cluster::KubeDirectorClusterStatus;
use kubedirector_crds::{KubeDirectorStatusBackup, KubeDirectorStatusBackupSpec};

use super::super::objects::ClusterInfo;
use super::super::{Command, Observed};

/// The backup commands of a pass that ends with `status`.
pub(super) fn backup_commands(
    obs: &Observed,
    info: &ClusterInfo<'_>,
    enabled: bool,
    status: &KubeDirectorClusterStatus,
) -> Vec<Command> {
    let stored = obs.status_backup.as_ref();
    if !enabled {
        return stored
            .map(|_| Command::DeleteStatusBackup {
                name: info.name().to_owned(),
            })
            .into_iter()
            .collect();
    }
    // Spec 3.2 step 3.2: a backup whose owner is not this kdcluster (one restored by a backup
    // tool, or orphaned) is rewritten with the controller reference even when its copy matches.
    let owner = info.owner_reference();
    let owned =
        stored.is_some_and(|b| b.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&owner)));
    if owned && stored.and_then(|b| b.spec.status_backup.as_ref()) == Some(status) {
        return Vec::new();
    }
    vec![Command::WriteStatusBackup(Box::new(KubeDirectorStatusBackup {
        metadata: ObjectMeta {
            name: Some(info.name().to_owned()),
            namespace: Some(info.namespace().to_owned()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: KubeDirectorStatusBackupSpec {
            status_backup: Some(status.clone()),
        },
    }))]
}

#[cfg(test)]
mod tests {
    use kubedirector_crds::config::KubeDirectorConfig;
    use kubedirector_crds::KubeDirectorStatusBackup;

    use crate::plan::testing::*;
    use crate::plan::*;

    fn backups(plan: &Plan) -> Vec<&Command> {
        plan.commands
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::WriteStatusBackup(_) | Command::DeleteStatusBackup { .. }
                )
            })
            .collect()
    }

    fn enable(sim: &mut Sim, on: bool) {
        let mut c = KubeDirectorConfig::new("kd-global-config", Some(config_default()));
        c.spec.as_mut().unwrap().backup_cluster_status = Some(on);
        sim.obs.config = Some(c);
    }

    #[test]
    fn every_status_change_is_mirrored_into_the_backup_owned_by_the_cluster() {
        let mut sim = Sim::new(cluster_centos(1), app_centos());
        enable(&mut sim, true);
        let plans = sim.converge(20);
        for p in plans.iter().filter(|p| p.status_changed) {
            let w = backups(p);
            let [Command::WriteStatusBackup(b)] = w.as_slice() else {
                panic!("{w:?}")
            };
            assert_eq!(b.spec.status_backup.as_ref(), Some(&p.status));
            assert_eq!(b.metadata.name.as_deref(), Some("centos"));
            let owner = &b.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("KubeDirectorCluster", Some(true))
            );
        }
        let backup: &KubeDirectorStatusBackup = sim.obs.status_backup.as_ref().unwrap();
        assert_eq!(backup.spec.status_backup.as_ref(), Some(sim.status()));
        // Quiescent: nothing more to write.
        assert!(backups(&sim.pass()).is_empty());
    }

    #[test]
    fn switching_backups_on_and_off_writes_then_deletes_the_backup_once() {
        let mut sim = configured_centos(1, false);
        assert!(sim.obs.status_backup.is_none());
        enable(&mut sim, true);
        sim.converge(10);
        assert!(
            sim.obs.status_backup.is_some(),
            "written although the status did not change"
        );
        enable(&mut sim, false);
        let plan = sim.pass();
        assert!(
            matches!(backups(&plan).as_slice(), [Command::DeleteStatusBackup { name }] if name == "centos")
        );
        assert!(sim.obs.status_backup.is_none());
        assert!(backups(&sim.pass()).is_empty());
    }

    #[test]
    fn a_matching_backup_of_another_owner_gets_this_cluster_as_owner() {
        let mut sim = Sim::new(cluster_centos(1), app_centos());
        enable(&mut sim, true);
        sim.converge(20);
        let mine = sim.obs.status_backup.clone().unwrap().metadata.owner_references;
        // Orphaned (owner references removed by an orphaning delete of the old kdcluster).
        sim.obs.status_backup.as_mut().unwrap().metadata.owner_references = None;
        let plan = sim.pass();
        let [Command::WriteStatusBackup(b)] = backups(&plan).as_slice() else {
            panic!("{plan:?}")
        };
        assert_eq!(b.metadata.owner_references, mine);
        assert_eq!(b.spec.status_backup.as_ref(), Some(sim.status()));
        assert!(backups(&sim.pass()).is_empty());
    }
}
