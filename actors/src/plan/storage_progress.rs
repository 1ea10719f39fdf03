//! Storage-initialisation progress (spec 3.10, feature F36): while a member's `init` container
//! copies its persisted directories onto the new volume, `stateDetail.storageInitProgress`
//! reports how far the copy got. The caller probes the `init` container with [`probe_command`]
//! (one exec; upstream makes two, `test -f` then `tail`), turns the exec's outcome into a
//! [`StorageProbe`] with [`StorageProbe::from_exec`], and shows it to the next pass
//! ([`super::Observed::storage_probes`]); the pass derives the message with [`progress_message`]
//! for members whose container state is `initializing`, and clears it for every other member.

use super::objects::scripts::INIT_PROGRESS_LOG;
use super::{EventReason, PlanEvent};

/// Exit status of [`probe_command`] when the progress file does not exist.
pub const NO_FILE_EXIT: i32 = 3;
/// How many bytes of the progress file are read (upstream's `tail -c 1024`).
pub const TAIL_BYTES: usize = 1024;

/// `the init container is not yet ready`: the exec into the `init` container failed.
pub const NOT_READY: &str = "the init container is not yet ready";
/// `storage initialization progress reporting is not available`: no progress file (the copy
/// does not use rsync), or it could not be read.
pub const NOT_AVAILABLE: &str = "storage initialization progress reporting is not available";
/// `storage initialization progress reporting has not started yet`: the file has no complete
/// progress update yet.
pub const NOT_STARTED: &str = "storage initialization progress reporting has not started yet";
/// The Warning event (reason `Cluster`) when the progress file exists but cannot be read.
pub const TAIL_FAILED_EVENT: &str = "error status on attempt to pull last line(s) from rsync progress file";

/// The outcome of one probe of a member's `init` container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageProbe {
    /// The exec failed (container not running yet, transport error).
    ExecFailed,
    /// The progress file does not exist.
    NoFile,
    /// The progress file exists, but reading its tail failed.
    TailFailed,
    /// The last [`TAIL_BYTES`] bytes of the progress file.
    Tail(String),
}

impl StorageProbe {
    /// The probe outcome of an exec of [`probe_command`]: `Err` when the exec itself failed,
    /// else its exit status and stdout.
    pub fn from_exec(result: Result<(i32, String), ()>) -> Self {
        match result {
            Err(()) => StorageProbe::ExecFailed,
            Ok((0, out)) => StorageProbe::Tail(out),
            Ok((NO_FILE_EXIT, _)) => StorageProbe::NoFile,
            Ok(_) => StorageProbe::TailFailed,
        }
    }
}

/// The command run in the `init` container: exit [`NO_FILE_EXIT`] without the progress file,
/// else print its last [`TAIL_BYTES`] bytes.
pub fn probe_command() -> Vec<String> {
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("[ -f {INIT_PROGRESS_LOG} ] || exit {NO_FILE_EXIT}; exec tail -c {TAIL_BYTES} {INIT_PROGRESS_LOG}"),
    ]
}

/// The `storageInitProgress` text for a probe, and whether the tail-failure Warning event is due
/// (spec 3.10): rsync's progress updates are separated by carriage returns and the last one may
/// be incomplete, so the second-to-last piece (trimmed) is shown.
pub fn progress_message(probe: &StorageProbe) -> (String, bool) {
    match probe {
        StorageProbe::ExecFailed => (NOT_READY.to_owned(), false),
        StorageProbe::NoFile => (NOT_AVAILABLE.to_owned(), false),
        StorageProbe::TailFailed => (NOT_AVAILABLE.to_owned(), true),
        StorageProbe::Tail(text) => {
            let pieces: Vec<&str> = text.split('\r').collect();
            match pieces.len() {
                0 | 1 => (NOT_STARTED.to_owned(), false),
                n => (pieces[n - 2].trim().to_owned(), false),
            }
        }
    }
}

/// What a pass shows for an initialising member with the latest probe `probe` (spec 3.10):
/// `storageInitProgress` (nothing before the first probe) and the Warning event, if due.
pub fn shown(probe: Option<&StorageProbe>) -> (Option<String>, Option<PlanEvent>) {
    let Some(probe) = probe else {
        return (None, None);
    };
    let (text, warn) = progress_message(probe);
    let event = warn.then(|| PlanEvent::warning(EventReason::Cluster, TAIL_FAILED_EVENT));
    (Some(text), event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_to_last_update_is_shown() {
        let tail = "\r         32,768   0%    0.00kB/s    0:00:00 (xfr#0, to-chk=3/4)\
                    \r     10,485,760  50%   10.00MB/s    0:00:01 (xfr#2, to-chk=1/4)\
                    \r     15,7";
        assert_eq!(
            progress_message(&StorageProbe::Tail(tail.into())),
            (
                "10,485,760  50%   10.00MB/s    0:00:01 (xfr#2, to-chk=1/4)".to_owned(),
                false
            )
        );
        assert_eq!(
            progress_message(&StorageProbe::Tail("\r  1   1%\r".into())).0,
            "1   1%"
        );
    }

    #[test]
    fn fixed_texts_for_everything_else() {
        assert_eq!(
            progress_message(&StorageProbe::Tail(String::new())).0,
            NOT_STARTED
        );
        assert_eq!(
            progress_message(&StorageProbe::Tail("sending incremental file list".into())).0,
            NOT_STARTED
        );
        assert_eq!(
            progress_message(&StorageProbe::ExecFailed),
            (NOT_READY.to_owned(), false)
        );
        assert_eq!(
            progress_message(&StorageProbe::NoFile),
            (NOT_AVAILABLE.to_owned(), false)
        );
        assert_eq!(
            progress_message(&StorageProbe::TailFailed),
            (NOT_AVAILABLE.to_owned(), true)
        );
    }

    #[test]
    fn exec_outcomes_map_to_probes() {
        assert_eq!(StorageProbe::from_exec(Err(())), StorageProbe::ExecFailed);
        assert_eq!(
            StorageProbe::from_exec(Ok((3, String::new()))),
            StorageProbe::NoFile
        );
        assert_eq!(
            StorageProbe::from_exec(Ok((1, String::new()))),
            StorageProbe::TailFailed
        );
        assert_eq!(
            StorageProbe::from_exec(Ok((0, "\rx\ry".into()))),
            StorageProbe::Tail("\rx\ry".into())
        );
    }

    #[test]
    fn a_pass_shows_the_probe_while_the_member_initialises_and_clears_it_after() {
        use crate::plan::testing::*;
        let mut sim = Sim::new(with_storage(cluster_centos(1), 0, 0), app_centos());
        while sim.obs.cluster.status.as_ref().is_none_or(|s| s.roles.is_empty()) {
            assert!(sim.passes < 5);
            sim.pass();
            sim.kube();
        }
        let name = members(&sim, "vanilla_centos")[0].pod.clone();
        sim.obs.pods.insert(name.clone(), pod_waiting(&name, true));
        let progress = |sim: &Sim| {
            members(sim, "vanilla_centos")[0]
                .state_detail
                .storage_init_progress
                .clone()
        };
        // Not probed yet: nothing shown.
        sim.pass();
        assert_eq!(progress(&sim), None);
        assert!(sim.status().member_state_rollup.members_initializing);
        sim.obs.storage_probes.insert(name.clone(), StorageProbe::NoFile);
        let plan = sim.pass();
        assert!(plan.status_changed);
        assert_eq!(progress(&sim).as_deref(), Some(NOT_AVAILABLE));
        sim.obs
            .storage_probes
            .insert(name.clone(), StorageProbe::Tail("\r 1  10%\r 2  20%\r 3".into()));
        sim.pass();
        assert_eq!(progress(&sim).as_deref(), Some("2  20%"));
        sim.obs
            .storage_probes
            .insert(name.clone(), StorageProbe::TailFailed);
        let plan = sim.pass();
        assert_eq!(progress(&sim).as_deref(), Some(NOT_AVAILABLE));
        assert!(plan
            .events()
            .any(|e| e.message == TAIL_FAILED_EVENT && e.type_ == crate::plan::EventType::Warning));
        // The init container finished: the field goes, even with a probe left over.
        sim.obs
            .pods
            .insert(name.clone(), pod(&name, "Running", Some("cid-1"), true));
        sim.converge(10);
        assert_eq!(progress(&sim), None);
        assert_eq!(
            members(&sim, "vanilla_centos")[0].state,
            kubedirector_crds::cluster::MemberState::Configured
        );
    }

    /// The probe command with real `sh`, the progress file moved to a temporary directory.
    #[test]
    fn the_probe_command_reports_a_missing_file_and_tails_an_existing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("progress.log");
        let run = || {
            let mut argv = probe_command();
            argv[2] = argv[2].replace(INIT_PROGRESS_LOG, &file.display().to_string());
            let out = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .expect("sh runs");
            StorageProbe::from_exec(Ok((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )))
        };
        assert_eq!(run(), StorageProbe::NoFile);
        let long = format!("{}\rlast\rpartial", "x".repeat(5000));
        std::fs::write(&file, &long).expect("write");
        match run() {
            StorageProbe::Tail(t) => {
                assert_eq!(t.len(), TAIL_BYTES);
                assert_eq!(progress_message(&StorageProbe::Tail(t)).0, "last");
            }
            other => panic!("{other:?}"),
        }
    }
}
