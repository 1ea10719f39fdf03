//! Event folding (issue 13) end to end: the operator in-process against kubesim records the same
//! Event twice on a kdcluster, and kubesim stores one Event whose `count` is 2 (client-go's
//! recorder behaviour), not two objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use std::collections::BTreeMap;

use operator_support::{centos_cluster, configured_with, Env, ResourceKind, NS};
use serde_json::json;

#[test]
fn a_repeated_event_is_one_event_with_a_count() {
    let env = Env::start();
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("ev", &[("vanilla_centos", 1)]),
    );
    env.eventually("configured", |e| configured_with(e, "ev", 1));
    // Configured again after a scale-out: a second `stable` on the same kdcluster.
    let spec = centos_cluster("ev", &[("vanilla_centos", 2)])["spec"].clone();
    env.merge_patch(&ResourceKind::Cluster, NS, "ev", json!({ "spec": spec }));
    let uid = env.get(&ResourceKind::Cluster, NS, "ev").unwrap()["metadata"]["uid"].clone();
    let stable = |e: &Env| {
        e.list(&ResourceKind::Event, NS)
            .into_iter()
            .filter(|ev| ev["involvedObject"]["uid"] == uid && ev["message"] == "stable")
            .collect::<Vec<_>>()
    };
    env.eventually("configured with 2 members, `stable` recorded twice", |e| {
        configured_with(e, "ev", 2) && stable(e).iter().any(|ev| ev["count"] == 2)
    });
    let folded = stable(&env);
    assert_eq!(folded.len(), 1, "one Event object: {folded:?}");
    let ev = &folded[0];
    assert_eq!(
        (ev["reason"].as_str(), ev["type"].as_str()),
        (Some("Cluster"), Some("Normal"))
    );
    assert!(
        ev["lastTimestamp"].as_str().unwrap() >= ev["firstTimestamp"].as_str().unwrap(),
        "{ev}"
    );
    // No message is stored twice for the kdcluster: every repeat was folded.
    let mut per_message: BTreeMap<String, usize> = BTreeMap::new();
    for e in env.list(&ResourceKind::Event, NS) {
        if e["involvedObject"]["uid"] == uid {
            *per_message
                .entry(format!("{} {}", e["reason"], e["message"]))
                .or_default() += 1;
        }
    }
    assert!(per_message.values().all(|n| *n == 1), "{per_message:?}");
    println!("events on the kdcluster (one object each): {per_message:?}");
}
