//! Tests of the guest scripts: the parser on its own, and the scripts really run by `bash` on
//! this machine with the guest paths moved into a temporary directory.

use std::{path::Path, process::Command};

use kubedirector_crds::cluster::NotifyCmd;

use super::*;

/// Runs `script` with bash after moving `/opt/guestconfig` and `/etc/guestconfig` under `root`.
fn run(script: &str, root: &Path) -> String {
    let script = script
        .replace(GUEST_DIR, &root.join("opt").display().to_string())
        .replace("/etc/guestconfig", &root.join("etc").display().to_string());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("bash runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A setup package whose startscript logs its arguments and fails `--configure` when asked to.
fn package(root: &Path, configure_exit: i32) -> String {
    let src = root.join("pkg/app");
    std::fs::create_dir_all(&src).unwrap();
    let log = root.join("calls.log");
    std::fs::write(
        src.join("startscript"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\necho out-line\necho err-line >&2\n[ \"$1\" = --configure ] && exit {configure_exit}\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    let tgz = root.join("pkg.tgz");
    let ok = Command::new("tar")
        .args(["czf"])
        .arg(&tgz)
        .arg("-C")
        .arg(root.join("pkg"))
        .arg("app")
        .status()
        .unwrap();
    assert!(ok.success());
    format!("file://{}", tgz.display())
}

fn job(url: Option<String>) -> SetupJob {
    SetupJob {
        configmeta: r#"{"version":"7"}"#.into(),
        generation: 1,
        package_url: url,
        new_layout: true,
        run_configure: true,
        systemd: false,
        restart: false,
        file_injections: vec![],
        max_log_size: 256,
    }
}

#[test]
fn setup_writes_configmeta_runs_configure_once_and_reports_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let url = package(dir.path(), 0);
    let script = setup_script(&job(Some(url)), "containerd://abc", None, 20);
    let report = parse_report(&run(&script, dir.path())).unwrap();
    let GuestReport::Configured {
        exit,
        same_container,
        tails,
    } = report
    else {
        panic!("unexpected report {report:?}")
    };
    assert_eq!((exit, same_container), (0, true));
    assert_eq!(tails.stdout, "out-line\n");
    assert_eq!(tails.stderr, "err-line\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/configmeta.json")).unwrap(),
        r#"{"version":"7"}"#
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("opt/configure.status")).unwrap(),
        "containerd://abc=0"
    );
    // Running the same job again (an operator restart) reports the result without re-running.
    let again = parse_report(&run(&script, dir.path())).unwrap();
    assert!(matches!(
        again,
        GuestReport::Configured {
            exit: 0,
            same_container: true,
            ..
        }
    ));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("calls.log")).unwrap(),
        "--configure\n"
    );
}

#[test]
fn a_failing_configure_reports_its_exit_status_and_a_new_container_sees_the_old_result() {
    let dir = tempfile::tempdir().unwrap();
    let url = package(dir.path(), 3);
    let report = parse_report(&run(
        &setup_script(&job(Some(url.clone())), "c1", None, 20),
        dir.path(),
    ))
    .unwrap();
    assert!(
        matches!(
            report,
            GuestReport::Configured {
                exit: 3,
                same_container: true,
                ..
            }
        ),
        "{report:?}"
    );
    let other = parse_report(&run(&setup_script(&job(Some(url)), "c2", None, 20), dir.path())).unwrap();
    assert!(
        matches!(
            other,
            GuestReport::Configured {
                exit: 3,
                same_container: false,
                ..
            }
        ),
        "{other:?}"
    );
}

#[test]
fn a_missing_package_is_a_setup_failure_with_the_curl_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/nothing.tgz", dir.path().display());
    let report = parse_report(&run(&setup_script(&job(Some(url)), "c1", None, 20), dir.path())).unwrap();
    let GuestReport::SetupFailed { error, .. } = report else {
        panic!("unexpected {report:?}")
    };
    assert!(error.starts_with("failed to download setup package: "), "{error}");
}

#[test]
fn a_configure_still_running_after_the_wait_reports_running_and_is_not_started_twice() {
    let dir = tempfile::tempdir().unwrap();
    let url = package(dir.path(), 0);
    // A startscript that takes longer than the wait.
    std::fs::write(
        dir.path().join("pkg/app/startscript"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {}/calls.log\nsleep 2\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let tgz = url.trim_start_matches("file://").to_owned();
    assert!(Command::new("tar")
        .args(["czf", &tgz, "-C"])
        .arg(dir.path().join("pkg"))
        .arg("app")
        .status()
        .unwrap()
        .success());
    let script = setup_script(&job(Some(url)), "c1", None, 0);
    assert_eq!(
        parse_report(&run(&script, dir.path())).unwrap(),
        GuestReport::Running
    );
    let poll = setup_script(&job(Some(format!("file://{tgz}"))), "c1", None, 10);
    assert!(matches!(
        parse_report(&run(&poll, dir.path())).unwrap(),
        GuestReport::Configured { exit: 0, .. }
    ));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("calls.log")).unwrap(),
        "--configure\n"
    );
}

#[test]
fn notifications_run_in_order_and_stop_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("opt/app");
    std::fs::create_dir_all(&app).unwrap();
    let log = dir.path().join("calls.log");
    std::fs::write(
        app.join("startscript"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\n[ \"$5\" = bad ] && {{ echo boom >&2; exit 5; }}\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(app.join("startscript"))
        .status()
        .unwrap();
    let cmd = |role: &str| NotifyCmd {
        arguments: vec![
            "--addnodes".into(),
            "--nodegroup 1".into(),
            "--role".into(),
            role.into(),
            "--fqdns".into(),
            "a.x,b.x".into(),
        ],
    };
    let cmds = [cmd("worker"), cmd("bad"), cmd("other")];
    let report = parse_report(&run(&notify_script(&cmds, 256).unwrap(), dir.path())).unwrap();
    assert_eq!(
        report,
        GuestReport::Notified {
            done: 1,
            failed: Some((5, "boom\n".into()))
        }
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "--addnodes --nodegroup 1 --role worker --fqdns a.x,b.x\n--addnodes --nodegroup 1 --role bad --fqdns a.x,b.x\n"
    );
    let all = parse_report(&run(&notify_script(&cmds[..1], 256).unwrap(), dir.path())).unwrap();
    assert_eq!(
        all,
        GuestReport::Notified {
            done: 1,
            failed: None
        }
    );
}

#[test]
fn notification_arguments_with_shell_syntax_are_refused() {
    let cmd = NotifyCmd {
        arguments: vec!["--fqdns".into(), "a;rm -rf /".into()],
    };
    assert!(notify_script(&[cmd], 0).is_none());
}

#[test]
fn file_injections_run_first_and_a_failure_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("hello.txt");
    std::fs::write(&src, "hi").unwrap();
    let dest = dir.path().join("inj");
    let mut j = job(None);
    j.file_injections = serde_json::from_value(serde_json::json!([
        {"srcURL": format!("file://{}", src.display()), "destDir": dest.display().to_string(),
         "permissions": {"fileMode": 0o640}}
    ]))
    .unwrap();
    let report = parse_report(&run(&setup_script(&j, "c1", None, 5), dir.path())).unwrap();
    assert!(
        matches!(report, GuestReport::Configured { exit: 0, .. }),
        "{report:?}"
    );
    assert_eq!(std::fs::read_to_string(dest.join("hello.txt")).unwrap(), "hi");
    j.file_injections[0].src_url = format!("file://{}/missing.txt", dir.path().display());
    let report = parse_report(&run(&setup_script(&j, "c1", None, 5), dir.path())).unwrap();
    assert!(
        matches!(report, GuestReport::InjectionFailed { .. }),
        "{report:?}"
    );
}

#[test]
fn long_tails_start_at_a_line_boundary_and_garbage_is_an_error() {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode("tial line\nfull line\n");
    let out = format!("noise\nKD-OUT 500 {b}\nKD-ERR 0 \nKD-RESULT configured 1 same\n");
    let GuestReport::Configured { tails, exit, .. } = parse_report(&out).unwrap() else {
        panic!()
    };
    assert_eq!(
        (exit, tails.stdout.as_str(), tails.stderr.as_str()),
        (1, "full line\n", "")
    );
    assert!(parse_report("bash: command not found").is_err());
    assert!(parse_report("KD-RESULT configured x").is_err());
    assert!(parse_report("KD-RESULT whatever").is_err());
}

#[test]
fn quoting_survives_single_quotes() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("printf '%s' {}", sh_quote("it's a 'test'")))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a 'test'");
}

/// Serves `body` over HTTP on loopback, each answer `delay` late; returns the URL.
fn slow_server(body: Vec<u8>, delay: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                std::thread::sleep(delay);
                let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(&body);
            });
        }
    });
    format!("http://{addr}/pkg.tgz")
}

/// The exec of a killed operator (or one that timed out during a slow download) still runs in
/// the pod when the next setup of the same container starts: `--configure` still runs once.
#[test]
fn overlapping_setups_of_one_container_run_configure_once() {
    if Command::new("flock").arg("-V").output().is_err() || Command::new("curl").arg("-V").output().is_err() {
        eprintln!("flock or curl missing: the overlap guard cannot be exercised here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file_url = package(dir.path(), 0);
    let tgz = std::fs::read(file_url.trim_start_matches("file://")).unwrap();
    let url = slow_server(tgz, std::time::Duration::from_millis(700));
    let script = setup_script(&job(Some(url)), "c1", None, 10)
        .replace(GUEST_DIR, &dir.path().join("opt").display().to_string())
        .replace("/etc/guestconfig", &dir.path().join("etc").display().to_string());
    let spawn = || {
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Both are past their status check while the download is in flight.
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let report = parse_report(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(
            matches!(report, GuestReport::Configured { exit: 0, .. }),
            "{report:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("calls.log")).unwrap(),
        "--configure\n"
    );
}

#[test]
fn a_script_cut_short_on_its_way_in_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let full = notify_script(
        &[NotifyCmd {
            arguments: vec!["--addnodes".into()],
        }],
        0,
    )
    .unwrap()
    .replace("$G/*/startscript", &format!("touch {};", marker.display()));
    // Everything but the closing brace: bash must refuse the whole block.
    let cut = full.trim_end().trim_end_matches('}');
    let out = Command::new("bash").arg("-c").arg(cut).output().unwrap();
    assert!(!out.status.success());
    assert!(!marker.exists(), "a truncated script ran part of itself");
    let out = Command::new("bash").arg("-c").arg(&full).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(marker.exists());
}
