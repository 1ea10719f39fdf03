//! `KubeDirectorCluster` (kdcluster): one "virtual cluster" instantiating a kdapp
//! (spec sections 1.3, 1.4 and 1.7).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    env_schema, quantity_schema, role_resources_schema, wire_enum, APP_CATALOG_PATTERN, MOUNT_PATH_PATTERN,
    NAMING_SCHEME_PATTERN, ROLE_ID_PATTERN, SERVICE_TYPE_PATTERN,
};

/// Maximum total number of members of one kdcluster.
pub const MAX_CLUSTER_MEMBERS: i64 = 1000;

/// Specification of a KubeDirectorCluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubedirector.hpe.com",
    version = "v1beta1",
    kind = "KubeDirectorCluster",
    plural = "kubedirectorclusters",
    singular = "kubedirectorcluster",
    shortname = "kdcluster",
    namespaced,
    schema = "manual",
    status = "KubeDirectorClusterStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A KubeDirectorCluster (kdcluster): one virtual cluster instantiating a kdapp.",
    printcolumn = r#"{"name":"KDApp","type":"string","description":"Resource name of the instantiated kdapp","jsonPath":".spec.app"}"#,
    printcolumn = r#"{"name":"State","type":"string","description":"Overall state of kdcluster configuration","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Any Down","type":"string","description":"Whether any member containers are down","jsonPath":".status.memberStateRollup.membersDown"}"#,
    printcolumn = r#"{"name":"Any ConfigError","type":"string","description":"Whether any member configuration returned error status","jsonPath":".status.memberStateRollup.configErrors"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorClusterSpec {
    /// Name of the kdapp to instantiate (immutable).
    #[schemars(length(min = 1))]
    pub app: String,
    /// Where the kdapp was found: `local` (kdcluster namespace) or `system` (KD namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = APP_CATALOG_PATTERN))]
    pub app_catalog: Option<AppCatalog>,
    /// Type of the per-member services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SERVICE_TYPE_PATTERN))]
    pub service_type: Option<ServiceType>,
    /// How generated object names are formed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAMING_SCHEME_PATTERN))]
    pub naming_scheme: Option<NamingScheme>,
    /// Secret mounted into roles that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub default_secret: Option<KdSecret>,
    /// Objects in the same namespace whose details are injected into the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Connections>,
    /// The roles to instantiate.
    pub roles: Vec<RoleSpec>,
}

wire_enum! {
    /// Catalog a kdcluster's kdapp comes from (`spec.appCatalog`).
    AppCatalog {
        /// `local`: the kdcluster's namespace.
        Local => "local",
        /// `system`: the KubeDirector namespace.
        System => "system",
    }
}

wire_enum! {
    /// Kubernetes service type for per-member services.
    ServiceType {
        /// `ClusterIP`
        ClusterIp => "ClusterIP",
        /// `NodePort`
        NodePort => "NodePort",
        /// `LoadBalancer` (the default)
        LoadBalancer => "LoadBalancer",
    }
}

wire_enum! {
    /// Naming scheme of generated objects (spec 5.3).
    NamingScheme {
        /// `UID` (the default): `kdss-xxxxx`, `kdhs-xxxxx`, ...
        Uid => "UID",
        /// `CrNameRole`: names derived from the kdcluster and role names.
        CrNameRole => "CrNameRole",
    }
}

#[allow(clippy::derivable_impls)] // the enum is macro-generated
impl Default for ServiceType {
    fn default() -> Self {
        ServiceType::LoadBalancer
    }
}

#[allow(clippy::derivable_impls)] // the enum is macro-generated
impl Default for NamingScheme {
    fn default() -> Self {
        NamingScheme::Uid
    }
}

/// A Secret mounted into members (KDSecret).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KdSecret {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Absolute mount path.
    #[schemars(length(min = 1), regex(pattern = MOUNT_PATH_PATTERN))]
    pub mount_path: String,
    /// File mode of the projected keys (at most 0777 = 511).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 511))]
    pub default_mode: Option<i32>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Names of connected objects in the kdcluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connections {
    /// Connected kdclusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Connected ConfigMaps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configmaps: Vec<String>,
    /// Connected Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

impl Connections {
    /// `true` when no object is connected.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty() && self.configmaps.is_empty() && self.secrets.is_empty()
    }
}

/// A role of a kdcluster (`spec.roles[]`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Role id; must name a role of the kdapp. (Upstream's pattern is unanchored; ours is
    /// anchored, spec section 7 R20.)
    #[schemars(length(min = 1, max = 63), regex(pattern = ROLE_ID_PATTERN))]
    pub id: String,
    /// Number of members (filled by the webhook from the cardinality when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub members: Option<i32>,
    /// Compute resources of the app container (`limits.memory` and `limits.cpu` required).
    #[schemars(schema_with = "role_resources_schema")]
    pub resources: ResourceRequirements,
    /// Labels added to the member pods (and the StatefulSet selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the member pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Labels added to the per-member services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub service_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the per-member services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub service_annotations: Option<BTreeMap<String, String>>,
    /// Pod affinity, copied verbatim to the pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Per-member persistent filesystem storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub storage: Option<StorageSpec>,
    /// Per-member raw block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub block_storage: Option<BlockStorageSpec>,
    /// Environment variables of the app container (`name` and `value` required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_schema")]
    pub env: Vec<EnvVar>,
    /// Size of a memory-backed `/dev/shm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub shared_memory: Option<Quantity>,
    /// Files downloaded into each member before setup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_injections: Vec<FileInjection>,
    /// Secret mounted into the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub secret: Option<KdSecret>,
    /// Service account of the member pods (also enables token automount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub service_account_name: Option<String>,
    /// Secret keys injected into configmeta (`value` is encrypted by the webhook).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<SecretKey>,
    /// Existing PVCs mounted into the members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_projections: Vec<VolumeProjection>,
}

/// Per-member persistent filesystem storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the PVC.
    #[schemars(schema_with = "quantity_schema")]
    pub size: Quantity,
    /// Storage class (filled by the webhook from the kdconfig default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage_class_name: Option<String>,
}

/// Per-member raw block devices.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockStorageSpec {
    /// Storage class of the block PVCs.
    #[schemars(length(min = 1))]
    pub storage_class_name: String,
    /// Device path prefix; devices are `<pathPrefix>0`, `<pathPrefix>1`, ...
    #[schemars(length(min = 1), regex(pattern = r"^/.*$"))]
    pub path_prefix: String,
    /// Number of devices per member (at least 1).
    #[schemars(range(min = 1))]
    pub num_devices: i32,
    /// Size of each device (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub size: Option<Quantity>,
}

/// A file downloaded into each member before setup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInjection {
    /// Source URL (`http://` or `https://`).
    #[serde(rename = "srcURL")]
    #[schemars(regex(pattern = r"^https?://.+$"))]
    pub src_url: String,
    /// Absolute destination directory.
    #[schemars(length(min = 1), regex(pattern = r"^/.*$"))]
    pub dest_dir: String,
    /// Permissions of the injected file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub permissions: Option<FilePermissions>,
}

/// Permissions of an injected file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilePermissions {
    /// File mode (decimal integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<i32>,
    /// File owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_owner: Option<String>,
    /// File group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_group: Option<String>,
}

/// A secret key injected into configmeta.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    /// Key name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Plain value (replaced by `encryptedValue` by the webhook; never persists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Encrypted value (hex AES-GCM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub encrypted_value: Option<String>,
}

/// An existing PVC mounted into the members.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeProjection {
    /// PVC name.
    #[schemars(length(min = 1))]
    pub pvc_name: String,
    /// Absolute mount path.
    #[schemars(length(min = 2), regex(pattern = MOUNT_PATH_PATTERN))]
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

impl KubeDirectorClusterSpec {
    /// The role with this id.
    pub fn role(&self, role_id: &str) -> Option<&RoleSpec> {
        self.roles.iter().find(|r| r.id == role_id)
    }

    /// Mutable access to the role with this id.
    pub fn role_mut(&mut self, role_id: &str) -> Option<&mut RoleSpec> {
        self.roles.iter_mut().find(|r| r.id == role_id)
    }

    /// Effective service type (`LoadBalancer` when unset).
    pub fn service_type_or_default(&self) -> ServiceType {
        self.service_type.clone().unwrap_or_default()
    }

    /// Effective naming scheme (`UID` when unset).
    pub fn naming_scheme_or_default(&self) -> NamingScheme {
        self.naming_scheme.clone().unwrap_or_default()
    }

    /// Sum of `members` over all roles (absent counts as 0).
    pub fn total_members(&self) -> i64 {
        self.roles.iter().map(|r| i64::from(r.members.unwrap_or(0))).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// status

wire_enum! {
    /// Overall kdcluster state (`status.state`).
    ClusterState {
        /// `creating`
        Creating => "creating",
        /// `updating`
        Updating => "updating",
        /// `configured` (stable / ready)
        Configured => "configured",
        /// `spec modified` (set by the webhook)
        SpecModified => "spec modified",
    }
}

wire_enum! {
    /// State of one member (`status.roles[].members[].state`).
    MemberState {
        /// `create pending`
        CreatePending => "create pending",
        /// `creating`
        Creating => "creating",
        /// `configured`
        Configured => "configured",
        /// `config error`
        ConfigError => "config error",
        /// `delete pending`
        DeletePending => "delete pending",
        /// `deleting`
        Deleting => "deleting",
    }
}

wire_enum! {
    /// Last observed state of a member's app container (`stateDetail.lastKnownContainerState`).
    ContainerState {
        /// `running`
        Running => "running",
        /// `waiting`
        Waiting => "waiting",
        /// `initializing`
        Initializing => "initializing",
        /// `unresponsive`
        Unresponsive => "unresponsive",
        /// `terminated`
        Terminated => "terminated",
        /// `absent`
        Absent => "absent",
        /// `unknown`
        Unknown => "unknown",
    }
}

/// The empty string (`Other("")`): a status that has not been given a state yet.
impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::Other(String::new())
    }
}

/// The empty string (`Other("")`): a member that has not been given a state yet.
impl Default for MemberState {
    fn default() -> Self {
        MemberState::Other(String::new())
    }
}

/// Observed state of a KubeDirectorCluster (written only by the operator).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeDirectorClusterStatus {
    /// Overall state: `creating`, `updating`, `configured` or `spec modified`.
    pub state: ClusterState,
    /// Progress of a restore from a status backup (only while restoring).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub restore_progress: Option<RestoreProgress>,
    /// Roll-up of member states.
    pub member_state_rollup: MemberStateRollup,
    /// Random UUID regenerated on every status write (anti-tamper token).
    #[serde(rename = "generationUID")]
    pub generation_uid: String,
    /// Configuration generation to process (starts at 0; absent before the first pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_generation_to_process: Option<i64>,
    /// The `metadata.generation` the reconciler has seen (spec 7 R4; not in upstream, omitted
    /// when absent, so upstream documents round-trip unchanged). A pass that finds the
    /// generation ahead of it moves the cluster to `spec modified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the headless cluster service (`""` until created).
    pub cluster_service: String,
    /// Last node id handed out (ids start at 1 and are never reused).
    #[serde(rename = "lastNodeID")]
    pub last_node_id: i64,
    /// Per-role status.
    pub roles: Vec<RoleStatus>,
    /// MD5 hex of the connections fingerprint.
    pub last_connection_hash: String,
}

/// Progress of a restore from a status backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RestoreProgress {
    /// Waiting for the kdapp to exist.
    pub awaiting_app: bool,
    /// Waiting for the status backup.
    pub awaiting_status: bool,
    /// Waiting for member resources.
    pub awaiting_resources: bool,
    /// Last restore error.
    pub error: String,
}

/// Roll-up of member states (rules in spec 3.5).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberStateRollup {
    /// Some member is being added or removed.
    pub membership_changing: bool,
    /// Some member container is down.
    pub members_down: bool,
    /// Some member container is initializing.
    pub members_initializing: bool,
    /// Some member container is waiting.
    pub members_waiting: bool,
    /// Some member container restarted and is being reconfigured.
    pub members_restarting: bool,
    /// Some member is in `config error`.
    pub config_errors: bool,
    /// Some member pod is not scheduled.
    pub members_not_scheduled: bool,
}

/// Status of one role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleStatus {
    /// Role id.
    pub id: String,
    /// Name of the role's StatefulSet.
    pub stateful_set: String,
    /// Member status, one per member.
    pub members: Vec<MemberStatus>,
}

/// Status of one member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberStatus {
    /// Pod name `<statefulSet>-<ordinal>`.
    pub pod: String,
    /// Per-member service name (`""` before creation, `n/a` when the role exposes no ports).
    pub service: String,
    /// Token for `hasAuthToken` services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// Filesystem PVC name (`p-<pod>`) when the role has storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// Member state.
    pub state: MemberState,
    /// Details of the member's configuration progress (always present).
    pub state_detail: MemberStateDetail,
    /// Unique node id within the kdcluster.
    #[serde(rename = "nodeID")]
    pub node_id: i64,
    /// Block device paths `<pathPrefix>0`, `<pathPrefix>1`, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub block_device_paths: Vec<String>,
}

/// Details of a member's configuration progress; every key is omitted when unset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberStateDetail {
    /// Why the member is in `config error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error_detail: Option<String>,
    /// Generation of the configmeta last written into the member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_config_data_generation: Option<i64>,
    /// Generation the member's scripts have fully processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_setup_generation: Option<i64>,
    /// Container id currently being set up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuring_container: Option<String>,
    /// Container id of the last finished setup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_configured_container: Option<String>,
    /// Last observed app container state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_known_container_state: Option<ContainerState>,
    /// Queued startscript notifications (FIFO).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_notify_cmds: Vec<NotifyCmd>,
    /// Connections version the member has been told about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_connection_version: Option<i64>,
    /// Tail of the startscript stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_script_stdout_message: Option<String>,
    /// Tail of the startscript stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_script_stderr_message: Option<String>,
    /// Why the member pod cannot be scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduling_error_message: Option<String>,
    /// Storage initialisation progress (fixed strings or an rsync progress line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_init_progress: Option<String>,
}

/// A queued startscript notification.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NotifyCmd {
    /// Startscript arguments, e.g. `["--addnodes", "--nodegroup 1", "--role", "worker", ...]`.
    pub arguments: Vec<String>,
}

impl KubeDirectorClusterStatus {
    /// The status of the role with this id.
    pub fn role(&self, role_id: &str) -> Option<&RoleStatus> {
        self.roles.iter().find(|r| r.id == role_id)
    }

    /// Mutable status of the role with this id.
    pub fn role_mut(&mut self, role_id: &str) -> Option<&mut RoleStatus> {
        self.roles.iter_mut().find(|r| r.id == role_id)
    }

    /// All members of all roles, with their role id.
    pub fn members(&self) -> impl Iterator<Item = (&str, &MemberStatus)> {
        self.roles
            .iter()
            .flat_map(|r| r.members.iter().map(move |m| (r.id.as_str(), m)))
    }
}
