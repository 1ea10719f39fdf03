//! Tests of the connections fingerprint and configmeta part (spec 4.8).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kubedirector_crds::cluster::{Connections, KubeDirectorCluster, KubeDirectorClusterStatus, MemberState};
use serde_json::json;

use super::*;

fn conn(clusters: &[&str], cms: &[&str], secrets: &[&str]) -> Connections {
    let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
    Connections {
        clusters: v(clusters),
        configmaps: v(cms),
        secrets: v(secrets),
    }
}

fn meta(name: &str, rv: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ns1".into()),
        resource_version: Some(rv.into()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

fn cm(name: &str, rv: &str, ty: Option<&str>, data: &[(&str, &str)]) -> ConfigMap {
    let labels: Vec<(&str, &str)> = ty.map(|t| (LABEL_CM_TYPE, t)).into_iter().collect();
    ConfigMap {
        metadata: meta(name, rv, &labels),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// A connected centos cluster with two members, the second still `creating`.
fn connected_centos() -> ConnectedCluster {
    let mut c: KubeDirectorCluster = crate::plan::testing::cluster_centos(2);
    c.metadata.name = Some("db".into());
    c.metadata.uid = Some("uid-db".into());
    let status: KubeDirectorClusterStatus = serde_json::from_value(json!({
        "state": "updating", "generationUID": "g", "specGenerationToProcess": 3,
        "clusterService": "kdhs-db", "lastNodeID": 2, "lastConnectionHash": "",
        "memberStateRollup": {"membershipChanging": false, "membersDown": false, "membersInitializing": false,
            "membersWaiting": false, "membersRestarting": false, "configErrors": false, "membersNotScheduled": false},
        "roles": [{"id": "vanilla_centos", "statefulSet": "kdss-db", "members": [
            {"pod": "kdss-db-0", "service": "s-kdss-db-0", "state": "configured", "stateDetail": {}, "nodeID": 1},
            {"pod": "kdss-db-1", "service": "s-kdss-db-1", "state": "creating", "stateDetail": {}, "nodeID": 2}
        ]}]
    }))
    .unwrap();
    c.status = Some(status);
    ConnectedCluster {
        cluster: c,
        app: Some(crate::plan::testing::app_centos()),
    }
}

#[test]
fn hash_concatenates_names_generations_and_resource_versions_in_spec_order() {
    let spec = conn(&["db", "gone"], &["cfg", "nocm"], &["sec"]);
    let mut objs = ConnectedObjects::default();
    objs.clusters.insert("db".into(), connected_centos());
    objs.configmaps
        .insert("cfg".into(), cm("cfg", "41", Some("app"), &[]));
    objs.secrets.insert(
        "sec".into(),
        Secret {
            metadata: meta("sec", "7", &[]),
            ..Secret::default()
        },
    );
    assert_eq!(connections_hash(&spec, &objs), md5_hex("db3gonecfg41nocmsec7"));
    // A connected kdcluster without a status hashes as nil (upstream dereferences it).
    objs.clusters.get_mut("db").unwrap().cluster.status = None;
    assert_eq!(connections_hash(&spec, &objs), md5_hex("dbnilgonecfg41nocmsec7"));
    assert_eq!(
        connections_hash(&Connections::default(), &ConnectedObjects::default()),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
}

#[test]
fn configmaps_are_grouped_by_type_in_spec_order_and_unlabelled_ones_skipped() {
    let spec = conn(&[], &["b", "a", "plain", "missing"], &[]);
    let mut objs = ConnectedObjects::default();
    objs.configmaps
        .insert("a".into(), cm("a", "1", Some("kafka"), &[("k", "1")]));
    objs.configmaps
        .insert("b".into(), cm("b", "1", Some("kafka"), &[("k", "2")]));
    objs.configmaps
        .insert("plain".into(), cm("plain", "1", None, &[("k", "3")]));
    let doc = connections_document(&spec, &objs, ".svc.cluster.local", None);
    assert_eq!(
        doc["configmaps"],
        json!({"kafka": [
            {"metadata": {"name": "b"}, "data": {"k": "2"}, "labels": {LABEL_CM_TYPE: "kafka"}, "annotations": null},
            {"metadata": {"name": "a"}, "data": {"k": "1"}, "labels": {LABEL_CM_TYPE: "kafka"}, "annotations": null}
        ]})
    );
    assert_eq!(doc["clusters"], json!({}));
    assert_eq!(doc["secrets"], json!({}));
}

#[test]
fn secrets_have_every_leaf_value_base64_encoded() {
    let spec = conn(&[], &[], &["creds"]);
    let mut objs = ConnectedObjects::default();
    let mut m = meta("creds", "1", &[(LABEL_SECRET_TYPE, "db")]);
    m.annotations = Some(BTreeMap::from([("note".to_owned(), "hi".to_owned())]));
    objs.secrets.insert(
        "creds".into(),
        Secret {
            metadata: m,
            data: Some(BTreeMap::from([(
                "password".to_owned(),
                ByteString(b"s3cret".to_vec()),
            )])),
            ..Secret::default()
        },
    );
    let doc = connections_document(&spec, &objs, ".svc.cluster.local", None);
    assert_eq!(
        doc["secrets"]["db"],
        json!([{
            "metadata": {"name": "Y3JlZHM="},
            "data": {"password": "czNjcmV0"},
            "labels": {LABEL_SECRET_TYPE: "ZGI="},
            "annotations": {"note": "aGk="}
        }])
    );
}

#[test]
fn connected_cluster_lists_every_member_with_prefixed_refkeys() {
    let spec = conn(&["db", "noapp"], &[], &[]);
    let mut objs = ConnectedObjects::default();
    objs.clusters.insert("db".into(), connected_centos());
    let mut noapp = connected_centos();
    noapp.app = None;
    objs.clusters.insert("noapp".into(), noapp);
    let doc = connections_document(&spec, &objs, ".svc.cluster.local", None);
    let db = &doc["clusters"]["db"];
    assert!(doc["clusters"].get("noapp").is_none(), "kdapp missing: skipped");
    let role = &db["nodegroups"]["1"]["roles"]["vanilla_centos"];
    // Both members, the creating one included, each listed once (R10).
    assert_eq!(
        role["fqdns"],
        json!([
            "kdss-db-0.kdhs-db.ns1.svc.cluster.local",
            "kdss-db-1.kdhs-db.ns1.svc.cluster.local"
        ])
    );
    assert_eq!(role["node_ids"], json!(["1", "2"]));
    assert_eq!(
        db["services"]["ssh"]["1"]["vanilla_centos"]["bdvlibrefkey"],
        json!([
            "connections",
            "clusters",
            "db",
            "nodegroups",
            "1",
            "roles",
            "vanilla_centos",
            "services",
            "ssh"
        ])
    );
    assert_eq!(
        db["distros"]["bluedata/centos7x"]["1"]["bdvlibrefkey"],
        json!(["connections", "clusters", "db", "nodegroups", "1"])
    );
    // Refkeys inside the roles stay unprefixed (upstream), as does the cluster's config_metadata.
    assert_eq!(role["services"]["ssh"]["fqdns"]["bdvlibrefkey"][0], "nodegroups");
    assert_eq!(
        db["cluster"],
        json!({"name": "db", "isolated": false, "id": "uid-db",
               "config_metadata": {"1": {"bdvlibrefkey": ["nodegroups", "1", "config_metadata"]}}})
    );
    assert_eq!(db["node"], json!(null));
    assert_eq!(
        db["connections"],
        json!({"clusters": null, "configmaps": null, "secrets": null})
    );
    // The state rewrite is local: the source status is untouched.
    let st = objs.clusters["db"].cluster.status.as_ref().unwrap();
    assert_eq!(st.roles[0].members[1].state, MemberState::Creating);
}
