//! End-to-end tests of `kubedirector validate` and `kubedirector crds` (the built binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod skip_support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde::Deserialize;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubedirector"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn upstream() -> Option<PathBuf> {
    let dir = root().join("../shared/spec/upstream");
    if dir.is_dir() {
        Some(dir)
    } else {
        skip_support::skipped("../shared/spec/upstream not present");
        None
    }
}

fn validate(args: &[&str]) -> Output {
    bin()
        .arg("validate")
        .args(args)
        .output()
        .expect("run kubedirector")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn yaml_stream(s: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(s)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn files_matching(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .map(|p| p.display().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn our_examples_are_all_accepted() {
    let examples = root().join("deploy/examples");
    let out = validate(&["--default-storage-class", "standard", examples.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    let ok: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(ok.len(), 6, "{stdout}");
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("ok ") || l.starts_with("note ")),
        "{stdout}"
    );
    for kind_name in [
        "KubeDirectorApp/kd-shell",
        "KubeDirectorApp/kd-webstack",
        "KubeDirectorApp/kd-keyvalue",
        "KubeDirectorCluster/shell-demo",
        "KubeDirectorCluster/webstack-demo",
        "KubeDirectorCluster/keyvalue-demo",
    ] {
        assert!(
            ok.contains(&format!("ok {kind_name}").as_str()),
            "missing {kind_name} in {stdout}"
        );
    }
}

#[test]
fn storage_example_gets_default_class_and_note_without_one() {
    let examples = root().join("deploy/examples");
    let cluster = examples.join("clusters/keyvalue.yaml");
    let catalog = examples.join("catalog");
    let out = validate(&["--catalog", catalog.to_str().unwrap(), cluster.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout)
        .contains("note KubeDirectorCluster/keyvalue-demo: C-24 not checked offline: default storage class"));
    let out = validate(&[
        "--catalog",
        catalog.to_str().unwrap(),
        "--default-storage-class",
        "local-path",
        "--print-mutated",
        cluster.to_str().unwrap(),
    ]);
    let docs = yaml_stream(&text(&out.stdout));
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0]["spec"]["roles"][0]["storage"]["storageClassName"],
        "local-path"
    );
    assert_eq!(docs[0]["spec"]["namingScheme"], "CrNameRole");
    assert_eq!(text(&out.stderr).trim(), "ok KubeDirectorCluster/keyvalue-demo");
}

#[test]
fn upstream_examples_are_accepted_with_upstream_catalog() {
    let Some(dir) = upstream() else { return };
    let apps = files_matching(&dir, "cr-app-");
    let all = files_matching(&dir, "cr-");
    assert_eq!(apps.len(), 3);
    assert_eq!(all.len(), 6);
    let mut args = Vec::new();
    for a in &apps {
        args.push("--catalog".to_string());
        args.push(a.clone());
    }
    args.extend(all.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = validate(&args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        6,
        "{stdout}"
    );
    assert!(!stdout.contains("rejected"));
}

#[test]
fn print_mutated_spark_cluster_is_fully_defaulted() {
    let Some(dir) = upstream() else { return };
    let app = dir.join("cr-app-spark245.json");
    let cluster = dir.join("cr-cluster-spark245.yaml");
    let out = validate(&[
        "--catalog",
        app.to_str().unwrap(),
        "--print-mutated",
        cluster.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let docs = yaml_stream(&text(&out.stdout));
    assert_eq!(docs.len(), 1, "only FILE documents are printed");
    let spec = &docs[0]["spec"];
    assert_eq!(spec["appCatalog"], "local");
    assert_eq!(spec["serviceType"], "LoadBalancer");
    assert_eq!(spec["namingScheme"], "UID");
    let members: Vec<i64> = spec["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["members"].as_i64().unwrap())
        .collect();
    assert_eq!(members, [1, 1, 1, 1]);
    assert_eq!(spec["roles"][0]["id"], "spark-master");
    assert_eq!(spec["connections"]["secrets"][0], "hpecp-ext-auth-secret");
}

#[test]
fn print_mutated_app_is_normalised() {
    let Some(dir) = upstream() else { return };
    let app = dir.join("cr-app-centos7.json");
    let out = validate(&["--print-mutated", app.to_str().unwrap()]);
    let docs = yaml_stream(&text(&out.stdout));
    let spec = &docs[0]["spec"];
    for k in [
        "defaultImageRepoTag",
        "defaultPersistDirs",
        "defaultEventList",
        "defaultConfigPackage",
    ] {
        assert!(spec.get(k).is_none(), "{k} must be removed");
    }
    let role = spec["roles"][0].as_object().unwrap();
    assert_eq!(role["imageRepoTag"], "docker.io/bluedata/centos7:4.1");
    assert_eq!(role["configPackage"], Value::Null);
    assert!(role.contains_key("configPackage"));
    assert_eq!(role["persistDirs"], serde_json::json!(["/home"]));
    assert_eq!(
        role["eventList"],
        serde_json::json!(["configure", "addnodes", "delnodes"])
    );
    assert_eq!(role["maxLogSizeDump"], 256);
}

#[test]
fn rejected_document_exits_1_with_one_line_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: kubedirector.hpe.com/v1beta1\nkind: KubeDirectorApp\nmetadata:\n  name: twice\nspec:\n  \
         label: {name: x}\n  distroID: d\n  version: '1'\n  configSchemaVersion: 7\n  \
         roles: [{id: a, cardinality: '1'}, {id: a, cardinality: '1'}]\n  \
         config: {roleServices: [], selectedRoles: [a]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n",
    )
    .unwrap();
    let out = validate(&[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "rejected KubeDirectorApp/twice: Each id in the roles array must be unique.; \
         Role(a) has no specified image, and no top-level default image is specified.; \
         Role(a) has no specified image, and no top-level default image is specified.\n\
         skipped ConfigMap/cm: not a KubeDirector resource\n"
    );
}

#[test]
fn yaml_syntax_error_exits_2_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, "kind: KubeDirectorApp\nmetadata: [1, 2\nspec: {}\n").unwrap();
    let out = validate(&[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let prefix = format!("error: {}:3:", file.display());
    assert!(err.starts_with(&prefix), "{err}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn config_supplies_defaults_and_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kdconfig.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubedirector.hpe.com/v1beta1\nkind: KubeDirectorConfig\nmetadata:\n  name: kd-global-config\n\
         spec:\n  defaultServiceType: NodePort\n  masterEncryptionKey: 00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let examples = root().join("deploy/examples");
    let cluster = dir.path().join("c.yaml");
    std::fs::write(
        &cluster,
        "apiVersion: kubedirector.hpe.com/v1beta1\nkind: KubeDirectorCluster\nmetadata:\n  name: s\nspec:\n  \
         app: kd-shell\n  roles:\n  - id: shell\n    resources: {limits: {cpu: '1', memory: 1Gi}}\n    \
         secretKeys: [{name: token, value: abc}]\n",
    )
    .unwrap();
    let catalog = examples.join("catalog");
    let out = validate(&[
        "--catalog",
        catalog.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--print-mutated",
        cluster.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let docs = yaml_stream(&text(&out.stdout));
    let spec = &docs[0]["spec"];
    assert_eq!(spec["serviceType"], "NodePort");
    assert_eq!(spec["roles"][0]["members"], 1);
    let sk = &spec["roles"][0]["secretKeys"][0];
    assert!(sk.get("value").is_none());
    let enc = sk["encryptedValue"].as_str().unwrap();
    assert_eq!(
        kubedirector::admission::secretkeys::decrypt("00112233445566778899aabbccddeeff", enc).unwrap(),
        "abc"
    );
    // without a kdconfig there is no master key, so the same document is rejected
    let out = validate(&["--catalog", catalog.to_str().unwrap(), cluster.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "rejected KubeDirectorCluster/s: cannot encrypt secret key token\n"
    );
}

#[test]
fn crds_subcommand_prints_four_crds() {
    let out = bin().arg("crds").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let docs = yaml_stream(&text(&out.stdout));
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kubedirectorapps.kubedirector.hpe.com",
            "kubedirectorclusters.kubedirector.hpe.com",
            "kubedirectorconfigs.kubedirector.hpe.com",
            "kubedirectorstatusbackups.kubedirector.hpe.com"
        ]
    );
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn odd_documents_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.yaml", "");
    let only_separators = write(dir.path(), "seps.yaml", "---\n---\n");
    let scalar = write(dir.path(), "scalar.yaml", "just a string\n");
    let list = write(dir.path(), "list.yaml", "- 1\n- kind: KubeDirectorApp\n");
    let number = write(dir.path(), "number.json", "42");
    let bare = write(dir.path(), "bare.yaml", "spec: {roles: []}\n");
    let nameless = write(
        dir.path(),
        "nameless.yaml",
        "apiVersion: kubedirector.hpe.com/v1beta1\nkind: KubeDirectorCluster\nspec:\n  app: nope\n  roles: []\n",
    );
    let null_spec = write(
        dir.path(),
        "nullspec.yaml",
        "apiVersion: kubedirector.hpe.com/v1beta1\nkind: KubeDirectorCluster\nmetadata: {name: c}\nspec: null\n",
    );
    let scalar_meta = write(
        dir.path(),
        "scalarmeta.yaml",
        "apiVersion: kubedirector.hpe.com/v1beta1\nkind: KubeDirectorApp\nmetadata: 7\nspec: null\n",
    );
    let out = validate(&[
        &empty,
        &only_separators,
        &scalar,
        &list,
        &number,
        &bare,
        &nameless,
        &null_spec,
        &scalar_meta,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let expected = [
        format!("skipped {empty}: no documents"),
        format!("skipped {only_separators}: no documents"),
        "skipped <no kind>/<no name>: not a Kubernetes object (a string)".to_string(),
        "skipped <no kind>/<no name>: not a Kubernetes object (a list)".to_string(),
        "skipped <no kind>/<no name>: not a Kubernetes object (a number)".to_string(),
        "skipped <no kind>/<no name>: not a KubeDirector resource".to_string(),
        "rejected KubeDirectorCluster/<no name>: Invalid app(nope). This app resource ID has not been registered."
            .to_string(),
        // Go decodes `spec: null` as an empty spec, so the first failing rule is the kdapp lookup
        "rejected KubeDirectorCluster/c: Invalid app(). This app resource ID has not been registered.".to_string(),
        "rejected KubeDirectorApp/<no name>: json: cannot unmarshal number into Go struct field KubeDirectorApp.metadata of type v1.ObjectMeta"
            .to_string(),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected, "{stdout}");
}

#[test]
fn multi_line_upstream_message_is_printed_on_one_line() {
    // upstream's K-3 text is "Invalid namespace '<ns>', must be '<kdns>'.\n"
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "cfg.yaml",
        "apiVersion: kubedirector.hpe.com/v1beta1\nkind: KubeDirectorConfig\n\
         metadata: {name: kd-global-config, namespace: elsewhere}\n",
    );
    let out = validate(&["--kd-namespace", "kd", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "rejected KubeDirectorConfig/kd-global-config: Invalid namespace 'elsewhere', must be 'kd'.\n"
    );
}
