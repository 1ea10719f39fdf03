//! The StatefulSet of one role (spec 3.7, 5.2).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, HostPathVolumeSource,
    Lifecycle, LifecycleHandler, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements, SecretVolumeSource,
    SecurityContext, Volume, VolumeDevice, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kubedirector_crds::app::AppService;
use kubedirector_crds::cluster::{KdSecret, RoleSpec};

use super::persist::{base_dirs, persisted_dirs};
use super::scripts::{init_container_script, post_start_script};
use super::{
    is_subset, merge_labels, owner_refs_match, BuildError, ClusterInfo, APP_CONTAINER, INIT_CONTAINER,
    LABEL_HEADLESS, LABEL_ROLE,
};
use crate::plan::names::{block_device_path, block_template_name, PVC_TEMPLATE};

/// Size limit of the tmpfs volumes.
pub const TMPFS_SIZE_LIMIT: &str = "20Gi";
/// Default size of a block device claim.
pub const DEFAULT_BLOCK_SIZE: &str = "1Gi";
/// The tmpfs volumes and their mount paths, in order.
pub const TMPFS_VOLUMES: &[(&str, &str)] = &[
    ("tmpfs-tmp", "/tmp"),
    ("tmpfs-run", "/run"),
    ("tmpfs-run-lock", "/run/lock"),
];
/// Host cgroup filesystem (mounted read-only when systemd is emulated).
pub const CGROUP_FS: &str = "/sys/fs/cgroup";
/// Host systemd cgroup directory.
pub const SYSTEMD_FS: &str = "/sys/fs/cgroup/systemd";

/// Labels of a role's StatefulSet: kdcluster, kdapp, appCatalog, role, headless.
pub fn statefulset_labels(info: &ClusterInfo<'_>, role_id: &str) -> BTreeMap<String, String> {
    let mut labels = info.base_labels();
    labels.insert(LABEL_ROLE.to_owned(), role_id.to_owned());
    labels.insert(LABEL_HEADLESS.to_owned(), info.name().to_owned());
    labels
}

/// Pod template labels (and selector): role `podLabels`, then kdconfig `podLabels`, then the
/// StatefulSet labels, which always win (spec 7 R17 improvement; upstream lets user keys win).
pub fn pod_labels(info: &ClusterInfo<'_>, role: &RoleSpec) -> BTreeMap<String, String> {
    merge_labels(
        &[role.pod_labels.as_ref(), info.config.pod_labels.as_ref()],
        &statefulset_labels(info, &role.id),
    )
}

/// Pod template annotations: prettyName, then role `podAnnotations`, then kdconfig
/// `podAnnotations`.
pub fn pod_annotations(info: &ClusterInfo<'_>, role: &RoleSpec) -> BTreeMap<String, String> {
    merge_labels(
        &[
            Some(&info.base_annotations()),
            role.pod_annotations.as_ref(),
            info.config.pod_annotations.as_ref(),
        ],
        &BTreeMap::new(),
    )
}

/// The kdapp services of a role that have an endpoint port, in kdapp `services` order
/// (spec 3.7 container ports, 3.9 member service ports). Only the **first** `roleServices` entry
/// naming the role counts, as upstream's `PortsForRole` stops at the first match.
pub fn role_port_services<'a>(info: &ClusterInfo<'a>, role_id: &str) -> Vec<&'a AppService> {
    let Some(app) = info.app else { return Vec::new() };
    let Some(entry) = app
        .spec
        .config
        .role_services
        .iter()
        .find(|rs| rs.role_id == role_id)
    else {
        return Vec::new();
    };
    app.spec
        .services
        .iter()
        .filter(|s| entry.service_ids.contains(&s.id) && s.endpoint.is_some())
        .collect()
}

/// `true` when a quantity string has a non-zero numeric part.
pub fn quantity_is_nonzero(q: &Quantity) -> bool {
    q.0.trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .any(|c| c.is_ascii_digit() && c != '0')
}

/// `true` when the role's `limits` or `requests` hold a non-zero `nvidia.com/*` quantity (spec 7
/// R20: upstream consults requests only).
pub fn requests_nvidia_gpu(resources: &ResourceRequirements) -> bool {
    [resources.limits.as_ref(), resources.requests.as_ref()]
        .into_iter()
        .flatten()
        .any(|m| {
            m.iter()
                .any(|(k, v)| k.starts_with("nvidia.com/") && quantity_is_nonzero(v))
        })
}

/// The effective secret of a role: its own `secret`, else the kdcluster `defaultSecret` (the
/// webhook's defaulting, applied again for objects that bypassed it, R21).
pub fn role_secret<'a>(info: &ClusterInfo<'a>, role: &'a RoleSpec) -> Option<&'a KdSecret> {
    role.secret.as_ref().or(info.cluster.spec.default_secret.as_ref())
}

/// The persisted directories of a role (only meaningful with `storage`).
pub fn role_persisted_dirs(info: &ClusterInfo<'_>, role_id: &str) -> Vec<String> {
    let package = info.app.and_then(|a| a.spec.role_setup_package(role_id));
    let base = base_dirs(package.map(|p| p.uses_new_setup_layout()));
    let app_dirs = info
        .app
        .and_then(|a| a.spec.role_persist_dirs(role_id))
        .unwrap_or(&[]);
    persisted_dirs(base, app_dirs)
}

fn memory_empty_dir(size: Quantity) -> EmptyDirVolumeSource {
    EmptyDirVolumeSource {
        medium: Some("Memory".to_owned()),
        size_limit: Some(size),
    }
}

/// Builds the StatefulSet of `role` named `name` with 0 replicas (spec 3.7).
pub fn build_statefulset(
    info: &ClusterInfo<'_>,
    role: &RoleSpec,
    name: &str,
) -> Result<StatefulSet, BuildError> {
    let app = info.require_app()?;
    let app_role = app
        .spec
        .role(&role.id)
        .ok_or_else(|| BuildError::AppRoleMissing {
            app: info.app_name().to_owned(),
            role: role.id.clone(),
        })?;
    let image = app
        .spec
        .role_image(&role.id)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| BuildError::ImageMissing {
            app: info.app_name().to_owned(),
            role: role.id.clone(),
        })?
        .to_owned();
    let package = app.spec.role_setup_package(&role.id);
    let cluster_service = info.cluster_service.clone();

    let labels = pod_labels(info, role);

    // Volume claim templates.
    let mut claims = Vec::new();
    if let Some(storage) = &role.storage {
        claims.push(PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(PVC_TEMPLATE.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_owned(), storage.size.clone())])),
                    ..VolumeResourceRequirements::default()
                }),
                storage_class_name: storage.storage_class_name.clone(),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        });
    }
    let num_block = role
        .block_storage
        .as_ref()
        .map(|b| usize::try_from(b.num_devices.max(0)).unwrap_or(0))
        .unwrap_or(0);
    if let Some(block) = &role.block_storage {
        let size = block
            .size
            .clone()
            .unwrap_or_else(|| Quantity(DEFAULT_BLOCK_SIZE.to_owned()));
        for i in 0..num_block {
            claims.push(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(block_template_name(i)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".to_owned(), size.clone())])),
                        ..VolumeResourceRequirements::default()
                    }),
                    storage_class_name: Some(block.storage_class_name.clone()),
                    volume_mode: Some("Block".to_owned()),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            });
        }
    }

    // Volumes and mounts, in the order of spec 3.7.
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    let persisted = if role.storage.is_some() {
        role_persisted_dirs(info, &role.id)
    } else {
        Vec::new()
    };
    for dir in &persisted {
        mounts.push(VolumeMount {
            name: PVC_TEMPLATE.to_owned(),
            mount_path: dir.clone(),
            sub_path: Some(dir.trim_start_matches('/').to_owned()),
            ..VolumeMount::default()
        });
    }
    for (vol, path) in TMPFS_VOLUMES {
        mounts.push(VolumeMount {
            name: (*vol).to_owned(),
            mount_path: (*path).to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: (*vol).to_owned(),
            empty_dir: Some(memory_empty_dir(Quantity(TMPFS_SIZE_LIMIT.to_owned()))),
            ..Volume::default()
        });
    }
    if let Some(secret) = role_secret(info, role) {
        let vol = format!("secret-vol-{}", secret.name);
        mounts.push(VolumeMount {
            name: vol.clone(),
            mount_path: secret.mount_path.clone(),
            read_only: secret.read_only,
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: vol,
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                default_mode: secret.default_mode,
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    for (i, proj) in role.volume_projections.iter().enumerate() {
        let vol = format!("projected-vol-{i}");
        mounts.push(VolumeMount {
            name: vol.clone(),
            mount_path: proj.mount_path.clone(),
            read_only: proj.read_only,
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: vol,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: proj.pvc_name.clone(),
                read_only: proj.read_only,
            }),
            ..Volume::default()
        });
    }
    if let Some(shm) = &role.shared_memory {
        mounts.push(VolumeMount {
            name: "shmem".to_owned(),
            mount_path: "/dev/shm".to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "shmem".to_owned(),
            empty_dir: Some(memory_empty_dir(shm.clone())),
            ..Volume::default()
        });
    }
    if app.spec.requires_systemd() && !info.config.native_systemd_support_or_default() {
        mounts.push(VolumeMount {
            name: "cgroupfs".to_owned(),
            mount_path: CGROUP_FS.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        mounts.push(VolumeMount {
            name: "systemd".to_owned(),
            mount_path: SYSTEMD_FS.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "cgroupfs".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: CGROUP_FS.to_owned(),
                type_: None,
            }),
            ..Volume::default()
        });
        volumes.push(Volume {
            name: "systemd".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: SYSTEMD_FS.to_owned(),
                type_: None,
            }),
            ..Volume::default()
        });
    }

    // Environment.
    let mut env = role.env.clone();
    if package.is_some_and(|p| p.uses_new_setup_layout()) {
        env.push(EnvVar {
            name: "PYTHONUSERBASE".to_owned(),
            value: Some("/usr/local".to_owned()),
            value_from: None,
        });
    }
    if !requests_nvidia_gpu(&role.resources) {
        env.push(EnvVar {
            name: "NVIDIA_VISIBLE_DEVICES".to_owned(),
            value: Some("void".to_owned()),
            value_from: None,
        });
    }

    let ports: Vec<ContainerPort> = role_port_services(info, &role.id)
        .into_iter()
        .filter_map(|s| {
            s.endpoint.as_ref().map(|e| ContainerPort {
                name: Some(s.id.clone()),
                container_port: e.port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            })
        })
        .collect();

    let block_prefix = role
        .block_storage
        .as_ref()
        .map(|b| b.path_prefix.clone())
        .unwrap_or_default();
    let devices: Vec<VolumeDevice> = (0..num_block)
        .map(|i| VolumeDevice {
            name: block_template_name(i),
            device_path: block_device_path(&block_prefix, i),
        })
        .collect();

    let container_spec = app_role.container_spec.clone().unwrap_or_default();
    let app_container = Container {
        name: APP_CONTAINER.to_owned(),
        image: Some(image.clone()),
        resources: Some(role.resources.clone()),
        ports: (!ports.is_empty()).then_some(ports),
        env: (!env.is_empty()).then_some(env),
        security_context: (!app.spec.capabilities.is_empty()).then(|| SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(app.spec.capabilities.clone()),
                drop: None,
            }),
            ..SecurityContext::default()
        }),
        stdin: Some(container_spec.stdin.unwrap_or(false)),
        tty: Some(container_spec.tty.unwrap_or(false)),
        lifecycle: Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/bash".to_owned(),
                        "-c".to_owned(),
                        post_start_script(&cluster_service),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        volume_devices: (!devices.is_empty()).then_some(devices),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    };

    let init_containers = role.storage.as_ref().map(|_| {
        vec![Container {
            name: INIT_CONTAINER.to_owned(),
            image: Some(image.clone()),
            command: Some(vec!["/bin/bash".to_owned()]),
            args: Some(vec!["-c".to_owned(), init_container_script(&persisted)]),
            resources: Some(role.resources.clone()),
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: PVC_TEMPLATE.to_owned(),
                mount_path: "/mnt".to_owned(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        }]
    });

    let sa = role.service_account_name.clone().filter(|s| !s.is_empty());
    let pod_spec = PodSpec {
        automount_service_account_token: Some(sa.is_some()),
        service_account_name: sa,
        affinity: role.affinity.clone(),
        init_containers,
        containers: vec![app_container],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..PodSpec::default()
    };

    Ok(StatefulSet {
        metadata: statefulset_metadata(info, &role.id, name),
        spec: Some(StatefulSetSpec {
            replicas: Some(0),
            pod_management_policy: Some("Parallel".to_owned()),
            service_name: Some(cluster_service),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            volume_claim_templates: (!claims.is_empty()).then_some(claims),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations(info, role)).filter(|a| !a.is_empty()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

/// The desired metadata of a role's StatefulSet: name, namespace, labels, prettyName annotation
/// and the single controller owner reference.
pub fn statefulset_metadata(info: &ClusterInfo<'_>, role_id: &str, name: &str) -> ObjectMeta {
    let annotations = info.base_annotations();
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(info.namespace().to_owned()),
        labels: Some(statefulset_labels(info, role_id)),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: Some(vec![info.owner_reference()]),
        ..ObjectMeta::default()
    }
}

/// Drift check of an existing StatefulSet (spec 7 R17, 3.12): returns the metadata patch to
/// apply when its operator labels, prettyName annotation or owner references differ from the
/// desired ones. The pod template, selector and claim templates are never re-applied: the
/// selector and claims are immutable and a template change would roll every member.
pub fn statefulset_metadata_drift(
    info: &ClusterInfo<'_>,
    role_id: &str,
    observed: &StatefulSet,
) -> Option<ObjectMeta> {
    let name = observed.metadata.name.clone().unwrap_or_default();
    let desired = statefulset_metadata(info, role_id, &name);
    let labels_ok = is_subset(desired.labels.as_ref()?, observed.metadata.labels.as_ref());
    let ann_ok = desired
        .annotations
        .as_ref()
        .is_none_or(|a| is_subset(a, observed.metadata.annotations.as_ref()));
    let owner_ok = owner_refs_match(
        &info.owner_reference(),
        observed.metadata.owner_references.as_ref(),
    );
    if labels_ok && ann_ok && owner_ok {
        None
    } else {
        Some(ObjectMeta {
            labels: desired.labels,
            annotations: desired.annotations,
            owner_references: desired.owner_references,
            ..ObjectMeta::default()
        })
    }
}

#[cfg(test)]
mod tests {
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
        cluster.spec.roles[0].pod_annotations =
            Some(BTreeMap::from([("note".to_owned(), "role".to_owned())]));
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
        app.spec.config.role_services[0].service_ids =
            vec!["spark-master".to_owned(), "spark-web".to_owned()];
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
        if let kubedirector_crds::app::SetupPackage::Package(p) = &mut new_layout.spec.default_config_package
        {
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
}
