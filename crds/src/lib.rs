//! KubeDirector custom resource types (`kubedirector.hpe.com/v1beta1`), wire-compatible with
//! upstream KubeDirector, plus CRD generation.
//!
//! * [`KubeDirectorApp`] / [`KubeDirectorAppSpec`] (`kdapp`, no status) — module [`app`].
//! * [`KubeDirectorCluster`] / [`KubeDirectorClusterSpec`] / [`KubeDirectorClusterStatus`]
//!   (`kdcluster`, status subresource) — module [`cluster`].
//! * [`KubeDirectorConfig`] / [`KubeDirectorConfigSpec`] / [`KubeDirectorConfigStatus`]
//!   (`kdconfig`, status subresource; `spec` optional and nullable, so the root type is
//!   hand-written) — module [`config`].
//! * [`KubeDirectorStatusBackup`] / [`KubeDirectorStatusBackupSpec`] (`kdstatusbackup`) —
//!   module [`status_backup`].
//!
//! Serialization follows upstream exactly: upstream JSON key names (including `distroID`,
//! `packageURL`, `exported_service`, `generationUID`, `lastNodeID`, `nodeID`), the tri-state
//! setup package ([`SetupPackage`]: absent / explicit `null` / object), the always-emitted
//! kdcluster status keys, and unknown keys preserved wherever upstream's CRD preserves them.
//! String enums ([`ClusterState`], [`MemberState`], ...) carry the exact wire strings and keep
//! unknown values in an `Other(String)` variant, so deserialization never fails on them.
//!
//! CRDs: [`crds`] / [`crds_yaml`] generate the four CRDs (apps, clusters, configs,
//! statusbackups); they are committed under `deploy/crds/` by the `crdgen` binary
//! (`cargo run -p kubedirector-crds --features crdgen --bin crdgen`) and a test fails when the
//! committed files drift. `CustomResourceExt::crd()` of each kind carries the same schema (plus a
//! root `title` that kube's derive adds, and without `listKind`); prefer [`crds`] or the per-kind
//! functions in [`crd`], which produce exactly the committed files.
//!
//! Test builders live in [`fixtures`] (behind the `test-util` feature, always on for this
//! crate's own tests).

pub mod app;
pub mod cluster;
mod common;
pub mod config;
pub mod crd;
#[cfg(feature = "test-util")]
pub mod fixtures;
pub mod quantity;
pub mod status_backup;

pub use app::{
    AppConfig, AppLabel, AppRole, AppService, Cardinality, ContainerSpec, EventName, KubeDirectorApp,
    KubeDirectorAppSpec, MinStorage, RoleService, ServiceEndpoint, ServiceLabel, SetupPackage,
    SetupPackageUrl, DEFAULT_MAX_LOG_SIZE_DUMP,
};
pub use cluster::{
    AppCatalog, BlockStorageSpec, ClusterState, Connections, ContainerState, FileInjection, FilePermissions,
    KdSecret, KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus, MemberState,
    MemberStateDetail, MemberStateRollup, MemberStatus, NamingScheme, NotifyCmd, RestoreProgress, RoleSpec,
    RoleStatus, SecretKey, ServiceType, StorageSpec, VolumeProjection, MAX_CLUSTER_MEMBERS,
};
pub use common::{
    APP_CATALOG_PATTERN, DNS_LABEL_PATTERN, EVENT_PATTERN, LOGO_URL_PATTERN, MOUNT_PATH_PATTERN,
    NAMING_SCHEME_PATTERN, PACKAGE_URL_PATTERN, PERSIST_DIR_PATTERN, QUANTITY_PATTERN, ROLE_ID_PATTERN,
    SERVICE_TYPE_PATTERN,
};
pub use config::{
    ConfigState, KubeDirectorConfig, KubeDirectorConfigSpec, KubeDirectorConfigStatus,
    DEFAULT_CLUSTER_SVC_DOMAIN_BASE, GLOBAL_CONFIG_NAME,
};
pub use crd::{crds, crds_yaml, CrdError};
pub use status_backup::{KubeDirectorStatusBackup, KubeDirectorStatusBackupSpec};

/// API group of all four kinds.
pub const GROUP: &str = "kubedirector.hpe.com";
/// API version of all four kinds.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` of all four kinds.
pub const API_VERSION: &str = "kubedirector.hpe.com/v1beta1";
