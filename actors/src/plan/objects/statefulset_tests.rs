//! Tests of the role StatefulSet builder (spec 3.7): pod template, storage, persisted dirs,
//! volumes and the upstream quirks kept.

use k8s_openapi::api::core::v1::Affinity;

use super::*;
use crate::plan::objects::{ANNOTATION_PRETTY_NAME, LABEL_APP, LABEL_APP_CATALOG, LABEL_CLUSTER};
use crate::plan::testing::*;
use kubedirector_crds::cluster::{BlockStorageSpec, StorageSpec, VolumeProjection};

fn build(
    cluster: &kubedirector_crds::cluster::KubeDirectorCluster,
    app: &kubedirector_crds::app::KubeDirectorApp,
    role: usize,
) -> StatefulSet {
    let cfg = config_default();
    let info = ClusterInfo::new(cluster, Some(app), &cfg);
    build_statefulset(&info, &cluster.spec.roles[role], "kdss-abcde").unwrap()
}

fn app_container(sts: &StatefulSet) -> Container {
    sts.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .clone()
}

fn pod_spec(sts: &StatefulSet) -> PodSpec {
    sts.spec.as_ref().unwrap().template.spec.clone().unwrap()
}

fn mount_paths(c: &Container) -> Vec<(String, String)> {
    c.volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.name, m.mount_path))
        .collect()
}

#[test]
fn metadata_labels_annotations_owner() {
    let cluster = cluster_spark();
    let sts = build(&cluster, &app_spark(), 0);
    let md = &sts.metadata;
    assert_eq!(md.name.as_deref(), Some("kdss-abcde"));
    assert_eq!(md.namespace.as_deref(), Some("ns1"));
    let l = md.labels.clone().unwrap();
    assert_eq!(l.len(), 5);
    assert_eq!(l[LABEL_CLUSTER], "spark");
    assert_eq!(l[LABEL_APP], "spark245");
    assert_eq!(l[LABEL_APP_CATALOG], "local");
    assert_eq!(l[LABEL_ROLE], "spark-master");
    assert_eq!(l[LABEL_HEADLESS], "spark");
    assert_eq!(
        md.annotations.clone().unwrap()[ANNOTATION_PRETTY_NAME],
        "Spark 2.4.5 + Jupyterhub"
    );
    let owners = md.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, "uid-spark");
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(owners[0].block_owner_deletion, Some(false));
}

#[test]
fn spec_replicas_policy_service_selector() {
    let mut cluster = cluster_spark();
    cluster.status = Some(kubedirector_crds::cluster::KubeDirectorClusterStatus {
        cluster_service: "kdhs-xyz12".to_owned(),
        ..Default::default()
    });
    let sts = build(&cluster, &app_spark(), 0);
    let spec = sts.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(0));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("kdhs-xyz12"));
    assert!(spec.update_strategy.is_none());
    let tl = spec.template.metadata.clone().unwrap().labels.unwrap();
    assert_eq!(spec.selector.match_labels, Some(tl));
    assert!(spec.volume_claim_templates.is_none());
}

#[test]
fn pod_labels_user_then_global_then_protected_operator_keys() {
    let mut cluster = cluster_spark();
    cluster.spec.roles[0].pod_labels = Some(BTreeMap::from([
        ("team".to_owned(), "a".to_owned()),
        ("tier".to_owned(), "role".to_owned()),
        (LABEL_ROLE.to_owned(), "hijack".to_owned()),
    ]));
    cluster.spec.roles[0].pod_annotations = Some(BTreeMap::from([("note".to_owned(), "role".to_owned())]));
    let cfg = kubedirector_crds::config::KubeDirectorConfigSpec {
        pod_labels: Some(BTreeMap::from([
            ("tier".to_owned(), "global".to_owned()),
            (LABEL_CLUSTER.to_owned(), "hijack".to_owned()),
        ])),
        pod_annotations: Some(BTreeMap::from([("note".to_owned(), "global".to_owned())])),
        ..Default::default()
    };
    let app = app_spark();
    let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
    let sts = build_statefulset(&info, &cluster.spec.roles[0], "kdss-abcde").unwrap();
    let tmd = sts.spec.clone().unwrap().template.metadata.unwrap();
    let l = tmd.labels.unwrap();
    assert_eq!(l["team"], "a");
    assert_eq!(l["tier"], "global");
    assert_eq!(l[LABEL_ROLE], "spark-master");
    assert_eq!(l[LABEL_CLUSTER], "spark");
    assert_eq!(sts.spec.clone().unwrap().selector.match_labels.unwrap(), l);
    let a = tmd.annotations.unwrap();
    assert_eq!(a["note"], "global");
    assert_eq!(a[ANNOTATION_PRETTY_NAME], "Spark 2.4.5 + Jupyterhub");
    // StatefulSet's own labels are not affected by pod labels.
    assert_eq!(sts.metadata.labels.unwrap().len(), 5);
}

#[test]
fn service_account_and_affinity() {
    let mut cluster = cluster_spark();
    let aff = Affinity {
        node_affinity: None,
        pod_affinity: None,
        pod_anti_affinity: None,
    };
    cluster.spec.roles[0].affinity = Some(aff.clone());
    cluster.spec.roles[0].service_account_name = Some("sa1".to_owned());
    let ps = pod_spec(&build(&cluster, &app_spark(), 0));
    assert_eq!(ps.service_account_name.as_deref(), Some("sa1"));
    assert_eq!(ps.automount_service_account_token, Some(true));
    assert_eq!(ps.affinity, Some(aff));
    let ps = pod_spec(&build(&cluster, &app_spark(), 1));
    assert_eq!(ps.service_account_name, None);
    assert_eq!(ps.automount_service_account_token, Some(false));
    assert!(ps.tolerations.is_none() && ps.node_selector.is_none() && ps.security_context.is_none());
}

#[test]
fn app_container_image_resources_ports_stdin_tty() {
    let cluster = cluster_spark();
    let sts = build(&cluster, &app_spark(), 0);
    let c = app_container(&sts);
    assert_eq!(c.name, "app");
    assert_eq!(c.image.as_deref(), Some("bluedata/spark245:5.2.0.35"));
    assert_eq!(c.resources.as_ref(), Some(&cluster.spec.roles[0].resources));
    // kdapp services order: spark-web (8080) before spark-master (7077).
    let ports: Vec<(Option<String>, i32, Option<String>)> = c
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.container_port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        vec![
            (Some("spark-web".to_owned()), 8080, Some("TCP".to_owned())),
            (Some("spark-master".to_owned()), 7077, Some("TCP".to_owned()))
        ]
    );
    assert_eq!(c.stdin, Some(false));
    assert_eq!(c.tty, Some(false));
    assert!(c.security_context.is_none());
    let cmd = c
        .lifecycle
        .unwrap()
        .post_start
        .unwrap()
        .exec
        .unwrap()
        .command
        .unwrap();
    assert_eq!(cmd[0], "/bin/bash");
    assert_eq!(cmd[1], "-c");
    assert!(cmd[2].contains("chmod 755 /run"));
}

#[test]
fn container_spec_and_capabilities() {
    let mut app = app_centos();
    app.spec.capabilities = vec!["SYS_ADMIN".to_owned()];
    app.spec.roles[0].container_spec = Some(kubedirector_crds::app::ContainerSpec {
        stdin: Some(true),
        tty: Some(true),
    });
    let cluster = cluster_centos(1);
    let c = app_container(&build(&cluster, &app, 0));
    assert_eq!(c.stdin, Some(true));
    assert_eq!(c.tty, Some(true));
    assert_eq!(
        c.security_context.unwrap().capabilities.unwrap().add,
        Some(vec!["SYS_ADMIN".to_owned()])
    );
    let ports = c.ports.unwrap();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port),
        (Some("ssh"), 22)
    );
}

#[test]
fn ports_come_from_the_first_role_services_entry_in_kdapp_services_order() {
    let cluster = cluster_spark();
    let mut app = app_spark();
    // A second entry for the same role is ignored (upstream `PortsForRole` breaks at the
    // first match); the order of `serviceIDs` does not matter, kdapp `services` order does.
    app.spec.config.role_services[0].service_ids = vec!["spark-master".to_owned(), "spark-web".to_owned()];
    let mut extra = app.spec.config.role_services[1].clone();
    extra.role_id = "spark-master".to_owned();
    app.spec.config.role_services.push(extra);
    let names: Vec<String> = app_container(&build(&cluster, &app, 0))
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["spark-web", "spark-master"]);
}

#[test]
fn env_nvidia_and_python_user_base() {
    let mut cluster = cluster_spark();
    cluster.spec.roles[0].env = vec![EnvVar {
        name: "A".to_owned(),
        value: Some("1".to_owned()),
        value_from: None,
    }];
    let env_of = |cluster: &kubedirector_crds::cluster::KubeDirectorCluster, app| {
        app_container(&build(cluster, app, 0))
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let app = app_spark();
    assert_eq!(
        env_of(&cluster, &app),
        vec![
            ("A".into(), "1".into()),
            ("NVIDIA_VISIBLE_DEVICES".into(), "void".into())
        ]
    );
    let mut new_layout = app.clone();
    if let kubedirector_crds::app::SetupPackage::Package(p) = &mut new_layout.spec.default_config_package {
        p.use_new_setup_layout = Some(true);
    }
    assert_eq!(
        env_of(&cluster, &new_layout),
        vec![
            ("A".into(), "1".into()),
            ("PYTHONUSERBASE".into(), "/usr/local".into()),
            ("NVIDIA_VISIBLE_DEVICES".into(), "void".into())
        ]
    );
    // GPU in limits only (R20: limits-or-requests).
    cluster.spec.roles[0]
        .resources
        .limits
        .as_mut()
        .unwrap()
        .insert("nvidia.com/gpu".into(), Quantity("1".into()));
    assert_eq!(env_of(&cluster, &app), vec![("A".into(), "1".into())]);
    // A zero GPU quantity does not count.
    cluster.spec.roles[0]
        .resources
        .limits
        .as_mut()
        .unwrap()
        .insert("nvidia.com/gpu".into(), Quantity("0".into()));
    assert!(env_of(&cluster, &app)
        .iter()
        .any(|(n, _)| n == "NVIDIA_VISIBLE_DEVICES"));
    cluster.spec.roles[0].resources.requests = Some(BTreeMap::from([(
        "nvidia.com/mig-1g".to_owned(),
        Quantity("2".into()),
    )]));
    assert!(!env_of(&cluster, &app)
        .iter()
        .any(|(n, _)| n == "NVIDIA_VISIBLE_DEVICES"));
}

#[test]
fn storage_gives_claim_init_container_and_persisted_dirs() {
    let mut cluster = cluster_spark();
    cluster.spec.roles[0].storage = Some(StorageSpec {
        size: Quantity("10Gi".into()),
        storage_class_name: Some("fast".into()),
    });
    let sts = build(&cluster, &app_spark(), 0);
    let spec = sts.spec.clone().unwrap();
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("p"));
    let cs = claims[0].spec.clone().unwrap();
    assert_eq!(cs.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
    assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        cs.resources.unwrap().requests.unwrap()["storage"],
        Quantity("10Gi".into())
    );
    assert_eq!(cs.volume_mode, None);

    let ps = pod_spec(&sts);
    let init = ps.init_containers.clone().unwrap();
    assert_eq!(init.len(), 1);
    let init = &init[0];
    assert_eq!(init.name, "init");
    assert_eq!(init.image.as_deref(), Some("bluedata/spark245:5.2.0.35"));
    assert_eq!(init.command, Some(vec!["/bin/bash".to_owned()]));
    let args = init.args.clone().unwrap();
    assert_eq!(args[0], "-c");
    assert!(
        args[1].contains("for d in '/etc' '/opt' '/usr' '/home'; do"),
        "{}",
        args[1]
    );
    assert_eq!(init.resources.as_ref(), Some(&cluster.spec.roles[0].resources));
    assert_eq!(init.security_context.as_ref().unwrap().run_as_user, Some(0));
    assert_eq!(mount_paths(init), vec![("p".to_owned(), "/mnt".to_owned())]);

    // Spark-master persistDirs: /usr/lib/spark/..., /home, /etc/hadoop with the legacy base.
    let c = app_container(&sts);
    let mounts = c.volume_mounts.unwrap();
    let persisted: Vec<(String, String, Option<String>)> = mounts
        .iter()
        .take(4)
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.sub_path.clone()))
        .collect();
    assert_eq!(
        persisted,
        vec![
            ("p".into(), "/etc".into(), Some("etc".into())),
            ("p".into(), "/opt".into(), Some("opt".into())),
            ("p".into(), "/usr".into(), Some("usr".into())),
            ("p".into(), "/home".into(), Some("home".into())),
        ]
    );
}

#[test]
fn no_storage_means_no_init_container_and_no_persisted_mounts() {
    let sts = build(&cluster_spark(), &app_spark(), 0);
    assert!(pod_spec(&sts).init_containers.is_none());
    let c = app_container(&sts);
    assert!(c.volume_mounts.unwrap().iter().all(|m| m.name != "p"));
}

#[test]
fn block_storage_claims_and_devices() {
    let mut cluster = cluster_spark();
    cluster.spec.roles[0].block_storage = Some(BlockStorageSpec {
        storage_class_name: "blk".into(),
        path_prefix: "/dev/xvd".into(),
        num_devices: 2,
        size: None,
    });
    let sts = build(&cluster, &app_spark(), 0);
    let claims = sts.spec.clone().unwrap().volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 2);
    for (i, c) in claims.iter().enumerate() {
        assert_eq!(c.metadata.name, Some(format!("b{i}")));
        let s = c.spec.clone().unwrap();
        assert_eq!(s.volume_mode.as_deref(), Some("Block"));
        assert_eq!(s.storage_class_name.as_deref(), Some("blk"));
        assert_eq!(s.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        assert_eq!(
            s.resources.unwrap().requests.unwrap()["storage"],
            Quantity("1Gi".into())
        );
    }
    let devs: Vec<(String, String)> = app_container(&sts)
        .volume_devices
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.device_path))
        .collect();
    assert_eq!(
        devs,
        vec![
            ("b0".into(), "/dev/xvd0".into()),
            ("b1".into(), "/dev/xvd1".into())
        ]
    );
}

#[test]
fn volumes_in_spec_order_secret_projection_shm_cgroup() {
    let mut cluster = cluster_spark();
    cluster.spec.default_secret = Some(KdSecret {
        name: "sec".into(),
        mount_path: "/etc/sec".into(),
        default_mode: Some(0o400),
        read_only: Some(true),
    });
    cluster.spec.roles[0].volume_projections = vec![
        VolumeProjection {
            pvc_name: "data".into(),
            mount_path: "/data".into(),
            read_only: Some(true),
        },
        VolumeProjection {
            pvc_name: "more".into(),
            mount_path: "/more".into(),
            read_only: None,
        },
    ];
    cluster.spec.roles[0].shared_memory = Some(Quantity("1Gi".into()));
    // spark245 has systemdRequired=true and the default kdconfig has no native support.
    let sts = build(&cluster, &app_spark(), 0);
    let c = app_container(&sts);
    assert_eq!(
        mount_paths(&c),
        vec![
            ("tmpfs-tmp".into(), "/tmp".into()),
            ("tmpfs-run".into(), "/run".into()),
            ("tmpfs-run-lock".into(), "/run/lock".into()),
            ("secret-vol-sec".into(), "/etc/sec".into()),
            ("projected-vol-0".into(), "/data".into()),
            ("projected-vol-1".into(), "/more".into()),
            ("shmem".into(), "/dev/shm".into()),
            ("cgroupfs".into(), "/sys/fs/cgroup".into()),
            ("systemd".into(), "/sys/fs/cgroup/systemd".into()),
        ]
    );
    let m = c.volume_mounts.unwrap();
    assert_eq!(m[3].read_only, Some(true));
    assert_eq!(m[4].read_only, Some(true));
    assert_eq!(m[7].read_only, Some(true));
    assert_eq!(m[8].read_only, None);
    let vols = pod_spec(&sts).volumes.unwrap();
    let names: Vec<&str> = vols.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "tmpfs-tmp",
            "tmpfs-run",
            "tmpfs-run-lock",
            "secret-vol-sec",
            "projected-vol-0",
            "projected-vol-1",
            "shmem",
            "cgroupfs",
            "systemd"
        ]
    );
    let tmp = vols[0].empty_dir.clone().unwrap();
    assert_eq!(tmp.medium.as_deref(), Some("Memory"));
    assert_eq!(tmp.size_limit, Some(Quantity("20Gi".into())));
    let sec = vols[3].secret.clone().unwrap();
    assert_eq!(sec.secret_name.as_deref(), Some("sec"));
    assert_eq!(sec.default_mode, Some(0o400));
    let pvc = vols[4].persistent_volume_claim.clone().unwrap();
    assert_eq!((pvc.claim_name.as_str(), pvc.read_only), ("data", Some(true)));
    assert_eq!(
        vols[6].empty_dir.clone().unwrap().size_limit,
        Some(Quantity("1Gi".into()))
    );
    assert_eq!(vols[7].host_path.clone().unwrap().path, "/sys/fs/cgroup");
    assert_eq!(vols[8].host_path.clone().unwrap().path, "/sys/fs/cgroup/systemd");
}

#[test]
fn role_secret_overrides_default_and_native_systemd_drops_cgroup() {
    let mut cluster = cluster_spark();
    cluster.spec.default_secret = Some(KdSecret {
        name: "d".into(),
        mount_path: "/d".into(),
        ..Default::default()
    });
    cluster.spec.roles[0].secret = Some(KdSecret {
        name: "r".into(),
        mount_path: "/r".into(),
        ..Default::default()
    });
    let cfg = kubedirector_crds::config::KubeDirectorConfigSpec {
        native_systemd_support: Some(true),
        ..Default::default()
    };
    let app = app_spark();
    let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
    let sts = build_statefulset(&info, &cluster.spec.roles[0], "x").unwrap();
    let names: Vec<String> = pod_spec(&sts)
        .volumes
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(
        names,
        vec!["tmpfs-tmp", "tmpfs-run", "tmpfs-run-lock", "secret-vol-r"]
    );
}

#[test]
fn missing_app_role_or_image_is_an_error() {
    let cluster = cluster_spark();
    let cfg = config_default();
    let info = ClusterInfo::new(&cluster, None, &cfg);
    assert_eq!(
        build_statefulset(&info, &cluster.spec.roles[0], "x"),
        Err(BuildError::AppMissing)
    );
    let mut app = app_spark();
    app.spec.default_image_repo_tag = None;
    let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
    assert!(matches!(
        build_statefulset(&info, &cluster.spec.roles[0], "x"),
        Err(BuildError::ImageMissing { .. })
    ));
    let mut role = cluster.spec.roles[0].clone();
    role.id = "nope".into();
    assert!(matches!(
        build_statefulset(&info, &role, "x"),
        Err(BuildError::AppRoleMissing { .. })
    ));
}

#[test]
fn metadata_drift_detects_labels_and_owner_changes_only() {
    let cluster = cluster_spark();
    let app = app_spark();
    let cfg = config_default();
    let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
    let mut sts = build_statefulset(&info, &cluster.spec.roles[0], "kdss-abcde").unwrap();
    assert_eq!(statefulset_metadata_drift(&info, "spark-master", &sts), None);
    // Extra user labels are fine.
    sts.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("extra".into(), "x".into());
    assert_eq!(statefulset_metadata_drift(&info, "spark-master", &sts), None);
    sts.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(LABEL_ROLE.into(), "other".into());
    let patch = statefulset_metadata_drift(&info, "spark-master", &sts).unwrap();
    assert_eq!(patch.labels.unwrap()[LABEL_ROLE], "spark-master");
    let mut sts2 = build_statefulset(&info, &cluster.spec.roles[0], "kdss-abcde").unwrap();
    sts2.metadata.owner_references = None;
    let patch = statefulset_metadata_drift(&info, "spark-master", &sts2).unwrap();
    assert_eq!(patch.owner_references.unwrap().len(), 1);
}

#[test]
fn quantity_nonzero() {
    assert!(quantity_is_nonzero(&Quantity("1".into())));
    assert!(quantity_is_nonzero(&Quantity("0.5".into())));
    assert!(!quantity_is_nonzero(&Quantity("0".into())));
    assert!(!quantity_is_nonzero(&Quantity("0m".into())));
    assert!(!quantity_is_nonzero(&Quantity("".into())));
}
