//! kubesim benchmark: HTTP create/update throughput and latency, watch fan-out, peak memory.
//!
//! `cargo run -p kubesim --release --example bench [PODS] [STATEFULSETS] [WATCHERS] [UPDATES]`
//! (defaults 10000 1000 500 2000). Prints numbers; asserts nothing.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kubesim::{Sim, SimConfig, StoreConfig};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 32;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn report(what: &str, n: usize, elapsed: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what:<28} n={n:<6} {:>9.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

async fn run_parallel<F, Fut>(n: usize, f: F) -> (Duration, Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let f = f.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    break;
                }
                let t = Instant::now();
                if !f(i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    (start.elapsed(), all, errors)
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench", "shard": (i % 10).to_string()}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"],
            "ports": [{"containerPort": 8080}], "env": [{"name": "INDEX", "value": i.to_string()}]}]}
    }))
    .unwrap_or_default()
}

fn sts(i: usize) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": format!("sts-{i}")},
        "spec": {"replicas": 3, "serviceName": format!("sts-{i}"),
            "selector": {"matchLabels": {"app": format!("sts-{i}")}},
            "template": {"metadata": {"labels": {"app": format!("sts-{i}")}},
                "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    }))
    .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n_pods = args.first().copied().unwrap_or(10_000);
    let n_sts = args.get(1).copied().unwrap_or(1_000);
    let n_watchers = args.get(2).copied().unwrap_or(500);
    let n_updates = args.get(3).copied().unwrap_or(2_000);
    println!("kubesim bench: {n_pods} pods, {n_sts} statefulsets, {n_watchers} watchers, {n_updates} updates, concurrency {CONCURRENCY}");
    println!("baseline VmHWM {} MiB", vm_hwm_kib() / 1024);

    let cfg = SimConfig {
        store: StoreConfig::default(),
        ..Default::default()
    };
    let sim = Sim::start(cfg).await?;
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let stss: Api<StatefulSet> = Api::default_namespaced(client.clone());

    // creates
    let p = pods.clone();
    let (el, lat, errs) = run_parallel(n_pods, move |i| {
        let p = p.clone();
        async move { p.create(&PostParams::default(), &pod(i)).await.is_ok() }
    })
    .await;
    report("create pods", n_pods, el, lat);
    if errs > 0 {
        println!("  errors: {errs}");
    }
    let s = stss.clone();
    let (el, lat, errs) = run_parallel(n_sts, move |i| {
        let s = s.clone();
        async move { s.create(&PostParams::default(), &sts(i)).await.is_ok() }
    })
    .await;
    report("create statefulsets", n_sts, el, lat);
    if errs > 0 {
        println!("  errors: {errs}");
    }

    // list
    let t = Instant::now();
    let listed = pods.list(&Default::default()).await?.items.len();
    report("list all pods (1 request)", 1, t.elapsed(), vec![t.elapsed()]);
    println!("  listed {listed} pods");

    // updates without watchers
    let p = pods.clone();
    let (el, lat, errs) = run_parallel(n_updates, move |i| {
        let p = p.clone();
        async move {
            let patch = json!({"metadata": {"labels": {"bench-phase": "pre", "n": i.to_string()}}});
            p.patch(
                &format!("pod-{}", i % n_pods.max(1)),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .is_ok()
        }
    })
    .await;
    report("update pods, no watchers", n_updates, el, lat);
    if errs > 0 {
        println!("  errors: {errs}");
    }

    // watchers
    let rv = pods
        .list(&kube::api::ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let received = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    let t = Instant::now();
    for w in 0..n_watchers {
        let api = pods.clone();
        let rv = rv.clone();
        let received = received.clone();
        // each watcher filters on one shard label, like controllers watching their own objects
        let sel = format!("shard={}", w % 10);
        watchers.push(tokio::spawn(async move {
            let Ok(stream) = api
                .watch(&WatchParams::default().labels(&sel).timeout(600), &rv)
                .await
            else {
                return;
            };
            let mut stream = stream.boxed();
            while let Some(ev) = stream.next().await {
                if let Ok(WatchEvent::Modified(_)) = ev {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    println!("started {n_watchers} watchers in {:.2?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // updates (fan out to the watchers of the updated pod's shard)
    let p = pods.clone();
    let (el, lat, errs) = run_parallel(n_updates, move |i| {
        let p = p.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {"bench/update": i.to_string()}}});
            p.patch(
                &format!("pod-{}", i % n_pods.max(1)),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .is_ok()
        }
    })
    .await;
    report("update pods (merge patch)", n_updates, el, lat);
    if errs > 0 {
        println!("  errors: {errs}");
    }
    let expected = (n_updates as u64) * (n_watchers as u64) / 10;
    let t = Instant::now();
    while received.load(Ordering::Relaxed) < expected && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fan_el = el + t.elapsed();
    let got = received.load(Ordering::Relaxed);
    println!(
        "watch fan-out               {got}/{expected} events delivered, {:.0} events/s (incl. update phase), drain after last write {:.2?}",
        got as f64 / fan_el.as_secs_f64(),
        t.elapsed()
    );
    let status_patch = Arc::new(pods.clone());
    let (el, lat, _) = run_parallel(n_updates.min(n_pods), move |i| {
        let p = status_patch.clone();
        async move {
            let s =
                json!({"status": {"phase": "Running", "podIP": format!("10.244.{}.{}", i / 250, i % 250)}});
            p.patch_status(&format!("pod-{i}"), &PatchParams::default(), &Patch::Merge(&s))
                .await
                .is_ok()
        }
    })
    .await;
    report("update pods/status", n_updates.min(n_pods), el, lat);

    let m = sim.metrics().snapshot();
    println!("requests served: {} (by verb: {:?})", m.total, m.by_verb);
    println!("peak memory VmHWM {} MiB", vm_hwm_kib() / 1024);
    for w in watchers {
        w.abort();
    }
    sim.shutdown().await;
    Ok(())
}
