//! `deploy/` and the `Dockerfile`, as a platform team uses them:
//!
//! - The Dockerfile (no image can be built here): multi-stage, the binary and the configcli tarball
//!   at upstream's paths (spec 5.7), a non-root UID 1001; the Deployment runs that binary with flags
//!   the binary accepts, and its ports are the ones those flags serve on.
//! - `kubectl apply -k deploy/` against kubesim: every object accepted; the stored Deployment has two
//!   replicas and its pod template passes the restricted Pod Security profile.
//! - The monitoring Component adds the ServiceMonitor, the PrometheusRule and one ConfigMap per
//!   dashboard, labelled for Grafana's sidecar, whose JSON equals `dashboards/*.json`.
//!
//! The kubectl tests print a SKIPPED line when kubectl is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use clap::{Args, FromArgMatches};
use kubedirector::{operator::RunOptions, podsecurity::restricted_violations};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubedirector");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// All documents of a multi-document YAML text.
fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// The Dockerfile's instructions (continuation lines joined, comments dropped), as (keyword, rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        cur.push_str(t.trim_end_matches('\\'));
        cur.push(' ');
        if !t.ends_with('\\') {
            let (k, rest) = cur.trim().split_once(' ').unwrap_or((cur.trim(), ""));
            out.push((k.to_uppercase(), rest.trim().to_string()));
            cur.clear();
        }
    }
    out
}

/// The final stage of the Dockerfile and the names of the earlier ones.
fn final_stage(instr: &[(String, String)]) -> (Vec<String>, &[(String, String)]) {
    let froms: Vec<usize> = instr
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    let names = froms
        .iter()
        .filter_map(|&i| {
            let words: Vec<&str> = instr[i].1.split_whitespace().collect();
            (words.len() == 3 && words[1].eq_ignore_ascii_case("as")).then(|| words[2].to_string())
        })
        .collect();
    (names, &instr[*froms.last().unwrap()..])
}

/// The exec-form JSON array of an instruction.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("not exec form ({e}): {rest}"))
}

/// The destination of the final stage's `COPY --from=<stage> ... <dest>` for `dest`, with its flags.
fn copy_into<'a>(stage: &'a [(String, String)], dest: &str) -> Vec<&'a str> {
    let (_, rest) = stage
        .iter()
        .find(|(k, rest)| k == "COPY" && rest.split_whitespace().last() == Some(dest))
        .unwrap_or_else(|| panic!("no COPY into {dest} in the final stage"));
    rest.split_whitespace().collect()
}

#[test]
fn the_dockerfile_puts_the_binary_and_configcli_at_upstreams_paths_and_runs_as_uid_1001() {
    let instr = dockerfile();
    let (stages, last) = final_stage(&instr);
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");

    let binary = "/home/kubedirector/kubedirector";
    let configcli = "/home/kubedirector/configcli.tgz";
    // Both come from earlier stages, owned by 1001:0, readable by the runtime user.
    for (dest, mode) in [(binary, "--chmod=0755"), (configcli, "--chmod=0644")] {
        let words = copy_into(last, dest);
        let from = words
            .iter()
            .find_map(|w| w.strip_prefix("--from="))
            .unwrap_or_else(|| panic!("COPY into {dest} is not from a build stage"));
        assert!(stages.iter().any(|s| s == from), "unknown stage {from}");
        assert!(words.contains(&"--chown=1001:0"), "{words:?}");
        assert!(words.contains(&mode), "{words:?}");
    }
    // The build stage builds the release binary.
    assert!(instr
        .iter()
        .any(|(k, r)| k == "RUN" && r.contains("cargo build --release --locked --bin kubedirector")));

    // Non-root: the last USER of the final stage is UID 1001.
    let user = last
        .iter()
        .filter(|(k, _)| k == "USER")
        .map(|(_, r)| r.as_str())
        .next_back()
        .expect("the final stage sets USER");
    assert_eq!(user.split(':').next(), Some("1001"), "USER {user}");
    let entry = last.iter().find(|(k, _)| k == "ENTRYPOINT").expect("ENTRYPOINT");
    assert_eq!(exec_form(&entry.1), [binary]);

    // The binary's default configcli path is where the image puts it.
    assert_eq!(
        kubedirector_actors::plan::config::script::DEFAULT_CONFIGCLI_TARBALL,
        configcli
    );
    // The image's default command is one the binary accepts.
    let cmd = last.iter().find(|(k, _)| k == "CMD").expect("CMD");
    parse_run(&exec_form(&cmd.1));
}

/// Parses `args` (after the binary) as `kubedirector run ...`.
fn parse_run(args: &[String]) -> RunOptions {
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let cli =
        clap::Command::new("kubedirector").subcommand(RunOptions::augment_args(clap::Command::new("run")));
    let m = cli
        .try_get_matches_from(std::iter::once("kubedirector".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("the binary rejects {args:?}: {e}"));
    let (_, sub) = m.subcommand().unwrap();
    RunOptions::from_arg_matches(sub).unwrap()
}

#[test]
fn the_deployment_runs_the_images_binary_with_flags_it_accepts_on_the_ports_they_serve() {
    let text = std::fs::read_to_string(repo().join("deploy/kubedirector/20-deployment.yaml")).unwrap();
    let objs = docs(&text);
    let deploy = find(&objs, "Deployment", "kubedirector");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let entry = dockerfile()
        .into_iter()
        .rfind(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, r)| exec_form(&r))
        .unwrap();
    let command: Vec<String> = serde_json::from_value(c["command"].clone()).unwrap();
    assert_eq!(command, entry, "the Deployment's command is the image's binary");
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    let opts = parse_run(&args);
    assert_eq!(
        opts.configcli_tarball,
        PathBuf::from("/home/kubedirector/configcli.tgz")
    );

    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports.get("metrics"), Some(&u64::from(opts.metrics_addr.port())));
    assert_eq!(ports.get("webhook"), Some(&u64::from(opts.webhook.addr.port())));
    assert!(
        opts.webhook.enabled && opts.leader_elect,
        "two replicas need leader election"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = c[probe]["httpGet"]["port"].as_str().unwrap();
        assert!(ports.contains_key(port), "{probe} on unknown port {port}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    // The Services route to named container ports that exist; the webhook Service is the one the
    // operator's certificate names.
    let svc_text =
        std::fs::read_to_string(repo().join("deploy/kubedirector/30-webhook-service.yaml")).unwrap();
    let mut services = docs(&svc_text);
    services.extend(objs.iter().filter(|o| o["kind"] == "Service").cloned());
    find(&services, "Service", &opts.webhook.service_name);
    find(&services, "Service", "kubedirector-metrics");
    for s in &services {
        for p in s["spec"]["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_str().unwrap();
            assert!(
                ports.contains_key(target),
                "{} targets {target}",
                s["metadata"]["name"]
            );
        }
    }
}

/// A child process killed when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubedirector sim` in a process of its own; returns it once it serves.
fn start_sim(dir: &Path) -> (Proc, PathBuf) {
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(BIN)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "2",
            "--kubeconfig-out",
        ])
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("sim printed nothing").unwrap();
    assert!(
        first.starts_with("kubesim listening on http://127.0.0.1:"),
        "{first}"
    );
    std::thread::spawn(move || for _ in lines {});
    (proc, kubeconfig)
}

fn kubectl(kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new("kubectl");
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    cmd.args(args).current_dir(repo()).output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_apply_k_deploy_is_accepted_by_kubesim_and_the_pod_template_is_restricted() {
    if !kubectl_available() {
        println!("SKIPPED: kubectl not found on PATH");
        return;
    }
    let built = docs(&ok(
        kubectl(None, &["kustomize", "deploy/"]),
        "kubectl kustomize deploy/",
    ));
    let kinds: Vec<String> = built
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "CustomResourceDefinition/kubedirectorapps.kubedirector.hpe.com",
        "CustomResourceDefinition/kubedirectorclusters.kubedirector.hpe.com",
        "CustomResourceDefinition/kubedirectorconfigs.kubedirector.hpe.com",
        "CustomResourceDefinition/kubedirectorstatusbackups.kubedirector.hpe.com",
        "Namespace/kubedirector",
        "ServiceAccount/kubedirector",
        "ClusterRole/kubedirector",
        "ClusterRoleBinding/kubedirector",
        "Role/kubedirector",
        "RoleBinding/kubedirector",
        "Deployment/kubedirector",
        "Service/kubedirector-validator",
        "Service/kubedirector-metrics",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "kustomize output lacks {want}: {kinds:?}"
        );
    }
    assert_eq!(kinds.len(), 13, "{kinds:?}");

    let dir = tempfile::tempdir().unwrap();
    let (_sim, kubeconfig) = start_sim(dir.path());
    let applied = ok(
        kubectl(Some(&kubeconfig), &["apply", "-k", "deploy/"]),
        "kubectl apply -k deploy/",
    );
    let created = applied.lines().filter(|l| l.ends_with(" created")).count();
    assert_eq!(created, built.len(), "every object created:\n{applied}");

    // What the server stored (defaults applied) passes the restricted profile.
    let stored: Value = serde_json::from_str(&ok(
        kubectl(
            Some(&kubeconfig),
            &[
                "get",
                "deployment",
                "kubedirector",
                "-n",
                "kubedirector",
                "-o",
                "json",
            ],
        ),
        "kubectl get deployment",
    ))
    .unwrap();
    assert_eq!(stored["spec"]["replicas"], 2);
    let pod = &stored["spec"]["template"]["spec"];
    assert_eq!(pod["containers"].as_array().map(Vec::len), Some(1), "{stored:#}");
    assert_eq!(restricted_violations(pod), Vec::<String>::new(), "{pod:#}");
    assert_eq!(pod["serviceAccountName"], "kubedirector");
    let ns: Value = serde_json::from_str(&ok(
        kubectl(
            Some(&kubeconfig),
            &["get", "namespace", "kubedirector", "-o", "json"],
        ),
        "kubectl get namespace",
    ))
    .unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    // Re-applying changes nothing.
    let again = ok(
        kubectl(Some(&kubeconfig), &["apply", "-k", "deploy/"]),
        "second kubectl apply -k deploy/",
    );
    assert!(
        again.lines().all(|l| l.ends_with(" unchanged")),
        "second apply:\n{again}"
    );
}

#[test]
fn the_monitoring_component_adds_the_servicemonitor_alerts_and_the_dashboards_for_grafana() {
    if !kubectl_available() {
        println!("SKIPPED: kubectl not found on PATH");
        return;
    }
    // A user's kustomization outside deploy/ (kustomize refuses an overlay inside its base).
    let dir = tempfile::tempdir().unwrap();
    let up = "../".repeat(dir.path().components().count() - 1);
    let base = format!("{up}{}", repo().display().to_string().trim_start_matches('/'));
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {base}/deploy\ncomponents:\n  - {base}/deploy/monitoring\n"
        ),
    )
    .unwrap();
    let out = kubectl(None, &["kustomize", dir.path().to_str().unwrap()]);
    let built = docs(&ok(out, "kubectl kustomize (deploy + monitoring)"));
    assert_eq!(built.len(), 13 + 4, "base objects plus four monitoring objects");
    find(&built, "ServiceMonitor", "kubedirector");
    let rule = find(&built, "PrometheusRule", "kubedirector");
    assert!(!rule["spec"]["groups"].as_array().unwrap().is_empty());

    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            dashboards.push(path);
        }
    }
    assert_eq!(dashboards.len(), 2);
    let maps: Vec<&Value> = built.iter().filter(|o| o["kind"] == "ConfigMap").collect();
    assert_eq!(maps.len(), dashboards.len());
    for path in dashboards {
        let file = path.file_name().unwrap().to_str().unwrap();
        let want = std::fs::read_to_string(&path).unwrap();
        let cm = maps
            .iter()
            .find(|m| m["data"][file].is_string())
            .unwrap_or_else(|| panic!("no ConfigMap carries {file}"));
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(cm["metadata"]["namespace"], "kubedirector");
        assert!(
            cm["data"][file] == want.as_str(),
            "the ConfigMap's {file} differs from dashboards/{file}: copy it to deploy/monitoring/dashboards/"
        );
    }
}

#[test]
fn the_monitoring_dashboard_copies_equal_the_dashboards_directory() {
    let copies = repo().join("deploy/monitoring/dashboards");
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let file = path.file_name().unwrap();
        let copy = std::fs::read(copies.join(file))
            .unwrap_or_else(|e| panic!("deploy/monitoring/dashboards/{file:?}: {e}"));
        assert!(
            copy == std::fs::read(&path).unwrap(),
            "deploy/monitoring/dashboards/{file:?} differs from dashboards/; copy it again"
        );
        n += 1;
    }
    assert_eq!(std::fs::read_dir(&copies).unwrap().count(), n, "no stale copies");
}
