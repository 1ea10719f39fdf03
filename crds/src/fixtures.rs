//! Chainable builders for tests (feature `test-util`).
//!
//! ```
//! use kubedirector_crds::{KubeDirectorApp, KubeDirectorCluster};
//!
//! let app = KubeDirectorApp::test("spark")
//!     .with_service("ssh", Some(22))
//!     .with_role("worker", "1+")
//!     .with_role_services("worker", &["ssh"]);
//! let cluster = KubeDirectorCluster::test("c1", "spark").with_role("worker", 2);
//! assert_eq!(app.spec.role_services("worker").len(), 1);
//! assert_eq!(cluster.spec.total_members(), 2);
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{
    AppConfig, AppLabel, AppRole, AppService, ClusterState, KubeDirectorApp, KubeDirectorAppSpec,
    KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus, KubeDirectorConfig,
    KubeDirectorConfigSpec, MemberState, MemberStatus, RoleService, RoleSpec, RoleStatus, ServiceEndpoint,
    ServiceLabel, SetupPackage, GLOBAL_CONFIG_NAME,
};

/// Namespace the builders put objects in unless told otherwise.
pub const TEST_NAMESPACE: &str = "default";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(TEST_NAMESPACE.to_owned()),
        ..ObjectMeta::default()
    }
}

/// `limits` = `requests` = `{memory, cpu}`.
pub fn resources(memory: &str, cpu: &str) -> ResourceRequirements {
    let list = BTreeMap::from([
        ("memory".to_owned(), Quantity(memory.to_owned())),
        ("cpu".to_owned(), Quantity(cpu.to_owned())),
    ]);
    ResourceRequirements {
        limits: Some(list.clone()),
        requests: Some(list),
        claims: None,
    }
}

impl KubeDirectorApp {
    /// A minimal app in `default`: label = name, distroID `test/<name>`, version `1.0`,
    /// configSchemaVersion 7, defaultImageRepoTag `docker.io/test/<name>:1`, no roles or services.
    pub fn test(name: &str) -> Self {
        let spec = KubeDirectorAppSpec {
            label: AppLabel {
                name: name.to_owned(),
                ..AppLabel::default()
            },
            distro_id: format!("test/{name}"),
            version: "1.0".into(),
            config_schema_version: 7,
            default_image_repo_tag: Some(format!("docker.io/test/{name}:1")),
            default_config_package: SetupPackage::Absent,
            default_persist_dirs: None,
            default_event_list: None,
            default_max_log_size_dump: None,
            services: Vec::new(),
            roles: Vec::new(),
            config: AppConfig::default(),
            capabilities: Vec::new(),
            systemd_required: None,
            logo_url: None,
            extra: BTreeMap::new(),
        };
        let mut app = KubeDirectorApp::new(name, spec);
        app.metadata = meta(name);
        app
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Adds a role (also to `config.selectedRoles`).
    pub fn with_role(mut self, id: &str, cardinality: &str) -> Self {
        self.spec.roles.push(AppRole {
            id: id.to_owned(),
            cardinality: cardinality.to_owned(),
            ..AppRole::default()
        });
        self.spec.config.selected_roles.push(id.to_owned());
        self
    }

    /// Modifies an existing role (no-op when absent).
    pub fn with_role_mut(mut self, id: &str, f: impl FnOnce(&mut AppRole)) -> Self {
        if let Some(role) = self.spec.roles.iter_mut().find(|r| r.id == id) {
            f(role);
        }
        self
    }

    /// Adds a service, with an endpoint when `port` is given.
    pub fn with_service(mut self, id: &str, port: Option<i32>) -> Self {
        self.spec.services.push(AppService {
            id: id.to_owned(),
            label: Some(ServiceLabel {
                name: id.to_owned(),
                description: None,
            }),
            endpoint: port.map(|port| ServiceEndpoint {
                port,
                ..ServiceEndpoint::default()
            }),
            ..AppService::default()
        });
        self
    }

    /// Adds a `config.roleServices` entry.
    pub fn with_role_services(mut self, role: &str, services: &[&str]) -> Self {
        self.spec.config.role_services.push(RoleService {
            role_id: role.to_owned(),
            service_ids: services.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// Sets `defaultConfigPackage`.
    pub fn with_default_package(mut self, package: SetupPackage) -> Self {
        self.spec.default_config_package = package;
        self
    }

    /// Sets a role's `configPackage` (no-op when the role is absent).
    pub fn with_role_package(self, role: &str, package: SetupPackage) -> Self {
        self.with_role_mut(role, |r| r.config_package = package)
    }
}

impl KubeDirectorCluster {
    /// A kdcluster in `default` instantiating `app`, without roles or status.
    pub fn test(name: &str, app: &str) -> Self {
        let mut cluster = KubeDirectorCluster::new(
            name,
            KubeDirectorClusterSpec {
                app: app.to_owned(),
                ..Default::default()
            },
        );
        cluster.metadata = meta(name);
        cluster
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Sets `metadata.uid`.
    pub fn with_uid(mut self, uid: &str) -> Self {
        self.metadata.uid = Some(uid.to_owned());
        self
    }

    /// Adds a role with `members` members and 1Gi / 1 cpu resources.
    pub fn with_role(mut self, id: &str, members: i32) -> Self {
        self.spec.roles.push(RoleSpec {
            id: id.to_owned(),
            members: Some(members),
            resources: resources("1Gi", "1"),
            ..RoleSpec::default()
        });
        self
    }

    /// Modifies an existing role (no-op when absent).
    pub fn with_role_mut(mut self, id: &str, f: impl FnOnce(&mut RoleSpec)) -> Self {
        if let Some(role) = self.spec.role_mut(id) {
            f(role);
        }
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: KubeDirectorClusterStatus) -> Self {
        self.status = Some(status);
        self
    }
}

impl KubeDirectorClusterStatus {
    /// An empty status in `state`.
    pub fn test(state: ClusterState) -> Self {
        KubeDirectorClusterStatus {
            state,
            ..KubeDirectorClusterStatus::default()
        }
    }

    /// Adds a role status with the given StatefulSet name.
    pub fn with_role(mut self, id: &str, stateful_set: &str, members: Vec<MemberStatus>) -> Self {
        self.roles.push(RoleStatus {
            id: id.to_owned(),
            stateful_set: stateful_set.to_owned(),
            members,
        });
        self
    }
}

impl MemberStatus {
    /// A member status for `pod` (service `s-<pod>`) with this node id and state.
    pub fn test(pod: &str, node_id: i64, state: MemberState) -> Self {
        MemberStatus {
            pod: pod.to_owned(),
            service: format!("s-{pod}"),
            node_id,
            state,
            ..MemberStatus::default()
        }
    }
}

impl KubeDirectorConfig {
    /// `kd-global-config` in `default` with this spec.
    pub fn test(spec: Option<KubeDirectorConfigSpec>) -> Self {
        let mut config = KubeDirectorConfig::new(GLOBAL_CONFIG_NAME, spec);
        config.metadata = meta(GLOBAL_CONFIG_NAME);
        config
    }
}
