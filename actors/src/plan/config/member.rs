//! Per-member configuration decisions (spec 4.4-4.7), as pure functions over one member's status
//! and what its jobs reported. The pass (`plan::pass::members`) calls them for every member and
//! collects the jobs, events and status changes they return.
//!
//! In-guest work is asynchronous: a decision either applies a finished job's report to the member
//! (a [`GuestView::result`]), waits for a running job ([`GuestView::busy`]), or asks for a new job.
//! A member never has two jobs at once. Every report names the container it ran in; a report for
//! another container than the one the member is now tied to is stale and ignored.
//!
//! Deviations from upstream, on purpose:
//! * a failed `--configure` also gets a Warning event naming the exit status and the last line of
//!   its stderr (upstream's event names neither; the tails stay in the member status as upstream);
//! * the retry after `config error` (spec 4.4 step 4) keeps `configErrorDetail` until the new
//!   setup job really starts, so a retry that has to wait is not lost;
//! * notifications are only run from a queue that is already stored in the status, so a crash
//!   between running a notification and recording it re-runs it (at least once) instead of
//!   losing it.

use kubedirector_crds::cluster::{MemberState, MemberStatus, NotifyCmd};

use super::script::{GuestJob, GuestReport, SetupJob};
use crate::plan::{EventReason, PlanEvent};

/// A finished job, as the pass sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestResult {
    /// Job id (the caller drops results once a pass consumed them).
    pub id: u64,
    /// The container the job ran in.
    pub container_id: String,
    /// The job.
    pub job: GuestJob,
    /// The report, or why the job could not run.
    pub outcome: Result<GuestReport, String>,
}

/// What the caller knows about a member's jobs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuestView {
    /// A job is running for this member.
    pub busy: bool,
    /// The last finished job not yet consumed by a pass.
    pub result: Option<GuestResult>,
}

/// A member's next step, as decided by one of the functions below.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Events to record.
    pub events: Vec<PlanEvent>,
    /// A job to start for the member's current container.
    pub job: Option<GuestJob>,
    /// Ask for another pass later (nothing will be announced by a watch event).
    pub requeue: bool,
}

fn tail_line(s: &str) -> &str {
    s.trim_end().rsplit('\n').next().unwrap_or_default()
}

/// Enters `config error` with upstream's detail and events (spec 4.4 step 13).
fn config_error(m: &mut MemberStatus, role: &str, detail: String, injection: bool, step: &mut Step) {
    m.state = MemberState::ConfigError;
    m.state_detail.config_error_detail = Some(detail);
    let msg = if injection {
        format!(
            "failed to inject one or more files for member{{{}}} in role{{{role}}}",
            m.pod
        )
    } else {
        format!(
            "failed to run initial config for member{{{}}} in role{{{role}}}",
            m.pod
        )
    };
    step.events.push(PlanEvent::warning(EventReason::Member, msg));
}

/// The `creating` handling of a member whose role has in-guest work (spec 4.4). `setup` is the
/// job to start if one is needed (configmeta already rendered for this member); `can_start` is
/// false while the configmeta barrier holds (spec 3.11 step 2).
pub fn creating(
    m: &mut MemberStatus,
    role: &str,
    guest: Option<&GuestView>,
    setup: &SetupJob,
    can_start: bool,
) -> Step {
    let mut step = Step::default();
    let cid = m.state_detail.configuring_container.clone().unwrap_or_default();
    let result = guest
        .and_then(|g| g.result.as_ref())
        .filter(|r| r.container_id == cid && matches!(r.job, GuestJob::Setup(_)));
    if let Some(r) = result {
        let d = &mut m.state_detail;
        match &r.outcome {
            Ok(GuestReport::Configured {
                exit,
                same_container,
                tails,
            }) => {
                if *same_container {
                    d.last_setup_generation = d.last_config_data_generation;
                    d.pending_notify_cmds.clear();
                }
                d.start_script_stdout_message = Some(tails.stdout.clone()).filter(|s| !s.is_empty());
                d.start_script_stderr_message = Some(tails.stderr.clone()).filter(|s| !s.is_empty());
                if *exit == 0 {
                    m.state = MemberState::Configured;
                    let msg = if setup.package_url.is_some() {
                        format!("initial config done for member{{{}}} in role{{{role}}}", m.pod)
                    } else {
                        format!("initial config skipped for member{{{}}} in role{{{role}}}", m.pod)
                    };
                    step.events.push(PlanEvent::normal(EventReason::Member, msg));
                } else {
                    let stderr = tails.stderr.clone();
                    config_error(
                        m,
                        role,
                        format!(
                            "execution of app config failed: configure failed with exit status {{{exit}}}"
                        ),
                        false,
                        &mut step,
                    );
                    step.events.push(PlanEvent::warning(
                        EventReason::Member,
                        format!(
                            "startscript --configure exited with status {exit} in member{{{}}}: {}",
                            m.pod,
                            tail_line(&stderr)
                        ),
                    ));
                }
            }
            Ok(GuestReport::SetupFailed { error, tails }) => {
                d.start_script_stdout_message = Some(tails.stdout.clone()).filter(|s| !s.is_empty());
                d.start_script_stderr_message = Some(tails.stderr.clone()).filter(|s| !s.is_empty());
                config_error(
                    m,
                    role,
                    format!("execution of app config failed: {error}"),
                    false,
                    &mut step,
                );
            }
            Ok(GuestReport::InjectionFailed { error }) => {
                config_error(
                    m,
                    role,
                    format!("failed requested file injections: {error}"),
                    true,
                    &mut step,
                );
            }
            Ok(GuestReport::SystemdNotReady) => {
                step.events.push(PlanEvent::normal(
                    EventReason::Member,
                    format!("systemd not yet responsive in member{{{}}}", m.pod),
                ));
                step.requeue = true;
            }
            Err(error) => {
                config_error(
                    m,
                    role,
                    format!("execution of app config failed: {error}"),
                    false,
                    &mut step,
                );
            }
            Ok(_) => step.requeue = true,
        }
        return step;
    }
    if guest.is_some_and(|g| g.busy) {
        step.events.push(PlanEvent::normal(
            EventReason::Member,
            format!("initial config ongoing for member{{{}}} in role{{{role}}}", m.pod),
        ));
        return step;
    }
    if !can_start {
        step.events.push(PlanEvent::normal(
            EventReason::Member,
            format!(
                "member{{{}}} initial configuration waiting on update of ready-state members",
                m.pod
            ),
        ));
        return step;
    }
    let mut job = setup.clone();
    let d = &mut m.state_detail;
    if d.config_error_detail.take().is_some() {
        d.last_setup_generation = None;
        d.pending_notify_cmds.clear();
        job.restart = true;
        step.events.push(PlanEvent::normal(
            EventReason::Member,
            format!(
                "member{{{}}} was previously in config error state; re-trying setup",
                m.pod
            ),
        ));
    }
    if job.package_url.is_some() {
        d.last_config_data_generation = Some(job.generation);
    }
    step.job = Some(GuestJob::Setup(Box::new(job)));
    step
}

/// The configmeta refresh of a configured member (spec 3.11 step 1): a member whose
/// `lastConfigDataGeneration` lags `generation` gets `configmeta`.
pub fn refresh(
    m: &mut MemberStatus,
    role: &str,
    guest: Option<&GuestView>,
    generation: i64,
    configmeta: &str,
) -> Step {
    let mut step = Step::default();
    let d = &mut m.state_detail;
    if m.state != MemberState::Configured || d.last_config_data_generation.is_none_or(|g| g == generation) {
        return step;
    }
    let cid = d.last_configured_container.clone().unwrap_or_default();
    let result = guest
        .and_then(|g| g.result.as_ref())
        .filter(|r| r.container_id == cid && matches!(r.job, GuestJob::WriteConfigmeta { .. }));
    if let Some(r) = result {
        let GuestJob::WriteConfigmeta {
            generation: written, ..
        } = &r.job
        else {
            return step;
        };
        if matches!(r.outcome, Ok(GuestReport::ConfigWritten)) {
            d.last_config_data_generation = Some(*written);
            if *written != generation {
                step.requeue = true;
            }
        } else {
            step.events.push(PlanEvent::warning(
                EventReason::Member,
                format!("failed to update config in member{{{}}} in role{{{role}}}", m.pod),
            ));
            step.requeue = true;
        }
        return step;
    }
    if !guest.is_some_and(|g| g.busy) {
        step.job = Some(GuestJob::WriteConfigmeta {
            generation,
            configmeta: configmeta.to_owned(),
        });
    }
    step
}

/// Notification execution for a configured member (spec 4.5): runs the queue that was already
/// stored (`stored_queue`, from the observed status), FIFO, and applies the report.
pub fn notify(
    m: &mut MemberStatus,
    guest: Option<&GuestView>,
    stored_queue: &[NotifyCmd],
    max_log: i64,
) -> Step {
    let mut step = Step::default();
    if m.state != MemberState::Configured {
        return step;
    }
    let d = &mut m.state_detail;
    let cid = d.last_configured_container.clone().unwrap_or_default();
    let result = guest
        .and_then(|g| g.result.as_ref())
        .filter(|r| r.container_id == cid && matches!(r.job, GuestJob::Notify { .. }));
    if let Some(r) = result {
        let GuestJob::Notify { cmds, .. } = &r.job else {
            return step;
        };
        let (done, failed) = match &r.outcome {
            Ok(GuestReport::Notified { done, failed }) => (*done, failed.clone()),
            Ok(_) => (0, Some((-1, "unexpected guest report".to_owned()))),
            Err(e) => (0, Some((-1, e.clone()))),
        };
        let done = done.min(cmds.len());
        if d.pending_notify_cmds.len() >= done && d.pending_notify_cmds[..done] == cmds[..done] {
            d.pending_notify_cmds.drain(..done);
        }
        if let Some((exit, stderr)) = failed {
            step.events.push(PlanEvent::warning(
                EventReason::Member,
                format!("failed to notify member{{{}}} about member changes", m.pod),
            ));
            step.events.push(PlanEvent::warning(
                EventReason::Member,
                format!(
                    "startscript notification exited with status {exit} in member{{{}}}: {}",
                    m.pod,
                    tail_line(&stderr)
                ),
            ));
            step.requeue = true;
        } else if d.pending_notify_cmds.is_empty() && d.last_setup_generation.is_some() {
            d.last_setup_generation = d.last_config_data_generation;
        }
        return step;
    }
    if !guest.is_some_and(|g| g.busy)
        && !stored_queue.is_empty()
        && d.pending_notify_cmds.starts_with(stored_queue)
    {
        step.job = Some(GuestJob::Notify {
            cmds: stored_queue.to_vec(),
            max_log_size: max_log,
        });
    }
    step
}

/// The queued form of a notification (spec 4.5).
pub fn notify_cmd(op: &str, role: &str, fqdns: &[String]) -> NotifyCmd {
    NotifyCmd {
        arguments: vec![
            format!("--{op}"),
            "--nodegroup 1".to_owned(),
            "--role".to_owned(),
            role.to_owned(),
            "--fqdns".to_owned(),
            fqdns.join(","),
        ],
    }
}

/// The `--reconnect` invocation (spec 4.5), run like a one-command notification queue.
pub fn reconnect_cmd() -> NotifyCmd {
    NotifyCmd {
        arguments: vec!["--reconnect".to_owned()],
    }
}

/// Whether `m` is a notification target at `generation` (spec 4.5): `configured`, `create
/// pending` or `creating`, with a setup generation that lags.
pub fn is_notify_target(m: &MemberStatus, generation: i64) -> bool {
    matches!(
        m.state,
        MemberState::Configured | MemberState::CreatePending | MemberState::Creating
    ) && m
        .state_detail
        .last_setup_generation
        .is_some_and(|g| g != generation)
}

#[cfg(test)]
#[path = "member_tests.rs"]
mod tests;
