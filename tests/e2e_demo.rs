//! `kubedirector demo` as a user runs it: the built binary, in a process of its own.
//!
//! - Scripted (`--exit-when-configured`): the demo ends by itself once its scenario is complete;
//!   every cluster, the setup-package one (`webstack-demo`, kd-webstack) included, reaches
//!   `configured`; `webstack-demo` is scaled out (its members get `--addnodes`, shown as lines) and
//!   in; everything shuts down cleanly and the temporary kubeconfig is removed.
//! - Scripted, with no time to complete: exit status 1, a one-line error naming the clusters and
//!   their states, still a clean shutdown.
//! - Interactive: SIGTERM while the demo runs stops it cleanly with exit status 0, and
//!   `--keep-kubeconfig` leaves the kubeconfig in place.
//! - On a terminal (a pseudo-terminal from util-linux `script`): the progress bars are redrawn in
//!   place (cursor-up sequences; replaying the output on a tiny terminal model leaves each cluster's
//!   bar on the screen once).
//!
//! The `--timeout` given is only an upper bound for a loaded machine: the demo ends as soon as the
//! scenario is complete, which takes about ten seconds.

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
fn exit_when_configured_exits_0_with_every_cluster_setup_package_ones_included_configured() {
    let demo = Demo::spawn(&["--clusters", "2", "--exit-when-configured", "--timeout", "170"]);
    let (status, stdout, stderr) = demo.finish();
    assert!(
        status.success(),
        "demo failed ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let kubeconfig = kubeconfig_path(&stdout);
    assert!(stdout.contains(&format!("export KUBECONFIG={}", kubeconfig.display())));
    position(&stdout, "kubectl get kdcluster");
    position(&stdout, "kubectl kd status webstack-demo");
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
    for (name, app, members) in [
        ("shell-demo-1", "kd-shell", "2/2"),
        ("shell-demo-2", "kd-shell", "2/2"),
        ("webstack-demo", "kd-webstack", "3/3"),
    ] {
        let n = &members[..1];
        let created = position(
            &stdout,
            &format!("demo: created kdcluster {name} ({n} members of {app})"),
        );
        let done = position(
            &stdout,
            &format!("demo: {name} is configured ({members} members)"),
        );
        assert!(created < done, "{name}: configured before created?\n{stdout}");
        assert!(
            stdout.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols == [name, "configured", members, "false"]
            }),
            "no table row showing {name} configured {members}:\n{stdout}"
        );
        configured.push(done);
    }
    assert!(
        !stdout.contains("shell-demo-3"),
        "only 2 shell clusters were asked for:\n{stdout}"
    );
    // The operator's events about the clusters are shown, the setup package's included.
    position(
        &stdout,
        "event kubedirectorcluster/shell-demo-1: Normal Cluster: new",
    );
    position(
        &stdout,
        "event kubedirectorcluster/webstack-demo: Normal Member: initial config done for member{",
    );

    // The scripted steps, in order, each one reflected by the table.
    let all = position(&stdout, "demo: all clusters configured (3 of 3)");
    let up = position(
        &stdout,
        "demo: scaling webstack-demo out by 1 worker (3 -> 4 members); the others get --addnodes",
    );
    let up_done = position(
        &stdout,
        "demo: scale-out done: webstack-demo is configured with 4 members",
    );
    let down = position(
        &stdout,
        "demo: scaling webstack-demo in by 1 worker (4 -> 3 members); the others get --delnodes",
    );
    let down_done = position(
        &stdout,
        "demo: scale-in done: webstack-demo is configured with 3 members",
    );
    let complete = position(
        &stdout,
        "demo: scenario complete; every cluster is configured; shutting down",
    );
    let clean = position(&stdout, "demo: operator and kubesim stopped; shut down cleanly");
    assert!(configured.iter().all(|&c| c < all), "{stdout}");
    assert!(
        all < up && up < up_done && up_done < down && down < down_done && down_done < complete,
        "steps out of order:\n{stdout}"
    );
    assert!(complete < clean, "{stdout}");

    // The scale-out's --addnodes notifications, queued for and delivered to the three members that
    // were there before, between the scale-out and its completion; then --delnodes.
    let lines: Vec<&str> = stdout.lines().collect();
    let notified = |from: usize, to: usize, op: &str, what: &str| {
        lines[from..to]
            .iter()
            .filter(|l| {
                l.starts_with("notify webstack-demo/kdss-")
                    && l.contains(&format!(
                        ": startscript {op} --nodegroup 1 --role worker --fqdns "
                    ))
                    && l.ends_with(what)
            })
            .count()
    };
    assert_eq!(notified(up, up_done, "--addnodes", " queued"), 3, "{stdout}");
    assert_eq!(notified(up, up_done, "--addnodes", " done"), 3, "{stdout}");
    assert_eq!(notified(down, down_done, "--delnodes", " done"), 3, "{stdout}");
    let row = |from: usize, to: usize, members: &str| {
        lines[from..to].iter().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols == ["webstack-demo", "configured", members, "false"]
        })
    };
    assert!(
        row(up, up_done, "4/4"),
        "no table row with 4/4 after scaling out:\n{stdout}"
    );
    assert!(
        row(down, down_done, "3/3"),
        "no table row with 3/3 after scaling in:\n{stdout}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("demo: operator and kubesim stopped; shut down cleanly"),
        "{stdout}"
    );
    // Plain output: no escape sequences when stdout is not a terminal.
    assert!(!stdout.contains('\x1b'), "{stdout}");

    // The temporary kubeconfig (and its directory) is gone.
    assert!(!kubeconfig.exists(), "{} left behind", kubeconfig.display());
}

#[test]
fn sigterm_stops_an_interactive_demo_cleanly_and_keep_kubeconfig_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("demo.kubeconfig");
    let mut demo = Demo::spawn(&["--clusters", "1", "--keep-kubeconfig", kept.to_str().unwrap()]);
    demo.wait_for_line("demo: all clusters configured (2 of 2)");
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
fn a_scenario_that_cannot_complete_in_time_names_the_clusters_after_a_clean_shutdown() {
    let demo = Demo::spawn(&["--clusters", "1", "--exit-when-configured", "--timeout", "0"]);
    let (status, stdout, stderr) = demo.finish();
    assert_eq!(status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kubedirector demo: the scenario did not complete within 0 s (stage: Creating): "),
        "stderr:\n{stderr}"
    );
    for name in ["shell-demo-1", "webstack-demo"] {
        assert!(last.contains(name), "the reason names {name}: {last}");
    }
    assert!(!stdout.contains("scenario complete"), "{stdout}");
    position(&stdout, "demo: operator and kubesim stopped; shut down cleanly");
    assert!(!kubeconfig_path(&stdout).exists());
}

/// Replays terminal output on a minimal terminal model (text, `\r`, `\n`, `ESC[nA` cursor up,
/// `ESC[2K` clear line); returns the screen's lines and how many cursor-up moves there were.
fn replay(bytes: &[u8]) -> (Vec<String>, usize) {
    let text = String::from_utf8_lossy(bytes);
    let mut screen: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col, mut ups) = (0usize, 0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
                if screen.len() <= row {
                    screen.push(Vec::new());
                }
            }
            '\x1b' => {
                assert_eq!(chars.next(), Some('['), "only CSI sequences are used");
                let mut n = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    n.push(d);
                    chars.next();
                }
                match chars.next() {
                    Some('A') => {
                        ups += 1;
                        row = row.saturating_sub(n.parse().unwrap_or(1));
                    }
                    Some('K') if n == "2" => screen[row].clear(),
                    other => panic!("unexpected escape sequence ESC[{n}{other:?}"),
                }
            }
            c => {
                let line = &mut screen[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
    }
    let lines = screen.into_iter().map(|l| l.into_iter().collect()).collect();
    (lines, ups)
}

#[test]
fn the_replay_model_redraws_in_place() {
    let (lines, ups) = replay(b"a\r\nb\r\n\x1b[2A\r\x1b[2Kc\r\n\r\x1b[2Kd\r\n");
    assert_eq!(lines, ["c", "d", ""]);
    assert_eq!(ups, 1);
}

#[test]
fn on_a_terminal_the_progress_bars_are_redrawn_in_place() {
    if Command::new("script").arg("--version").output().is_err() {
        println!("SKIPPED: util-linux `script` is not installed (no pseudo-terminal to test with)");
        return;
    }
    let cmd = format!("{BIN} demo --clusters 1 --exit-when-configured --timeout 170 2>/dev/null");
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo under script did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let bytes = reader.join().unwrap();
    let raw = String::from_utf8_lossy(&bytes);
    assert!(
        status.success(),
        "demo under a terminal failed ({status}):\n{raw}"
    );

    let (screen, ups) = replay(&bytes);
    let shown = screen.join("\n");
    // Many frames were drawn, each over the previous one.
    assert!(ups >= 5, "only {ups} cursor-up moves:\n{shown}");
    let bar = |name: &str| {
        screen
            .iter()
            .filter(|l| l.starts_with(name) && l.contains(" [") && l.contains("] "))
            .count()
    };
    for name in ["shell-demo-1", "webstack-demo"] {
        // The raw output drew the bar many times ...
        let drawn = raw
            .lines()
            .filter(|l| l.contains(name) && l.contains("] "))
            .count();
        assert!(drawn >= 5, "{name}'s bar drawn {drawn} times:\n{raw}");
        // ... but the screen shows it once: redrawn in place, not a growing list.
        assert_eq!(bar(name), 1, "{name}'s bar on the final screen:\n{shown}");
    }
    let web = screen.iter().find(|l| l.starts_with("webstack-demo")).unwrap();
    assert!(
        web.contains("kd-webstack") && web.contains("[########################]  3/3  configured"),
        "{web}"
    );
    assert!(screen.iter().any(|l| l.starts_with("recent events (")), "{shown}");
    assert!(
        screen
            .iter()
            .any(|l| l == "demo: scenario complete; every cluster is configured; shutting down"),
        "{shown}"
    );
}
