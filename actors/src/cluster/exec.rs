//! Execution of a pass's commands, in order: StatefulSet writes through one [`RoleActor`] per
//! role, Services and PVC deletions through the [`MemberServiceActor`], events through the
//! [`EventRecorder`](crate::ports::EventRecorder) port, the kdcluster metadata patch through the
//! [`ClusterApi`](crate::ports::ClusterApi) port and, last, the status write handed to the
//! StatusWriter (whose answer comes back to the ClusterActor as a message).

use std::{collections::HashMap, time::Duration};

use actix::prelude::*;
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::Resource;

use super::ClusterError;
use crate::{
    member_service::{MemberServiceActor, MemberWrite},
    plan::{self, Command, Observed},
    ports::{ApiError, EventRecord, EventType, InvolvedObject, ObjectKey, Ports},
    role::{RoleActor, RoleWrite, RoleWritten},
    status_writer::{StatusWriteOutcome, WriteStatus},
    tracker::OverlayKind,
};

/// What the execution of a plan produced, for the actor's overlay and pass bookkeeping.
pub(super) struct Executed {
    /// `Ok(true)` when the status write was handed to the StatusWriter (the pass stays in
    /// flight until it answers), `Ok(false)` when every command ran and no status is written.
    pub(super) result: Result<bool, ClusterError>,
    /// StatefulSets created, as stored.
    pub(super) created_sts: Vec<StatefulSet>,
    /// Services created or applied, as stored.
    pub(super) applied_svc: Vec<Service>,
    /// Objects deleted.
    pub(super) deleted: Vec<(OverlayKind, String)>,
    /// The kdcluster's resourceVersion after this pass's metadata patch, when it made one.
    pub(super) metadata_rv: Option<String>,
    /// Objects a create found taken by someone else's object of the same name.
    pub(super) foreign: Vec<(OverlayKind, String)>,
}

/// Everything the execution needs, moved into the spawned future.
pub(super) struct ExecEnv {
    pub(super) ports: Ports,
    pub(super) involved: InvolvedObject,
    pub(super) uid: String,
    pub(super) key: ObjectKey,
    pub(super) roles: HashMap<String, Addr<RoleActor>>,
    pub(super) services: Addr<MemberServiceActor>,
    pub(super) timeout: Duration,
    pub(super) write_status: Recipient<WriteStatus>,
    pub(super) reply_to: Recipient<StatusWriteOutcome>,
    /// The uids of the objects the pass observed, for the delete preconditions.
    pub(super) uids: HashMap<(OverlayKind, String), String>,
}

impl ExecEnv {
    fn uid(&self, kind: OverlayKind, name: &str) -> Option<String> {
        self.uids.get(&(kind, name.to_owned())).cloned()
    }

    /// A Warning event on the kdcluster when a create found a same-named object this kdcluster
    /// does not control (it was left alone).
    async fn foreign(&self, result: &Result<(), ClusterError>, kind: &str, name: &str) -> bool {
        if let Err(ClusterError::Command {
            source: ApiError::AlreadyExists { .. },
            ..
        }) = result
        {
            let record = EventRecord {
                involved: self.involved.clone(),
                event_type: EventType::Warning,
                reason: if kind == "StatefulSet" { "Role" } else { "Member" }.to_owned(),
                message: format!("{}: {kind}{{{name}}}", plan::NOT_OURS),
            };
            if let Err(e) = self.ports.events.record(record).await {
                tracing::warn!(error = %e, "event not recorded");
            }
            return true;
        }
        false
    }
}

/// Executes the commands in order and stops at the first failure.
pub(super) async fn execute(commands: Vec<Command>, env: ExecEnv) -> Executed {
    let mut out = Executed {
        result: Ok(false),
        created_sts: Vec::new(),
        applied_svc: Vec::new(),
        deleted: Vec::new(),
        metadata_rv: None,
        foreign: Vec::new(),
    };
    let role = |name: &str| env.roles.get(name).cloned();
    let mut metadata_rv: Option<String> = None;
    for command in commands {
        let step: Result<(), ClusterError> = async {
            match command {
                Command::Event(ev) => {
                    record(&env, ev).await;
                    Ok(())
                }
                Command::EnsureStatefulSet(sts) => {
                    let name = sts.metadata.name.clone().unwrap_or_default();
                    let stored =
                        role_call(role(&name), RoleWrite::Create(Box::new(sts)), env.timeout, &name).await;
                    let stored = match stored {
                        Ok(s) => s,
                        Err(e) => {
                            let e = Err(e);
                            if env.foreign(&e, "StatefulSet", &name).await {
                                out.foreign.push((OverlayKind::StatefulSet, name));
                            }
                            return e;
                        }
                    };
                    if let RoleWritten::Stored(s) = stored {
                        out.created_sts.push(*s);
                    }
                    Ok(())
                }
                Command::PatchStatefulSetMetadata { name, metadata } => role_call(
                    role(&name),
                    RoleWrite::PatchMetadata(Box::new(metadata)),
                    env.timeout,
                    &name,
                )
                .await
                .map(|_| ()),
                Command::SetReplicas {
                    statefulset,
                    replicas,
                } => role_call(
                    role(&statefulset),
                    RoleWrite::SetReplicas(replicas),
                    env.timeout,
                    &statefulset,
                )
                .await
                .map(|_| ()),
                Command::DeleteStatefulSet { name } => {
                    let uid = env.uid(OverlayKind::StatefulSet, &name);
                    role_call(role(&name), RoleWrite::Delete(uid), env.timeout, &name).await?;
                    out.deleted.push((OverlayKind::StatefulSet, name));
                    Ok(())
                }
                Command::EnsureHeadlessService(svc) | Command::EnsureMemberService(svc) => {
                    let name = svc.metadata.name.clone().unwrap_or_default();
                    let stored =
                        match service_call(&env, MemberWrite::ApplyService(Box::new(svc)), &name).await {
                            Ok(s) => s,
                            Err(e) => {
                                let e = Err(e);
                                if env.foreign(&e, "Service", &name).await {
                                    out.foreign.push((OverlayKind::Service, name));
                                }
                                return e;
                            }
                        };
                    if let Some(s) = stored {
                        out.applied_svc.push(s);
                    }
                    Ok(())
                }
                Command::DeleteService { name } => {
                    let uid = env.uid(OverlayKind::Service, &name);
                    service_call(&env, MemberWrite::DeleteService(name.clone(), uid), &name).await?;
                    out.deleted.push((OverlayKind::Service, name));
                    Ok(())
                }
                Command::DeletePvc { name } => {
                    let uid = env.uid(OverlayKind::PersistentVolumeClaim, &name);
                    service_call(&env, MemberWrite::DeletePvc(name.clone(), uid), &name).await?;
                    out.deleted.push((OverlayKind::PersistentVolumeClaim, name));
                    Ok(())
                }
                Command::PatchClusterMetadata(patch) => {
                    let ends_restore = patch.ends_restore();
                    let result = env.ports.api.patch_cluster_metadata(env.key.clone(), patch).await;
                    if ends_restore {
                        // Spec 3.15 step 2: the outcome of the label removal is an event.
                        let err = result.as_ref().err().map(ToString::to_string);
                        record(&env, plan::resume_event(err.as_deref().map_or(Ok(()), Err))).await;
                    }
                    match result {
                        Ok(rv) => {
                            metadata_rv = Some(rv.clone());
                            out.metadata_rv = Some(rv);
                            Ok(())
                        }
                        Err(source) => Err(ClusterError::Metadata { source }),
                    }
                }
                Command::WriteStatus {
                    status,
                    resource_version,
                } => {
                    // The precondition is the version the status was computed from (or our own
                    // metadata patch on top of it): never a newer cached version (R25).
                    if let Some(rv) = metadata_rv.clone().or(resource_version) {
                        env.write_status.do_send(WriteStatus {
                            uid: env.uid.clone(),
                            key: env.key.clone(),
                            resource_version: rv,
                            status,
                            reply_to: Some(env.reply_to.clone()),
                        });
                        out.result = Ok(true);
                    }
                    Ok(())
                }
                Command::WriteStatusBackup(backup) => env
                    .ports
                    .api
                    .apply_status_backup(*backup)
                    .await
                    .map_err(|source| ClusterError::Command {
                        command: "write kdstatusbackup".to_owned(),
                        source,
                    }),
                Command::DeleteStatusBackup { name } => env
                    .ports
                    .api
                    .delete_status_backup(ObjectKey::new(env.key.namespace.clone(), name))
                    .await
                    .map_err(|source| ClusterError::Command {
                        command: "delete kdstatusbackup".to_owned(),
                        source,
                    }),
                Command::RunGuestJob { pod, .. } => {
                    // Started by the actor once the pass succeeded; never executed here.
                    tracing::debug!(%pod, "configuration job left to the actor");
                    Ok(())
                }
            }
        }
        .await;
        if let Err(e) = step {
            out.result = Err(e);
            return out;
        }
    }
    out
}

/// Records a planner event on the kdcluster; a failure is only logged.
async fn record(env: &ExecEnv, ev: plan::PlanEvent) {
    let record = EventRecord {
        involved: env.involved.clone(),
        event_type: match ev.type_ {
            plan::EventType::Normal => EventType::Normal,
            plan::EventType::Warning => EventType::Warning,
        },
        reason: ev.reason.as_str().to_string(),
        message: ev.message,
    };
    if let Err(e) = env.ports.events.record(record).await {
        tracing::warn!(error = %e, "event not recorded");
    }
}

async fn role_call(
    addr: Option<Addr<RoleActor>>,
    msg: RoleWrite,
    timeout: Duration,
    name: &str,
) -> Result<RoleWritten, ClusterError> {
    let Some(addr) = addr else {
        return Err(ClusterError::Aborted(format!(
            "no role actor for StatefulSet {name}"
        )));
    };
    let what = match &msg {
        RoleWrite::Create(_) => "create",
        RoleWrite::PatchMetadata(_) => "patch",
        RoleWrite::SetReplicas(_) => "scale",
        RoleWrite::Delete(_) => "delete",
    };
    match addr.send(msg).timeout(timeout).await {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(source)) => Err(ClusterError::Command {
            command: format!("{what} StatefulSet {name}"),
            source,
        }),
        Err(source) => Err(ClusterError::Mailbox {
            actor: "role",
            source,
        }),
    }
}

async fn service_call(env: &ExecEnv, msg: MemberWrite, name: &str) -> Result<Option<Service>, ClusterError> {
    let what = match &msg {
        MemberWrite::ApplyService(_) => "apply Service",
        MemberWrite::DeleteService(..) => "delete Service",
        MemberWrite::DeletePvc(..) => "delete PVC",
    };
    match env.services.send(msg).timeout(env.timeout).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ClusterError::Command {
            command: format!("{what} {name}"),
            source,
        }),
        Err(source) => Err(ClusterError::Mailbox {
            actor: "member_service",
            source,
        }),
    }
}

/// The uids of the owned objects a pass observed, by kind and name (delete preconditions).
pub(super) fn observed_uids(observed: &Observed) -> HashMap<(OverlayKind, String), String> {
    fn add<K: Resource>(
        out: &mut HashMap<(OverlayKind, String), String>,
        kind: OverlayKind,
        objects: &std::collections::BTreeMap<String, K>,
    ) {
        for (name, o) in objects {
            if let Some(uid) = &o.meta().uid {
                out.insert((kind, name.clone()), uid.clone());
            }
        }
    }
    let mut out = HashMap::new();
    add(&mut out, OverlayKind::StatefulSet, &observed.statefulsets);
    add(&mut out, OverlayKind::Service, &observed.services);
    add(&mut out, OverlayKind::PersistentVolumeClaim, &observed.pvcs);
    out
}
