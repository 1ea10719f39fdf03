//! `KubeDirectorConfig` (kdconfig): the operator's global settings (spec section 1.5).
//!
//! Unlike the other kinds, `spec` is optional and nullable, so the root type is written by hand
//! (`spec: Option<KubeDirectorConfigSpec>`) instead of being derived with `CustomResource`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{object::HasStatus, NamespaceResourceScope, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

use crate::cluster::{NamingScheme, ServiceType};
use crate::common::{wire_enum, NAMING_SCHEME_PATTERN, SERVICE_TYPE_PATTERN};

/// The only meaningful kdconfig name.
pub const GLOBAL_CONFIG_NAME: &str = "kd-global-config";
/// Default `clusterSvcDomainBase` (note the leading dot).
pub const DEFAULT_CLUSTER_SVC_DOMAIN_BASE: &str = ".svc.cluster.local";

/// A KubeDirectorConfig (kdconfig): global operator settings. Only `kd-global-config` in the
/// KubeDirector namespace is meaningful.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorConfig {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Settings; optional and nullable (the webhook materialises it).
    #[serde(default)]
    pub spec: Option<KubeDirectorConfigSpec>,
    /// Observed state.
    #[serde(default)]
    pub status: Option<KubeDirectorConfigStatus>,
}

/// Settings of a KubeDirectorConfig. Every key is optional; the `*_or_default` getters return
/// the documented defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorConfigSpec {
    /// Storage class filled into kdcluster roles with storage but no class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub default_storage_class_name: Option<String>,
    /// Service type filled into new kdclusters (default `LoadBalancer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SERVICE_TYPE_PATTERN))]
    pub default_service_type: Option<ServiceType>,
    /// Whether the cluster supports systemd natively (false: mount host cgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_systemd_support: Option<bool>,
    /// Prefix every kdcluster secret name must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_secret_prefix: Option<String>,
    /// Suffix appended after the namespace in member FQDNs (default `.svc.cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_svc_domain_base: Option<String>,
    /// Naming scheme filled into new kdclusters (default `UID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAMING_SCHEME_PATTERN))]
    pub default_naming_scheme: Option<NamingScheme>,
    /// Hex AES-GCM key for secret keys (16, 24 or 32 bytes after decoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_encryption_key: Option<String>,
    /// Labels added to every member pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to every member pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Labels added to every per-member service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub service_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to every per-member service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub service_annotations: Option<BTreeMap<String, String>>,
    /// Mirror each kdcluster status into a kdstatusbackup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_cluster_status: Option<bool>,
    /// Let a restore finish without the connected objects present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_restore_without_connections: Option<bool>,
    /// `sharedMemory` support: unset = by Kubernetes version, true = always, false = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_shared_memory_size_support: Option<bool>,
}

wire_enum! {
    /// kdconfig state (`status.state`).
    ConfigState {
        /// `creating`
        Creating => "creating",
        /// `ready`
        Ready => "ready",
    }
}

/// The empty string (`Other("")`): not yet processed.
impl Default for ConfigState {
    fn default() -> Self {
        ConfigState::Other(String::new())
    }
}

/// Observed state of a KubeDirectorConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeDirectorConfigStatus {
    /// Random UUID regenerated on every status write.
    #[serde(rename = "generationUID")]
    pub generation_uid: String,
    /// `creating` or `ready`.
    pub state: ConfigState,
}

impl KubeDirectorConfigSpec {
    /// `defaultServiceType`, else `LoadBalancer`.
    pub fn default_service_type_or_default(&self) -> ServiceType {
        self.default_service_type.clone().unwrap_or_default()
    }

    /// `defaultNamingScheme`, else `UID`.
    pub fn default_naming_scheme_or_default(&self) -> NamingScheme {
        self.default_naming_scheme.clone().unwrap_or_default()
    }

    /// `nativeSystemdSupport`, else false.
    pub fn native_systemd_support_or_default(&self) -> bool {
        self.native_systemd_support.unwrap_or(false)
    }

    /// `requiredSecretPrefix`, else `""`.
    pub fn required_secret_prefix_or_default(&self) -> &str {
        self.required_secret_prefix.as_deref().unwrap_or("")
    }

    /// `clusterSvcDomainBase`, else `.svc.cluster.local`.
    pub fn cluster_svc_domain_base_or_default(&self) -> &str {
        self.cluster_svc_domain_base
            .as_deref()
            .unwrap_or(DEFAULT_CLUSTER_SVC_DOMAIN_BASE)
    }

    /// `backupClusterStatus`, else false.
    pub fn backup_cluster_status_or_default(&self) -> bool {
        self.backup_cluster_status.unwrap_or(false)
    }

    /// `allowRestoreWithoutConnections`, else false.
    pub fn allow_restore_without_connections_or_default(&self) -> bool {
        self.allow_restore_without_connections.unwrap_or(false)
    }
}

impl KubeDirectorConfig {
    /// A kdconfig with this name and spec.
    pub fn new(name: &str, spec: Option<KubeDirectorConfigSpec>) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// The spec, or an all-defaults spec when absent/null.
    pub fn spec_or_default(&self) -> Cow<'_, KubeDirectorConfigSpec> {
        match &self.spec {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(KubeDirectorConfigSpec::default()),
        }
    }
}

impl Serialize for KubeDirectorConfig {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let n = 3 + usize::from(self.spec.is_some()) + usize::from(self.status.is_some());
        let mut obj = ser.serialize_struct("KubeDirectorConfig", n)?;
        obj.serialize_field("apiVersion", &Self::api_version(&()))?;
        obj.serialize_field("kind", &Self::kind(&()))?;
        obj.serialize_field("metadata", &self.metadata)?;
        if let Some(spec) = &self.spec {
            obj.serialize_field("spec", spec)?;
        }
        if let Some(status) = &self.status {
            obj.serialize_field("status", status)?;
        }
        obj.end()
    }
}

impl Resource for KubeDirectorConfig {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "KubeDirectorConfig".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        crate::GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        crate::VERSION.into()
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        crate::API_VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "kubedirectorconfigs".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl HasStatus for KubeDirectorConfig {
    type Status = KubeDirectorConfigStatus;

    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }

    fn status_mut(&mut self) -> &mut Option<Self::Status> {
        &mut self.status
    }
}

impl kube::core::crd::v1::CustomResourceExt for KubeDirectorConfig {
    fn crd() -> CustomResourceDefinition {
        crate::crd::config_crd()
    }

    fn crd_name() -> &'static str {
        "kubedirectorconfigs.kubedirector.hpe.com"
    }

    fn api_resource() -> kube::core::ApiResource {
        kube::core::ApiResource::erase::<Self>(&())
    }

    fn shortnames() -> &'static [&'static str] {
        &["kdconfig"]
    }
}
