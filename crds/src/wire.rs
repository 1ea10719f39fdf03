//! Wire constants of the operator: the label, annotation and finalizer keys it writes and reads
//! on Kubernetes objects, its server-side-apply field manager and the prefixes of its naming
//! scheme (spec 5.2-5.3). Defined here once, used by the planner, the caches, the admission
//! webhook and the operator's ports; upstream uses the same strings, so they are part of the
//! wire contract.

/// Field manager of the operator's server-side applies (and the API group's name).
pub const FIELD_MANAGER: &str = "kubedirector.hpe.com";

/// Finalizer the operator puts on every kdcluster (spec 3.12).
pub const FINALIZER: &str = "kubedirector.hpe.com/cleanup";

/// Label on every object a kdcluster owns (StatefulSets, pods, Services, PVCs): the kdcluster's
/// name. The operator's watches select on it.
pub const LABEL_CLUSTER: &str = "kubedirector.hpe.com/kdcluster";
/// Label on owned objects: the name of the kdapp.
pub const LABEL_APP: &str = "kubedirector.hpe.com/kdapp";
/// Label on owned objects: the catalog of the kdapp (`local` / `system`).
pub const LABEL_APP_CATALOG: &str = "kubedirector.hpe.com/appCatalog";
/// Label on owned objects: the role id.
pub const LABEL_ROLE: &str = "kubedirector.hpe.com/role";
/// Label selecting the pods of the headless cluster service (value: the kdcluster name).
pub const LABEL_HEADLESS: &str = "kubedirector.hpe.com/headless";
/// Label marking a kdcluster that is being restored from a status backup (spec 3.15).
pub const LABEL_RESTORING: &str = "kubedirector.hpe.com/restoring";
/// Label allowing the deletion of a kdcluster while it is being restored.
pub const LABEL_ALLOW_DELETE_WHILE_RESTORING: &str = "kubedirector.hpe.com/allow-delete-while-restoring";

/// Annotation on owned objects: the kdapp's `label.name`.
pub const ANNOTATION_PRETTY_NAME: &str = "kubedirector.hpe.com/kdapp-prettyName";
/// Annotation on a kdcluster mirroring kdconfig `backupClusterStatus` (spec 3.13); on create it
/// announces that a status backup exists (restore trigger).
pub const ANNOTATION_STATUS_BACKUP_EXISTS: &str = "kubedirector.hpe.com/status-backup-exists";

/// Naming scheme `UID`: prefix of a role's StatefulSet name, `kdss-<suffix>` (spec 5.3).
pub const PREFIX_STATEFULSET: &str = "kdss-";
/// Naming scheme `UID`: prefix of the headless cluster service name, `kdhs-<suffix>`.
pub const PREFIX_HEADLESS_SERVICE: &str = "kdhs-";
/// Naming scheme `UID`: prefix of a member's service name, `s-<pod>`.
pub const PREFIX_MEMBER_SERVICE: &str = "s-";
/// Name of a member's filesystem volume claim template; its PVC is `p-<pod>`.
pub const PVC_TEMPLATE: &str = "p";
/// Prefix of a member's block volume claim templates and PVCs: `b<i>`, `b<i>-<pod>`.
pub const BLOCK_PVC_PREFIX: &str = "b";

/// Annotation on a member Service: the member's token for `hasAuthToken` services (spec 3.9, 4.2).
pub const ANNOTATION_AUTH_TOKEN: &str = "kubedirector.hpe.com/kd-auth-token";
/// Annotation on a kdcluster: the connection version, bumped on every connections change (4.8).
pub const ANNOTATION_HASH_CHANGE_COUNTER: &str = "kubedirector.hpe.com/hashChangeCounter";
/// Annotation on a kdcluster bumped to wake it when a connected object changed (4.8, 3.17).
pub const ANNOTATION_CONN_UPDATE_COUNTER: &str = "kubedirector.hpe.com/connUpdateCounter";
/// Label giving a connectable ConfigMap its type (`connections.configmaps.<cmType>`, 4.8).
pub const LABEL_CM_TYPE: &str = "kubedirector.hpe.com/cmType";
/// Label giving a connectable Secret its type (`connections.secrets.<secretType>`, 4.8).
pub const LABEL_SECRET_TYPE: &str = "kubedirector.hpe.com/secretType";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_the_operator_api_group() {
        for key in [
            FINALIZER,
            LABEL_CLUSTER,
            LABEL_APP,
            LABEL_APP_CATALOG,
            LABEL_ROLE,
            LABEL_HEADLESS,
            LABEL_RESTORING,
            LABEL_ALLOW_DELETE_WHILE_RESTORING,
            ANNOTATION_PRETTY_NAME,
            ANNOTATION_STATUS_BACKUP_EXISTS,
            ANNOTATION_AUTH_TOKEN,
            ANNOTATION_HASH_CHANGE_COUNTER,
            ANNOTATION_CONN_UPDATE_COUNTER,
            LABEL_CM_TYPE,
            LABEL_SECRET_TYPE,
        ] {
            assert_eq!(
                key.split_once('/').map(|(group, _)| group),
                Some(crate::GROUP),
                "{key}"
            );
        }
        assert_eq!(FIELD_MANAGER, crate::GROUP);
    }
}
