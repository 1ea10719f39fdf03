//! Tests of the restore pass (spec 3.15): a configured cluster with status backups is "backed
//! up" (its kdcluster, kdstatusbackup, StatefulSets and Services copied, owner references
//! stripped, as a backup tool restores them), re-created under a new uid with the restoring
//! label, and driven through the restore and back into normal passes.

use std::collections::BTreeMap;

use kubedirector_crds::cluster::{ClusterState, Connections, KubeDirectorCluster, MemberState};
use kubedirector_crds::config::KubeDirectorConfig;
use kubedirector_crds::wire::{ANNOTATION_STATUS_BACKUP_EXISTS, FINALIZER, LABEL_RESTORING};

use super::NO_BACKUP_ERROR;
use crate::plan::config::script::GuestJob;
use crate::plan::testing::*;
use crate::plan::*;

fn backups_on(sim: &mut Sim) {
    let mut c = KubeDirectorConfig::new("kd-global-config", Some(config_default()));
    c.spec.as_mut().unwrap().backup_cluster_status = Some(true);
    sim.obs.config = Some(c);
}

/// A spark cluster (setup package) whose workers have persistent storage and whose master has
/// none, configured with status backups on.
fn original() -> Sim {
    let mut sim = Sim::new(with_storage(cluster_spark(), 1, 0), app_spark());
    backups_on(&mut sim);
    sim.converge(30);
    assert_eq!(sim.status().state, ClusterState::Configured);
    assert_eq!(
        sim.obs
            .status_backup
            .as_ref()
            .unwrap()
            .spec
            .status_backup
            .as_ref(),
        Some(sim.status())
    );
    sim
}

fn strip_owner(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.owner_references = None;
    meta.uid = None;
}

/// The kdcluster object as a backup tool re-creates it (through the webhook, C-5: the restoring
/// label): new uid, no status, no finalizer.
fn recreated(old: &KubeDirectorCluster) -> KubeDirectorCluster {
    let mut c = old.clone();
    c.metadata.uid = Some("uid-restored".into());
    c.metadata.finalizers = None;
    c.metadata.generation = Some(1);
    c.status = None;
    c.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(LABEL_RESTORING.into(), String::new());
    assert_eq!(
        c.metadata.annotations.as_ref().unwrap()[ANNOTATION_STATUS_BACKUP_EXISTS],
        "true",
        "the operator annotated the original"
    );
    c
}

/// The restored cluster with nothing but the kdcluster and the kdapp: the backup and the
/// component resources arrive later. Its pods get container ids the original never had.
fn restoring(orig: &Sim) -> Sim {
    let mut sim = Sim::new(recreated(&orig.obs.cluster), app_spark());
    sim.obs.config = orig.obs.config.clone();
    for p in orig.obs.pods.keys() {
        sim.restarts.insert(p.clone(), 100);
    }
    sim
}

fn bring_backup(sim: &mut Sim, orig: &Sim) {
    let mut b = orig.obs.status_backup.clone().unwrap();
    strip_owner(&mut b.metadata);
    sim.obs.status_backup = Some(b);
}

fn bring_resources(sim: &mut Sim, orig: &Sim) {
    for (n, s) in &orig.obs.statefulsets {
        let mut s = s.clone();
        strip_owner(&mut s.metadata);
        sim.obs.statefulsets.insert(n.clone(), s);
    }
    for (n, s) in &orig.obs.services {
        let mut s = s.clone();
        strip_owner(&mut s.metadata);
        sim.obs.services.insert(n.clone(), s);
    }
}

fn labelled(sim: &Sim) -> bool {
    sim.obs
        .cluster
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_RESTORING))
}

fn progress(plan: &Plan) -> (bool, bool, bool, String) {
    let p = plan.status.restore_progress.clone().unwrap();
    (p.awaiting_app, p.awaiting_status, p.awaiting_resources, p.error)
}

fn only_events(plan: &Plan) {
    assert!(
        plan.commands.iter().all(|c| matches!(c, Command::Event(_))),
        "a restore pass touches no child object: {:?}",
        plan.commands
    );
    assert_eq!(plan.finalizer, FinalizerChange::None);
    assert!(plan.annotations.is_empty());
}

#[test]
fn restore_waits_for_backup_and_resources_then_removes_the_label() {
    let orig = original();
    let mut sim = restoring(&orig);

    // Pass 1: flags set, the app is there, the backup is not.
    let plan = sim.pass();
    only_events(&plan);
    assert_eq!(plan.outcome, Outcome::Restoring);
    assert_eq!(progress(&plan), (false, true, true, String::new()));
    assert_eq!(
        msgs(&plan),
        [
            "being restored: setting initial restore-progress flags",
            "being restored: kdapp spark245 (local catalog) is present",
            "being restored: awaiting kdstatusbackup",
        ]
    );
    assert!(plan.status_changed);
    assert_eq!(plan.token, TokenUpdate::Set("gen-1".into()));
    // Nothing new: no write.
    let plan = sim.pass();
    assert!(!plan.status_changed);
    assert_eq!(msgs(&plan), ["being restored: awaiting kdstatusbackup"]);

    // The backup arrives: the status is copied, the resources are still missing.
    bring_backup(&mut sim, &orig);
    let plan = sim.pass();
    only_events(&plan);
    assert_eq!(progress(&plan), (false, false, true, String::new()));
    let saved = orig.status();
    assert_eq!(
        plan.status.roles, saved.roles,
        "roles and members restored verbatim"
    );
    assert_eq!(plan.status.last_node_id, saved.last_node_id);
    assert_eq!(plan.status.cluster_service, saved.cluster_service);
    assert_eq!(plan.status.state, ClusterState::Configured);
    assert_eq!(
        plan.status.observed_generation,
        Some(1),
        "the new object's generation"
    );
    assert_ne!(plan.status.generation_uid, saved.generation_uid, "a new token");
    let m = msgs(&plan);
    assert_eq!(m[0], "being restored: kdstatusbackup is present");
    assert!(m.contains(&format!(
        "being restored: cluster service {} does not exist",
        saved.cluster_service
    )));
    for r in &saved.roles {
        assert!(m.contains(&format!(
            "being restored: statefulset {} does not exist",
            r.stateful_set
        )));
        for mem in &r.members {
            assert!(m.contains(&format!(
                "being restored: member service {} does not exist",
                mem.service
            )));
        }
    }
    assert_eq!(m.last().unwrap(), "being restored: awaiting component resources");
    assert!(
        sim.obs
            .status_backup
            .as_ref()
            .unwrap()
            .metadata
            .owner_references
            .is_none(),
        "no backup change while restoring"
    );

    // The component resources arrive: all flags clear in this pass, the label goes in the next.
    bring_resources(&mut sim, &orig);
    let plan = sim.pass();
    only_events(&plan);
    assert_eq!(progress(&plan), (false, false, false, String::new()));
    assert_eq!(msgs(&plan), ["being restored: component resources are present"]);
    assert!(plan.labels.is_empty());
    let plan = sim.pass();
    only_events(&plan);
    assert!(!plan.status_changed);
    assert_eq!(plan.labels, BTreeMap::from([(LABEL_RESTORING.to_owned(), None)]));
    assert!(
        plan.commands.is_empty(),
        "the executor records `resuming reconciliation`"
    );
    assert!(!labelled(&sim));
}

#[test]
fn after_the_restore_members_with_storage_are_rechecked_and_the_others_set_up_again() {
    let orig = original();
    let mut sim = restoring(&orig);
    bring_backup(&mut sim, &orig);
    bring_resources(&mut sim, &orig);
    // Restore passes until the label is removed (applied as the API server would); meanwhile
    // the restored StatefulSets re-create the pods, with new container ids.
    let mut plans = Vec::new();
    while labelled(&sim) {
        assert!(plans.len() < 10, "the restore does not finish");
        plans.push(sim.pass());
        sim.kube();
    }
    assert!(plans.iter().all(|p| p.outcome == Outcome::Restoring));
    let before = sim.guest_log.len();
    assert_eq!(before, 0);
    plans.extend(sim.converge(30));
    let st = sim.status().clone();
    assert_eq!(st.state, ClusterState::Configured);
    assert_eq!(st.restore_progress, None, "cleared by the first normal pass");
    assert!(sim
        .obs
        .cluster
        .metadata
        .finalizers
        .as_ref()
        .unwrap()
        .contains(&FINALIZER.to_owned()));
    let saved = orig.status();
    for (r, old) in st.roles.iter().zip(&saved.roles) {
        assert_eq!(r.stateful_set, old.stateful_set);
        for (m, o) in r.members.iter().zip(&old.members) {
            assert_eq!(
                (&m.pod, m.node_id, &m.state),
                (&o.pod, o.node_id, &MemberState::Configured)
            );
            assert_ne!(
                m.state_detail.last_configured_container, o.state_detail.last_configured_container,
                "configured in its new container"
            );
        }
    }
    let all = messages(&plans);
    for m in &saved.roles[0].members {
        assert!(all.contains(&format!(
            "container ID has changed for member{{{}}}; no persistent storage, will re-run setup",
            m.pod
        )));
    }
    for m in &saved.roles[1].members {
        assert!(all.contains(&format!(
            "container ID has changed for member{{{}}}; will re-check setup",
            m.pod
        )));
    }
    // One setup per member, never a forced restart (a surviving configure.status decides), and
    // no addnodes/delnodes: nobody joined or left.
    let jobs = &sim.guest_log[before..];
    let mut setups: Vec<&str> = jobs
        .iter()
        .filter_map(|(pod, _, j)| match j {
            GuestJob::Setup(s) => {
                assert!(!s.restart, "{pod}: configure.status must be honoured");
                Some(pod.as_str())
            }
            _ => None,
        })
        .collect();
    setups.sort_unstable();
    let mut pods: Vec<&str> = saved
        .roles
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.pod.as_str()))
        .collect();
    pods.sort_unstable();
    assert_eq!(setups, pods);
    assert!(
        !jobs.iter().any(|(_, _, j)| matches!(j, GuestJob::Notify { .. })),
        "{jobs:?}"
    );
    // The children and the backup are owned by the restored kdcluster again.
    for sts in sim.obs.statefulsets.values() {
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-restored"
        );
    }
    let b = sim.obs.status_backup.as_ref().unwrap();
    assert_eq!(
        b.metadata.owner_references.as_ref().unwrap()[0].uid,
        "uid-restored"
    );
    assert_eq!(b.spec.status_backup.as_ref(), Some(sim.status()));
}

#[test]
fn a_cluster_captured_without_backups_reports_the_error_once_and_waits() {
    let orig = original();
    let mut sim = restoring(&orig);
    sim.obs
        .cluster
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANNOTATION_STATUS_BACKUP_EXISTS.into(), "false".into());
    bring_backup(&mut sim, &orig);
    let plan = sim.pass();
    assert_eq!(progress(&plan), (false, true, true, NO_BACKUP_ERROR.to_owned()));
    assert!(msgs(&plan).contains(&"being restored: kdstatusbackup was not ever created".to_owned()));
    assert!(plan.status.roles.is_empty(), "the backup is not used");
    let plan = sim.pass();
    assert!(!plan.status_changed);
    assert!(plan.commands.is_empty(), "{:?}", plan.commands);
}

#[test]
fn the_restore_waits_for_the_kdapp() {
    let orig = original();
    let mut sim = restoring(&orig);
    sim.obs.app = None;
    sim.obs.cluster.spec.app_catalog = None;
    let plan = sim.pass();
    assert!(progress(&plan).0);
    assert!(msgs(&plan).contains(&"being restored: awaiting kdapp spark245 (auto catalog)".to_owned()));
    sim.obs.app = Some(app_spark());
    let plan = sim.pass();
    assert!(!progress(&plan).0);
    assert!(msgs(&plan).contains(&"being restored: kdapp spark245 (auto catalog) is present".to_owned()));
}

#[test]
fn connected_objects_are_awaited_unless_the_kdconfig_allows_restoring_without_them() {
    let orig = original();
    let mut sim = restoring(&orig);
    sim.obs.cluster.spec.connections = Some(Connections {
        clusters: vec!["other".into()],
        configmaps: vec!["cm".into()],
        secrets: vec!["sec".into()],
    });
    bring_backup(&mut sim, &orig);
    bring_resources(&mut sim, &orig);
    let plan = sim.pass();
    assert!(progress(&plan).2);
    let m = msgs(&plan);
    for want in [
        "being restored: connected kdcluster other does not exist",
        "being restored: connected ConfigMap cm does not exist",
        "being restored: connected Secret sec does not exist",
    ] {
        assert!(m.contains(&want.to_owned()), "{m:?}");
    }
    sim.obs
        .config
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .allow_restore_without_connections = Some(true);
    let plan = sim.pass();
    assert!(!progress(&plan).2);
}

#[test]
fn a_stale_restore_pass_does_nothing() {
    let orig = original();
    let mut sim = restoring(&orig);
    sim.pass();
    sim.obs.expected_generation_uid = Some("newer".into());
    let plan = sim.pass();
    assert_eq!(plan.outcome, Outcome::Stale);
    assert!(plan.commands.is_empty() && !plan.status_changed && plan.labels.is_empty());
}

#[test]
fn the_resume_event_reports_the_label_patch_outcome() {
    assert_eq!(
        super::resume_event(Ok(())),
        PlanEvent::normal(EventReason::Cluster, "resuming reconciliation")
    );
    assert_eq!(
        super::resume_event(Err("denied")).message,
        "failed to resume reconciliation: denied"
    );
}
