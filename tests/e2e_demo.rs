//! `kubedirector demo` as a user runs it: the built binary, in a process of its own.
//!
//! - Scripted (`--duration`): the demo ends by itself once its scenario is complete; every cluster
//!   reaches `configured`, the first is scaled up and down, everything shuts down cleanly and the
//!   temporary kubeconfig is removed.
//! - Scripted, with no time to complete: exit status 1, a one-line error, still a clean shutdown.
//! - Interactive: SIGTERM while the demo runs stops it cleanly with exit status 0, and
//!   `--keep-kubeconfig` leaves the kubeconfig in place.
//!
//! The `--duration` given is only an upper bound for a loaded machine: the demo ends as soon as the
//! scenario is complete, which takes a few seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_kubedirector");

/// Upper bound on everything a test waits for (a loaded 2-core machine is much faster than that).
const BOUND: Duration = Duration::from_secs(180);

/// The demo process; killed if the test fails before it exits.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Demo {
    fn spawn(args: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Demo {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Reads stdout until a line contains `needle` (bounded).
    fn wait_for_line(&mut self, needle: &str) {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stdout.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "demo never printed {needle:?}; stdout so far:\n{}",
                    self.stdout.join("\n")
                ),
            }
        }
    }

    /// Waits (bounded) for the exit; returns the status, all of stdout and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("demo did not exit; stdout so far:\n{}", self.stdout.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipe is closed once the process has exited: the reader thread ends.
        while let Ok(line) = self.lines.recv_timeout(BOUND) {
            self.stdout.push(line);
        }
        let stdout = self.stdout.join("\n");
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, stdout, stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The path printed on the `kubeconfig written to PATH` line.
fn kubeconfig_path(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("kubeconfig written to "))
        .unwrap_or_else(|| panic!("no kubeconfig line in:\n{stdout}"));
    PathBuf::from(line.trim())
}

/// Index of the first line containing `needle` (the test fails when there is none).
fn position(stdout: &str, needle: &str) -> usize {
    stdout
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("stdout has no line containing {needle:?}:\n{stdout}"))
}

#[test]
fn scripted_demo_configures_every_cluster_scales_one_up_and_down_and_shuts_down_cleanly() {
    let demo = Demo::spawn(&["--clusters", "2", "--duration", "150"]);
    let (status, stdout, stderr) = demo.finish();
    assert!(
        status.success(),
        "demo failed ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let kubeconfig = kubeconfig_path(&stdout);
    assert!(stdout.contains(&format!("export KUBECONFIG={}", kubeconfig.display())));
    for crd in ["kubedirectorapps", "kubedirectorclusters", "kubedirectorconfigs"] {
        position(
            &stdout,
            &format!("customresourcedefinition/{crd}.kubedirector.hpe.com created"),
        );
    }
    for app in ["kd-shell", "kd-keyvalue", "kd-webstack"] {
        position(&stdout, &format!("kubedirectorapp/{app} created"));
    }

    // Every cluster is created and reaches `configured`, also in the progress table.
    let mut configured = Vec::new();
    for name in ["shell-demo-1", "shell-demo-2"] {
        let created = position(&stdout, &format!("demo: created kdcluster {name}"));
        let done = position(&stdout, &format!("demo: {name} is configured (2/2 members)"));
        assert!(created < done, "{name}: configured before created?\n{stdout}");
        assert!(
            stdout.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols == [name, "configured", "2/2", "false"]
            }),
            "no table row showing {name} configured 2/2:\n{stdout}"
        );
        configured.push(done);
    }
    assert!(
        !stdout.contains("shell-demo-3"),
        "only 2 clusters were asked for:\n{stdout}"
    );
    // The operator's events about the clusters are shown.
    position(
        &stdout,
        "event kubedirectorcluster/shell-demo-1: Normal Cluster: new",
    );

    // The scripted steps, in order, each one reflected by the table.
    let all = position(&stdout, "demo: all clusters configured (2 of 2)");
    let up = position(&stdout, "demo: scaling shell-demo-1 up by 2 members (2 -> 4)");
    let up_done = position(
        &stdout,
        "demo: scale-up done: shell-demo-1 is configured with 4 members",
    );
    let down = position(&stdout, "demo: scaling shell-demo-1 down by 1 member (4 -> 3)");
    let down_done = position(
        &stdout,
        "demo: scale-down done: shell-demo-1 is configured with 3 members",
    );
    let complete = position(&stdout, "demo: scenario complete; shutting down");
    let clean = position(&stdout, "demo: operator and kubesim stopped; shut down cleanly");
    assert!(configured.iter().all(|&c| c < all), "{stdout}");
    assert!(
        all < up && up < up_done && up_done < down && down < down_done && down_done < complete,
        "steps out of order:\n{stdout}"
    );
    assert!(complete < clean, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let row = |from: usize, to: usize, members: &str| {
        lines[from..to].iter().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols == ["shell-demo-1", "configured", members, "false"]
        })
    };
    assert!(
        row(up, up_done, "4/4"),
        "no table row with 4/4 after scaling up:\n{stdout}"
    );
    assert!(
        row(down, down_done, "3/3"),
        "no table row with 3/3 after scaling down:\n{stdout}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("demo: operator and kubesim stopped; shut down cleanly"),
        "{stdout}"
    );

    // The temporary kubeconfig (and its directory) is gone.
    assert!(!kubeconfig.exists(), "{} left behind", kubeconfig.display());
}

#[test]
fn sigterm_stops_an_interactive_demo_cleanly_and_keep_kubeconfig_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("demo.kubeconfig");
    let mut demo = Demo::spawn(&["--clusters", "1", "--keep-kubeconfig", kept.to_str().unwrap()]);
    demo.wait_for_line("demo: all clusters configured (1 of 1)");
    let pid = demo.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success(), "kill -TERM {pid} failed");
    let (status, stdout, stderr) = demo.finish();
    assert!(
        status.success(),
        "demo did not exit 0 on SIGTERM ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let interrupted = position(&stdout, "demo: interrupted; shutting down");
    let clean = position(&stdout, "demo: operator and kubesim stopped; shut down cleanly");
    assert!(interrupted < clean, "{stdout}");
    assert_eq!(kubeconfig_path(&stdout), kept);
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(text.contains("server: http://127.0.0.1:"), "{text}");
}

#[test]
fn a_scenario_that_cannot_complete_in_time_is_a_one_line_error_after_a_clean_shutdown() {
    let demo = Demo::spawn(&["--clusters", "1", "--duration", "0"]);
    let (status, stdout, stderr) = demo.finish();
    assert_eq!(status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some("kubedirector demo: the scenario did not complete within 0 s (stage: Creating)"),
        "stderr:\n{stderr}"
    );
    assert!(!stdout.contains("scenario complete"), "{stdout}");
    position(&stdout, "demo: operator and kubesim stopped; shut down cleanly");
    assert!(!kubeconfig_path(&stdout).exists());
}
