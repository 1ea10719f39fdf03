//! Sandbox runtime tests: real processes in bubblewrap containers. Skipped (with a printed notice)
//! when bubblewrap is not installed.

#![allow(clippy::unwrap_used)]

mod common;

use kubesim::sandbox::{sandbox_available, ContainerSpec, ExecOptions, Mount, PodDns, Runtime};

fn skip() -> bool {
    if sandbox_available() {
        return false;
    }
    common::skipped(&kubesim::sandbox::sandbox_unavailable_reason().unwrap_or_default());
    true
}

fn spec(runtime: &Runtime, pod: &str, mounts: Vec<Mount>) -> ContainerSpec {
    let _ = runtime;
    ContainerSpec {
        namespace: "default".into(),
        pod_uid: format!("uid-{pod}"),
        pod_name: pod.into(),
        hostname: pod.into(),
        container_name: "app".into(),
        image: "busybox:test".into(),
        env: vec![("GREETING".into(), "hello world".into())],
        mounts,
        working_dir: None,
        dns: None,
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

async fn sh(runtime: &Runtime, id: &kubesim::sandbox::ContainerId, script: &str) -> (i32, String, String) {
    let out = runtime.run(id, &argv(&["sh", "-c", script]), None).await.unwrap();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn files_in_etc_survive_between_execs_but_not_a_restart() {
    if skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let rt = Runtime::new(state.path()).unwrap();
    let id = rt.start_container(spec(&rt, "pod-a", vec![])).await.unwrap();
    let (code, _, _) = sh(
        &rt,
        &id,
        "mkdir -p /etc/guestconfig && echo v1 > /etc/guestconfig/x",
    )
    .await;
    assert_eq!(code, 0);
    let (code, out, _) = sh(&rt, &id, "cat /etc/guestconfig/x").await;
    assert_eq!((code, out.as_str()), (0, "v1\n"));

    let new_id = rt.restart_container(&id).await.unwrap();
    assert_ne!(new_id, id);
    assert!(!rt.is_running(&id).await);
    assert!(rt.is_running(&new_id).await);
    let out = rt
        .run(&new_id, &argv(&["test", "-f", "/etc/guestconfig/x"]), None)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 1);
    let err = rt.run(&id, &argv(&["true"]), None).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    rt.shutdown().await;
}

#[tokio::test]
async fn pvc_backed_dirs_survive_restart_and_pod_recreation() {
    if skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let rt = Runtime::new(state.path()).unwrap();
    let pvc = rt.pvc_dir("default", "p-web-0").unwrap();
    let mounts = vec![
        Mount {
            host_path: pvc.join("etc"),
            container_path: "/etc".into(),
            read_only: false,
        },
        Mount {
            host_path: pvc.clone(),
            container_path: "/data".into(),
            read_only: false,
        },
    ];
    let id = rt
        .start_container(spec(&rt, "web-0", mounts.clone()))
        .await
        .unwrap();
    let (code, _, err) = sh(
        &rt,
        &id,
        "echo keep > /etc/kept && echo d > /data/d && echo gone > /opt/gone",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id2 = rt.restart_container(&id).await.unwrap();
    let (_, out, _) = sh(&rt, &id2, "cat /etc/kept /data/d; test -f /opt/gone; echo $?").await;
    assert_eq!(out, "keep\nd\n1\n");

    rt.remove_pod("uid-web-0").await.unwrap();
    assert!(!rt.is_running(&id2).await);
    let mut recreated = spec(&rt, "web-0", mounts);
    recreated.pod_uid = "uid-web-0-second".into();
    let id3 = rt.start_container(recreated).await.unwrap();
    let (_, out, _) = sh(&rt, &id3, "cat /etc/kept").await;
    assert_eq!(out, "keep\n");
    rt.shutdown().await;
}

#[tokio::test]
async fn background_process_outlives_exec_and_dies_with_container() {
    if skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let rt = Runtime::new(state.path()).unwrap();
    let id = rt.start_container(spec(&rt, "bg", vec![])).await.unwrap();
    // The background job waits for a go-file, then writes its result: it can only finish if it
    // is still alive after the starting exec returned.
    let script = "nohup sh -c 'while [ ! -f /tmp/go ]; do sleep 0.05; done; echo done > /tmp/result' \
                  >/tmp/bg.out 2>&1 &\necho started\n";
    let out = rt
        .run(&id, &argv(&["bash"]), Some(script.as_bytes()))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    let (_, ps, _) = sh(&rt, &id, "ls /proc | grep -c '^[0-9]'").await;
    let before: u32 = ps.trim().parse().unwrap();
    assert!(before >= 4, "init, pause, background job, ls/grep: {before}");
    let (code, _, _) = sh(
        &rt,
        &id,
        "touch /tmp/go; while [ ! -f /tmp/result ]; do sleep 0.05; done; cat /tmp/result",
    )
    .await;
    assert_eq!(code, 0);

    // A job that never ends is killed with the container.
    // (The exec waits until the job has exec'd `sleep`, so the host sees its final cmdline.)
    sh(
        &rt,
        &id,
        "nohup sleep 100000 >/dev/null 2>&1 & pid=$!; \
         until [ \"$(tr '\\0' ' ' < /proc/$pid/cmdline)\" = 'sleep 100000 ' ]; do sleep 0.01; done",
    )
    .await;
    let host_pids_before = count_host_processes("sleep 100000");
    assert!(host_pids_before >= 1);
    rt.stop_container(&id).await.unwrap();
    assert_eq!(count_host_processes("sleep 100000"), 0);
}

fn count_host_processes(cmdline: &str) -> usize {
    let want = cmdline.replace(' ', "\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).trim_end_matches('\0') == want)
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn exit_codes_stdin_env_and_hostname_are_like_a_pod() {
    if skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let rt = Runtime::new(state.path()).unwrap();
    let mut s = spec(&rt, "envpod", vec![]);
    s.dns = Some(PodDns {
        pod_ip: "10.244.0.7".into(),
        fqdn: Some("envpod.svc1.default.svc.cluster.local".into()),
        search: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ],
        nameserver: "10.96.0.10".into(),
    });
    let id = rt.start_container(s).await.unwrap();
    let (code, _, _) = sh(&rt, &id, "exit 7").await;
    assert_eq!(code, 7);
    let (code, out, err) = sh(
        &rt,
        &id,
        "echo out; echo err >&2; hostname; echo \"$GREETING|$HOSTNAME|$HOME\"",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, "out\nenvpod\nhello world|envpod|/root\n");
    assert_eq!(err, "err\n");
    let out = rt
        .run(&id, &argv(&["tee", "/tmp/t"]), Some(b"piped\ndata"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"piped\ndata");
    let (_, out, _) = sh(
        &rt,
        &id,
        "cat /tmp/t; echo; grep -c envpod.svc1 /etc/hosts; head -1 /etc/resolv.conf",
    )
    .await;
    assert_eq!(
        out,
        "piped\ndata\n1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"
    );
    let err = rt.run(&id, &argv(&["no-such-binary"]), None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec: \"no-such-binary\": executable file not found in $PATH"
    );
    let (code, _, _) = sh(&rt, &id, "kill -9 $$").await;
    assert_eq!(code, 137);
    let mut proc = rt
        .exec(
            &id,
            &ExecOptions {
                command: argv(&["sh", "-c", "exit 3"]),
                stdin: false,
                tty: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(proc.wait().await.unwrap(), 3);
    rt.shutdown().await;
}

#[tokio::test]
async fn image_contents_are_copied_and_setup_tools_work() {
    if skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    // An "image" carrying a setup package at /opt/pkg/app.tgz.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("app")).unwrap();
    std::fs::write(
        src.path().join("app/startscript"),
        "#!/bin/bash\necho configured \"$@\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(image.path().join("opt/pkg")).unwrap();
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(image.path().join("opt/pkg/app.tgz"))
        .arg("-C")
        .arg(src.path())
        .arg("app")
        .status()
        .unwrap();
    assert!(status.success());
    let rt = Runtime::new(state.path()).unwrap();
    rt.register_image("busybox:test", image.path());
    let id = rt.start_container(spec(&rt, "img", vec![])).await.unwrap();
    let script = "set -e\nmkdir -p /opt/guestconfig && chmod 700 /opt/guestconfig\ncd /opt/guestconfig\n\
                  curl -s -L -o appconfig.tgz file:///opt/pkg/app.tgz\ntar xzf appconfig.tgz\n\
                  chmod u+x /opt/guestconfig/*/startscript\nrm appconfig.tgz\n\
                  /opt/guestconfig/*/startscript --configure\nmkdir -p /usr/local/bin && echo ok > /usr/local/bin/x\n\
                  awk 'BEGIN{print \"awk works\"}'\n";
    let out = rt
        .run(&id, &argv(&["bash"]), Some(script.as_bytes()))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configured --configure\nawk works\n"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn without_bubblewrap_containers_are_virtual_and_exec_says_why() {
    let state = tempfile::tempdir().unwrap();
    let rt = Runtime::new_virtual(state.path()).unwrap();
    let id = rt.start_container(spec(&rt, "virt", vec![])).await.unwrap();
    assert!(id.as_str().starts_with("containerd://"));
    assert!(rt.is_running(&id).await);
    let err = rt.run(&id, &argv(&["true"]), None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "kubesim exec needs bubblewrap: apt-get install bubblewrap"
    );
    rt.stop_container(&id).await.unwrap();
    assert!(!rt.is_running(&id).await);
}
