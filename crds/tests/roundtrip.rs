//! Wire compatibility: upstream example documents and hand-written fully-populated documents
//! deserialize into our types and serialize back to semantically identical JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{json_diff, read_doc, upstream_dir};
use kubedirector_crds::*;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

fn roundtrip<T: Serialize + DeserializeOwned>(doc: &Value) -> Vec<String> {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("deserialize: {e}\n{doc:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    json_diff("", doc, &back, &mut diffs);
    diffs
}

fn assert_roundtrip<T: Serialize + DeserializeOwned>(what: &str, doc: &Value) {
    let diffs = roundtrip::<T>(doc);
    assert!(
        diffs.is_empty(),
        "{what} does not round-trip:\n  {}",
        diffs.join("\n  ")
    );
}

#[test]
fn upstream_examples_roundtrip() {
    let Some(dir) = upstream_dir() else { return };
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("cr-app-") {
            assert_roundtrip::<KubeDirectorApp>(&name, &read_doc(&path));
            seen += 1;
        } else if name.starts_with("cr-cluster-") {
            assert_roundtrip::<KubeDirectorCluster>(&name, &read_doc(&path));
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        6,
        "expected 3 example kdapps and 3 example kdclusters in {}",
        dir.display()
    );
}

#[test]
fn upstream_example_app_tristate_defaults() {
    let Some(dir) = upstream_dir() else { return };
    let centos: KubeDirectorApp = serde_json::from_value(read_doc(&dir.join("cr-app-centos7.json"))).unwrap();
    assert_eq!(centos.spec.default_config_package, SetupPackage::Null);
    assert_eq!(centos.spec.roles[0].config_package, SetupPackage::Absent);
    assert_eq!(centos.spec.role_setup_package("vanilla_centos"), None);

    let spark: KubeDirectorApp = serde_json::from_value(read_doc(&dir.join("cr-app-spark245.json"))).unwrap();
    let pkg = spark.spec.role_setup_package("spark-worker").unwrap();
    assert_eq!(
        pkg.package_url,
        "file:///opt/configscripts/appconfig-5.2.0.35.tgz"
    );
    assert!(!pkg.uses_new_setup_layout());
    assert_eq!(
        spark.spec.role_image("spark-worker"),
        Some("bluedata/spark245:5.2.0.35")
    );

    let cassandra: KubeDirectorApp =
        serde_json::from_value(read_doc(&dir.join("cr-app-cassandra-3.11.json"))).unwrap();
    assert!(cassandra
        .spec
        .role_setup_package("seed")
        .unwrap()
        .uses_new_setup_layout());
    assert_eq!(cassandra.spec.config.config_meta, Some(Default::default()));
    assert_eq!(cassandra.spec.role_services("seed").len(), 2);
}

/// A kdapp using every key, including unknown keys where upstream preserves them.
fn full_app() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": { "name": "full", "namespace": "ns" },
        "spec": {
            "label": { "name": "Full", "description": "every key", "icon": "x.png" },
            "distroID": "test/full",
            "version": "2.0",
            "configSchemaVersion": 8,
            "defaultImageRepoTag": "img:1",
            "defaultConfigPackage": { "packageURL": "https://example.com/p.tgz", "useNewSetupLayout": false },
            "defaultPersistDirs": ["/data"],
            "defaultEventList": ["configure", "addnodes"],
            "defaultMaxLogSizeDump": 0,
            "services": [
                {
                    "id": "web",
                    "label": { "name": "Web", "description": "ui" },
                    "endpoint": { "port": 8080, "urlScheme": "http", "path": "/", "isDashboard": true, "hasAuthToken": true },
                    "exported_service": "web-ui",
                    "futureKey": { "nested": [1, 2] }
                },
                { "id": "bare" }
            ],
            "roles": [
                {
                    "id": "a",
                    "cardinality": "1",
                    "imageRepoTag": "img:2",
                    "configPackage": null,
                    "persistDirs": [],
                    "eventList": [],
                    "containerSpec": { "stdin": true, "tty": false },
                    "minResources": { "memory": "1Gi", "cpu": "500m", "example.com/fpga": "1" },
                    "minStorage": { "size": "10Gi", "ephemeralModeSupported": true },
                    "maxLogSizeDump": 1024
                },
                { "id": "b", "cardinality": "0+", "configPackage": { "packageURL": "file:///b.tgz", "useNewSetupLayout": true } },
                { "id": "c", "cardinality": "2+" }
            ],
            "config": {
                "roleServices": [ { "roleID": "a", "serviceIDs": ["web", "bare"] } ],
                "selectedRoles": ["a", "b"],
                "configMeta": { "k": "v" }
            },
            "capabilities": ["SYS_ADMIN"],
            "systemdRequired": false,
            "logoURL": "https://example.com/logo.png",
            "someFutureTopLevelKey": "kept"
        }
    })
}

#[test]
fn full_app_roundtrips_and_keeps_unknown_keys() {
    let doc = full_app();
    assert_roundtrip::<KubeDirectorApp>("full app", &doc);
    let app: KubeDirectorApp = serde_json::from_value(doc).unwrap();
    // only unknown keys land in the flattened maps
    assert_eq!(app.spec.extra.len(), 1);
    assert_eq!(app.spec.label.extra.len(), 1);
    assert_eq!(app.spec.services[0].extra.len(), 1);
    assert!(app.spec.services[1].extra.is_empty());
    assert_eq!(app.spec.extra.get("someFutureTopLevelKey"), Some(&json!("kept")));
    assert_eq!(app.spec.label.extra.get("icon"), Some(&json!("x.png")));
    assert_eq!(
        app.spec.services[0].extra.get("futureKey"),
        Some(&json!({ "nested": [1, 2] }))
    );
    assert_eq!(app.spec.services[0].exported_service.as_deref(), Some("web-ui"));
    assert_eq!(app.spec.roles[0].event_list.as_deref(), Some(&[][..]));
    let min = app.spec.roles[0].min_resources.as_ref().unwrap();
    // explicit null on nullable objects other than the setup package normalises to absent
    let svc: AppService =
        serde_json::from_value(json!({ "id": "x", "label": null, "endpoint": null })).unwrap();
    assert!(svc.label.is_none() && svc.endpoint.is_none());
    assert_eq!(serde_json::to_value(&svc).unwrap(), json!({ "id": "x" }));
    assert_eq!(min.get("example.com/fpga").map(|q| q.0.as_str()), Some("1"));
}

#[test]
fn setup_package_is_tristate() {
    let app: KubeDirectorApp = serde_json::from_value(full_app()).unwrap();
    let spec = &app.spec;
    // explicit null on the role wins over the default package
    assert_eq!(spec.roles[0].config_package, SetupPackage::Null);
    assert_eq!(spec.role_setup_package_setting("a"), &SetupPackage::Null);
    assert_eq!(spec.role_setup_package("a"), None);
    // own package
    assert_eq!(
        spec.role_setup_package("b").map(|p| p.package_url.as_str()),
        Some("file:///b.tgz")
    );
    // absent: inherit the default
    assert_eq!(spec.roles[2].config_package, SetupPackage::Absent);
    assert_eq!(
        spec.role_setup_package("c").map(|p| p.package_url.as_str()),
        Some("https://example.com/p.tgz")
    );
    // unknown role: default
    assert!(spec.role_setup_package("zzz").is_some());

    // serialization: absent stays absent, null stays null
    let roles = serde_json::to_value(&spec.roles).unwrap();
    assert_eq!(roles[0].get("configPackage"), Some(&Value::Null));
    assert_eq!(roles[2].get("configPackage"), None);

    // no default, absent role value: none
    let mut spec2 = spec.clone();
    spec2.default_config_package = SetupPackage::Absent;
    assert_eq!(spec2.role_setup_package("c"), None);
    let v = serde_json::to_value(&spec2).unwrap();
    assert!(v.get("defaultConfigPackage").is_none());
    spec2.default_config_package = SetupPackage::Null;
    let v = serde_json::to_value(&spec2).unwrap();
    assert_eq!(v.get("defaultConfigPackage"), Some(&Value::Null));
}

#[test]
fn app_role_resolution_helpers() {
    let app: KubeDirectorApp = serde_json::from_value(full_app()).unwrap();
    let spec = &app.spec;
    assert_eq!(spec.role_image("a"), Some("img:2"));
    assert_eq!(spec.role_image("b"), Some("img:1"));
    assert_eq!(spec.role_persist_dirs("a"), Some(&[][..]));
    assert_eq!(spec.role_persist_dirs("b"), Some(&["/data".to_owned()][..]));
    assert_eq!(
        spec.role_event_list("b"),
        Some(&[EventName::Configure, EventName::AddNodes][..])
    );
    assert_eq!(spec.role_max_log_size_dump("a"), 1024);
    assert_eq!(spec.role_max_log_size_dump("b"), 0);
    let names: Vec<&str> = spec.role_services("a").iter().map(|s| s.id.as_str()).collect();
    assert_eq!(names, ["web", "bare"]);
    assert_eq!(
        Cardinality::parse("3+"),
        Some(Cardinality {
            min: 3,
            scalable: true
        })
    );
    assert_eq!(
        Cardinality::parse("2"),
        Some(Cardinality {
            min: 2,
            scalable: false
        })
    );
    assert_eq!(Cardinality::parse("+"), None);
    assert_eq!(Cardinality::parse("x1"), None);
    assert!(Cardinality {
        min: 2,
        scalable: true
    }
    .allows(5));
    assert!(!Cardinality {
        min: 2,
        scalable: false
    }
    .allows(3));
}

/// A kdcluster using every spec key and every status key of spec 1.4.
fn full_cluster() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": { "name": "c1", "namespace": "ns", "uid": "1234", "generation": 3 },
        "spec": {
            "app": "full",
            "appCatalog": "local",
            "serviceType": "NodePort",
            "namingScheme": "CrNameRole",
            "defaultSecret": { "name": "s", "mountPath": "/etc/s", "defaultMode": 420, "readOnly": true },
            "connections": { "clusters": ["c0"], "configmaps": ["cm"], "secrets": ["sec"] },
            "roles": [
                {
                    "id": "a",
                    "members": 2,
                    "resources": {
                        "limits": { "memory": "4Gi", "cpu": "2", "nvidia.com/gpu": "1", "example.com/fpga": "1" },
                        "requests": { "memory": "4Gi", "cpu": "2" }
                    },
                    "podLabels": { "l": "1" },
                    "podAnnotations": { "a": "1" },
                    "serviceLabels": { "sl": "1" },
                    "serviceAnnotations": { "sa": "1" },
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [ { "matchExpressions": [ { "key": "k", "operator": "In", "values": ["v"] } ] } ]
                            }
                        },
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                { "weight": 10, "podAffinityTerm": { "topologyKey": "kubernetes.io/hostname", "labelSelector": { "matchLabels": { "x": "y" } } } }
                            ]
                        }
                    },
                    "storage": { "size": "20Gi", "storageClassName": "standard" },
                    "blockStorage": { "storageClassName": "block", "pathPrefix": "/dev/xvd", "numDevices": 2, "size": "5Gi" },
                    "env": [ { "name": "A", "value": "1" }, { "name": "B", "value": "" } ],
                    "sharedMemory": "64Mi",
                    "fileInjections": [
                        { "srcURL": "https://example.com/f", "destDir": "/opt", "permissions": { "fileMode": 493, "fileOwner": "root", "fileGroup": "root" } },
                        { "srcURL": "http://example.com/g", "destDir": "/tmp" }
                    ],
                    "secret": { "name": "s2", "mountPath": "/etc/s2" },
                    "serviceAccountName": "sa",
                    "secretKeys": [ { "name": "k1", "encryptedValue": "abcd" }, { "name": "k2", "value": "plain" } ],
                    "volumeProjections": [ { "pvcName": "pvc", "mountPath": "/mnt/p", "readOnly": true } ]
                },
                { "id": "b", "resources": { "limits": { "memory": "1Gi", "cpu": "1" } } }
            ]
        },
        "status": full_status()
    })
}

/// Every status key of spec 1.4.
fn full_status() -> Value {
    json!({
        "state": "configured",
        "restoreProgress": { "awaitingApp": false, "awaitingStatus": true, "awaitingResources": false, "error": "e" },
        "memberStateRollup": {
            "membershipChanging": true, "membersDown": false, "membersInitializing": true, "membersWaiting": false,
            "membersRestarting": true, "configErrors": false, "membersNotScheduled": true
        },
        "generationUID": "5a4f3c1e-0000-4000-8000-000000000000",
        "specGenerationToProcess": 0,
        "clusterService": "kdhs-abcde",
        "lastNodeID": 3,
        "roles": [
            {
                "id": "a",
                "statefulSet": "kdss-fghij",
                "members": [
                    {
                        "pod": "kdss-fghij-0",
                        "service": "s-kdss-fghij-0",
                        "authToken": "tok",
                        "pvc": "p-kdss-fghij-0",
                        "state": "config error",
                        "stateDetail": {
                            "configErrorDetail": "startscript failed",
                            "lastConfigDataGeneration": 2,
                            "lastSetupGeneration": 1,
                            "configuringContainer": "containerd://aaa",
                            "lastConfiguredContainer": "containerd://bbb",
                            "lastKnownContainerState": "running",
                            "pendingNotifyCmds": [
                                { "arguments": ["--addnodes", "--nodegroup 1", "--role", "a", "--fqdns", "x.y"] },
                                { "arguments": ["--delnodes", "--nodegroup 1", "--role", "b", "--fqdns", "z"] }
                            ],
                            "lastConnectionVersion": 4,
                            "startScriptStdoutMessage": "out",
                            "startScriptStderrMessage": "err",
                            "schedulingErrorMessage": "0/3 nodes",
                            "storageInitProgress": "the init container is not yet ready"
                        },
                        "nodeID": 1,
                        "blockDevicePaths": ["/dev/xvd0", "/dev/xvd1"]
                    },
                    {
                        "pod": "kdss-fghij-1",
                        "service": "n/a",
                        "state": "create pending",
                        "stateDetail": {},
                        "nodeID": 3
                    }
                ]
            },
            { "id": "b", "statefulSet": "", "members": [] }
        ],
        "lastConnectionHash": "d41d8cd98f00b204e9800998ecf8427e"
    })
}

#[test]
fn full_cluster_roundtrips() {
    let doc = full_cluster();
    assert_roundtrip::<KubeDirectorCluster>("full cluster", &doc);
    let c: KubeDirectorCluster = serde_json::from_value(doc).unwrap();
    let status = c.status.as_ref().unwrap();
    assert_eq!(status.state, ClusterState::Configured);
    let m0 = &status.roles[0].members[0];
    assert_eq!(m0.state, MemberState::ConfigError);
    assert_eq!(
        m0.state_detail.last_known_container_state,
        Some(ContainerState::Running)
    );
    assert_eq!(
        m0.state_detail.pending_notify_cmds[0].arguments[1],
        "--nodegroup 1"
    );
    assert_eq!(status.roles[0].members[1].state, MemberState::CreatePending);
    assert_eq!(status.members().count(), 2);
    assert_eq!(c.spec.service_type_or_default(), ServiceType::NodePort);
    assert_eq!(c.spec.naming_scheme_or_default(), NamingScheme::CrNameRole);
    assert_eq!(c.spec.total_members(), 2);
    let limits = c.spec.roles[0].resources.limits.as_ref().unwrap();
    assert!(limits.contains_key("example.com/fpga"));
}

#[test]
fn status_always_emits_its_mandatory_keys() {
    let v = serde_json::to_value(KubeDirectorClusterStatus::default()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "state",
            "memberStateRollup",
            "generationUID",
            "clusterService",
            "lastNodeID",
            "roles",
            "lastConnectionHash"
        ]
    );
    assert_eq!(v["roles"], json!([]));
    assert_eq!(v["state"], json!(""));
    assert_eq!(v["memberStateRollup"].as_object().unwrap().len(), 7);

    let s = KubeDirectorClusterStatus {
        spec_generation_to_process: Some(0),
        ..Default::default()
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["specGenerationToProcess"], json!(0));

    let m = serde_json::to_value(MemberStatus::default()).unwrap();
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["pod", "service", "state", "stateDetail", "nodeID"]);
    assert_eq!(m["stateDetail"], json!({}));
}

#[test]
fn unknown_enum_values_roundtrip() {
    let mut doc = full_cluster();
    doc["status"]["state"] = json!("some future state");
    doc["status"]["roles"][0]["members"][0]["state"] = json!("");
    doc["status"]["roles"][0]["members"][0]["stateDetail"]["lastKnownContainerState"] = json!("exotic");
    doc["spec"]["serviceType"] = json!("ExternalName");
    doc["spec"]["namingScheme"] = json!("Other");
    doc["spec"]["appCatalog"] = json!("elsewhere");
    assert_roundtrip::<KubeDirectorCluster>("cluster with unknown enum values", &doc);
    let c: KubeDirectorCluster = serde_json::from_value(doc).unwrap();
    let status = c.status.unwrap();
    assert_eq!(status.state, ClusterState::Other("some future state".into()));
    assert!(!status.state.is_known());
    assert_eq!(status.roles[0].members[0].state, MemberState::default());
    assert_eq!(
        c.spec.service_type,
        Some(ServiceType::Other("ExternalName".into()))
    );
}

#[test]
fn wire_strings_are_exact() {
    let states: Vec<&str> = MemberState::KNOWN.iter().map(MemberState::as_str).collect();
    assert_eq!(
        states,
        [
            "create pending",
            "creating",
            "configured",
            "config error",
            "delete pending",
            "deleting"
        ]
    );
    let states: Vec<&str> = ClusterState::KNOWN.iter().map(ClusterState::as_str).collect();
    assert_eq!(states, ["creating", "updating", "configured", "spec modified"]);
    let states: Vec<&str> = ContainerState::KNOWN.iter().map(ContainerState::as_str).collect();
    assert_eq!(
        states,
        [
            "running",
            "waiting",
            "initializing",
            "unresponsive",
            "terminated",
            "absent",
            "unknown"
        ]
    );
    assert_eq!(
        serde_json::to_value(ServiceType::ClusterIp).unwrap(),
        json!("ClusterIP")
    );
    assert_eq!(serde_json::to_value(NamingScheme::Uid).unwrap(), json!("UID"));
    assert_eq!(serde_json::to_value(ConfigState::Ready).unwrap(), json!("ready"));
    assert_eq!(
        serde_json::to_value(EventName::DelNodes).unwrap(),
        json!("delnodes")
    );
    assert_eq!(
        "spec modified".parse::<ClusterState>().unwrap(),
        ClusterState::SpecModified
    );
    assert_eq!(MemberState::DeletePending.to_string(), "delete pending");
}

#[test]
fn status_backup_roundtrips_with_storage_init_progress() {
    let doc = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorStatusBackup",
        "metadata": { "name": "c1", "namespace": "ns" },
        "spec": { "statusBackup": full_status() }
    });
    assert_roundtrip::<KubeDirectorStatusBackup>("status backup", &doc);
    let b: KubeDirectorStatusBackup = serde_json::from_value(doc).unwrap();
    let detail = &b.spec.status_backup.unwrap().roles[0].members[0].state_detail;
    assert_eq!(
        detail.storage_init_progress.as_deref(),
        Some("the init container is not yet ready")
    );
}

#[test]
fn config_roundtrips_and_spec_is_optional() {
    let full = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorConfig",
        "metadata": { "name": "kd-global-config", "namespace": "kubedirector" },
        "spec": {
            "defaultStorageClassName": "standard",
            "defaultServiceType": "ClusterIP",
            "nativeSystemdSupport": true,
            "requiredSecretPrefix": "kd-",
            "clusterSvcDomainBase": ".svc.example.org",
            "defaultNamingScheme": "CrNameRole",
            "masterEncryptionKey": "00112233445566778899aabbccddeeff",
            "podLabels": { "a": "b" },
            "podAnnotations": { "c": "d" },
            "serviceLabels": { "e": "f" },
            "serviceAnnotations": { "g": "h" },
            "backupClusterStatus": true,
            "allowRestoreWithoutConnections": false,
            "forceSharedMemorySizeSupport": false
        },
        "status": { "generationUID": "u", "state": "ready" }
    });
    assert_roundtrip::<KubeDirectorConfig>("full config", &full);
    let c: KubeDirectorConfig = serde_json::from_value(full.clone()).unwrap();
    let spec = c.spec_or_default();
    assert_eq!(spec.cluster_svc_domain_base_or_default(), ".svc.example.org");
    assert_eq!(spec.default_service_type_or_default(), ServiceType::ClusterIp);
    assert_eq!(c.status.as_ref().unwrap().state, ConfigState::Ready);

    let mut absent = full.clone();
    absent.as_object_mut().unwrap().remove("spec");
    absent.as_object_mut().unwrap().remove("status");
    assert_roundtrip::<KubeDirectorConfig>("config without spec", &absent);
    let c: KubeDirectorConfig = serde_json::from_value(absent).unwrap();
    let spec = c.spec_or_default();
    assert_eq!(spec.cluster_svc_domain_base_or_default(), ".svc.cluster.local");
    assert_eq!(spec.default_service_type_or_default(), ServiceType::LoadBalancer);
    assert_eq!(spec.default_naming_scheme_or_default(), NamingScheme::Uid);
    assert!(!spec.backup_cluster_status_or_default());
    assert_eq!(spec.required_secret_prefix_or_default(), "");

    let mut null = full;
    null["spec"] = Value::Null;
    let c: KubeDirectorConfig = serde_json::from_value(null).unwrap();
    assert!(c.spec.is_none());
}

#[test]
fn fixtures_build_valid_documents() {
    let app = KubeDirectorApp::test("spark")
        .with_service("ssh", Some(22))
        .with_role("worker", "1+")
        .with_role_services("worker", &["ssh"])
        .with_role_package(
            "worker",
            SetupPackage::Package(SetupPackageUrl::new("file:///x.tgz")),
        );
    let v = serde_json::to_value(&app).unwrap();
    assert_eq!(
        v["spec"]["roles"][0]["configPackage"]["packageURL"],
        json!("file:///x.tgz")
    );
    assert_eq!(v["spec"]["config"]["selectedRoles"], json!(["worker"]));
    assert_roundtrip::<KubeDirectorApp>("fixture app", &v);

    let cluster = KubeDirectorCluster::test("c1", "spark")
        .with_role("worker", 2)
        .with_status(KubeDirectorClusterStatus::test(ClusterState::Creating).with_role(
            "worker",
            "kdss-abcde",
            vec![MemberStatus::test("kdss-abcde-0", 1, MemberState::CreatePending)],
        ));
    let v = serde_json::to_value(&cluster).unwrap();
    assert_eq!(v["spec"]["roles"][0]["resources"]["limits"]["cpu"], json!("1"));
    assert_eq!(
        v["status"]["roles"][0]["members"][0]["state"],
        json!("create pending")
    );
    assert_roundtrip::<KubeDirectorCluster>("fixture cluster", &v);

    let config = KubeDirectorConfig::test(None);
    assert_eq!(config.metadata.name.as_deref(), Some(GLOBAL_CONFIG_NAME));
}
