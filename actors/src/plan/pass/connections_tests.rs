//! Tests of connections in the pass: hash, counter, configmeta and `--reconnect`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubedirector_crds::cluster::{ClusterState, Connections};
use kubedirector_crds::wire::{ANNOTATION_HASH_CHANGE_COUNTER, LABEL_CM_TYPE};

use crate::plan::config::script::GuestJob;
use crate::plan::testing::*;
use crate::plan::{EventReason, EventType, Plan, PlanEvent};

fn cm(rv: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            namespace: Some("ns1".into()),
            resource_version: Some(rv.into()),
            labels: Some(BTreeMap::from([(LABEL_CM_TYPE.to_owned(), "app".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("key".to_owned(), value.to_owned())])),
        ..ConfigMap::default()
    }
}

/// A configured spark cluster connected to ConfigMap `settings`.
fn connected_spark() -> Sim {
    let mut c = cluster_spark();
    c.spec.connections = Some(Connections {
        configmaps: vec!["settings".into()],
        ..Connections::default()
    });
    let mut sim = Sim::new(c, app_spark());
    sim.obs
        .connections
        .configmaps
        .insert("settings".into(), cm("1", "one"));
    sim.converge(40);
    sim
}

fn reconnects(sim: &Sim, from: usize) -> Vec<(String, i64)> {
    sim.guest_log[from..]
        .iter()
        .filter_map(|(pod, _, j)| match j {
            GuestJob::Reconnect { version, .. } => Some((pod.clone(), *version)),
            _ => None,
        })
        .collect()
}

fn counter(sim: &Sim) -> Option<String> {
    sim.obs
        .cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_HASH_CHANGE_COUNTER).cloned())
}

#[test]
fn a_new_connected_cluster_sees_the_configmap_in_its_setup_configmeta_without_reconnects() {
    let sim = connected_spark();
    assert_eq!(sim.status().state, ClusterState::Configured);
    assert!(!sim.status().last_connection_hash.is_empty());
    assert_eq!(counter(&sim).as_deref(), Some("1"));
    let setup = sim
        .guest_log
        .iter()
        .find_map(|(_, _, j)| match j {
            GuestJob::Setup(s) => Some(s.configmeta.clone()),
            _ => None,
        })
        .unwrap();
    let cm: serde_json::Value = serde_json::from_str(&setup).unwrap();
    assert_eq!(cm["connections"]["configmaps"]["app"][0]["data"]["key"], "one");
    assert_eq!(
        reconnects(&sim, 0),
        vec![],
        "members set up after the change start current"
    );
    for m in members(&sim, "spark-worker") {
        assert_eq!(m.state_detail.last_connection_version, Some(1));
    }
}

#[test]
fn a_configmap_change_refreshes_configmeta_and_reconnects_every_member_once() {
    let mut sim = connected_spark();
    let before = sim.guest_log.len();
    let generation = sim.status().spec_generation_to_process;
    sim.obs
        .connections
        .configmaps
        .insert("settings".into(), cm("2", "two"));
    let plans = sim.converge(40);
    // Spec 5.1: the counter and reconnect events, with their types and reasons.
    let events: Vec<&PlanEvent> = plans.iter().flat_map(Plan::events).collect();
    let find = |text: &str| {
        events
            .iter()
            .find(|e| e.message.starts_with(text))
            .map(|e| (e.type_, e.reason))
    };
    assert_eq!(
        find("Updated context"),
        Some((EventType::Normal, EventReason::Cluster))
    );
    assert_eq!(
        find("--reconnect will be called for pod : "),
        Some((EventType::Normal, EventReason::Cluster))
    );
    assert_eq!(sim.status().state, ClusterState::Configured);
    assert_eq!(counter(&sim).as_deref(), Some("2"));
    assert_eq!(sim.status().spec_generation_to_process, generation.map(|g| g + 1));
    let mut got = reconnects(&sim, before);
    got.sort();
    let mut pods: Vec<(String, i64)> = sim
        .status()
        .roles
        .iter()
        .flat_map(|r| r.members.iter())
        .map(|m| (m.pod.clone(), 2))
        .collect();
    pods.sort();
    assert_eq!(got, pods, "exactly one --reconnect per member");
    // Each member got the new configmeta before its reconnect.
    for (pod, _) in &pods {
        let log: Vec<&GuestJob> = sim.guest_log[before..]
            .iter()
            .filter(|(p, _, _)| p == pod)
            .map(|(_, _, j)| j)
            .collect();
        let GuestJob::WriteConfigmeta { configmeta, .. } = log[0] else {
            panic!("{pod}: {log:?}")
        };
        assert!(configmeta.contains("\"two\""));
        assert!(matches!(log[1], GuestJob::Reconnect { .. }), "{pod}: {log:?}");
    }
    // Nothing more happens on an unchanged observation.
    let quiet = sim.guest_log.len();
    sim.converge(5);
    assert_eq!(sim.guest_log.len(), quiet);
}

#[test]
fn a_connected_cluster_membership_change_bumps_the_hash() {
    let mut c = cluster_spark();
    c.spec.connections = Some(Connections {
        clusters: vec!["other".into()],
        ..Connections::default()
    });
    let mut sim = Sim::new(c, app_spark());
    let mut other = configured_centos(1, false);
    other.obs.cluster.metadata.name = Some("other".into());
    sim.obs.connections.clusters.insert(
        "other".into(),
        crate::plan::config::connections::ConnectedCluster {
            cluster: other.obs.cluster.clone(),
            app: Some(app_centos()),
        },
    );
    sim.converge(40);
    assert_eq!(counter(&sim).as_deref(), Some("1"));
    let hash = sim.status().last_connection_hash.clone();
    // The connected cluster scales: its generation moves, so the hash does.
    other.set_members("vanilla_centos", 2);
    other.converge(20);
    sim.obs.connections.clusters.get_mut("other").unwrap().cluster = other.obs.cluster.clone();
    let before = sim.guest_log.len();
    sim.converge(40);
    assert_ne!(sim.status().last_connection_hash, hash);
    assert_eq!(counter(&sim).as_deref(), Some("2"));
    assert_eq!(reconnects(&sim, before).len(), 3);
}

#[test]
fn clusters_without_connections_get_no_counter_and_no_hash() {
    let sim = configured_centos(1, false);
    assert_eq!(counter(&sim), None);
    assert!(sim.status().last_connection_hash.is_empty());
}

#[test]
fn an_unparseable_counter_warns_and_restarts_at_one() {
    let mut sim = connected_spark();
    sim.obs
        .cluster
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_HASH_CHANGE_COUNTER.to_owned(), "x".to_owned());
    let plan = sim.pass();
    assert!(msgs(&plan)
        .iter()
        .any(|m| m == "Invalid connectionsIncrementor for role{spark-master}"));
    sim.obs
        .connections
        .configmaps
        .insert("settings".into(), cm("3", "three"));
    let plan = sim.pass();
    assert_eq!(
        plan.annotations.get(ANNOTATION_HASH_CHANGE_COUNTER),
        Some(&Some("1".to_owned()))
    );
    assert!(msgs(&plan).iter().any(|m| m == "Annotation initialized to 1"));
}
