//! The ClusterActor's storage-progress poller (spec 3.10, [`crate::plan::storage_progress`]):
//! while some member's container state is `initializing` (its `init` container copies the
//! persisted directories onto the volume), every `interval` one exec per such member reads the
//! copy's progress file; the probes are shown to the next pass, which is triggered only when a
//! probe would change the status. No member initialising: no exec, no timer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use kubedirector_crds::cluster::{ContainerState, KubeDirectorClusterStatus};

use super::ClusterActor;
use crate::config_job::{ExecRequest, GuestExec};
use crate::plan::objects::INIT_CONTAINER;
use crate::plan::storage_progress::{probe_command, progress_message, StorageProbe};
use crate::ports::ObjectKey;

/// How long one probe exec may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Poller state of one ClusterActor.
#[derive(Debug, Default)]
pub(super) struct StoragePoller {
    /// Pods of the members the last pass saw initialising.
    targets: BTreeSet<String>,
    /// Latest probe per target pod.
    results: BTreeMap<String, StorageProbe>,
    /// A probe round is scheduled or running.
    polling: bool,
}

/// Pods whose member's `app` container is `initializing` in `status`.
pub(super) fn initializing_pods(status: &KubeDirectorClusterStatus) -> BTreeSet<String> {
    status
        .roles
        .iter()
        .flat_map(|r| r.members.iter())
        .filter(|m| {
            !m.pod.is_empty()
                && m.state_detail.last_known_container_state == Some(ContainerState::Initializing)
        })
        .map(|m| m.pod.clone())
        .collect()
}

impl StoragePoller {
    /// The probes to show to a pass.
    pub(super) fn probes(&self) -> BTreeMap<String, StorageProbe> {
        self.results.clone()
    }

    /// Records the members a pass saw initialising; `true` when a probe round must be started.
    pub(super) fn set_targets(&mut self, targets: BTreeSet<String>) -> bool {
        self.results.retain(|pod, _| targets.contains(pod));
        self.targets = targets;
        let start = !self.targets.is_empty() && !self.polling;
        if start {
            self.polling = true;
        }
        start
    }

    /// Stores a round's probes; `true` when one of them changes what a pass would show.
    fn store(&mut self, probes: Vec<(String, StorageProbe)>) -> bool {
        let mut changed = false;
        for (pod, probe) in probes {
            if !self.targets.contains(&pod) {
                continue;
            }
            let old = self.results.get(&pod).map(progress_message);
            changed |= old != Some(progress_message(&probe));
            self.results.insert(pod, probe);
        }
        changed
    }
}

async fn probe(exec: Arc<dyn GuestExec>, pod: ObjectKey) -> (String, StorageProbe) {
    let name = pod.name.clone();
    let req = ExecRequest {
        pod,
        container: INIT_CONTAINER.to_owned(),
        command: probe_command(),
        stdin: Vec::new(),
        timeout: PROBE_TIMEOUT,
    };
    let result = exec.exec(req).await.map(|o| (o.status, o.stdout)).map_err(|_| ());
    (name, StorageProbe::from_exec(result))
}

impl ClusterActor {
    /// After planning a pass: poll the members it saw initialising.
    pub(super) fn poll_storage(&mut self, status: &KubeDirectorClusterStatus, ctx: &mut Context<Self>) {
        if self.storage.set_targets(initializing_pods(status)) {
            self.probe_storage(ctx);
        }
    }

    fn probe_storage(&mut self, ctx: &mut Context<Self>) {
        let Some(guest) = self.deps.guest.clone() else {
            self.storage.polling = false;
            return;
        };
        if self.storage.targets.is_empty() || self.gone {
            self.storage.polling = false;
            return;
        }
        let ns = self.key.namespace.clone();
        let rounds = self
            .storage
            .targets
            .iter()
            .map(|pod| probe(Arc::clone(&guest.exec), ObjectKey::new(ns.clone(), pod.clone())));
        let fut = join_all(rounds);
        ctx.spawn(fut.into_actor(self).map(|probes, act, ctx| {
            if act.storage.store(probes) {
                act.schedule(ctx);
            }
            let interval = act.deps.settings.storage_progress_interval;
            ctx.run_later(interval, |act, ctx| act.probe_storage(ctx));
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubedirector_crds::cluster::{MemberStatus, RoleStatus};

    fn member(pod: &str, cs: ContainerState) -> MemberStatus {
        let mut m = MemberStatus {
            pod: pod.into(),
            ..Default::default()
        };
        m.state_detail.last_known_container_state = Some(cs);
        m
    }

    #[test]
    fn only_initialising_members_are_polled_and_only_visible_changes_trigger_a_pass() {
        let status = KubeDirectorClusterStatus {
            roles: vec![RoleStatus {
                id: "r".into(),
                stateful_set: "s".into(),
                members: vec![
                    member("s-0", ContainerState::Initializing),
                    member("s-1", ContainerState::Running),
                ],
            }],
            ..Default::default()
        };
        let mut p = StoragePoller::default();
        assert!(p.set_targets(initializing_pods(&status)), "starts polling");
        assert!(!p.set_targets(initializing_pods(&status)), "already polling");
        assert!(p.store(vec![
            ("s-0".into(), StorageProbe::NoFile),
            ("s-1".into(), StorageProbe::NoFile)
        ]));
        assert_eq!(p.probes().keys().collect::<Vec<_>>(), ["s-0"]);
        assert!(!p.store(vec![("s-0".into(), StorageProbe::NoFile)]), "same text");
        assert!(
            p.store(vec![("s-0".into(), StorageProbe::Tail("a".into()))]),
            "`not started yet` differs from `not available`"
        );
        assert!(p.store(vec![("s-0".into(), StorageProbe::Tail("\ra\rb".into()))]));
        // The member is running: nothing to poll, its probe dropped.
        assert!(!p.set_targets(BTreeSet::new()));
        assert!(p.probes().is_empty());
    }
}
