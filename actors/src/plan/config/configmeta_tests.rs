//! Tests of configmeta generation: the worked example of spec 4.3 pinned, both naming schemes,
//! intended-member ordering, secret keys and edge cases.

use kubedirector_crds::app::KubeDirectorApp;
use kubedirector_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use serde_json::{json, Value};

use super::*;

const UID: &str = "6f1c2a9e-0b7d-4c55-9d3e-2a1b0c9d8e7f";

/// The kdapp of spec 4.3 (our own rendering of the fields configmeta reads).
fn cassandra_app() -> KubeDirectorApp {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "cassandra311", "namespace": "default"},
        "spec": {
            "label": {"name": "Cassandra 3.11"},
            "distroID": "bluedata/cassandra311",
            "version": "3.2",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": "example/cassandra:3.11",
            "defaultConfigPackage": {"packageURL": "file:///opt/configscripts/appconfig.tgz"},
            "services": [
                {"id": "ssh", "label": {"name": "SSH"}, "endpoint": {"port": 22, "isDashboard": false}},
                {"id": "cassandra", "label": {"name": "cql"},
                 "endpoint": {"urlScheme": "cql", "port": 9042, "isDashboard": false}}
            ],
            "roles": [
                {"id": "seed", "cardinality": "2+"},
                {"id": "worker", "cardinality": "0+"}
            ],
            "config": {
                "roleServices": [
                    {"roleID": "seed", "serviceIDs": ["ssh", "cassandra"]},
                    {"roleID": "worker", "serviceIDs": ["ssh", "cassandra"]}
                ],
                "selectedRoles": ["seed", "worker"],
                "configMeta": {}
            }
        }
    }))
    .unwrap()
}

fn cluster(scheme: &str) -> KubeDirectorCluster {
    let limits = json!({"limits": {"cpu": "2", "memory": "4Gi"}});
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": "cassandra-instance", "namespace": "default", "uid": UID},
        "spec": {
            "app": "cassandra311",
            "namingScheme": scheme,
            "roles": [
                {"id": "seed", "members": 2, "resources": limits},
                {"id": "worker", "members": 1, "resources": limits}
            ]
        }
    }))
    .unwrap()
}

fn member(pod: &str, svc: &str, id: i64, state: &str) -> Value {
    json!({"pod": pod, "service": svc, "nodeID": id, "state": state, "stateDetail": {}})
}

/// Status of spec 4.3: `kdhs-x7k2p`, `kdss-ab3cd` (seed), `kdss-ef5gh` (worker).
fn uid_status() -> KubeDirectorClusterStatus {
    serde_json::from_value(json!({
        "state": "creating", "generationUID": "g", "specGenerationToProcess": 1,
        "clusterService": "kdhs-x7k2p", "lastNodeID": 3, "lastConnectionHash": "",
        "memberStateRollup": {},
        "roles": [
            {"id": "seed", "statefulSet": "kdss-ab3cd", "members": [
                member("kdss-ab3cd-0", "s-kdss-ab3cd-0", 1, "configured"),
                member("kdss-ab3cd-1", "s-kdss-ab3cd-1", 2, "configured")]},
            {"id": "worker", "statefulSet": "kdss-ef5gh", "members": [
                member("kdss-ef5gh-0", "s-kdss-ef5gh-0", 3, "creating")]}
        ]
    }))
    .unwrap()
}

fn source<'a>(
    cluster: &'a KubeDirectorCluster,
    app: &'a KubeDirectorApp,
    status: &'a KubeDirectorClusterStatus,
    master_key: Option<&'a str>,
) -> ConfigmetaSource<'a> {
    ConfigmetaSource {
        cluster,
        app,
        status,
        domain_base: ".svc.cluster.local",
        master_key,
    }
}

const WORKED_EXAMPLE: &str = r#"{
  "version": "7",
  "services": {
    "cassandra": {
      "1": {
        "seed": {"bdvlibrefkey": ["nodegroups", "1", "roles", "seed", "services", "cassandra"]},
        "worker": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "services", "cassandra"]}
      }
    },
    "ssh": {
      "1": {
        "seed": {"bdvlibrefkey": ["nodegroups", "1", "roles", "seed", "services", "ssh"]},
        "worker": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "services", "ssh"]}
      }
    }
  },
  "nodegroups": {
    "1": {
      "roles": {
        "seed": {
          "services": {
            "ssh": {
              "qualifiers": [],
              "name": "SSH",
              "id": "ssh",
              "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "seed", "hostnames"]},
              "global_id": "1_seed_ssh",
              "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "seed", "fqdns"]},
              "exported_service": "",
              "endpoints": [
                "://kdss-ab3cd-0.kdhs-x7k2p.default.svc.cluster.local:22",
                "://kdss-ab3cd-1.kdhs-x7k2p.default.svc.cluster.local:22"
              ],
              "authToken": ""
            },
            "cassandra": {
              "qualifiers": [],
              "name": "cql",
              "id": "cassandra",
              "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "seed", "hostnames"]},
              "global_id": "1_seed_cassandra",
              "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "seed", "fqdns"]},
              "exported_service": "",
              "endpoints": [
                "cql://kdss-ab3cd-0.kdhs-x7k2p.default.svc.cluster.local:9042",
                "cql://kdss-ab3cd-1.kdhs-x7k2p.default.svc.cluster.local:9042"
              ],
              "authToken": ""
            }
          },
          "node_ids": ["1", "2"],
          "hostnames": [
            "kdss-ab3cd-0.kdhs-x7k2p.default.svc.cluster.local",
            "kdss-ab3cd-1.kdhs-x7k2p.default.svc.cluster.local"
          ],
          "fqdns": [
            "kdss-ab3cd-0.kdhs-x7k2p.default.svc.cluster.local",
            "kdss-ab3cd-1.kdhs-x7k2p.default.svc.cluster.local"
          ],
          "fqdn_mappings": {
            "kdss-ab3cd-0.kdhs-x7k2p.default.svc.cluster.local": "1",
            "kdss-ab3cd-1.kdhs-x7k2p.default.svc.cluster.local": "2"
          },
          "flavor": {"storage": "n/a", "name": "n/a", "memory": "4096", "description": "n/a", "cores": "2"}
        },
        "worker": {
          "services": {
            "ssh": {
              "qualifiers": [],
              "name": "SSH",
              "id": "ssh",
              "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "hostnames"]},
              "global_id": "1_worker_ssh",
              "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "fqdns"]},
              "exported_service": "",
              "endpoints": ["://kdss-ef5gh-0.kdhs-x7k2p.default.svc.cluster.local:22"],
              "authToken": ""
            },
            "cassandra": {
              "qualifiers": [],
              "name": "cql",
              "id": "cassandra",
              "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "hostnames"]},
              "global_id": "1_worker_cassandra",
              "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "fqdns"]},
              "exported_service": "",
              "endpoints": ["cql://kdss-ef5gh-0.kdhs-x7k2p.default.svc.cluster.local:9042"],
              "authToken": ""
            }
          },
          "node_ids": ["3"],
          "hostnames": ["kdss-ef5gh-0.kdhs-x7k2p.default.svc.cluster.local"],
          "fqdns": ["kdss-ef5gh-0.kdhs-x7k2p.default.svc.cluster.local"],
          "fqdn_mappings": {"kdss-ef5gh-0.kdhs-x7k2p.default.svc.cluster.local": "3"},
          "flavor": {"storage": "n/a", "name": "n/a", "memory": "4096", "description": "n/a", "cores": "2"}
        }
      },
      "distro_id": "bluedata/cassandra311",
      "catalog_entry_version": "3.2",
      "config_metadata": {}
    }
  },
  "distros": {"bluedata/cassandra311": {"1": {"bdvlibrefkey": ["nodegroups", "1"]}}},
  "cluster": {
    "name": "cassandra-instance",
    "isolated": false,
    "id": "6f1c2a9e-0b7d-4c55-9d3e-2a1b0c9d8e7f",
    "config_metadata": {"1": {"bdvlibrefkey": ["nodegroups", "1", "config_metadata"]}}
  },
  "node": {
    "role_id": "seed",
    "nodegroup_id": "1",
    "id": "1",
    "hostname": "kdss-ab3cd-0.kdhs-x7k2p.default.svc.cluster.local",
    "fqdn": "kdss-ab3cd-0.kdhs-x7k2p.default.svc.cluster.local",
    "domain": "kdhs-x7k2p.default.svc.cluster.local",
    "distro_id": "bluedata/cassandra311",
    "depends_on": {}
  },
  "connections": {"clusters": {}, "configmaps": {}, "secrets": {}}
}"#;

#[test]
fn worked_example_of_spec_4_3_is_reproduced_exactly() {
    let app = cassandra_app();
    let cluster = cluster("UID");
    let status = uid_status();
    let src = source(&cluster, &app, &status, None);
    let cm = Configmeta::build(&src, None);
    let expected: Value = serde_json::from_str(WORKED_EXAMPLE).unwrap();
    assert_eq!(cm.member_value("kdss-ab3cd-0"), expected);
    let file = cm.for_member("kdss-ab3cd-0");
    assert!(
        !file.ends_with('\n') && !file.contains("\n "),
        "compact JSON, no trailing newline"
    );
    // Fixed keys in upstream's order.
    let doc = cm.member_value("kdss-ab3cd-0");
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "version",
            "services",
            "nodegroups",
            "distros",
            "cluster",
            "node",
            "connections"
        ]
    );
}

#[test]
fn cr_name_role_scheme_uses_the_names_in_the_status() {
    let app = cassandra_app();
    let cluster = cluster("CrNameRole");
    let mut status = uid_status();
    status.cluster_service = "cassandra-instancebcdfg".into();
    status.roles[0].stateful_set = "cassandra-instance-seed-bcdfg".into();
    status.roles[0].members[0].pod = "cassandra-instance-seed-bcdfg-0".into();
    status.roles[0].members[1].pod = "cassandra-instance-seed-bcdfg-1".into();
    status.roles[1].stateful_set = "cassandra-instance-worker-hjklm".into();
    status.roles[1].members[0].pod = "cassandra-instance-worker-hjklm-0".into();
    let src = source(&cluster, &app, &status, None);
    let doc = Configmeta::build(&src, None).member_value("cassandra-instance-worker-hjklm-0");
    let domain = "cassandra-instancebcdfg.default.svc.cluster.local";
    assert_eq!(doc["node"]["domain"], domain);
    assert_eq!(doc["node"]["id"], "3");
    assert_eq!(doc["node"]["role_id"], "worker");
    assert_eq!(
        doc["nodegroups"]["1"]["roles"]["seed"]["fqdns"],
        json!([
            format!("cassandra-instance-seed-bcdfg-0.{domain}"),
            format!("cassandra-instance-seed-bcdfg-1.{domain}")
        ])
    );
    assert_eq!(
        doc["nodegroups"]["1"]["roles"]["worker"]["services"]["cassandra"]["endpoints"],
        json!([format!("cql://cassandra-instance-worker-hjklm-0.{domain}:9042")])
    );
}

#[test]
fn intended_members_are_grouped_by_state_and_departing_members_are_left_out() {
    let app = cassandra_app();
    let cluster = cluster("UID");
    let mut status = uid_status();
    status.roles[0].members = serde_json::from_value(json!([
        member("kdss-ab3cd-0", "s0", 1, "configured"),
        member("kdss-ab3cd-1", "s1", 2, "delete pending"),
        member("kdss-ab3cd-2", "s2", 4, "create pending"),
        member("kdss-ab3cd-3", "s3", 5, "config error"),
        member("kdss-ab3cd-4", "s4", 6, "deleting"),
    ]))
    .unwrap();
    let src = source(&cluster, &app, &status, None);
    let cm = Configmeta::build(&src, None);
    let doc = cm.member_value("kdss-ab3cd-0");
    assert_eq!(
        doc["nodegroups"]["1"]["roles"]["seed"]["node_ids"],
        json!(["4", "1", "5"])
    );
    assert_eq!(
        cm.member_value("kdss-ab3cd-1")["node"],
        Value::Null,
        "a departing member is no node"
    );
}

#[test]
fn roles_without_intended_members_and_services_of_roles_outside_the_spec_are_omitted() {
    let app = cassandra_app();
    let mut cluster = cluster("UID");
    cluster.spec.roles.truncate(1);
    let mut status = uid_status();
    status.roles[0].members.clear();
    let src = source(&cluster, &app, &status, None);
    let doc = Configmeta::build(&src, None).member_value("nobody");
    assert_eq!(doc["nodegroups"]["1"]["roles"], json!({}));
    assert_eq!(doc["node"], Value::Null);
    assert_eq!(
        doc["services"]["ssh"],
        json!({"1": {"seed": {"bdvlibrefkey": ["nodegroups", "1", "roles", "seed", "services", "ssh"]}}})
    );
}

#[test]
fn secret_keys_are_decrypted_and_undecryptable_ones_dropped() {
    let app = cassandra_app();
    let mut cluster = cluster("UID");
    let key = hex::encode([3u8; 16]);
    let enc = secretkeys::encrypt(Some(&key), "hunter2", [9; secretkeys::NONCE_LEN]).unwrap();
    cluster.spec.roles[0].secret_keys = serde_json::from_value(json!([
        {"name": "db", "encryptedValue": enc},
        {"name": "broken", "encryptedValue": "00ff"}
    ]))
    .unwrap();
    let status = uid_status();
    let src = source(&cluster, &app, &status, Some(&key));
    let doc = Configmeta::build(&src, None).member_value("kdss-ab3cd-0");
    assert_eq!(
        doc["nodegroups"]["1"]["roles"]["seed"]["secret_keys"],
        json!({"db": "hunter2"})
    );
    assert!(doc["nodegroups"]["1"]["roles"]["worker"]
        .get("secret_keys")
        .is_none());
}

#[test]
fn auth_token_of_the_last_intended_member_and_block_devices_on_the_node() {
    let mut app = cassandra_app();
    app.spec.services[1].endpoint.as_mut().unwrap().has_auth_token = Some(true);
    app.spec.config.config_meta = None;
    let cluster = cluster("UID");
    let mut status = uid_status();
    status.roles[0].members[0].auth_token = Some("aaa".into());
    status.roles[0].members[1].auth_token = Some("bbb".into());
    status.roles[0].members[0].block_device_paths = vec!["/dev/kdblock0".into()];
    let src = source(&cluster, &app, &status, None);
    let doc = Configmeta::build(&src, None).member_value("kdss-ab3cd-0");
    let seed = &doc["nodegroups"]["1"]["roles"]["seed"]["services"];
    assert_eq!(seed["cassandra"]["authToken"], "bbb");
    assert_eq!(seed["ssh"]["authToken"], "");
    assert_eq!(doc["node"]["block_device_paths"], json!(["/dev/kdblock0"]));
    assert_eq!(doc["nodegroups"]["1"]["config_metadata"], Value::Null);
}

#[test]
fn flavor_without_limits_is_zero_and_rounds_cpu_up_and_memory_down() {
    let r: RoleSpec = serde_json::from_value(
        json!({"id": "x", "resources": {"limits": {"cpu": "1500m", "memory": "1500Ki"}}}),
    )
    .unwrap();
    assert_eq!(flavor(Some(&r))["cores"], "2");
    assert_eq!(flavor(Some(&r))["memory"], "1");
    assert_eq!(flavor(None)["cores"], "0");
}
