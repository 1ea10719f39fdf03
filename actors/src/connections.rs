//! Connections on the caller side (spec 4.8, 3.17): resolving a kdcluster's `spec.connections`
//! against the reflector caches, and finding which kdclusters a changed object is connected to.
//!
//! Both are namespace-scoped (a kdcluster connects objects of its own namespace, R10) and read
//! only caches: the ConfigMap and Secret caches hold only objects labelled
//! `kubedirector.hpe.com/cmType` / `…/secretType` (label-selected watches, R22), so unlabelled
//! objects (which configmeta skips anyway) neither travel nor wake anyone.

use kube::runtime::reflector::ObjectRef;
use kube::Resource as _;
use kubedirector_crds::KubeDirectorCluster;

use crate::caches::Caches;
use crate::plan::config::connections::{ConnectedCluster, ConnectedObjects};
use crate::ports::ObjectKey;

/// The kinds a kdcluster can connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectedKind {
    /// Another kdcluster.
    Cluster,
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

/// Whether `cluster` lists `name` among its connections of `kind`.
pub fn connects_to(cluster: &KubeDirectorCluster, kind: ConnectedKind, name: &str) -> bool {
    let Some(c) = cluster.spec.connections.as_ref() else {
        return false;
    };
    let list = match kind {
        ConnectedKind::Cluster => &c.clusters,
        ConnectedKind::ConfigMap => &c.configmaps,
        ConnectedKind::Secret => &c.secrets,
    };
    list.iter().any(|n| n == name)
}

/// The uids of the cached kdclusters in `namespace` connected to the object `name` of `kind`.
pub fn connecting_clusters(caches: &Caches, namespace: &str, kind: ConnectedKind, name: &str) -> Vec<String> {
    caches
        .clusters
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|c| c.meta().namespace.as_deref() == Some(namespace) && connects_to(c, kind, name))
        .filter_map(|c| c.meta().uid.clone())
        .collect()
}

/// The connected objects of `cluster` that exist in its namespace, from the caches; connected
/// kdclusters' kdapps are resolved through the catalog like the kdcluster's own (R10).
pub fn connected_objects(caches: &Caches, cluster: &KubeDirectorCluster) -> ConnectedObjects {
    let mut out = ConnectedObjects::default();
    let (Some(spec), Some(ns)) = (
        cluster.spec.connections.as_ref(),
        cluster.meta().namespace.as_deref(),
    ) else {
        return out;
    };
    for name in &spec.clusters {
        let Some(guard) = caches.cluster(&ObjectKey::new(ns, name)) else {
            continue;
        };
        let Ok(other) = &guard.0 else { continue };
        let app = caches
            .catalog
            .lookup(ns, &other.spec.app, other.spec.app_catalog.as_ref())
            .map(|a| (*a).clone());
        out.clusters.insert(
            name.clone(),
            ConnectedCluster {
                cluster: other.clone(),
                app,
            },
        );
    }
    for name in &spec.configmaps {
        if let Some(cm) = caches.configmaps.get(&ObjectRef::new(name).within(ns)) {
            out.configmaps.insert(name.clone(), (*cm).clone());
        }
    }
    for name in &spec.secrets {
        if let Some(s) = caches.secrets.get(&ObjectRef::new(name).within(ns)) {
            out.secrets.insert(name.clone(), (*s).clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubedirector_crds::cluster::Connections;

    #[test]
    fn connects_to_matches_the_named_kind_only() {
        let mut c = KubeDirectorCluster::new("a", Default::default());
        assert!(!connects_to(&c, ConnectedKind::ConfigMap, "x"));
        c.spec.connections = Some(Connections {
            configmaps: vec!["x".into()],
            secrets: vec!["s".into()],
            clusters: vec!["other".into()],
        });
        assert!(connects_to(&c, ConnectedKind::ConfigMap, "x"));
        assert!(!connects_to(&c, ConnectedKind::Secret, "x"));
        assert!(connects_to(&c, ConnectedKind::Secret, "s"));
        assert!(connects_to(&c, ConnectedKind::Cluster, "other"));
        assert!(!connects_to(&c, ConnectedKind::Cluster, "x"));
    }
}
