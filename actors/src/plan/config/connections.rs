//! Connections (spec 4.8, features F67/F68): the fingerprint of a kdcluster's connected objects
//! and their `connections` part of configmeta.
//!
//! Pure: the caller resolves `spec.connections` against its caches into [`ConnectedObjects`]
//! (objects of the kdcluster's own namespace only; missing ones are simply absent) and this
//! module turns them into the hash kept in `status.lastConnectionHash` and into the
//! `connections` object of configmeta.
//!
//! Fixed upstream bugs (spec 7 R10): every member of a connected role is listed (upstream repeats
//! the last one because of a loop-variable pointer); the connected kdcluster's kdapp is resolved
//! through the catalog (local, then system) by the caller; only objects of the kdcluster's own
//! namespace are connected; a connected kdcluster without a status hashes as `nil` instead of
//! crashing the operator.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kubedirector_crds::app::KubeDirectorApp;
use kubedirector_crds::cluster::{Connections, KubeDirectorCluster, MemberState};
use kubedirector_crds::wire::{LABEL_CM_TYPE, LABEL_SECRET_TYPE};
use md5::{Digest as _, Md5};
use serde_json::{json, Map, Value};

use super::configmeta::{Configmeta, ConfigmetaSource};

/// A connected kdcluster and its resolved kdapp.
#[derive(Clone, Debug, Default)]
pub struct ConnectedCluster {
    /// The connected kdcluster as cached.
    pub cluster: KubeDirectorCluster,
    /// Its kdapp (catalog lookup), `None` when it does not resolve.
    pub app: Option<KubeDirectorApp>,
}

/// The objects named by `spec.connections` that exist in the kdcluster's namespace, by name.
#[derive(Clone, Debug, Default)]
pub struct ConnectedObjects {
    /// Connected kdclusters.
    pub clusters: BTreeMap<String, ConnectedCluster>,
    /// Connected ConfigMaps.
    pub configmaps: BTreeMap<String, ConfigMap>,
    /// Connected Secrets.
    pub secrets: BTreeMap<String, Secret>,
}

/// The connections fingerprint's MD5 in lowercase hex (spec 4.8): in spec order, each connected
/// kdcluster's name and `specGenerationToProcess` (`nil` when null, empty when the kdcluster does
/// not exist), then each ConfigMap's and each Secret's name and resourceVersion.
pub fn connections_hash(spec: &Connections, objs: &ConnectedObjects) -> String {
    let mut s = String::new();
    for name in &spec.clusters {
        s.push_str(name);
        if let Some(c) = objs.clusters.get(name) {
            match c
                .cluster
                .status
                .as_ref()
                .and_then(|st| st.spec_generation_to_process)
            {
                Some(g) => s.push_str(&g.to_string()),
                None => s.push_str("nil"),
            }
        }
    }
    let rv = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.resource_version.clone().unwrap_or_default()
    };
    for name in &spec.configmaps {
        s.push_str(name);
        if let Some(cm) = objs.configmaps.get(name) {
            s.push_str(&rv(&cm.metadata));
        }
    }
    for name in &spec.secrets {
        s.push_str(name);
        if let Some(sec) = objs.secrets.get(name) {
            s.push_str(&rv(&sec.metadata));
        }
    }
    hex::encode(Md5::digest(s.as_bytes()))
}

fn map_or_null(m: Option<&BTreeMap<String, String>>) -> Value {
    m.map_or(Value::Null, |m| json!(m))
}

/// Prefixes every `bdvlibrefkey` list directly under `v` (one level of nesting per call site).
fn prefix_refkeys(v: &mut Value, prefix: &[&str]) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(path)) = map.get_mut("bdvlibrefkey") {
                let mut full: Vec<Value> = prefix.iter().map(|p| Value::from(*p)).collect();
                full.append(path);
                *path = full;
                return;
            }
            for child in map.values_mut() {
                prefix_refkeys(child, prefix);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| prefix_refkeys(i, prefix)),
        _ => {}
    }
}

/// The configmeta-shaped document of a connected kdcluster `name` (spec 4.8), or `None` when
/// its kdapp does not resolve.
pub fn cluster_document(
    name: &str,
    connected: &ConnectedCluster,
    domain_base: &str,
    master_key: Option<&str>,
) -> Option<Value> {
    let app = connected.app.as_ref()?;
    // Every member of the connected kdcluster, regardless of state, in status order.
    let mut status = connected.cluster.status.clone().unwrap_or_default();
    for m in status.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
        m.state = MemberState::Configured;
    }
    let src = ConfigmetaSource {
        cluster: &connected.cluster,
        app,
        status: &status,
        domain_base,
        master_key,
    };
    let doc = Configmeta::build(
        &src,
        Some(json!({"clusters": null, "configmaps": null, "secrets": null})),
    )
    .member_value("");
    let Value::Object(mut doc) = doc else {
        return None;
    };
    let prefix = ["connections", "clusters", name];
    if let Some(services) = doc.get_mut("services") {
        prefix_refkeys(services, &prefix);
    }
    if let Some(distros) = doc.get_mut("distros") {
        prefix_refkeys(distros, &prefix);
    }
    if let Some(cluster) = doc.get_mut("cluster").and_then(Value::as_object_mut) {
        cluster.insert("name".into(), Value::from(name));
    }
    Some(Value::Object(doc))
}

/// The `connections` object of configmeta (spec 4.2, 4.8).
pub fn connections_document(
    spec: &Connections,
    objs: &ConnectedObjects,
    domain_base: &str,
    master_key: Option<&str>,
) -> Value {
    let mut clusters = Map::new();
    for name in &spec.clusters {
        if let Some(doc) = objs
            .clusters
            .get(name)
            .and_then(|c| cluster_document(name, c, domain_base, master_key))
        {
            clusters.insert(name.clone(), doc);
        }
    }
    let mut configmaps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for name in &spec.configmaps {
        let Some(cm) = objs.configmaps.get(name) else {
            continue;
        };
        let md = &cm.metadata;
        let Some(cm_type) = md.labels.as_ref().and_then(|l| l.get(LABEL_CM_TYPE)) else {
            continue;
        };
        configmaps.entry(cm_type.clone()).or_default().push(json!({
            "metadata": {"name": name},
            "data": map_or_null(cm.data.as_ref()),
            "labels": map_or_null(md.labels.as_ref()),
            "annotations": map_or_null(md.annotations.as_ref()),
        }));
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let b64_map = |m: Option<&BTreeMap<String, String>>| {
        m.map_or(Value::Null, |m| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::from(b64(v.as_bytes()))))
                    .collect(),
            )
        })
    };
    let mut secrets: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for name in &spec.secrets {
        let Some(sec) = objs.secrets.get(name) else {
            continue;
        };
        let md = &sec.metadata;
        let Some(sec_type) = md.labels.as_ref().and_then(|l| l.get(LABEL_SECRET_TYPE)) else {
            continue;
        };
        let data = sec.data.as_ref().map_or(Value::Null, |d| {
            Value::Object(
                d.iter()
                    .map(|(k, v)| (k.clone(), Value::from(b64(&v.0))))
                    .collect(),
            )
        });
        secrets.entry(sec_type.clone()).or_default().push(json!({
            "metadata": {"name": b64(name.as_bytes())},
            "data": data,
            "labels": b64_map(md.labels.as_ref()),
            "annotations": b64_map(md.annotations.as_ref()),
        }));
    }
    json!({"clusters": clusters, "configmaps": configmaps, "secrets": secrets})
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
