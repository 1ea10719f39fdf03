//! `KubeDirectorApp` (kdapp): an application type / catalog entry (spec section 1.2).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::common::{
    min_resources_schema, quantity_schema, wire_enum, DNS_LABEL_PATTERN, EVENT_PATTERN, LOGO_URL_PATTERN,
    PACKAGE_URL_PATTERN, PERSIST_DIR_PATTERN, ROLE_ID_PATTERN,
};

/// Default number of bytes of startscript stdout/stderr kept in member status when neither the
/// role nor the app says otherwise.
pub const DEFAULT_MAX_LOG_SIZE_DUMP: i64 = 256;

/// Specification of a KubeDirectorApp: the application type a kdcluster instantiates.
///
/// Unknown keys are preserved (upstream marks `spec` with `x-kubernetes-preserve-unknown-fields`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubedirector.hpe.com",
    version = "v1beta1",
    kind = "KubeDirectorApp",
    plural = "kubedirectorapps",
    singular = "kubedirectorapp",
    shortname = "kdapp",
    namespaced,
    schema = "manual",
    derive = "PartialEq",
    doc = "A KubeDirectorApp (kdapp): an application type that kdclusters instantiate.",
    printcolumn = r#"{"name":"App Name","type":"string","description":"Human-readable app name","jsonPath":".spec.label.name"}"#,
    printcolumn = r#"{"name":"Distro ID","type":"string","description":"Unique identifier of a series of kdapp versions","jsonPath":".spec.distroID"}"#,
    printcolumn = r#"{"name":"Version","type":"string","description":"A specific release of a kdapp distro ID","jsonPath":".spec.version"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct KubeDirectorAppSpec {
    /// Human-readable name and description of the app.
    pub label: AppLabel,
    /// Identifier of a series of versions of this app (copied to configmeta `distro_id`).
    #[serde(rename = "distroID")]
    #[schemars(length(min = 1))]
    pub distro_id: String,
    /// A specific release of the distro (copied to configmeta `catalog_entry_version`).
    #[schemars(length(min = 1))]
    pub version: String,
    /// Version of the configmeta schema the app's scripts expect (at least 7).
    #[schemars(range(min = 7))]
    pub config_schema_version: i64,
    /// Image for roles that do not name one (removed by the webhook after defaulting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub default_image_repo_tag: Option<String>,
    /// Setup package for roles that do not name one; tri-state: absent, explicit null (no
    /// package) or a package (removed by the webhook after defaulting).
    #[serde(default, skip_serializing_if = "SetupPackage::is_absent")]
    pub default_config_package: SetupPackage,
    /// Persisted directories for roles that do not list any (removed by the webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = PERSIST_DIR_PATTERN)))]
    pub default_persist_dirs: Option<Vec<String>>,
    /// Lifecycle events for roles that do not list any (removed by the webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = EVENT_PATTERN)))]
    pub default_event_list: Option<Vec<EventName>>,
    /// Startscript log bytes kept in status for roles that do not say (removed by the webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub default_max_log_size_dump: Option<i64>,
    /// Services the app's roles can expose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<AppService>,
    /// The app's roles (groups of identical members).
    pub roles: Vec<AppRole>,
    /// Role/service wiring and configmeta settings.
    pub config: AppConfig,
    /// Linux capabilities added to every app container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1)))]
    pub capabilities: Vec<String>,
    /// Whether the app image runs systemd (cgroup mounts, systemd readiness before configure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_required: Option<bool>,
    /// Logo of the app (informational only).
    #[serde(rename = "logoURL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), regex(pattern = LOGO_URL_PATTERN))]
    pub logo_url: Option<String>,
    /// Unknown keys, preserved verbatim (upstream schema preserves unknown fields here).
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Human-readable label of a kdapp. Unknown keys are preserved.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct AppLabel {
    /// Display name; becomes the `kubedirector.hpe.com/kdapp-prettyName` annotation.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unknown keys, preserved verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Location of a setup package (`{packageURL, useNewSetupLayout}`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetupPackageUrl {
    /// URL of the package tarball (`file://`, `http://` or `https://`, ending in `.tgz`).
    #[serde(rename = "packageURL")]
    #[schemars(regex(pattern = PACKAGE_URL_PATTERN))]
    pub package_url: String,
    /// Whether the package uses the new setup layout (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_new_setup_layout: Option<bool>,
}

impl SetupPackageUrl {
    /// A package at `url` with the default (old) layout flag left unset.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            package_url: url.into(),
            use_new_setup_layout: None,
        }
    }

    /// Effective `useNewSetupLayout` (false when unset).
    pub fn uses_new_setup_layout(&self) -> bool {
        self.use_new_setup_layout.unwrap_or(false)
    }
}

/// Tri-state setup package: key absent ("inherit"), explicit JSON `null` ("no setup package"),
/// or a package. Use with `#[serde(default, skip_serializing_if = "SetupPackage::is_absent")]`
/// so absent stays absent and null round-trips as an explicit null.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SetupPackage {
    /// The key is absent: inherit (from the app default, if any).
    #[default]
    Absent,
    /// Explicit `null`: no setup package.
    Null,
    /// A setup package.
    Package(SetupPackageUrl),
}

impl SetupPackage {
    /// `true` when the key is absent.
    pub fn is_absent(&self) -> bool {
        matches!(self, SetupPackage::Absent)
    }

    /// `true` for an explicit `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, SetupPackage::Null)
    }

    /// The package, if this is one.
    pub fn package(&self) -> Option<&SetupPackageUrl> {
        match self {
            SetupPackage::Package(p) => Some(p),
            _ => None,
        }
    }

    /// `Some(self)` unless absent: the value to use when resolving inheritance.
    pub fn explicit(&self) -> Option<&SetupPackage> {
        (!self.is_absent()).then_some(self)
    }
}

impl From<SetupPackageUrl> for SetupPackage {
    fn from(p: SetupPackageUrl) -> Self {
        SetupPackage::Package(p)
    }
}

impl Serialize for SetupPackage {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            SetupPackage::Absent | SetupPackage::Null => ser.serialize_none(),
            SetupPackage::Package(p) => p.serialize(ser),
        }
    }
}

impl<'de> Deserialize<'de> for SetupPackage {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Ok(match Option::<SetupPackageUrl>::deserialize(de)? {
            None => SetupPackage::Null,
            Some(p) => SetupPackage::Package(p),
        })
    }
}

impl JsonSchema for SetupPackage {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SetupPackage".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = generator.subschema_for::<SetupPackageUrl>();
        schema.insert("nullable".into(), true.into());
        schema
    }
}

wire_enum! {
    /// A lifecycle event that invokes a role's startscript (`eventList` entries).
    EventName {
        /// `configure`
        Configure => "configure",
        /// `addnodes`
        AddNodes => "addnodes",
        /// `delnodes`
        DelNodes => "delnodes",
    }
}

/// A service an app role can expose (`services[]`). Unknown keys are preserved.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct AppService {
    /// Service id (DNS label, 1-15 chars); also the container port name.
    #[schemars(length(min = 1, max = 15), regex(pattern = DNS_LABEL_PATTERN))]
    pub id: String,
    /// Display label of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub label: Option<ServiceLabel>,
    /// Network endpoint; only services with an endpoint produce ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub endpoint: Option<ServiceEndpoint>,
    /// Copied verbatim to configmeta `exported_service` (note the snake_case key).
    #[serde(rename = "exported_service", default, skip_serializing_if = "Option::is_none")]
    pub exported_service: Option<String>,
    /// Unknown keys, preserved verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Display label of a service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLabel {
    /// Display name (configmeta service `name`).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Network endpoint of a service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEndpoint {
    /// Port number (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// URL scheme (DNS label, 1-15 chars), e.g. `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = DNS_LABEL_PATTERN))]
    pub url_scheme: Option<String>,
    /// URL path (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether this is a dashboard (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_dashboard: Option<bool>,
    /// Whether a per-member auth token is generated for this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_auth_token: Option<bool>,
}

/// A role of a kdapp (Go name `NodeRole`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRole {
    /// Role id (1-63 chars).
    #[schemars(length(min = 1, max = 63), regex(pattern = ROLE_ID_PATTERN))]
    pub id: String,
    /// `"N"` = exactly N members, `"N+"` = at least N.
    #[schemars(regex(pattern = r"^\d+\+?$"))]
    pub cardinality: String,
    /// Container image of the role's members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image_repo_tag: Option<String>,
    /// Setup package; tri-state: absent (inherit), explicit null (none) or a package.
    #[serde(default, skip_serializing_if = "SetupPackage::is_absent")]
    pub config_package: SetupPackage,
    /// Extra directories persisted on the member PV (absolute, no trailing slash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = PERSIST_DIR_PATTERN)))]
    pub persist_dirs: Option<Vec<String>>,
    /// Lifecycle events that invoke the startscript (absent = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = EVENT_PATTERN)))]
    pub event_list: Option<Vec<EventName>>,
    /// `stdin`/`tty` settings of the app container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub container_spec: Option<ContainerSpec>,
    /// Minimum resources (resource name -> quantity) kdcluster roles must request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "min_resources_schema")]
    pub min_resources: Option<BTreeMap<String, Quantity>>,
    /// Minimum persistent storage kdcluster roles must request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub min_storage: Option<MinStorage>,
    /// Bytes of startscript stdout/stderr tail kept in member status (0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_log_size_dump: Option<i64>,
}

/// `stdin`/`tty` settings of the app container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Container `stdin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    /// Container `tty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

/// Minimum storage of a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinStorage {
    /// Minimum size (quantity).
    #[schemars(schema_with = "quantity_schema")]
    pub size: Quantity,
    /// Whether the role also works without persistent storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_mode_supported: Option<bool>,
}

/// Role/service wiring and configmeta settings of a kdapp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppConfig {
    /// Which services run on which role.
    pub role_services: Vec<RoleService>,
    /// The "active" roles.
    #[schemars(inner(length(min = 1)))]
    pub selected_roles: Vec<String>,
    /// Copied verbatim to configmeta `nodegroups["1"].config_metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub config_meta: Option<BTreeMap<String, String>>,
}

/// Services of one role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RoleService {
    /// Role id.
    #[serde(rename = "roleID")]
    #[schemars(length(min = 1, max = 63), regex(pattern = ROLE_ID_PATTERN))]
    pub role_id: String,
    /// Ids of the services on that role.
    #[serde(rename = "serviceIDs")]
    #[schemars(inner(length(min = 1, max = 15), regex(pattern = DNS_LABEL_PATTERN)))]
    pub service_ids: Vec<String>,
}

/// A parsed role cardinality (`"N"` or `"N+"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cardinality {
    /// The number N.
    pub min: u32,
    /// `true` for `"N+"` (at least N), `false` for exactly N.
    pub scalable: bool,
}

impl Cardinality {
    /// Parses `"N"` / `"N+"`; `None` when malformed or out of range.
    pub fn parse(s: &str) -> Option<Self> {
        let (digits, scalable) = match s.strip_suffix('+') {
            Some(d) => (d, true),
            None => (s, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(|min| Cardinality { min, scalable })
    }

    /// Whether `members` satisfies this cardinality.
    pub fn allows(&self, members: u32) -> bool {
        if self.scalable {
            members >= self.min
        } else {
            members == self.min
        }
    }
}

impl AppRole {
    /// The parsed cardinality; `None` when malformed.
    pub fn parsed_cardinality(&self) -> Option<Cardinality> {
        Cardinality::parse(&self.cardinality)
    }
}

impl KubeDirectorAppSpec {
    /// The role with this id.
    pub fn role(&self, role_id: &str) -> Option<&AppRole> {
        self.roles.iter().find(|r| r.id == role_id)
    }

    /// The service with this id.
    pub fn service(&self, service_id: &str) -> Option<&AppService> {
        self.services.iter().find(|s| s.id == service_id)
    }

    /// The services configured on a role (via `config.roleServices`), in `serviceIDs` order;
    /// ids that name no service are skipped.
    pub fn role_services(&self, role_id: &str) -> Vec<&AppService> {
        self.config
            .role_services
            .iter()
            .filter(|rs| rs.role_id == role_id)
            .flat_map(|rs| rs.service_ids.iter())
            .filter_map(|sid| self.service(sid))
            .collect()
    }

    /// Effective setup-package setting of a role: the role's own value if present (object or
    /// null), else the top-level default if present, else `Absent`.
    pub fn role_setup_package_setting(&self, role_id: &str) -> &SetupPackage {
        match self.role(role_id).and_then(|r| r.config_package.explicit()) {
            Some(p) => p,
            None => &self.default_config_package,
        }
    }

    /// Resolved setup package of a role: role value if present, else the top-level default if
    /// present, else none. Explicit `null` means none.
    pub fn role_setup_package(&self, role_id: &str) -> Option<&SetupPackageUrl> {
        self.role_setup_package_setting(role_id).package()
    }

    /// Resolved image of a role (role value, else `defaultImageRepoTag`).
    pub fn role_image(&self, role_id: &str) -> Option<&str> {
        self.role(role_id)
            .and_then(|r| r.image_repo_tag.as_deref())
            .or(self.default_image_repo_tag.as_deref())
    }

    /// Resolved persisted directories of a role (role value, else `defaultPersistDirs`).
    pub fn role_persist_dirs(&self, role_id: &str) -> Option<&[String]> {
        self.role(role_id)
            .and_then(|r| r.persist_dirs.as_deref())
            .or(self.default_persist_dirs.as_deref())
    }

    /// Resolved event list of a role (role value, else `defaultEventList`); `None` = all events.
    pub fn role_event_list(&self, role_id: &str) -> Option<&[EventName]> {
        self.role(role_id)
            .and_then(|r| r.event_list.as_deref())
            .or(self.default_event_list.as_deref())
    }

    /// Resolved log dump size of a role (role value, else `defaultMaxLogSizeDump`, else 256).
    pub fn role_max_log_size_dump(&self, role_id: &str) -> i64 {
        self.role(role_id)
            .and_then(|r| r.max_log_size_dump)
            .or(self.default_max_log_size_dump)
            .unwrap_or(DEFAULT_MAX_LOG_SIZE_DUMP)
    }

    /// Effective `systemdRequired` (false when unset).
    pub fn requires_systemd(&self) -> bool {
        self.systemd_required.unwrap_or(false)
    }
}
