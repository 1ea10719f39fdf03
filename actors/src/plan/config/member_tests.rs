//! Tests of the per-member configuration decisions.

use kubedirector_crds::cluster::{MemberState, MemberStatus};

use super::*;
use crate::plan::config::script::Tails;

fn member(state: MemberState) -> MemberStatus {
    let mut m = MemberStatus {
        pod: "kdss-abcde-1".into(),
        state,
        ..MemberStatus::default()
    };
    m.state_detail.configuring_container = Some("c1".into());
    m.state_detail.last_configured_container = Some("c0".into());
    m
}

fn setup() -> SetupJob {
    SetupJob {
        configmeta: "{}".into(),
        generation: 4,
        package_url: Some("file:///p.tgz".into()),
        new_layout: false,
        run_configure: true,
        systemd: false,
        restart: false,
        file_injections: vec![],
        max_log_size: 256,
    }
}

fn finished(container: &str, job: GuestJob, outcome: Result<GuestReport, String>) -> GuestView {
    GuestView {
        busy: false,
        result: Some(GuestResult {
            id: 1,
            container_id: container.into(),
            job,
            outcome,
        }),
    }
}

fn messages(step: &Step) -> Vec<String> {
    step.events.iter().map(|e| e.message.clone()).collect()
}

#[test]
fn a_creating_member_without_a_job_gets_a_setup_job_and_the_configmeta_generation() {
    let mut m = member(MemberState::Creating);
    let step = creating(&mut m, "worker", None, &setup(), true);
    assert!(matches!(step.job, Some(GuestJob::Setup(ref j)) if j.generation == 4 && !j.restart));
    assert_eq!(m.state_detail.last_config_data_generation, Some(4));
    assert_eq!(m.state, MemberState::Creating);
}

#[test]
fn a_busy_member_waits_and_the_barrier_keeps_new_setups_from_starting() {
    let mut m = member(MemberState::Creating);
    let busy = GuestView {
        busy: true,
        result: None,
    };
    let step = creating(&mut m, "worker", Some(&busy), &setup(), true);
    assert!(step.job.is_none());
    assert_eq!(
        messages(&step),
        ["initial config ongoing for member{kdss-abcde-1} in role{worker}"]
    );
    let step = creating(&mut m, "worker", None, &setup(), false);
    assert!(step.job.is_none());
    assert_eq!(
        messages(&step),
        ["member{kdss-abcde-1} initial configuration waiting on update of ready-state members"]
    );
    assert_eq!(m.state_detail.last_config_data_generation, None);
}

#[test]
fn a_successful_configure_makes_the_member_configured_at_its_configmeta_generation() {
    let mut m = member(MemberState::Creating);
    m.state_detail.last_config_data_generation = Some(4);
    m.state_detail.pending_notify_cmds = vec![notify_cmd("addnodes", "w", &["x".into()])];
    let ok = Ok(GuestReport::Configured {
        exit: 0,
        same_container: true,
        tails: Tails::default(),
    });
    let view = finished("c1", GuestJob::Setup(Box::new(setup())), ok);
    let step = creating(&mut m, "worker", Some(&view), &setup(), true);
    assert_eq!(m.state, MemberState::Configured);
    assert_eq!(m.state_detail.last_setup_generation, Some(4));
    assert!(m.state_detail.pending_notify_cmds.is_empty());
    assert_eq!(
        messages(&step),
        ["initial config done for member{kdss-abcde-1} in role{worker}"]
    );
}

#[test]
fn a_failed_configure_is_a_config_error_naming_the_exit_status_with_the_output_tails() {
    let mut m = member(MemberState::Creating);
    let failed = Ok(GuestReport::Configured {
        exit: 3,
        same_container: true,
        tails: Tails {
            stdout: "starting\n".into(),
            stderr: "first\nport in use\n".into(),
        },
    });
    let view = finished("c1", GuestJob::Setup(Box::new(setup())), failed);
    let step = creating(&mut m, "worker", Some(&view), &setup(), true);
    assert_eq!(m.state, MemberState::ConfigError);
    assert_eq!(
        m.state_detail.config_error_detail.as_deref(),
        Some("execution of app config failed: configure failed with exit status {3}")
    );
    assert_eq!(
        m.state_detail.start_script_stderr_message.as_deref(),
        Some("first\nport in use\n")
    );
    assert_eq!(
        messages(&step),
        [
            "failed to run initial config for member{kdss-abcde-1} in role{worker}",
            "startscript --configure exited with status 3 in member{kdss-abcde-1}: port in use"
        ]
    );
}

#[test]
fn a_report_for_another_container_is_ignored() {
    let mut m = member(MemberState::Creating);
    let ok = Ok(GuestReport::Configured {
        exit: 0,
        same_container: true,
        tails: Tails::default(),
    });
    let view = finished("c-old", GuestJob::Setup(Box::new(setup())), ok);
    let step = creating(&mut m, "worker", Some(&view), &setup(), true);
    assert_eq!(m.state, MemberState::Creating);
    assert!(step.job.is_some(), "a new setup starts for the current container");
}

#[test]
fn a_retry_after_config_error_restarts_setup_and_clears_the_error_only_when_it_starts() {
    let mut m = member(MemberState::Creating);
    m.state_detail.config_error_detail = Some("execution of app config failed: x".into());
    m.state_detail.last_setup_generation = Some(2);
    let step = creating(&mut m, "worker", None, &setup(), false);
    assert!(step.job.is_none());
    assert!(m.state_detail.config_error_detail.is_some(), "kept while waiting");
    let step = creating(&mut m, "worker", None, &setup(), true);
    assert!(matches!(step.job, Some(GuestJob::Setup(ref j)) if j.restart));
    assert_eq!(m.state_detail.config_error_detail, None);
    assert_eq!(m.state_detail.last_setup_generation, None);
    assert_eq!(
        messages(&step),
        ["member{kdss-abcde-1} was previously in config error state; re-trying setup"]
    );
}

#[test]
fn file_injection_and_exec_failures_have_their_own_details() {
    let mut m = member(MemberState::Creating);
    let view = finished(
        "c1",
        GuestJob::Setup(Box::new(setup())),
        Ok(GuestReport::InjectionFailed { error: "404".into() }),
    );
    let step = creating(&mut m, "worker", Some(&view), &setup(), true);
    assert_eq!(
        m.state_detail.config_error_detail.as_deref(),
        Some("failed requested file injections: 404")
    );
    assert_eq!(
        messages(&step),
        ["failed to inject one or more files for member{kdss-abcde-1} in role{worker}"]
    );
    let mut m = member(MemberState::Creating);
    let view = finished(
        "c1",
        GuestJob::Setup(Box::new(setup())),
        Err("container ID changed during configuration".into()),
    );
    creating(&mut m, "worker", Some(&view), &setup(), true);
    assert_eq!(
        m.state_detail.config_error_detail.as_deref(),
        Some("execution of app config failed: container ID changed during configuration")
    );
}

#[test]
fn a_configured_member_behind_the_generation_gets_the_new_configmeta_once() {
    let mut m = member(MemberState::Configured);
    m.state_detail.last_config_data_generation = Some(3);
    let step = refresh(&mut m, "worker", None, 4, "{\"v\":4}");
    assert!(matches!(
        step.job,
        Some(GuestJob::WriteConfigmeta { generation: 4, .. })
    ));
    let busy = GuestView {
        busy: true,
        result: None,
    };
    assert!(refresh(&mut m, "worker", Some(&busy), 4, "{}").job.is_none());
    let done = finished(
        "c0",
        GuestJob::WriteConfigmeta {
            generation: 4,
            configmeta: "{}".into(),
        },
        Ok(GuestReport::ConfigWritten),
    );
    let step = refresh(&mut m, "worker", Some(&done), 4, "{}");
    assert!(step.job.is_none());
    assert_eq!(m.state_detail.last_config_data_generation, Some(4));
    assert!(
        refresh(&mut m, "worker", None, 4, "{}").job.is_none(),
        "up to date"
    );
}

#[test]
fn notifications_run_from_the_stored_queue_and_dequeue_what_succeeded() {
    let mut m = member(MemberState::Configured);
    m.state_detail.last_setup_generation = Some(3);
    m.state_detail.last_config_data_generation = Some(4);
    let a = notify_cmd("addnodes", "worker", &["n1.d".into(), "n2.d".into()]);
    let b = notify_cmd("delnodes", "worker", &["n0.d".into()]);
    m.state_detail.pending_notify_cmds = vec![a.clone(), b.clone()];
    // Queued in this pass only: not yet stored, nothing runs.
    assert!(notify(&mut m, None, &[], 256).job.is_none());
    let step = notify(&mut m, None, &[a.clone(), b.clone()], 256);
    let Some(job @ GuestJob::Notify { .. }) = step.job else {
        panic!("no notify job")
    };
    let partial = finished(
        "c0",
        job.clone(),
        Ok(GuestReport::Notified {
            done: 1,
            failed: Some((7, "nope\n".into())),
        }),
    );
    let step = notify(&mut m, Some(&partial), &[a.clone(), b.clone()], 256);
    assert_eq!(m.state_detail.pending_notify_cmds, vec![b.clone()]);
    assert!(step.requeue);
    assert_eq!(
        messages(&step),
        [
            "failed to notify member{kdss-abcde-1} about member changes",
            "startscript notification exited with status 7 in member{kdss-abcde-1}: nope"
        ]
    );
    assert_eq!(m.state_detail.last_setup_generation, Some(3));
    let rest = finished(
        "c0",
        GuestJob::Notify {
            cmds: vec![b.clone()],
            max_log_size: 256,
        },
        Ok(GuestReport::Notified {
            done: 1,
            failed: None,
        }),
    );
    notify(&mut m, Some(&rest), &[b], 256);
    assert!(m.state_detail.pending_notify_cmds.is_empty());
    assert_eq!(
        m.state_detail.last_setup_generation,
        Some(4),
        "fast-forwarded after success"
    );
}

#[test]
fn notify_targets_are_members_whose_setup_generation_lags() {
    let mut m = member(MemberState::Configured);
    assert!(!is_notify_target(&m, 2), "never set up: no target");
    m.state_detail.last_setup_generation = Some(1);
    assert!(is_notify_target(&m, 2));
    assert!(!is_notify_target(&m, 1));
    m.state = MemberState::ConfigError;
    assert!(!is_notify_target(&m, 2));
    assert_eq!(
        notify_cmd("addnodes", "worker", &["a".into(), "b".into()]).arguments,
        [
            "--addnodes",
            "--nodegroup 1",
            "--role",
            "worker",
            "--fqdns",
            "a,b"
        ]
    );
}
