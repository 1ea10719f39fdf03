//! Pure builders of the objects a kdcluster owns (spec 3.7-3.9, 5.2): the role StatefulSets, the
//! headless cluster service and the per-member services, plus the "desired fields" comparisons
//! that tell the caller when an existing object drifted and must be restored (spec 7 R17).
//!
//! Does not need a Kubernetes client. Every builder is a plain function of the kdcluster, its
//! kdapp and the kdconfig ([`ClusterInfo`]) and returns a complete desired object.
//!
//! Label precedence (a deliberate improvement, spec 7 R17): user labels (role `podLabels` /
//! `serviceLabels`) are applied first, kdconfig labels second, and the operator's own label keys
//! (`kubedirector.hpe.com/kdcluster`, `…/kdapp`, `…/appCatalog`, `…/role`, `…/headless`) last,
//! so a user can never override the labels the operator selects on. Upstream lets user keys win.

pub mod persist;
pub mod scripts;
pub mod service;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kubedirector_crds::app::KubeDirectorApp;
use kubedirector_crds::cluster::{AppCatalog, KubeDirectorCluster, RoleSpec, ServiceType};
use kubedirector_crds::config::KubeDirectorConfigSpec;

use super::names::NamingScheme;

/// Label: name of the owning kdcluster.
pub const LABEL_CLUSTER: &str = "kubedirector.hpe.com/kdcluster";
/// Label: name of the kdapp.
pub const LABEL_APP: &str = "kubedirector.hpe.com/kdapp";
/// Label: catalog of the kdapp (`local` / `system`).
pub const LABEL_APP_CATALOG: &str = "kubedirector.hpe.com/appCatalog";
/// Label: role id.
pub const LABEL_ROLE: &str = "kubedirector.hpe.com/role";
/// Label selecting the pods of the headless cluster service (= kdcluster name).
pub const LABEL_HEADLESS: &str = "kubedirector.hpe.com/headless";
/// Annotation: kdapp `label.name`.
pub const ANNOTATION_PRETTY_NAME: &str = "kubedirector.hpe.com/kdapp-prettyName";
/// Label Kubernetes puts on StatefulSet pods with the pod name.
pub const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// Name of the app container.
pub const APP_CONTAINER: &str = "app";
/// Name of the init container.
pub const INIT_CONTAINER: &str = "init";
/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "kubedirector.hpe.com";

/// Errors of the builders: the inputs do not allow building the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The kdapp does not resolve.
    #[error("app referenced by cluster does not exist")]
    AppMissing,
    /// The kdapp has no role with this id.
    #[error("role {role} not found in kdapp {app}")]
    AppRoleMissing {
        /// kdapp name.
        app: String,
        /// Role id.
        role: String,
    },
    /// Neither the kdapp role nor the kdapp names an image.
    #[error("no image for role {role} in kdapp {app}")]
    ImageMissing {
        /// kdapp name.
        app: String,
        /// Role id.
        role: String,
    },
}

impl BuildError {
    /// Short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            BuildError::AppMissing => "app_missing",
            BuildError::AppRoleMissing { .. } => "app_role_missing",
            BuildError::ImageMissing { .. } => "image_missing",
        }
    }
}

/// Everything the builders read, resolved once per pass, with the webhook's defaults applied to
/// objects that bypassed it (spec 7 R21).
#[derive(Clone, Debug)]
pub struct ClusterInfo<'a> {
    /// The kdcluster.
    pub cluster: &'a KubeDirectorCluster,
    /// The resolved kdapp, if any.
    pub app: Option<&'a KubeDirectorApp>,
    /// The kdconfig spec (all defaults when there is no kdconfig).
    pub config: &'a KubeDirectorConfigSpec,
    /// Effective app catalog (`local` / `system`).
    pub app_catalog: String,
    /// Effective naming scheme.
    pub naming_scheme: NamingScheme,
    /// Effective member service type (`ClusterIP`, `NodePort` or `LoadBalancer`).
    pub service_type: String,
    /// Name of the headless cluster service (StatefulSet `serviceName`, DNS domain); initialised
    /// from the observed status, updated by the planner once it picks a name.
    pub cluster_service: String,
}

impl<'a> ClusterInfo<'a> {
    /// Resolves the effective settings: `appCatalog` (spec value, else `local` when the kdapp
    /// lives in the kdcluster's namespace, else `system`), `namingScheme` and `serviceType`
    /// (spec value, else the kdconfig default, else `UID` / `LoadBalancer`; an unknown service
    /// type maps to `NodePort` as upstream does, spec 3.9).
    pub fn new(
        cluster: &'a KubeDirectorCluster,
        app: Option<&'a KubeDirectorApp>,
        config: &'a KubeDirectorConfigSpec,
    ) -> Self {
        let app_catalog = match &cluster.spec.app_catalog {
            Some(c) if c.is_known() => c.as_str().to_owned(),
            _ => match app {
                Some(a)
                    if a.metadata.namespace.is_some()
                        && a.metadata.namespace != cluster.metadata.namespace =>
                {
                    AppCatalog::System.as_str().to_owned()
                }
                _ => AppCatalog::Local.as_str().to_owned(),
            },
        };
        let scheme = cluster
            .spec
            .naming_scheme
            .clone()
            .filter(|s| s.is_known())
            .unwrap_or_else(|| config.default_naming_scheme_or_default());
        let naming_scheme = NamingScheme::from_wire(Some(scheme.as_str()));
        let service_type = cluster
            .spec
            .service_type
            .clone()
            .unwrap_or_else(|| config.default_service_type_or_default());
        let service_type = match service_type {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::LoadBalancer => "LoadBalancer",
            _ => "NodePort",
        }
        .to_owned();
        let cluster_service = cluster
            .status
            .as_ref()
            .map(|s| s.cluster_service.clone())
            .unwrap_or_default();
        ClusterInfo {
            cluster,
            app,
            config,
            app_catalog,
            naming_scheme,
            service_type,
            cluster_service,
        }
    }

    /// kdcluster name.
    pub fn name(&self) -> &str {
        self.cluster.metadata.name.as_deref().unwrap_or("")
    }

    /// kdcluster namespace.
    pub fn namespace(&self) -> &str {
        self.cluster.metadata.namespace.as_deref().unwrap_or("")
    }

    /// kdcluster uid.
    pub fn uid(&self) -> &str {
        self.cluster.metadata.uid.as_deref().unwrap_or("")
    }

    /// The kdapp, or [`BuildError::AppMissing`].
    pub fn require_app(&self) -> Result<&'a KubeDirectorApp, BuildError> {
        self.app.ok_or(BuildError::AppMissing)
    }

    /// The kdapp name (`spec.app`).
    pub fn app_name(&self) -> &str {
        &self.cluster.spec.app
    }

    /// The desired number of members of a role: `members`, else (webhook default) the kdapp
    /// role's cardinality number, else 0. Negative values count as 0.
    pub fn desired_members(&self, role: &RoleSpec) -> usize {
        self.known_desired_members(role).unwrap_or(0)
    }

    /// Like [`ClusterInfo::desired_members`], but `None` when the number cannot be known: the
    /// role has no `members` (it bypassed the webhook) and the kdapp that would supply the
    /// cardinality default does not resolve. Role sync leaves such a role as it is rather than
    /// shrinking it to 0 while the kdapp is temporarily missing (spec 3.14, 7 R21).
    pub fn known_desired_members(&self, role: &RoleSpec) -> Option<usize> {
        let n = match role.members {
            Some(n) => i64::from(n),
            None => self
                .app?
                .spec
                .role(&role.id)
                .and_then(|r| r.parsed_cardinality())
                .map_or(0, |c| i64::from(c.min)),
        };
        Some(usize::try_from(n.max(0)).unwrap_or(0))
    }

    /// `true` when the kdapp role has a setup package (spec 1.2 resolution; no kdapp = none).
    pub fn role_has_setup_package(&self, role_id: &str) -> bool {
        self.app
            .and_then(|a| a.spec.role_setup_package(role_id))
            .is_some()
    }

    /// Labels shared by every generated object: kdcluster, kdapp and appCatalog.
    pub fn base_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_CLUSTER.to_owned(), self.name().to_owned()),
            (LABEL_APP.to_owned(), self.app_name().to_owned()),
            (LABEL_APP_CATALOG.to_owned(), self.app_catalog.clone()),
        ])
    }

    /// The prettyName annotation (only when the kdapp resolves).
    pub fn base_annotations(&self) -> BTreeMap<String, String> {
        self.app
            .map(|a| BTreeMap::from([(ANNOTATION_PRETTY_NAME.to_owned(), a.spec.label.name.clone())]))
            .unwrap_or_default()
    }

    /// The single owner reference every owned object carries: the kdcluster, controller=true,
    /// blockOwnerDeletion=false (spec 3.12).
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "kubedirector.hpe.com/v1beta1".to_owned(),
            kind: "KubeDirectorCluster".to_owned(),
            name: self.name().to_owned(),
            uid: self.uid().to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(false),
        }
    }

    /// The kdcluster's role spec list (spec order).
    pub fn roles(&self) -> &'a [RoleSpec] {
        &self.cluster.spec.roles
    }
}

/// Overlays `layers` in order (later wins), then forces `protected` on top.
pub fn merge_labels(
    layers: &[Option<&BTreeMap<String, String>>],
    protected: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for layer in layers.iter().flatten() {
        out.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out.extend(protected.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// `true` when every entry of `desired` is present with the same value in `observed`.
pub fn is_subset(desired: &BTreeMap<String, String>, observed: Option<&BTreeMap<String, String>>) -> bool {
    desired
        .iter()
        .all(|(k, v)| observed.and_then(|o| o.get(k)) == Some(v))
}

/// `true` when `observed` is exactly the single owner reference `desired` (compared on
/// apiVersion, kind, name, uid, controller and blockOwnerDeletion).
pub fn owner_refs_match(desired: &OwnerReference, observed: Option<&Vec<OwnerReference>>) -> bool {
    match observed.map(Vec::as_slice) {
        Some([one]) => one == desired,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::{app_spark, cluster_spark, config_default};

    #[test]
    fn cluster_info_applies_webhook_defaults() {
        let mut cluster = cluster_spark();
        cluster.spec.app_catalog = None;
        cluster.spec.naming_scheme = None;
        cluster.spec.service_type = None;
        let app = app_spark();
        let cfg = config_default();
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        assert_eq!(info.app_catalog, "local");
        assert_eq!(info.naming_scheme, NamingScheme::Uid);
        assert_eq!(info.service_type, "LoadBalancer");

        let mut sys_app = app.clone();
        sys_app.metadata.namespace = Some("kd-system".to_owned());
        let info = ClusterInfo::new(&cluster, Some(&sys_app), &cfg);
        assert_eq!(info.app_catalog, "system");

        let cfg = KubeDirectorConfigSpec {
            default_service_type: Some(ServiceType::ClusterIp),
            default_naming_scheme: Some(kubedirector_crds::cluster::NamingScheme::CrNameRole),
            ..KubeDirectorConfigSpec::default()
        };
        let info = ClusterInfo::new(&cluster, None, &cfg);
        assert_eq!(info.service_type, "ClusterIP");
        assert_eq!(info.naming_scheme, NamingScheme::CrNameRole);
        assert_eq!(info.app_catalog, "local");
    }

    #[test]
    fn unknown_service_type_maps_to_node_port() {
        let mut cluster = cluster_spark();
        cluster.spec.service_type = Some(ServiceType::from_wire("Weird"));
        let cfg = config_default();
        assert_eq!(ClusterInfo::new(&cluster, None, &cfg).service_type, "NodePort");
        cluster.spec.service_type = Some(ServiceType::NodePort);
        assert_eq!(ClusterInfo::new(&cluster, None, &cfg).service_type, "NodePort");
    }

    #[test]
    fn desired_members_defaults_to_cardinality() {
        let mut cluster = cluster_spark();
        let app = app_spark();
        let cfg = config_default();
        cluster.spec.roles[0].members = None;
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        // spark-master has cardinality "1".
        assert_eq!(info.desired_members(&cluster.spec.roles[0]), 1);
        let info = ClusterInfo::new(&cluster, None, &cfg);
        assert_eq!(info.desired_members(&cluster.spec.roles[0]), 0);
        assert_eq!(info.known_desired_members(&cluster.spec.roles[0]), None);
        assert_eq!(info.known_desired_members(&cluster.spec.roles[1]), Some(2));
        let mut role = cluster.spec.roles[0].clone();
        role.members = Some(-3);
        assert_eq!(info.desired_members(&role), 0);
    }

    #[test]
    fn owner_reference_is_controller_without_block_owner_deletion() {
        let cluster = cluster_spark();
        let cfg = config_default();
        let info = ClusterInfo::new(&cluster, None, &cfg);
        let o = info.owner_reference();
        assert_eq!(o.api_version, "kubedirector.hpe.com/v1beta1");
        assert_eq!(o.kind, "KubeDirectorCluster");
        assert_eq!(o.name, "spark");
        assert_eq!(o.uid, "uid-spark");
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, Some(false));
        assert!(owner_refs_match(&o, Some(&vec![o.clone()])));
        assert!(!owner_refs_match(&o, Some(&vec![o.clone(), o.clone()])));
        assert!(!owner_refs_match(&o, None));
    }

    #[test]
    fn merge_labels_protects_operator_keys() {
        let user = BTreeMap::from([
            ("a".to_owned(), "u".to_owned()),
            (LABEL_ROLE.to_owned(), "evil".to_owned()),
        ]);
        let global = BTreeMap::from([("a".to_owned(), "g".to_owned())]);
        let protected = BTreeMap::from([(LABEL_ROLE.to_owned(), "worker".to_owned())]);
        let out = merge_labels(&[Some(&user), Some(&global), None], &protected);
        assert_eq!(out.get("a").map(String::as_str), Some("g"));
        assert_eq!(out.get(LABEL_ROLE).map(String::as_str), Some("worker"));
    }
}
