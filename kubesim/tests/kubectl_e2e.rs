//! End-to-end: the real `kubectl` binary against kubesim. Skipped (with a notice) when
//! `kubectl` is not on PATH.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubesim::{ResourceKey, Sim, SimConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    /// Run kubectl; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        cmd.current_dir(&self.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, &[]).await;
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    async fn fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, &[]).await;
        assert!(!ok, "kubectl {args:?} unexpectedly succeeded: {out}");
        err
    }
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Mode, type: string, jsonPath: .spec.mode}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              mode: {type: string, default: fast}
"#;

const OBJECTS: &str = r#"
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1}
spec: {size: 3}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: demo}}
data: {a: "1"}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 2
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: nginx:1.25
        ports: [{containerPort: 8080}]
        env: [{name: A, value: "1"}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_end_to_end() {
    if !kubectl_available() {
        eprintln!("NOTICE: kubectl not found on PATH; skipping kubectl end-to-end test");
        return;
    }
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kc = Kubectl {
        kubeconfig: tmp.path().join("kubeconfig"),
        cache: tmp.path().join("cache"),
        dir: tmp.path().to_path_buf(),
    };
    sim.write_kubeconfig(&kc.kubeconfig).unwrap();
    write(tmp.path(), "crd.yaml", CRD);
    write(tmp.path(), "objects.yaml", OBJECTS);

    let out = kc.ok(&["version", "-o", "json"]).await;
    assert!(out.contains("\"serverVersion\""), "{out}");
    let out = kc.ok(&["get", "nodes"]).await;
    assert!(out.contains("kubesim-node-1") && out.contains("Ready"), "{out}");

    // CRD: apply + wait for Established
    assert!(kc.ok(&["apply", "-f", "crd.yaml"]).await.contains("created"));
    kc.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gadgets.example.com",
        "--timeout=20s",
    ])
    .await;
    let out = kc.ok(&["apply", "-f", "objects.yaml"]).await;
    for s in [
        "gadget.example.com/g1 created",
        "configmap/settings created",
        "service/web created",
        "statefulset.apps/web created",
    ] {
        assert!(out.contains(s), "{s} in {out}");
    }
    // printer columns
    let out = kc.ok(&["get", "gd"]).await;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "SIZE", "MODE", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], &["g1", "3", "fast"]);
    let out = kc.ok(&["get", "sts"]).await;
    assert!(out.contains("READY") && out.contains("0/2"), "{out}");
    let out = kc.ok(&["get", "svc", "web"]).await;
    assert!(out.contains("ClusterIP") && out.contains("80/TCP"), "{out}");
    // -o yaml / jsonpath
    let out = kc.ok(&["get", "gadget", "g1", "-o", "yaml"]).await;
    assert!(
        out.contains("mode: fast") && out.contains("generation: 1"),
        "{out}"
    );
    // describe
    let out = kc.ok(&["describe", "sts", "web"]).await;
    assert!(out.contains("Replicas:") && out.contains("nginx:1.25"), "{out}");
    let out = kc.ok(&["describe", "gadget", "g1"]).await;
    assert!(
        out.contains("Size:") && out.contains("Kind:         Gadget"),
        "{out}"
    );
    // re-apply with changes: strategic merge for built-ins, merge patch for CRs
    let changed = OBJECTS
        .replace("size: 3", "size: 4")
        .replace("nginx:1.25", "nginx:1.26");
    write(tmp.path(), "objects.yaml", &changed);
    let out = kc.ok(&["apply", "-f", "objects.yaml"]).await;
    assert!(
        out.contains("gadget.example.com/g1 configured") && out.contains("configmap/settings unchanged"),
        "{out}"
    );
    let out = kc
        .ok(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation}",
        ])
        .await;
    assert_eq!(out, "nginx:1.26 2");
    // patch
    kc.ok(&[
        "patch",
        "gadget",
        "g1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":5}}"#,
    ])
    .await;
    kc.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","env":[{"name":"B","value":"2"}]}]}}}}"#,
    ])
    .await;
    let out = kc
        .ok(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[*].name}",
        ])
        .await;
    assert_eq!(out, "A B");
    let err = kc
        .fails(&[
            "patch",
            "gadget",
            "g1",
            "--type=merge",
            "-p",
            r#"{"spec":{"size":50}}"#,
        ])
        .await;
    assert!(err.contains("spec.size: Invalid value: 50"), "{err}");
    // edit through $EDITOR
    let (ok, out, err) = kc
        .run(
            &["edit", "configmap", "settings"],
            &[("EDITOR", "sed -i -e 's/a: \"1\"/a: \"2\"/'")],
        )
        .await;
    assert!(ok, "edit: {out} {err}");
    assert_eq!(
        kc.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.a}"])
            .await,
        "2"
    );
    // scale, label, annotate
    kc.ok(&["scale", "sts", "web", "--replicas=3"]).await;
    assert_eq!(
        kc.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "3"
    );
    kc.ok(&["label", "cm", "settings", "tier=backend"]).await;
    assert!(kc
        .ok(&["get", "cm", "-l", "tier=backend", "-o", "name"])
        .await
        .contains("configmap/settings"));
    kc.ok(&["annotate", "cm", "settings", "note=hi"]).await;
    // server-side apply
    write(
        tmp.path(),
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {x: \"1\"}\n",
    );
    assert!(kc
        .ok(&["apply", "--server-side", "-f", "ssa.yaml"])
        .await
        .contains("serverside-applied"));
    write(
        tmp.path(),
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {x: \"2\"}\n",
    );
    let err = kc
        .fails(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            "ssa.yaml",
        ])
        .await;
    assert!(err.contains("conflict"), "{err}");
    kc.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "ssa.yaml",
    ])
    .await;
    // events
    let sts = sim
        .store()
        .get(&ResourceKey::apps("statefulsets"), Some("default"), "web")
        .unwrap();
    sim.store().record_event(
        &sts,
        "Normal",
        "SuccessfulCreate",
        "create Pod web-0 in StatefulSet web successful",
        "statefulset-controller",
    );
    let out = kc.ok(&["get", "events"]).await;
    assert!(
        out.contains("SuccessfulCreate") && out.contains("statefulset/web"),
        "{out}"
    );
    let out = kc.ok(&["describe", "sts", "web"]).await;
    assert!(out.contains("SuccessfulCreate"), "{out}");
    // create / get json / delete
    // `kubectl create <kind>` generators and `auth can-i` send protobuf bodies
    kc.ok(&["create", "namespace", "scratch"]).await;
    kc.ok(&["create", "configmap", "c2", "-n", "scratch", "--from-literal=k=v"])
        .await;
    kc.ok(&[
        "create",
        "secret",
        "generic",
        "s2",
        "-n",
        "scratch",
        "--from-literal=pw=hunter2",
    ])
    .await;
    assert_eq!(
        kc.ok(&[
            "get",
            "secret",
            "s2",
            "-n",
            "scratch",
            "-o",
            "jsonpath={.data.pw}"
        ])
        .await,
        "aHVudGVyMg=="
    );
    assert_eq!(kc.ok(&["auth", "can-i", "create", "pods"]).await.trim(), "yes");
    let out = kc.ok(&["get", "cm", "c2", "-n", "scratch", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"], json!({"k": "v"}));
    kc.ok(&["delete", "namespace", "scratch", "--wait=true", "--timeout=20s"])
        .await;
    let err = kc.fails(&["get", "ns", "scratch"]).await;
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    let out = kc.ok(&["delete", "-f", "objects.yaml"]).await;
    assert!(out.contains("gadget.example.com \"g1\" deleted"), "{out}");
    let err = kc.fails(&["get", "gadget", "g1"]).await;
    assert!(err.contains("not found"), "{err}");
    kc.ok(&[
        "delete",
        "crd",
        "gadgets.example.com",
        "--wait=true",
        "--timeout=20s",
    ])
    .await;
    let err = kc.fails(&["get", "gadgets"]).await;
    // (with a warm discovery cache kubectl tries the list and gets the server's 404)
    assert!(
        err.contains("doesn't have a resource type")
            || err.contains("the server could not find the requested resource"),
        "{err}"
    );
    sim.shutdown().await;
}
