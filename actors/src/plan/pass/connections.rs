//! Connections in the pass (spec 3.2 step 11, 4.4 step 1, 4.5, 4.8): the fingerprint check, the
//! connection counter, and `--reconnect` on configured members.
//!
//! Differences from upstream:
//! * the counter annotation `kubedirector.hpe.com/hashChangeCounter` is bumped by a metadata-only
//!   merge patch ([`crate::plan::Plan::annotations`]) written before the status, so it can neither
//!   be refused by the status anti-tamper check nor clobber the in-memory status (R3); if that
//!   patch fails, the status (holding the new hash) is not written either and the next pass
//!   retries the bump;
//! * a member's `lastConnectionVersion` jumps to the counter after one successful `--reconnect`
//!   (R27); a null `lastConnectionVersion` counts as 0, so members configured before connections
//!   existed are not reconnected unless a change happened;
//! * a kdcluster without connections that never had any keeps `lastConnectionHash` empty and gets
//!   no counter annotation (upstream stores the MD5 of the empty string and sets the counter to 1
//!   on its first pass, which means nothing to a startscript);
//! * `--reconnect` runs as a bounded configuration job whose failure is retried with backoff,
//!   not as a fire-and-forget background script;
//! * the wake-up annotation `connUpdateCounter` is not written: watches on the connected objects
//!   route their events to the connecting kdclusters directly.

use kubedirector_crds::cluster::MemberState;
use kubedirector_crds::wire::ANNOTATION_HASH_CHANGE_COUNTER;

use super::super::config::connections::{connections_document, connections_hash};
use super::super::config::member::Step;
use super::super::config::script::{GuestJob, GuestReport};
use super::super::{Command, EventReason, PlanEvent};
use super::Pass;

impl Pass<'_> {
    /// Step 11 (connections part): compares the fingerprint with `status.lastConnectionHash`;
    /// on a change bumps the counter (returned through [`Pass::counter_bump`]) and stores the
    /// new hash. Returns whether the connections changed. Always sets the pass's connection
    /// version.
    pub(super) fn check_connections(&mut self) -> bool {
        let spec = self.info.cluster.spec.connections.clone().unwrap_or_default();
        let annotation = self
            .info
            .cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_HASH_CHANGE_COUNTER))
            .map(|v| v.trim().parse::<i64>());
        let stored = self.status.last_connection_hash.clone();
        if spec.is_empty() && stored.is_empty() {
            self.connection_version = self.fallback_connection_version(annotation);
            return false;
        }
        let hash = connections_hash(&spec, &self.obs.connections);
        if hash == stored {
            self.connection_version = self.fallback_connection_version(annotation);
            return false;
        }
        let next = match annotation {
            Some(Ok(n)) => n.saturating_add(1),
            _ => {
                self.normal(EventReason::Cluster, "Annotation initialized to 1");
                1
            }
        };
        self.normal(EventReason::Cluster, "Updated context");
        self.counter_bump = Some(next.to_string());
        self.status.last_connection_hash = hash;
        self.connection_version = next;
        true
    }

    /// The connection version without a bump (spec 4.8): the counter annotation, else the minimum
    /// `lastConnectionVersion` of the configured members, or 0.
    fn fallback_connection_version(
        &mut self,
        annotation: Option<Result<i64, std::num::ParseIntError>>,
    ) -> i64 {
        if let Some(Ok(n)) = annotation {
            return n;
        }
        if annotation.is_some() {
            for role in self.info.roles().iter().map(|r| r.id.clone()).collect::<Vec<_>>() {
                self.warning(
                    EventReason::Member,
                    format!("Invalid connectionsIncrementor for role{{{role}}}"),
                );
            }
        }
        self.status
            .roles
            .iter()
            .flat_map(|r| r.members.iter())
            .filter(|m| m.state == MemberState::Configured)
            .filter_map(|m| m.state_detail.last_connection_version)
            .min()
            .unwrap_or(0)
    }

    /// The `connections` object of this pass's configmeta (spec 4.2).
    pub(super) fn connections_value(&self) -> serde_json::Value {
        let spec = self.info.cluster.spec.connections.clone().unwrap_or_default();
        connections_document(
            &spec,
            &self.obs.connections,
            self.info.config.cluster_svc_domain_base_or_default(),
            self.info.config.master_encryption_key.as_deref(),
        )
    }

    /// `--reconnect` for configured members behind the connection version once they hold the
    /// current configmeta (spec 3.11 step 1, 4.5); new members start at the current version
    /// (spec 4.4 step 1). Members still owed a reconnect are kept out of the generation
    /// fast-forward ([`Pass::awaiting_reconnect`]) so the cluster is not declared stable first.
    pub(super) fn reconnect_members(&mut self) {
        let version = self.connection_version;
        let generation = self.generation();
        for idx in 0..self.status.roles.len() {
            let role_id = self.status.roles[idx].id.clone();
            if !self.info.role_has_setup_package(&role_id) {
                continue;
            }
            let max_log = self
                .info
                .app
                .map_or(0, |a| a.spec.role_max_log_size_dump(&role_id));
            for mi in 0..self.status.roles[idx].members.len() {
                let m = &mut self.status.roles[idx].members[mi];
                if matches!(m.state, MemberState::CreatePending | MemberState::Creating) {
                    m.state_detail.last_connection_version = Some(version);
                    continue;
                }
                if m.state != MemberState::Configured {
                    continue;
                }
                let pod = m.pod.clone();
                let cid = m
                    .state_detail
                    .last_configured_container
                    .clone()
                    .unwrap_or_default();
                let guest = self.obs.guest.get(&pod);
                let mut step = Step::default();
                let result = guest
                    .and_then(|g| g.result.as_ref())
                    .filter(|r| r.container_id == cid && matches!(r.job, GuestJob::Reconnect { .. }));
                if let Some(r) = result {
                    let GuestJob::Reconnect { version: ran, .. } = r.job else {
                        continue;
                    };
                    if matches!(
                        r.outcome,
                        Ok(GuestReport::Notified {
                            done: 1,
                            failed: None
                        })
                    ) {
                        m.state_detail.last_connection_version = Some(ran);
                    } else {
                        step.events.push(PlanEvent::warning(
                            EventReason::Member,
                            format!("failed to run startcsript with --reconnect in member{{{pod}}} in role{{{role_id}}}"),
                        ));
                        step.requeue = true;
                    }
                }
                let behind = m.state_detail.last_connection_version.unwrap_or(0) < version;
                if !behind {
                    self.guest_command(&role_id, &pod, cid, step);
                    continue;
                }
                self.awaiting_reconnect.push(pod.clone());
                let current = m.state_detail.last_config_data_generation == Some(generation);
                let busy = guest.is_some_and(|g| g.busy)
                    || self
                        .commands
                        .iter()
                        .any(|c| matches!(c, Command::RunGuestJob { pod: p, .. } if *p == pod));
                if current && !busy && result.is_none() {
                    step.events.push(PlanEvent::normal(
                        EventReason::Cluster,
                        format!("--reconnect will be called for pod : {pod}"),
                    ));
                    step.job = Some(GuestJob::Reconnect {
                        version,
                        max_log_size: max_log,
                    });
                } else if result.is_some() {
                    step.requeue = true;
                }
                self.guest_command(&role_id, &pod, cid, step);
            }
        }
    }
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
