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
#[path = "statefulset_tests.rs"]
mod tests;
