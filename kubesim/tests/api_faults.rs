//! API-server fault classes over HTTP, as a client sees them: commit-then-fail, 429 with
//! `Retry-After`, watch stalls, 410 at watch start, mid-stream and on an expired `continue`,
//! stale `resourceVersion=0` lists, and restarts keeping or losing the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start, status};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt;
use kubesim::faults::{ErrorRule, ThrottleRule};
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn rule(verb: &str, resource: &str, code: u16) -> ErrorRule {
    ErrorRule {
        verb: verb.into(),
        resource: resource.into(),
        rate: 1.0,
        code,
        count: Some(1),
    }
}

/// A kube client without kube's own retries (it retries 429/503/504), to see single answers.
fn raw_client(sim: &kubesim::Sim) -> kube::Client {
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// The next non-bookmark event within 10 s.
async fn next_event<S>(s: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .unwrap();
        if !matches!(e, WatchEvent::Bookmark(_)) {
            return e;
        }
    }
}

fn name_of(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o.name_any(),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {} {}", s.code, s.reason),
    }
}

#[tokio::test]
async fn commit_then_fail_commits_the_write_and_answers_the_error() {
    let (sim, _) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(raw_client(&sim));
    sim.faults()
        .add_error_after_commit(rule("create", "configmaps", 504));
    let e = status(api.create(&PostParams::default(), &cm("a")).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"));
    assert!(
        e.message
            .contains("request did not complete within requested timeout"),
        "{e:?}"
    );
    // It was committed: the client's retry finds it.
    assert!(api.get_opt("a").await.unwrap().is_some());
    let again = status(api.create(&PostParams::default(), &cm("a")).await.unwrap_err());
    assert_eq!(again.reason, "AlreadyExists");
    // A write that fails on its own is not turned into a committed one, and keeps the rule.
    sim.faults()
        .add_error_after_commit(rule("create", "configmaps", 500));
    let dup = status(api.create(&PostParams::default(), &cm("a")).await.unwrap_err());
    assert_eq!(dup.reason, "AlreadyExists");
    let e = status(api.create(&PostParams::default(), &cm("b")).await.unwrap_err());
    assert_eq!(e.code, 500);
    assert!(api.get_opt("b").await.unwrap().is_some());
    // Updates too: the new content is stored although the client got an error.
    sim.faults()
        .add_error_after_commit(rule("patch", "configmaps", 500));
    let patch = kube::api::Patch::Merge(json!({"data": {"k": "patched"}}));
    assert!(api.patch("b", &Default::default(), &patch).await.is_err());
    assert_eq!(api.get("b").await.unwrap().data.unwrap()["k"], "patched");
    sim.shutdown().await;
}

/// One raw HTTP/1.0 request: (status line, headers, body).
fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nUser-Agent: probe/1\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_like_the_overload_filters() {
    let (sim, _) = start().await;
    sim.faults().add_throttle(ThrottleRule {
        verb: "list".into(),
        resource: "configmaps".into(),
        rate: 1.0,
        retry_after_seconds: 3,
        count: Some(2),
    });
    let addr = sim.addr();
    let path = "/api/v1/namespaces/default/configmaps";
    let got = tokio::task::spawn_blocking(move || {
        [
            http(addr, "GET", path),
            http(addr, "GET", path),
            http(addr, "GET", path),
        ]
    })
    .await
    .unwrap();
    for (status, headers, body) in &got[..2] {
        assert!(status.contains(" 429 "), "{status}");
        assert!(headers.contains("retry-after: 3"), "{headers}");
        assert!(headers.contains("content-type: text/plain"), "{headers}");
        assert_eq!(body, "Too many requests, please try again later.\n");
    }
    assert!(got[2].0.contains(" 200 "), "the rule ran out: {:?}", got[2]);
    let log = sim.faults().throttled();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].client, "probe");
    assert_eq!(log[0].request, format!("GET {path}"));
    // kube-rs sees the 429 as an error (its retry layer would wait Retry-After).
    sim.faults().add_throttle(ThrottleRule {
        verb: "get".into(),
        resource: "configmaps".into(),
        rate: 1.0,
        retry_after_seconds: 1,
        count: Some(1),
    });
    let api: Api<ConfigMap> = Api::default_namespaced(raw_client(&sim));
    match api.get("nothing").await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!(s.code, 429),
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn stalled_watches_hold_their_events_until_the_stall_ends_and_new_watches_flow() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stalled = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("before")).await.unwrap();
    assert_eq!(name_of(&next_event(&mut stalled).await), "before");
    sim.faults().stall_watches(None);
    let rv2 = api.get("before").await.unwrap().resource_version().unwrap();
    // A watch opened during the stall is not stalled: it is the barrier for the check below.
    let mut fresh = api.watch(&WatchParams::default(), &rv2).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("during")).await.unwrap();
    assert_eq!(name_of(&next_event(&mut fresh).await), "during");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stalled.next())
            .await
            .is_err(),
        "the stalled watch delivered something"
    );
    sim.faults().clear_watch_stall();
    assert_eq!(
        name_of(&next_event(&mut stalled).await),
        "during",
        "held back, then delivered"
    );
    // A timed stall ends by itself.
    sim.faults().stall_watches(Some(Duration::from_millis(300)));
    api.create(&PostParams::default(), &cm("timed")).await.unwrap();
    assert_eq!(name_of(&next_event(&mut stalled).await), "timed");
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_watches_end_with_a_410_event_mid_stream_and_cannot_resume() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv = api.get("a").await.unwrap().resource_version().unwrap();
    let mut w = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    assert_eq!(name_of(&next_event(&mut w).await), "b");
    sim.store().expire_watches();
    match next_event(&mut w).await {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert_eq!(
                s.message,
                "The resourceVersion for the provided watch is too old."
            );
        }
        other => panic!("{}", name_of(&other)),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .is_none());
    let mut again = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    assert_eq!(name_of(&next_event(&mut again).await), "ERROR 410 Expired");
    // At start (the older fault) too.
    sim.faults().force_gone_next_watch();
    let current = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut gone = api
        .watch(&WatchParams::default(), &current)
        .await
        .unwrap()
        .boxed();
    assert_eq!(name_of(&next_event(&mut gone).await), "ERROR 410 Expired");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_continue_token_gets_410_and_a_fresh_list_works() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    for n in ["a", "b", "c"] {
        api.create(&PostParams::default(), &cm(n)).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    sim.faults().expire_continue_tokens(1);
    let e = status(
        api.list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    assert!(
        e.message
            .starts_with("The provided continue parameter is too old"),
        "{}",
        e.message
    );
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2, "one token expired, not the snapshot");
    sim.shutdown().await;
}

#[tokio::test]
async fn stale_lists_serve_an_old_snapshot_and_the_watch_replays_from_it() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("old")).await.unwrap();
    let old_rv = api.get("old").await.unwrap().resource_version().unwrap();
    api.create(&PostParams::default(), &cm("new")).await.unwrap();
    sim.faults().serve_stale_lists(Some(old_rv.parse().unwrap()));
    let any = api.list(&ListParams::default().match_any()).await.unwrap();
    let names: Vec<String> = any.items.iter().map(|c| c.name_any()).collect();
    assert_eq!(
        names.iter().filter(|n| *n == "old" || *n == "new").count(),
        1,
        "{names:?}"
    );
    assert!(names.contains(&"old".to_string()));
    assert_eq!(any.metadata.resource_version.as_deref(), Some(old_rv.as_str()));
    assert_eq!(sim.faults().stale_lists_served(), 1);
    // A consistent list (no resourceVersion) is never stale.
    let fresh = api.list(&ListParams::default()).await.unwrap();
    assert!(fresh.items.iter().any(|c| c.name_any() == "new"));
    // The client's watch from the stale version replays what it missed.
    let mut w = api.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    assert_eq!(name_of(&next_event(&mut w).await), "new");
    sim.faults().clear();
    let any = api.list(&ListParams::default().match_any()).await.unwrap();
    assert!(any.items.iter().any(|c| c.name_any() == "new"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_restart_closes_watches_and_older_resource_versions_must_relist() {
    let (sim, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv_a = api.get("a").await.unwrap().resource_version().unwrap();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    let rv_b = api.get("b").await.unwrap().resource_version().unwrap();
    let mut w = api.watch(&WatchParams::default(), &rv_b).await.unwrap().boxed();
    sim.restart(true);
    assert!(tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .is_none());
    // The restarted server's watch cache starts now: an older version is gone, the latest is not.
    let mut old = api.watch(&WatchParams::default(), &rv_a).await.unwrap().boxed();
    assert_eq!(name_of(&next_event(&mut old).await), "ERROR 410 Expired");
    let mut latest = api.watch(&WatchParams::default(), &rv_b).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    assert_eq!(name_of(&next_event(&mut latest).await), "c");
    let rv_c: u64 = api
        .get("c")
        .await
        .unwrap()
        .resource_version()
        .unwrap()
        .parse()
        .unwrap();

    // Losing the store: objects gone, versions still growing, every older version gone.
    sim.restart(false);
    assert!(tokio::time::timeout(Duration::from_secs(5), latest.next())
        .await
        .unwrap()
        .is_none());
    assert!(api.get_opt("a").await.unwrap().is_none());
    let mut after = api
        .watch(&WatchParams::default(), &rv_c.to_string())
        .await
        .unwrap()
        .boxed();
    assert_eq!(name_of(&next_event(&mut after).await), "ERROR 410 Expired");
    api.create(&PostParams::default(), &cm("d")).await.unwrap();
    let rv_d: u64 = api
        .get("d")
        .await
        .unwrap()
        .resource_version()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_d > rv_c);
    sim.shutdown().await;
}
