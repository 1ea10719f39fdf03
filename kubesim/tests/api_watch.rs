//! Watch conformance: resume from resourceVersion, 410 after compaction, bookmarks, selector
//! transitions, timeouts, and kube-runtime's watcher recovering with a relist.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::start_with;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use kubesim::{SimConfig, StoreConfig};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn kind(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    }
}

#[tokio::test]
async fn watch_resumes_from_resource_version() {
    let (sim, client) = start_with(SimConfig::default()).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let mut s = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut got = Vec::new();
    while got.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(kind(&e));
    }
    assert_eq!(got, vec!["ADDED b", "MODIFIED a", "DELETED b"]);
    // live events keep coming
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(kind(&e), "ADDED c");
    // rv "0": synthetic ADDED for the current state
    let mut s0 = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(kind(&s0.next().await.unwrap().unwrap()));
    }
    names.sort();
    assert_eq!(names, vec!["ADDED a", "ADDED c"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_from_compacted_rv_gets_410_error_event() {
    let cfg = SimConfig {
        store: StoreConfig {
            history: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let (sim, client) = start_with(cfg).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let rv = api
        .create(&PostParams::default(), &cm("a"))
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    for i in 0..20 {
        api.create(&PostParams::default(), &cm(&format!("x{i}")))
            .await
            .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match s.next().await.unwrap().unwrap() {
        WatchEvent::Error(st) => {
            assert_eq!(st.code, 410);
            assert_eq!(st.reason, "Expired");
            assert!(
                st.message.starts_with("too old resource version"),
                "{}",
                st.message
            );
        }
        other => panic!("expected ERROR, got {}", kind(&other)),
    }
    // the control API's forced 410
    sim.faults().force_gone_next_watch();
    let current = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = api
        .watch(&WatchParams::default().timeout(5), &current)
        .await
        .unwrap()
        .boxed();
    assert_eq!(kind(&s.next().await.unwrap().unwrap()), "ERROR 410");
    sim.shutdown().await;
}

#[tokio::test]
async fn bookmarks_selectors_and_timeouts() {
    let cfg = SimConfig {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let (sim, client) = start_with(cfg).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("plain")).await.unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().labels("app=x").timeout(10);
    let mut s = api.watch(&wp, &rv).await.unwrap().boxed();
    // a bookmark arrives on its own
    let e = tokio::time::timeout(Duration::from_secs(3), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(kind(&e), "BOOKMARK");
    // label transitions
    api.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": null}}})),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !matches!(e, WatchEvent::Bookmark(_)) {
            got.push(kind(&e));
        }
    }
    assert_eq!(got, vec!["ADDED plain", "MODIFIED plain", "DELETED plain"]);
    // timeoutSeconds closes the stream
    let wp = WatchParams::default().timeout(1);
    let s = api.watch(&wp, &rv).await.unwrap();
    let all: Vec<_> = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(all.len() >= 3, "events before timeout: {}", all.len());
    sim.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_watcher_relists_after_410() {
    let cfg = SimConfig {
        store: StoreConfig {
            history: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    let (sim, client) = start_with(cfg).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("first")).await.unwrap();
    let mut w = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut inits = 0;
    let mut seen_first = false;
    // initial list
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), w.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        match e {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitApply(o) => seen_first |= o.name_any() == "first",
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert!(seen_first);
    // Drop the watch and compact: the resume point is gone, the watcher must relist.
    sim.store().compact();
    sim.faults().drop_watches();
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("n{i}")))
            .await
            .unwrap();
    }
    sim.store().compact();
    let mut seen_last = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(seen_last && inits >= 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher did not recover (inits={inits})"
        );
        let Ok(next) = tokio::time::timeout(Duration::from_secs(10), w.next()).await else {
            continue;
        };
        match next {
            Some(Ok(watcher::Event::Init)) => inits += 1,
            Some(Ok(watcher::Event::InitApply(o))) | Some(Ok(watcher::Event::Apply(o))) => {
                seen_last |= o.name_any() == "n9"
            }
            Some(Ok(_)) | Some(Err(_)) => {}
            None => panic!("watcher stream ended"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn streaming_list_initial_events() {
    let (sim, client) = start_with(SimConfig::default()).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    for n in ["s1", "s2"] {
        api.create(&PostParams::default(), &cm(n)).await.unwrap();
    }
    let mut w = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(o) => names.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    names.sort();
    assert_eq!(names, vec!["kube-root-ca.crt", "s1", "s2"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn restart_losing_the_store_forces_a_relist() {
    let (sim, client) = start_with(SimConfig::default()).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("before")).await.unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    // keeping the store: the same resume point still works
    sim.restart(true);
    let mut s = api
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("after")).await.unwrap();
    assert_eq!(kind(&s.next().await.unwrap().unwrap()), "ADDED after");
    // losing it: every older resume point is gone, and so are the objects
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    sim.restart(false);
    let mut s = api
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(kind(&s.next().await.unwrap().unwrap()), "ERROR 410");
    assert!(api.get_opt("before").await.unwrap().is_none());
    assert!(
        api.get_opt("kube-root-ca.crt").await.unwrap().is_some(),
        "bootstrap objects are back"
    );
    sim.shutdown().await;
}
