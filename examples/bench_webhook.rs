//! Admission webhook latency benchmark on kubesim: the operator (in-process, exactly as
//! `kubedirector run`, webhook on) serves kubesim's admission calls over HTTPS; 100 concurrent
//! clients send server-side-apply dry runs of kdclusters, kdapps and labelled PVCs through the
//! API server, then POST AdmissionReviews straight to the webhook. Prints p50/p99/max per kind
//! (end to end through kubesim, and the webhook alone); asserts nothing.
//!
//! ```text
//! cargo run --release --example bench_webhook -- [REQUESTS_PER_KIND] [CONCURRENCY]
//! ```

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use k8s_openapi::{
    api::core::v1::{Namespace, PersistentVolumeClaim, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, DynamicObject, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    discovery::ApiResource,
    Client, Config,
};
use kubedirector::{
    operator::{run_until, RunOptions},
    webhook::WebhookOptions,
};
use kubedirector_crds::{KubeDirectorApp, KubeDirectorCluster};
use kubesim::{Sim, SimConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::{json, Value};

const KD_NS: &str = "kubedirector";
const NS: &str = "bench";

fn app(name: &str) -> Value {
    json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"systemdRequired": false, "distroID": "bench/app", "version": "1", "configSchemaVersion": 7,
            "label": {"name": "bench"},
            "config": {"roleServices": [{"serviceIDs": ["ssh"], "roleID": "r"}], "selectedRoles": ["r"]},
            "services": [{"endpoint": {"port": 22, "isDashboard": false}, "id": "ssh", "label": {"name": "SSH"}}],
            "roles": [{"cardinality": "1+", "id": "r", "imageRepoTag": "docker.io/x/y:1", "configPackage": null,
                       "minResources": {"memory": "512Mi"}}]}})
}

fn cluster(name: &str) -> Value {
    json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"app": "bench-app", "roles": [{"id": "r", "members": 2,
            "resources": {"requests": {"memory": "1Gi", "cpu": "1"}, "limits": {"memory": "1Gi", "cpu": "1"}}}]}})
}

fn pvc(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS, "labels": {"kubedirector.hpe.com/kdcluster": "owner"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

fn percentiles(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "n={:>5}  p50={:>8.2?}  p99={:>8.2?}  max={:>8.2?}",
        v.len(),
        at(0.50),
        at(0.99),
        v[v.len() - 1]
    )
}

async fn through_api_server(
    client: &Client,
    kind: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let ar = match kind {
        "KubeDirectorCluster" => ApiResource::erase::<KubeDirectorCluster>(&()),
        "KubeDirectorApp" => ApiResource::erase::<KubeDirectorApp>(&()),
        _ => ApiResource::erase::<PersistentVolumeClaim>(&()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (api, next, kind) = (api.clone(), next.clone(), kind.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= requests {
                    return (lat, errors);
                }
                let name = format!("b-{i}");
                let doc = match kind.as_str() {
                    "KubeDirectorCluster" => cluster(&name),
                    "KubeDirectorApp" => app(&name),
                    _ => pvc(&name),
                };
                let pp = PatchParams::apply("kd-bench").dry_run();
                let t = Instant::now();
                match api.patch(&name, &pp, &Patch::Apply(&doc)).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        if errors == 0 && i < concurrency {
                            eprintln!("{kind}: {e}");
                        }
                        errors += 1;
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    Ok((all, errors))
}

fn review(kind: &str, i: usize) -> Vec<u8> {
    let (group, object) = match kind {
        "KubeDirectorCluster" => ("kubedirector.hpe.com", cluster(&format!("d-{i}"))),
        "KubeDirectorApp" => ("kubedirector.hpe.com", app(&format!("d-{i}"))),
        _ => ("", pvc(&format!("d-{i}"))),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("u-{i}"), "kind": {"group": group, "version": "v1", "kind": kind},
            "operation": "CREATE", "namespace": NS, "name": format!("d-{i}"),
            "userInfo": {"username": "bench"}, "object": object}})
    .to_string()
    .into_bytes()
}

async fn post_review(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    body: Vec<u8>,
) -> anyhow::Result<Duration> {
    use http_body_util::{BodyExt, Full};
    let t = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(format!("kubedirector-validator.{KD_NS}.svc"))?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post("/validate")
        .header("content-type", "application/json")
        .body(Full::new(hyper::body::Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&body)?;
    if !status.is_success() || v["response"]["allowed"] != true {
        return Err(anyhow!("webhook answered {status}: {v}"));
    }
    Ok(t.elapsed())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let concurrency: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let (sim, client) = rt.block_on(async {
        let sim = Sim::start(SimConfig::default()).await?;
        sim.write_kubeconfig(&kubeconfig)?;
        let kc = Kubeconfig::from_yaml(&sim.kubeconfig_yaml())?;
        let client =
            Client::try_from(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in kubedirector_crds::crds()? {
            crds.create(&PostParams::default(), &crd).await?;
        }
        let nss: Api<Namespace> = Api::all(client.clone());
        for ns in [KD_NS, NS] {
            nss.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        }
        anyhow::Ok((sim, client))
    })?;
    let webhook_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    sim.map_webhook_service(KD_NS, "kubedirector-validator", &webhook_addr.to_string());
    let mut opts = RunOptions::for_kubeconfig(kubeconfig.clone());
    opts.kd_namespace = KD_NS.into();
    opts.log_level = "warn".into();
    opts.webhook = WebhookOptions {
        enabled: true,
        addr: webhook_addr,
        ..WebhookOptions::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = std::thread::spawn(move || {
        run_until(opts, async move {
            let _ = stop_rx.await;
        })
    });
    rt.block_on(async {
        // Wait for the webhook, then create the app the clusters use (through the webhook).
        let secrets: Api<Secret> = Api::namespaced(client.clone(), KD_NS);
        let started = Instant::now();
        let ca = loop {
            if let Some(s) = secrets.get_opt("kubedirector-validator-secret").await? {
                if std::net::TcpStream::connect(webhook_addr).is_ok() {
                    let data = s.data.unwrap_or_default();
                    break String::from_utf8(data.get("ca.crt").map(|b| b.0.clone()).unwrap_or_default())?;
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(anyhow!("the webhook did not start"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let apps: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<KubeDirectorApp>(&()));
        apps.create(&PostParams::default(), &serde_json::from_value(app("bench-app"))?)
            .await
            .context("creating bench-app")?;
        println!("{requests} requests per kind, {concurrency} concurrent clients");
        println!("end to end (server-side apply dry run through kubesim, mutating webhook called):");
        for kind in ["KubeDirectorCluster", "KubeDirectorApp", "PersistentVolumeClaim"] {
            let (lat, errors) = through_api_server(&client, kind, requests, concurrency).await?;
            println!("  {kind:<22} {}  errors={errors}", percentiles(lat));
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c?)?;
        }
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        println!("webhook alone (AdmissionReview v1 POST over a new TLS connection):");
        for kind in ["KubeDirectorCluster", "KubeDirectorApp", "PersistentVolumeClaim"] {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (next, tls, kind) = (next.clone(), tls.clone(), kind.to_string());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0usize;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= requests {
                            return (lat, errors);
                        }
                        match post_review(webhook_addr, tls.clone(), review(&kind, i)).await {
                            Ok(d) => lat.push(d),
                            Err(e) => {
                                if errors == 0 && i < concurrency {
                                    eprintln!("{kind}: {e}");
                                }
                                errors += 1;
                            }
                        }
                    }
                }));
            }
            let mut all = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await?;
                all.extend(l);
                errors += e;
            }
            println!("  {kind:<22} {}  errors={errors}", percentiles(all));
        }
        anyhow::Ok(())
    })?;
    let _ = stop_tx.send(());
    operator
        .join()
        .map_err(|_| anyhow!("operator thread panicked"))??;
    rt.block_on(sim.shutdown());
    Ok(())
}
