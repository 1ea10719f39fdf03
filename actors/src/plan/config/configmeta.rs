//! The configmeta document written to `/etc/guestconfig/configmeta.json` in every member (spec
//! 4.2, worked example 4.3).
//!
//! Pure: built from the kdcluster (spec and status), its kdapp, the kdconfig domain base and master
//! encryption key. The cluster-wide part is built once per pass ([`Configmeta::build`]) and each
//! member's document only adds its `node` object ([`Configmeta::for_member`]), so a pass over a
//! large cluster does not rebuild the whole document per member.
//!
//! Wire details kept from upstream: every id and number is a string; fixed keys come in upstream's
//! order and map keys sorted; the file is compact JSON without a trailing newline; `endpoints` is
//! `null` for a service without a port; `node` is `null` for a pod that is not an intended member.
//!
//! Deviations from upstream (spec 7): none in the document itself. Connected objects (spec 4.8)
//! are passed in ready-made as [`Configmeta::connections`] so this module stays free of lookups.

use std::collections::BTreeMap;

use kubedirector_crds::app::KubeDirectorApp;
use kubedirector_crds::cluster::{
    KubeDirectorCluster, KubeDirectorClusterStatus, MemberState, MemberStatus, RoleSpec,
};
use kubedirector_crds::quantity::Quantity;
use serde_json::{json, Map, Value};

use super::super::names;
use super::secretkeys;

/// The only nodegroup id upstream ever uses.
pub const NODEGROUP: &str = "1";

/// Member states whose members are "intended" (spec 4.2), in the order they are listed.
pub const INTENDED_STATES: [MemberState; 4] = [
    MemberState::CreatePending,
    MemberState::Creating,
    MemberState::Configured,
    MemberState::ConfigError,
];

/// The intended members of a role: its members in `create pending`, then `creating`, then
/// `configured`, then `config error`, each group in status order.
pub fn intended_members(members: &[MemberStatus]) -> Vec<&MemberStatus> {
    INTENDED_STATES
        .iter()
        .flat_map(|state| {
            members
                .iter()
                .filter(move |m| m.state == *state && !m.pod.is_empty())
        })
        .collect()
}

/// Everything configmeta is generated from.
#[derive(Clone, Copy, Debug)]
pub struct ConfigmetaSource<'a> {
    /// The kdcluster (name, uid, namespace, spec roles).
    pub cluster: &'a KubeDirectorCluster,
    /// Its kdapp.
    pub app: &'a KubeDirectorApp,
    /// The status as of this pass (members, headless service name).
    pub status: &'a KubeDirectorClusterStatus,
    /// kdconfig `clusterSvcDomainBase` (e.g. `.svc.cluster.local`).
    pub domain_base: &'a str,
    /// kdconfig `masterEncryptionKey`, for role `secretKeys` (spec 4.9).
    pub master_key: Option<&'a str>,
}

/// A role's members as configmeta lists them.
#[derive(Clone, Debug)]
struct RoleMembers {
    /// `(pod, nodeID, block device paths)` of the intended members.
    members: Vec<(String, i64, Vec<String>)>,
}

/// The cluster-wide configmeta of one pass.
#[derive(Clone, Debug)]
pub struct Configmeta {
    base: Map<String, Value>,
    domain: String,
    distro_id: String,
    /// pod -> (role id, nodeID, block device paths) of every intended member.
    nodes: BTreeMap<String, (String, i64, Vec<String>)>,
}

fn refkey(path: &[&str]) -> Value {
    json!({ "bdvlibrefkey": path })
}

/// `floor(limits.memory / MiB)` and `ceil(limits.cpu)` as strings (spec 4.2 `flavor`).
fn flavor(role: Option<&RoleSpec>) -> Value {
    let limit = |key: &str| {
        role.and_then(|r| r.resources.limits.as_ref())
            .and_then(|l| l.get(key))
            .and_then(|q| Quantity::parse(&q.0).ok())
    };
    let memory = limit("memory").map_or(0, |q| q.value().div_euclid(1_048_576));
    let cores = limit("cpu").map_or(0, |q| q.value());
    json!({
        "storage": "n/a",
        "name": "n/a",
        "memory": memory.to_string(),
        "description": "n/a",
        "cores": cores.to_string(),
    })
}

impl Configmeta {
    /// Builds the cluster-wide part (spec 4.2) from `src`. `connections` is the
    /// `connections` object (spec 4.8); `None` gives upstream's empty one.
    pub fn build(src: &ConfigmetaSource<'_>, connections: Option<Value>) -> Self {
        let ns = src.cluster.metadata.namespace.as_deref().unwrap_or_default();
        let domain = names::domain(&src.status.cluster_service, ns, src.domain_base);
        let app = &src.app.spec;
        let spec_roles = &src.cluster.spec.roles;

        let mut members_of: BTreeMap<&str, RoleMembers> = BTreeMap::new();
        for role in spec_roles {
            if members_of.contains_key(role.id.as_str()) {
                continue;
            }
            let intended = src
                .status
                .roles
                .iter()
                .find(|r| r.id == role.id && !r.stateful_set.is_empty())
                .map(|r| intended_members(&r.members))
                .unwrap_or_default();
            if intended.is_empty() {
                continue;
            }
            members_of.insert(
                role.id.as_str(),
                RoleMembers {
                    members: intended
                        .iter()
                        .map(|m| (m.pod.clone(), m.node_id, m.block_device_paths.clone()))
                        .collect(),
                },
            );
        }

        // Top-level `services`: every service some spec role is assigned, keyed by service then role.
        let mut services: BTreeMap<&str, BTreeMap<&str, Value>> = BTreeMap::new();
        for rs in &app.config.role_services {
            if !spec_roles.iter().any(|r| r.id == rs.role_id) {
                continue;
            }
            for sid in &rs.service_ids {
                services.entry(sid.as_str()).or_default().insert(
                    rs.role_id.as_str(),
                    refkey(&["nodegroups", NODEGROUP, "roles", &rs.role_id, "services", sid]),
                );
            }
        }
        let services: Map<String, Value> = services
            .into_iter()
            .map(|(sid, roles)| {
                let roles: Map<String, Value> = roles.into_iter().map(|(r, v)| (r.to_owned(), v)).collect();
                (sid.to_owned(), json!({ NODEGROUP: roles }))
            })
            .collect();

        let mut roles = Map::new();
        let mut nodes = BTreeMap::new();
        for (role_id, rm) in &members_of {
            let spec_role = spec_roles.iter().find(|r| r.id == *role_id);
            let fqdns: Vec<String> = rm
                .members
                .iter()
                .map(|(p, _, _)| format!("{p}.{domain}"))
                .collect();
            let status_members = src
                .status
                .roles
                .iter()
                .find(|r| r.id == *role_id)
                .map(|r| intended_members(&r.members))
                .unwrap_or_default();
            let last_token = status_members
                .last()
                .and_then(|m| m.auth_token.clone())
                .unwrap_or_default();
            let mut role_services = Map::new();
            for svc in app.role_services(role_id) {
                let endpoint = svc.endpoint.as_ref();
                let endpoints = endpoint.map_or(Value::Null, |e| {
                    let scheme = e.url_scheme.as_deref().unwrap_or("");
                    Value::from(
                        fqdns
                            .iter()
                            .map(|f| format!("{scheme}://{f}:{}", e.port))
                            .collect::<Vec<_>>(),
                    )
                });
                let token = if endpoint.and_then(|e| e.has_auth_token).unwrap_or(false) {
                    last_token.clone()
                } else {
                    String::new()
                };
                role_services.insert(
                    svc.id.clone(),
                    json!({
                        "qualifiers": [],
                        "name": svc.label.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
                        "id": svc.id,
                        "hostnames": refkey(&["nodegroups", NODEGROUP, "roles", role_id, "hostnames"]),
                        "global_id": format!("{NODEGROUP}_{role_id}_{}", svc.id),
                        "fqdns": refkey(&["nodegroups", NODEGROUP, "roles", role_id, "fqdns"]),
                        "exported_service": svc.exported_service.clone().unwrap_or_default(),
                        "endpoints": endpoints,
                        "authToken": token,
                    }),
                );
            }
            let mut role = Map::new();
            role.insert("services".into(), Value::Object(role_services));
            role.insert(
                "node_ids".into(),
                Value::from(
                    rm.members
                        .iter()
                        .map(|(_, id, _)| id.to_string())
                        .collect::<Vec<_>>(),
                ),
            );
            role.insert("hostnames".into(), Value::from(fqdns.clone()));
            role.insert("fqdns".into(), Value::from(fqdns.clone()));
            let mappings: Map<String, Value> = rm
                .members
                .iter()
                .zip(&fqdns)
                .map(|((_, id, _), f)| (f.clone(), Value::from(id.to_string())))
                .collect();
            role.insert("fqdn_mappings".into(), Value::Object(mappings));
            role.insert("flavor".into(), flavor(spec_role));
            let secret_keys = secret_keys(spec_role, src.master_key);
            if !secret_keys.is_empty() {
                role.insert("secret_keys".into(), Value::Object(secret_keys));
            }
            roles.insert((*role_id).to_owned(), Value::Object(role));
            for (pod, id, blocks) in &rm.members {
                nodes.insert(pod.clone(), ((*role_id).to_owned(), *id, blocks.clone()));
            }
        }

        let config_metadata = app.config.config_meta.as_ref().map_or(Value::Null, |m| json!(m));
        let mut base = Map::new();
        base.insert(
            "version".into(),
            Value::from(app.config_schema_version.to_string()),
        );
        base.insert("services".into(), Value::Object(services));
        base.insert(
            "nodegroups".into(),
            json!({ NODEGROUP: {
                "roles": roles,
                "distro_id": app.distro_id,
                "catalog_entry_version": app.version,
                "config_metadata": config_metadata,
            }}),
        );
        base.insert(
            "distros".into(),
            json!({ app.distro_id.clone(): { NODEGROUP: refkey(&["nodegroups", NODEGROUP]) } }),
        );
        base.insert(
            "cluster".into(),
            json!({
                "name": src.cluster.metadata.name.clone().unwrap_or_default(),
                "isolated": false,
                "id": src.cluster.metadata.uid.clone().unwrap_or_default(),
                "config_metadata": { NODEGROUP: refkey(&["nodegroups", NODEGROUP, "config_metadata"]) },
            }),
        );
        base.insert("node".into(), Value::Null);
        base.insert(
            "connections".into(),
            connections.unwrap_or_else(|| json!({"clusters": {}, "configmaps": {}, "secrets": {}})),
        );
        Configmeta {
            base,
            domain,
            distro_id: app.distro_id.clone(),
            nodes,
        }
    }

    /// The member's DNS domain `<headless service>.<namespace><domain base>`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The document for the member `pod` (its `node` object filled in), as a JSON value.
    pub fn member_value(&self, pod: &str) -> Value {
        let mut doc = self.base.clone();
        if let Some((role_id, id, blocks)) = self.nodes.get(pod) {
            let fqdn = format!("{pod}.{}", self.domain);
            let mut node = Map::new();
            node.insert("role_id".into(), Value::from(role_id.clone()));
            node.insert("nodegroup_id".into(), Value::from(NODEGROUP));
            node.insert("id".into(), Value::from(id.to_string()));
            node.insert("hostname".into(), Value::from(fqdn.clone()));
            node.insert("fqdn".into(), Value::from(fqdn));
            node.insert("domain".into(), Value::from(self.domain.clone()));
            node.insert("distro_id".into(), Value::from(self.distro_id.clone()));
            node.insert("depends_on".into(), json!({}));
            if !blocks.is_empty() {
                node.insert("block_device_paths".into(), Value::from(blocks.clone()));
            }
            doc.insert("node".into(), Value::Object(node));
        }
        Value::Object(doc)
    }

    /// The file content for the member `pod`: compact JSON, no trailing newline.
    pub fn for_member(&self, pod: &str) -> String {
        self.member_value(pod).to_string()
    }
}

/// The decrypted `secretKeys` of a kdcluster role; keys that fail to decrypt are dropped (4.9).
fn secret_keys(role: Option<&RoleSpec>, master_key: Option<&str>) -> Map<String, Value> {
    let (Some(role), Some(key)) = (role, master_key) else {
        return Map::new();
    };
    role.secret_keys
        .iter()
        .filter_map(|sk| {
            let enc = sk.encrypted_value.as_deref()?;
            let plain = secretkeys::decrypt(key, enc).ok()?;
            Some((sk.name.clone(), Value::from(plain)))
        })
        .collect()
}

#[cfg(test)]
#[path = "configmeta_tests.rs"]
mod tests;
