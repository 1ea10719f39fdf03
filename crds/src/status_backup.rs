//! `KubeDirectorStatusBackup` (kdstatusbackup): a verbatim copy of a kdcluster's status
//! (spec section 1.6).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::KubeDirectorClusterStatus;

/// Specification of a KubeDirectorStatusBackup.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubedirector.hpe.com",
    version = "v1beta1",
    kind = "KubeDirectorStatusBackup",
    plural = "kubedirectorstatusbackups",
    singular = "kubedirectorstatusbackup",
    shortname = "kdstatusbackup",
    namespaced,
    schema = "manual",
    derive = "PartialEq",
    derive = "Default",
    doc = "A KubeDirectorStatusBackup (kdstatusbackup): a copy of a kdcluster status, same name and namespace."
)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorStatusBackupSpec {
    /// Verbatim copy of the kdcluster's status. (Unlike upstream, the schema keeps
    /// `storageInitProgress`, spec section 7 R28.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub status_backup: Option<KubeDirectorClusterStatus>,
}
