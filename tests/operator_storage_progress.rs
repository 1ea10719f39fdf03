//! `storageInitProgress` end to end (spec 3.10, feature F36): the operator in-process against
//! kubesim, whose kubelet really runs the member's `init` container (our persisted-directory copy
//! script) in a bubblewrap sandbox.
//!
//! The test image carries its own `rsync` in `/usr/local/bin` (first on the container's PATH, so
//! the init script picks it over the host's, if any): it answers `--help` with the options the
//! script checks, writes rsync's `--info=progress2` updates (carriage-return separated) to its
//! stdout, which the script sends to the progress file on the volume, then holds the copy until
//! the test releases it, and copies with `cp`. So the member is `initializing` for as long as the
//! test needs, on any machine, and the operator's probe (an exec into the `init` container that
//! reads the file's tail) is what is tested.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;
mod skip_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use operator_support::{configured_with, final_state::operator_execs, members, Env, ResourceKind, NS};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

const IMAGE: &str = "kdtest/slow-init:1";
const RELEASE: &str = "/tmp/kd-release-copy";

/// rsync's progress updates as the fake writes them; the operator shows the second-to-last.
const UPDATES: [&str; 3] = [
    "              0   0%    0.00kB/s    0:00:00 (xfr#0, to-chk=2/3)",
    "          4,096  25%    4.00MB/s    0:00:00 (xfr#1, to-chk=1/3)",
    "          8,192  50%    4.00MB/s    0:00:00 (xfr#1, to-chk=1/3)",
];

fn fake_rsync() -> String {
    let updates: String = UPDATES
        .iter()
        .map(|u| format!("printf '\\r%s' '{u}'\n"))
        .collect();
    format!(
        "#!/bin/sh\n\
         if [ \"$1\" = --help ]; then echo '--log-file=FILE --info=FLAGS --relative --no-inc-recursive'; exit 0; fi\n\
         {updates}\
         i=0\n\
         while [ ! -f {RELEASE} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\n\
         dest=\n\
         for a in \"$@\"; do dest=$a; done\n\
         for a in \"$@\"; do\n\
         \x20 case $a in -*) continue;; esac\n\
         \x20 [ \"$a\" = \"$dest\" ] && continue\n\
         \x20 cp --parent -ax \"$a\" \"$dest\" || exit 23\n\
         done\n\
         printf '\\r%15s 100%%\\n' 12,288\n"
    )
}

fn app() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "slowinit", "namespace": NS},
        "spec": {
            "label": {"name": "slowinit"},
            "distroID": "kdtest/slowinit",
            "version": "1.0",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": IMAGE,
            "services": [],
            "roles": [{"id": "node", "cardinality": "1", "configPackage": null, "persistDirs": ["/srv/data"]}],
            "config": {"roleServices": [], "selectedRoles": ["node"]}
        }
    })
}

fn cluster() -> Value {
    let res = json!({"limits": {"memory": "512Mi", "cpu": "1"}, "requests": {"memory": "512Mi", "cpu": "1"}});
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": "slow", "namespace": NS},
        "spec": {"app": "slowinit", "appCatalog": "local", "serviceType": "ClusterIP", "namingScheme": "UID",
                 "roles": [{"id": "node", "members": 1, "resources": res,
                            "storage": {"size": "1Gi", "storageClassName": "standard"}}]}
    })
}

/// Runs `sh -c script` in `container` of `pod`; its stdout.
fn exec(env: &Env, pod: &str, container: &str, script: &str) -> String {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    env.rt.block_on(async {
        let mut p = api
            .exec(
                pod,
                vec!["sh", "-c", script],
                &AttachParams::default().container(container).stderr(false),
            )
            .await
            .unwrap();
        let mut out = String::new();
        p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
        p.join().await.unwrap();
        out
    })
}

fn init_running(env: &Env, pod: &str) -> bool {
    env.get(&ResourceKind::Pod, NS, pod)
        .is_some_and(|p| !p["status"]["initContainerStatuses"][0]["state"]["running"].is_null())
}

fn progress(env: &Env) -> Value {
    members(env, "slow")
        .first()
        .map(|m| m["stateDetail"]["storageInitProgress"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn storage_init_progress_is_reported_while_the_init_container_copies_and_cleared_after() {
    if !kubesim::sandbox::Runtime::new(std::env::temp_dir().join("kd-probe")).is_ok_and(|r| r.available()) {
        skip_support::skipped("bubblewrap/nsenter not available, the init container cannot run");
        return;
    }
    let env = Env::start();
    let image = tempfile::tempdir().unwrap();
    let bin = image.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("rsync"), fake_rsync()).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(bin.join("rsync"))
        .status()
        .unwrap();
    let data = image.path().join("srv/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "persisted\n").unwrap();
    env.runtime.register_image(IMAGE, image.path());

    env.create(&ResourceKind::App, NS, app());
    env.create(&ResourceKind::Cluster, NS, cluster());
    env.eventually("a member", |e| !members(e, "slow").is_empty());
    let pod = members(&env, "slow")[0]["pod"].as_str().unwrap().to_string();
    let execs_before = operator_execs(&env);
    env.eventually(
        "the copy's progress reported while the init container runs",
        |e| progress(e) == UPDATES[1].trim() && init_running(e, &pod),
    );
    let m = &members(&env, "slow")[0];
    assert_eq!(m["stateDetail"]["lastKnownContainerState"], "initializing");
    let c = env.get(&ResourceKind::Cluster, NS, "slow").unwrap();
    assert_eq!(c["status"]["memberStateRollup"]["membersInitializing"], true);
    // The probes go on while the copy waits (one exec per member per interval, 3 s).
    let (t, seen) = (std::time::Instant::now(), operator_execs(&env));
    env.eventually("two more probes", |e| operator_execs(e) >= seen + 2);
    println!(
        "operator pods/exec requests: {} until the progress showed, 2 more in {:.1} s",
        seen - execs_before,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        progress(&env),
        UPDATES[1].trim(),
        "unchanged while the copy waits"
    );

    // Release the copy: the init container finishes, the member is configured, the field goes.
    exec(&env, &pod, "init", &format!("touch {RELEASE}"));
    env.eventually("configured, progress cleared", |e| {
        configured_with(e, "slow", 1) && progress(e).is_null()
    });
    assert_eq!(
        exec(&env, &pod, "app", "cat /srv/data/hello.txt"),
        "persisted\n",
        "the persisted dir was copied onto the volume and mounted back"
    );
}
