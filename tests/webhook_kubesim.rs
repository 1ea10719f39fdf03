//! The admission webhook served by the operator, as kubesim (standing in for kube-apiserver)
//! calls it over HTTPS, driven with `kubectl`: upstream's refusals, defaults, the PVC owner
//! reference, certificate rotation under load, failurePolicy with the operator stopped, garbage
//! requests, and a spec change acknowledged by the reconciler (`spec modified`, spec 7 R4).
//!
//! Skips (with a printed notice) when `kubectl` is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod operator_support;
mod skip_support;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use kubedirector::webhook::WebhookOptions;
use operator_support::{centos_app, centos_cluster, configured_with, state_of, Env, ResourceKind, KD_NS, NS};
use serde_json::{json, Value};

fn kubectl_available() -> bool {
    let ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_support::skipped("kubectl not installed");
    }
    ok
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// `kubectl apply -f -` of `doc`: Ok(stdout) or Err(stderr).
fn apply(env: &Env, doc: &Value) -> Result<String, String> {
    let out = kubectl(&env.kubeconfig, &["apply", "-f", "-"], Some(&doc.to_string()));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn refused(env: &Env, doc: &Value) -> String {
    match apply(env, doc) {
        Ok(out) => panic!("admitted, expected a refusal: {out}\n{doc}"),
        Err(e) => e,
    }
}

/// The `rejected ...: <message>` text `kubedirector validate` prints for `doc` against `app`.
fn offline_rejection(app: &Value, doc: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let app_path = dir.path().join("app.json");
    let doc_path = dir.path().join("doc.json");
    std::fs::write(&app_path, app.to_string()).unwrap();
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubedirector"))
        .args(["validate", "--namespace", NS, "--catalog"])
        .arg(&app_path)
        .arg(&doc_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("rejected "))
        .unwrap_or_else(|| panic!("validate did not reject: {text}"));
    line.split_once(": ").unwrap().1.to_string()
}

fn webhook_env() -> Env {
    Env::start_with_webhook(WebhookOptions::default())
}

fn minmem_app() -> Value {
    let mut app = centos_app(NS);
    app["metadata"]["name"] = json!("minmem");
    app["spec"]["roles"][0]["minResources"] = json!({"memory": "2Gi"});
    app
}

#[test]
fn kubectl_apply_is_refused_with_upstream_messages_and_valid_documents_are_defaulted() {
    if !kubectl_available() {
        return;
    }
    let env = webhook_env();
    let denied = "admission webhook \"hard-validate-cr.kubedirector.hpe.com\" denied the request";

    // A kdapp goes through the webhook too: admitted, defaulted.
    apply(&env, &minmem_app()).unwrap();

    let mut unknown_app = centos_cluster("bad-app", &[("vanilla_centos", 1)]);
    unknown_app["spec"]["app"] = json!("nope");
    let mut unknown_role = centos_cluster("bad-role", &[("vanilla_centos", 1)]);
    unknown_role["spec"]["roles"][0]["id"] = json!("bogus");
    let cardinality = centos_cluster("bad-count", &[("vanilla_centos", 0)]);
    let mut low_memory = centos_cluster("low-mem", &[("vanilla_centos", 1)]);
    low_memory["spec"]["app"] = json!("minmem");
    let cases = [
        (&unknown_app, centos_app(NS), "Invalid app(nope). This app resource ID has not been registered."),
        (&unknown_role, centos_app(NS), "Invalid role(bogus) in app(centos7x) specified."),
        (
            &cardinality,
            centos_app(NS),
            "Invalid member count for role(vanilla_centos). Specified member count:0 Role cardinality:1+",
        ),
        (
            &low_memory,
            minmem_app(),
            "Specified resource(\"memory\") value(\"1Gi\") for role(\"vanilla_centos\") is invalid. Minimum value must be \"2Gi\".",
        ),
    ];
    for (doc, app, expected) in cases {
        let err = refused(&env, doc);
        assert!(err.contains(denied), "{err}");
        assert!(
            err.contains(expected),
            "kubectl said {err:?}, expected {expected:?}"
        );
        // The same text as the offline validator.
        let offline = offline_rejection(&app, doc);
        assert!(offline.contains(expected), "validate said {offline:?}");
        // validate prints the messages on one line joined by "; ", the webhook one per line.
        for message in offline.split("; ") {
            assert!(err.contains(message), "kubectl {err:?} vs validate {offline:?}");
        }
        let name = doc["metadata"]["name"].as_str().unwrap();
        assert!(
            env.get(&ResourceKind::Cluster, NS, name).is_none(),
            "{name} stored"
        );
    }

    // A valid cluster is stored with its defaults.
    let mut good = centos_cluster("good", &[("vanilla_centos", 1)]);
    let spec = good["spec"].as_object_mut().unwrap();
    spec.remove("appCatalog");
    spec.remove("serviceType");
    spec.remove("namingScheme");
    apply(&env, &good).unwrap();
    let out = kubectl(
        &env.kubeconfig,
        &["get", "kubedirectorcluster", "good", "-n", NS, "-o", "yaml"],
        None,
    );
    let stored: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(stored["spec"]["appCatalog"], "local", "{stored}");
    assert_eq!(stored["spec"]["serviceType"], "LoadBalancer");
    assert_eq!(stored["spec"]["namingScheme"], "UID");
    env.eventually("good is reconciled", |env| !state_of(env, "good").is_empty());

    // An immutable field.
    let mut app_changed = stored.clone();
    app_changed["spec"]["app"] = json!("minmem");
    strip_server_fields(&mut app_changed);
    let err = refused(&env, &app_changed);
    assert!(err.contains("The app property is read-only."), "{err}");

    // A kdapp change while a cluster uses it.
    let mut app = centos_app(NS);
    app["spec"]["label"]["description"] = json!("changed");
    let err = refused(&env, &app);
    assert!(
        err.contains(
            "KubeDirectorApp resource cannot be deleted or modified while referenced by the following \
             KubeDirectorCluster resources: team/good"
        ),
        "{err}"
    );
    // ... and its deletion (the validating configuration).
    let out = kubectl(
        &env.kubeconfig,
        &["delete", "kubedirectorapp", "centos7x", "-n", NS],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("admission webhook \"hard-validate-delete.kubedirector.hpe.com\" denied the request"),
        "{err}"
    );
}

fn strip_server_fields(v: &mut Value) {
    let meta = v["metadata"].as_object_mut().unwrap();
    for k in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "finalizers",
    ] {
        meta.remove(k);
    }
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    v.as_object_mut().unwrap().remove("status");
}

#[test]
fn a_kubectl_spec_change_goes_through_spec_modified_back_to_configured_with_the_new_members() {
    if !kubectl_available() {
        return;
    }
    use futures::StreamExt as _;
    let env = webhook_env();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("grow", &[("vanilla_centos", 1)]),
    );
    env.eventually("grow configured with one member", |e| {
        configured_with(e, "grow", 1)
    });
    let before = env.get(&ResourceKind::Cluster, NS, "grow").unwrap();
    let generation = before["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(before["status"]["observedGeneration"], generation, "{before:#}");

    // Every state the cluster's status goes through from here on, as a watch sees it.
    let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let api: kube::Api<kubedirector_crds::KubeDirectorCluster> =
        kube::Api::namespaced(env.client.clone(), NS);
    let seen = states.clone();
    let watch = env.rt.spawn(async move {
        let stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Ok(kube::runtime::watcher::Event::Apply(c) | kube::runtime::watcher::Event::InitApply(c)) =
                ev
            {
                if c.metadata.name.as_deref() == Some("grow") {
                    let state = c.status.map(|s| s.state.as_str().to_string()).unwrap_or_default();
                    let mut v = seen.lock().unwrap();
                    if v.last() != Some(&state) {
                        v.push(state);
                    }
                }
            }
        }
    });
    env.eventually("watch started", |_| !states.lock().unwrap().is_empty());

    let out = kubectl(
        &env.kubeconfig,
        &[
            "-n",
            NS,
            "patch",
            "kubedirectorcluster",
            "grow",
            "--type",
            "json",
            "-p",
            r#"[{"op": "replace", "path": "/spec/roles/0/members", "value": 2}]"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.eventually("grow configured with two members at the new generation", |e| {
        let c = e.get(&ResourceKind::Cluster, NS, "grow").unwrap();
        configured_with(e, "grow", 2)
            && c["metadata"]["generation"].as_i64() == Some(generation + 1)
            && c["status"]["observedGeneration"].as_i64() == Some(generation + 1)
    });
    env.eventually("the watch saw configured again", |_| {
        states.lock().unwrap().last().map(String::as_str) == Some("configured")
    });
    watch.abort();
    let states = states.lock().unwrap().clone();
    let modified = states
        .iter()
        .position(|s| s == "spec modified")
        .unwrap_or_else(|| panic!("never spec modified: {states:?}"));
    assert_eq!(states[0], "configured", "{states:?}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("configured"),
        "{states:?}"
    );
    assert!(
        states[modified + 1..]
            .iter()
            .all(|s| s == "updating" || s == "configured"),
        "{states:?}"
    );
    println!("states after the spec change: {states:?}");
}

#[test]
fn a_deleted_cluster_leaves_no_pvc_behind() {
    let env = webhook_env();
    let mut cluster = centos_cluster("stor", &[("vanilla_centos", 1)]);
    cluster["spec"]["roles"][0]["storage"] = json!({"size": "1Gi", "storageClassName": "standard"});
    env.create(&ResourceKind::Cluster, NS, cluster);
    let pvcs = |env: &Env| -> Vec<Value> {
        let api: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            kube::Api::namespaced(env.client.clone(), NS);
        env.rt
            .block_on(api.list(&Default::default()))
            .unwrap()
            .items
            .into_iter()
            .map(|p| serde_json::to_value(p).unwrap())
            .filter(|p| p["metadata"]["labels"]["kubedirector.hpe.com/kdcluster"] == "stor")
            .collect()
    };
    env.eventually("the member's PVC exists", |env| !pvcs(env).is_empty());
    let uid = env.get(&ResourceKind::Cluster, NS, "stor").unwrap()["metadata"]["uid"].clone();
    for pvc in pvcs(&env) {
        assert_eq!(
            pvc["metadata"]["ownerReferences"],
            json!([{"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                    "name": "stor", "uid": uid, "controller": true, "blockOwnerDeletion": false}]),
            "{pvc}"
        );
    }
    env.delete(&ResourceKind::Cluster, NS, "stor");
    env.eventually("no PVC of the deleted cluster", |env| pvcs(env).is_empty());
}

#[test]
fn with_the_operator_stopped_cluster_writes_fail_and_pvc_creation_is_ignored() {
    let mut env = webhook_env();
    env.stop_operator();
    let err = env
        .rt
        .block_on(async {
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
                env.client.clone(),
                NS,
                &kube::discovery::ApiResource::erase::<kubedirector_crds::KubeDirectorCluster>(&()),
            );
            let obj: kube::api::DynamicObject =
                serde_json::from_value(centos_cluster("down", &[("vanilla_centos", 1)])).unwrap();
            api.create(&Default::default(), &obj).await
        })
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("failed calling webhook \"hard-validate-cr.kubedirector.hpe.com\""),
        "{text}"
    );
    if kubectl_available() {
        let out = kubectl(
            &env.kubeconfig,
            &["apply", "-f", "-"],
            Some(&minmem_app().to_string()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(
                "Internal error occurred: failed calling webhook \"hard-validate-cr.kubedirector.hpe.com\""
            ),
            "{stderr}"
        );
    }
    // PVCs: failurePolicy Ignore, created without the owner reference.
    let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "p1", "namespace": NS, "labels": {"kubedirector.hpe.com/kdcluster": "down"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(env.client.clone(), NS);
    let created = env.rt.block_on(api.create(&Default::default(), &pvc)).unwrap();
    assert!(created.metadata.owner_references.is_none());
    let _ = KD_NS;
}

#[test]
fn garbage_requests_get_a_review_or_an_http_error_and_the_webhook_keeps_serving() {
    let env = webhook_env();
    let ca = operator_support::webhook_ca(&env);
    let call = |ct: Option<&str>, body: Vec<u8>| {
        env.rt
            .block_on(operator_support::webhook_request(
                env.webhook_addr,
                &ca,
                "POST",
                "/validate",
                ct,
                body,
            ))
            .unwrap()
    };
    let json_ct = Some("application/json");
    let (status, _, body, _) = call(json_ct, Vec::new());
    assert_eq!((status, body.as_slice()), (400, b"empty body\n".as_slice()));
    let (status, _, _, _) = call(Some("text/yaml"), b"{}".to_vec());
    assert_eq!(status, 415);
    let valid = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                    "operation": "CREATE", "namespace": NS, "object": {"metadata": {"name": "x"}}}})
    .to_string();
    // Truncated JSON: a review that refuses, with the decoder's message.
    let (status, ct, body, _) = call(json_ct, valid.as_bytes()[..valid.len() / 2].to_vec());
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["allowed"], false);
    assert!(
        review["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("EOF"),
        "{review}"
    );
    // Unknown kind: allowed, in the request's version.
    let (status, _, body, _) = call(json_ct, valid.clone().into_bytes());
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["response"], json!({"uid": "u1", "allowed": true}));
    // A 10 MB body: 413 before any decoding.
    let mut huge = vec![b' '; 10 * 1024 * 1024];
    huge[0] = b'{';
    let (status, _, _, _) = call(json_ct, huge);
    assert_eq!(status, 413);
    // Not JSON at all, binary, deep nesting.
    for body in [vec![0xff, 0xfe, 0x00], b"[".repeat(100_000), b"null".to_vec()] {
        let (status, _, body, _) = call(json_ct, body);
        assert_eq!(status, 200);
        let review: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["response"]["allowed"], false);
    }
    // Still serving.
    let (status, _, body, _) = env
        .rt
        .block_on(operator_support::webhook_request(
            env.webhook_addr,
            &ca,
            "GET",
            "/healthz",
            None,
            Vec::new(),
        ))
        .unwrap();
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
}

/// Fault class "webhook certificate expired" (issue 12): an operator that was down longer than
/// its certificates' lifetime finds an expired serving certificate and CA in the Secret. At
/// start it generates a fresh CA and certificate, publishes the new `caBundle` and serves the
/// new certificate, so admission works again without anyone touching the Secret; meanwhile
/// (operator down) writes fail closed, as failurePolicy Fail says.
#[test]
fn an_expired_webhook_certificate_is_replaced_at_start_and_admission_works_again() {
    use k8s_openapi::api::core::v1::Secret;
    use kubedirector::webhook::{certs, manage};
    let mut env = webhook_env();
    env.stop_operator();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(env.client.clone(), KD_NS);
    let mut secret = env.rt.block_on(secrets.get(manage::SECRET_NAME)).unwrap();
    // A bundle issued three hours ago with one- and two-hour lifetimes: both expired now.
    let hosts = certs::serving_hosts("kubedirector-validator", KD_NS, &[]);
    let issued = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
    let lifetimes = certs::Lifetimes {
        serving: std::time::Duration::from_secs(3600),
        ca: std::time::Duration::from_secs(2 * 3600),
    };
    let expired = certs::fresh(&hosts, issued, lifetimes).unwrap();
    let generation: u64 = secret.metadata.annotations.as_ref().unwrap()[manage::GENERATION_ANNOTATION]
        .parse()
        .unwrap();
    secret
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(manage::GENERATION_ANNOTATION.into(), (generation + 1).to_string());
    secret.data = Some(
        expired
            .to_data()
            .into_iter()
            .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
            .collect(),
    );
    env.rt
        .block_on(secrets.replace(manage::SECRET_NAME, &Default::default(), &secret))
        .unwrap();
    // Down: a cluster write is refused by failurePolicy Fail.
    let clusters: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        NS,
        &kube::discovery::ApiResource::erase::<kubedirector_crds::KubeDirectorCluster>(&()),
    );
    let doc: kube::api::DynamicObject =
        serde_json::from_value(centos_cluster("after-expiry", &[("vanilla_centos", 1)])).unwrap();
    assert!(env
        .rt
        .block_on(clusters.create(&Default::default(), &doc))
        .is_err());

    env.start_operator();
    // The Secret now holds a certificate valid for a while, signed by a new CA.
    env.eventually("fresh certificates in the Secret", |env| {
        let s = env.rt.block_on(secrets.get(manage::SECRET_NAME)).unwrap();
        let cert = String::from_utf8(s.data.unwrap()["app.crt"].0.clone()).unwrap();
        certs::not_after(&cert).unwrap() > time::OffsetDateTime::now_utc() + time::Duration::days(1)
    });
    // kubesim (the API server) verifies the webhook against the published caBundle: a valid
    // cluster is admitted and a bad one is refused with the webhook's own message.
    env.eventually("a cluster admitted through the webhook", |env| {
        env.rt
            .block_on(clusters.create(&Default::default(), &doc))
            .is_ok()
    });
    let mut bad = centos_cluster("bad-after-expiry", &[("vanilla_centos", 1)]);
    bad["spec"]["app"] = json!("no-such-app");
    let bad: kube::api::DynamicObject = serde_json::from_value(bad).unwrap();
    let err = env
        .rt
        .block_on(clusters.create(&Default::default(), &bad))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-app"), "{err}");
    assert!(!err.contains("failed calling webhook"), "{err}");
    env.eventually("the admitted cluster configured", |env| {
        configured_with(env, "after-expiry", 1)
    });
}
