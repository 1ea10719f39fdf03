//! The restore pass (spec 3.15, feature F74): a kdcluster created with the
//! `kubedirector.hpe.com/status-backup-exists` annotation (a backup tool re-creating it) carries
//! the `kubedirector.hpe.com/restoring` label (webhook rule C-5). While it does, passes do no
//! finalizer handling and touch no child object: they wait for the kdapp, copy the status back
//! from the kdstatusbackup, wait for the component resources the status names (headless service,
//! StatefulSets, member services, connected objects) and, once everything is there, remove the
//! label; normal passes resume from the restored status.
//!
//! What happens to the members afterwards is the normal pass's business: their pods are new, so
//! their `app` container ids differ from `lastConfiguredContainer`; a member with a PVC is
//! re-checked (`configure.status` on the surviving volume says its setup already succeeded, so it
//! is `configured` again without `--configure`), one without storage is set up from scratch
//! (spec 3.4, 4.4 step 4, 4.7).
//!
//! Deliberate differences from upstream:
//! * a restore pass that reads a status older than its own last write does nothing (R25), as a
//!   normal pass;
//! * the restored `observedGeneration` (our R4 addition) is the new object's generation: the
//!   backup's value counted generations of the object that was backed up;
//! * the events that repeat while the restore waits are recorded once per generation, like the
//!   other periodic events (R23, [`crate::tracker::PeriodicEvents`]);
//! * a failed label removal is reported by upstream's Normal event `failed to resume
//!   reconciliation: <err>` and retried with backoff, without writing the error into
//!   `restoreProgress.error` (that would need a status write whose only purpose is the error).

use std::collections::BTreeMap;

use kubedirector_crds::cluster::{KubeDirectorClusterStatus, RestoreProgress};
use kubedirector_crds::wire::{ANNOTATION_STATUS_BACKUP_EXISTS, LABEL_RESTORING};

use super::super::{
    Command, EventReason, FinalizerChange, Observed, Outcome, Plan, PlanContext, PlanEvent, TokenUpdate,
};
use super::config_spec;

/// `restoreProgress.error` when the kdcluster was captured while status backups were off (the
/// annotation says `"false"`): no kdstatusbackup will ever come.
pub const NO_BACKUP_ERROR: &str = "kdstatusbackup was not ever created: status backups were disabled \
(kdconfig backupClusterStatus) when this kdcluster was captured; remove the kubedirector.hpe.com/restoring \
label to resume reconciliation without a restored status";

/// The event recorded after the label removal of a finished restore: `Ok` when the patch
/// succeeded, the error text otherwise (spec 3.15 step 2).
pub fn resume_event(result: Result<(), &str>) -> PlanEvent {
    match result {
        Ok(()) => PlanEvent::normal(EventReason::Cluster, "resuming reconciliation"),
        Err(err) => PlanEvent::normal(
            EventReason::Cluster,
            format!("failed to resume reconciliation: {err}"),
        ),
    }
}

fn restoring(msg: impl std::fmt::Display) -> Command {
    Command::Event(PlanEvent::normal(
        EventReason::Cluster,
        format!("being restored: {msg}"),
    ))
}

/// Plans one restore pass (spec 3.15). The caller runs it instead of the normal pass while the
/// kdcluster carries the restoring label and is not being deleted.
pub fn restore_pass(obs: &Observed, ctx: &PlanContext) -> Plan {
    let cluster = &obs.cluster;
    let incoming = cluster.status.clone();
    let mut status = incoming.clone().unwrap_or_default();
    // A status we wrote is not shown yet: nothing at all (R25).
    if let Some(expected) = &obs.expected_generation_uid {
        if *expected != status.generation_uid {
            return Plan::noop(status, Outcome::Stale);
        }
    }
    let mut commands = Vec::new();
    let mut labels = BTreeMap::new();

    // Step 1.
    if status.restore_progress.is_none() {
        commands.push(restoring("setting initial restore-progress flags"));
        status.restore_progress = Some(RestoreProgress {
            awaiting_app: true,
            awaiting_status: true,
            awaiting_resources: true,
            error: String::new(),
        });
    }
    let progress = status.restore_progress.clone().unwrap_or_default();

    if !progress.awaiting_app && !progress.awaiting_status && !progress.awaiting_resources {
        // Step 2: done; the executor records `resuming reconciliation` (or the failure) once
        // the patch has been answered ([`resume_event`]).
        labels.insert(LABEL_RESTORING.to_owned(), None);
    } else {
        let mut progress = progress;
        // Step 3.
        let app = &cluster.spec.app;
        let catalog = cluster.spec.app_catalog.as_ref().map_or("auto", |c| c.as_str());
        if progress.awaiting_app {
            if obs.app.is_some() {
                progress.awaiting_app = false;
                commands.push(restoring(format!("kdapp {app} ({catalog} catalog) is present")));
            } else {
                commands.push(restoring(format!("awaiting kdapp {app} ({catalog} catalog)")));
            }
        }
        // Step 4.
        if progress.awaiting_status {
            let annotation = cluster
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_STATUS_BACKUP_EXISTS));
            let backup = obs
                .status_backup
                .as_ref()
                .and_then(|b| b.spec.status_backup.as_ref());
            if annotation.map(String::as_str) == Some("false") {
                if progress.error != NO_BACKUP_ERROR {
                    commands.push(restoring("kdstatusbackup was not ever created"));
                }
                progress.error = NO_BACKUP_ERROR.to_owned();
            } else if let Some(saved) = backup {
                commands.push(restoring("kdstatusbackup is present"));
                status = restored_status(saved, cluster.metadata.generation);
                progress.awaiting_status = false;
            } else {
                commands.push(restoring("awaiting kdstatusbackup"));
            }
        }
        // Step 5.
        if !progress.awaiting_status && progress.awaiting_resources {
            let missing = missing_resources(obs, &status);
            if missing.is_empty() {
                progress.awaiting_resources = false;
                commands.push(restoring("component resources are present"));
            } else {
                commands.extend(missing.into_iter().map(restoring));
                commands.push(restoring("awaiting component resources"));
            }
        }
        status.restore_progress = Some(progress);
    }

    // Step 6: written (with a new token, no backup change) only when it changed.
    let status_changed = incoming.as_ref() != Some(&status);
    let token = if status_changed {
        status.generation_uid = ctx.new_generation_uid.clone();
        TokenUpdate::Set(status.generation_uid.clone())
    } else if obs.expected_generation_uid.is_none() && !status.generation_uid.is_empty() {
        TokenUpdate::Set(status.generation_uid.clone())
    } else {
        TokenUpdate::Keep
    };
    Plan {
        status,
        status_changed,
        finalizer: FinalizerChange::None,
        annotations: BTreeMap::new(),
        labels,
        commands,
        verdict: None,
        outcome: Outcome::Restoring,
        requeue: false,
        token,
    }
}

/// The backed-up status as the restored kdcluster's status: verbatim, except the
/// `observedGeneration` of the new object (see the module docs). The caller keeps its own
/// `restoreProgress`.
fn restored_status(saved: &KubeDirectorClusterStatus, generation: Option<i64>) -> KubeDirectorClusterStatus {
    let mut status = saved.clone();
    status.observed_generation = generation.or(status.observed_generation);
    status
}

/// The component resources the restored `status` names that are missing, as upstream's event
/// texts without the `being restored: ` prefix (spec 3.15 step 5).
pub fn missing_resources(obs: &Observed, status: &KubeDirectorClusterStatus) -> Vec<String> {
    let mut out = Vec::new();
    let svc = &status.cluster_service;
    if !svc.is_empty() && !obs.services.contains_key(svc) {
        out.push(format!("cluster service {svc} does not exist"));
    }
    for role in &status.roles {
        let sts = &role.stateful_set;
        if !sts.is_empty() && !obs.statefulsets.contains_key(sts) {
            out.push(format!("statefulset {sts} does not exist"));
        }
    }
    for m in status.roles.iter().flat_map(|r| r.members.iter()) {
        let s = &m.service;
        if !s.is_empty() && s != "n/a" && !obs.services.contains_key(s) {
            out.push(format!("member service {s} does not exist"));
        }
    }
    if !config_spec(obs).allow_restore_without_connections_or_default() {
        if let Some(conn) = &obs.cluster.spec.connections {
            let objs = &obs.connections;
            for n in conn.clusters.iter().filter(|n| !objs.clusters.contains_key(*n)) {
                out.push(format!("connected kdcluster {n} does not exist"));
            }
            for n in conn
                .configmaps
                .iter()
                .filter(|n| !objs.configmaps.contains_key(*n))
            {
                out.push(format!("connected ConfigMap {n} does not exist"));
            }
            for n in conn.secrets.iter().filter(|n| !objs.secrets.contains_key(*n)) {
                out.push(format!("connected Secret {n} does not exist"));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
