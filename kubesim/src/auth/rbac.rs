//! The RBAC authorizer, as a pure function of the request's attributes, the user and the stored
//! Role/ClusterRole/RoleBinding/ClusterRoleBinding objects (rbac.authorization.k8s.io/v1).
//!
//! Semantics follow Kubernetes' `plugin/pkg/auth/authorizer/rbac`: a request is allowed when any
//! rule of a role bound to the user (ClusterRoleBindings everywhere, RoleBindings in their own
//! namespace) matches verb, API group, resource (`res`, `res/sub`, `*`, `*/sub`) and
//! resourceNames, or nonResourceURLs (exact or `prefix*`) for non-resource requests. Members of
//! `system:masters` are allowed everything; every authenticated user holds the bootstrap roles
//! `system:discovery`, `system:basic-user` and `system:public-info-viewer`. Aggregated
//! ClusterRoles are not computed (their `rules`, as stored, are used).

use crate::error::ApiError;
use serde_json::{json, Value};
use std::sync::Arc;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:<ns>:<name>`, `kubesim-admin`, ...
    pub username: String,
    /// Groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The admin of the admin kubeconfig: `system:masters`.
    pub fn admin() -> Self {
        UserInfo {
            username: "kubesim-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// A ServiceAccount's user, with the groups the API server gives it.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// `{"username": ..., "groups": [...]}` (authentication.k8s.io UserInfo).
    pub fn to_json(&self) -> Value {
        json!({"username": self.username, "groups": self.groups})
    }
}

/// The authorization attributes of one request (apiserver's `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection, ...
    pub verb: String,
    /// Whether this is a resource request (else `path` is the non-resource URL).
    pub resource_request: bool,
    /// API group ("" for core).
    pub api_group: String,
    /// API version (for the Forbidden details only).
    pub api_version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource ("" when none).
    pub subresource: String,
    /// Object name ("" for collections).
    pub name: String,
    /// Namespace ("" at the cluster scope).
    pub namespace: String,
    /// Non-resource URL path.
    pub path: String,
}

/// The stored RBAC objects the decision is taken from.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    /// Roles (all namespaces).
    pub roles: Vec<Arc<Value>>,
    /// ClusterRoles.
    pub cluster_roles: Vec<Arc<Value>>,
    /// RoleBindings (all namespaces).
    pub role_bindings: Vec<Arc<Value>>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<Arc<Value>>,
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// Why (empty when there is nothing to say; `RBAC: ...` for broken bindings).
    pub reason: String,
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn has(v: &Value, want: &str) -> bool {
    strs(v).any(|s| s == "*" || s == want)
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if !a.resource_request {
        return strs(&rule["nonResourceURLs"])
            .any(|u| u == "*" || u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p)));
    }
    if !has(&rule["apiGroups"], &a.api_group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = strs(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    });
    if !resource_ok {
        return false;
    }
    let names: Vec<&str> = strs(&rule["resourceNames"]).collect();
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()))
}

fn subject_matches(s: &Value, user: &UserInfo) -> bool {
    let name = s["name"].as_str().unwrap_or_default();
    match s["kind"].as_str().unwrap_or_default() {
        "User" => name == user.username,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = s["namespace"].as_str().unwrap_or_default();
            !ns.is_empty() && user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn binds(binding: &Value, user: &UserInfo) -> bool {
    binding["subjects"]
        .as_array()
        .is_some_and(|ss| ss.iter().any(|s| subject_matches(s, user)))
}

fn find<'a>(objs: &'a [Arc<Value>], ns: &str, name: &str) -> Option<&'a Value> {
    objs.iter().map(|o| o.as_ref()).find(|o| {
        o["metadata"]["name"] == name && o["metadata"]["namespace"].as_str().unwrap_or_default() == ns
    })
}

/// The rules granted to `user` for requests in `namespace` ("" = cluster scope), with the
/// errors of bindings whose role is missing.
pub fn rules_for<'a>(p: &'a Policy, user: &UserInfo, namespace: &str) -> (Vec<&'a Value>, Vec<String>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut add = |role: Option<&'a Value>, kind: &str, name: &str, errors: &mut Vec<String>| match role {
        Some(r) => rules.extend(r["rules"].as_array().into_iter().flatten()),
        None => errors.push(format!("{kind}.rbac.authorization.k8s.io \"{name}\" not found")),
    };
    for b in p.cluster_role_bindings.iter().filter(|b| binds(b, user)) {
        let name = b["roleRef"]["name"].as_str().unwrap_or_default();
        add(find(&p.cluster_roles, "", name), "clusterrole", name, &mut errors);
    }
    if !namespace.is_empty() {
        let here = p
            .role_bindings
            .iter()
            .filter(|b| b["metadata"]["namespace"] == namespace && binds(b, user));
        for b in here {
            let name = b["roleRef"]["name"].as_str().unwrap_or_default();
            if b["roleRef"]["kind"] == "Role" {
                add(find(&p.roles, namespace, name), "role", name, &mut errors);
            } else {
                add(find(&p.cluster_roles, "", name), "clusterrole", name, &mut errors);
            }
        }
    }
    (rules, errors)
}

/// The bootstrap rules every authenticated user holds (system:discovery, system:basic-user,
/// system:public-info-viewer).
pub fn bootstrap_rules() -> Vec<Value> {
    vec![
        json!({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*",
                                                    "/version", "/version/", "/healthz", "/livez", "/readyz"]}),
        json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
               "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}),
        json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]}),
    ]
}

/// Decide one request.
pub fn authorize(p: &Policy, user: &UserInfo, a: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    if user.groups.iter().any(|g| g == "system:authenticated")
        && bootstrap_rules().iter().any(|r| rule_allows(r, a))
    {
        return Decision {
            allowed: true,
            reason: "allowed by bootstrap ClusterRole".into(),
        };
    }
    let (rules, errors) = rules_for(p, user, &a.namespace);
    if rules.iter().any(|r| rule_allows(r, a)) {
        return Decision {
            allowed: true,
            reason: "RBAC: allowed by a bound role".into(),
        };
    }
    Decision {
        allowed: false,
        reason: if errors.is_empty() {
            String::new()
        } else if errors.len() == 1 {
            format!("RBAC: {}", errors[0])
        } else {
            format!("RBAC: [{}]", errors.join(", "))
        },
    }
}

/// The API server's 403 for a denied request (`responsewriters.Forbidden`).
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let u = &user.username;
    let mut msg = if !a.resource_request {
        format!("User {u:?} cannot {} path {:?}", a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "User {u:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            a.verb, a.api_group
        )
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified = crate::error::qualified(&a.api_group, &a.resource);
    let message = if !a.resource_request {
        format!("forbidden: {msg}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", a.name)
    };
    let mut details = serde_json::Map::new();
    if !a.name.is_empty() {
        details.insert("name".into(), json!(a.name));
    }
    if !a.api_group.is_empty() {
        details.insert("group".into(), json!(a.api_group));
    }
    if !a.resource.is_empty() {
        details.insert("kind".into(), json!(a.resource));
    }
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(Box::new(Value::Object(details))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: ns.into(),
            path: String::new(),
        }
    }

    fn arc(v: Value) -> Arc<Value> {
        Arc::new(v)
    }

    /// kd-op (SA kubedirector/kd) holds a ClusterRole through a ClusterRoleBinding and a Role in
    /// namespace "apps" through a RoleBinding.
    fn policy() -> Policy {
        Policy {
            cluster_roles: vec![arc(json!({"metadata": {"name": "kd"}, "rules": [
                {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "services"]},
                {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]},
                {"verbs": ["update", "patch"], "apiGroups": ["kubedirector.hpe.com"], "resources": ["*/status"]},
                {"verbs": ["get"], "nonResourceURLs": ["/metrics", "/debug/*"]}
            ]}))],
            cluster_role_bindings: vec![arc(json!({"metadata": {"name": "kd"},
                "roleRef": {"kind": "ClusterRole", "name": "kd"},
                "subjects": [{"kind": "ServiceAccount", "name": "kd", "namespace": "kubedirector"}]}))],
            roles: vec![arc(
                json!({"metadata": {"name": "leases", "namespace": "apps"}, "rules": [
                    {"verbs": ["get", "update"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                     "resourceNames": ["kubedirector"]},
                    {"verbs": ["create"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}
                ]}),
            )],
            role_bindings: vec![
                arc(json!({"metadata": {"name": "leases", "namespace": "apps"},
                    "roleRef": {"kind": "Role", "name": "leases"},
                    "subjects": [{"kind": "ServiceAccount", "name": "kd", "namespace": "kubedirector"},
                                 {"kind": "Group", "name": "devs"}]})),
                arc(json!({"metadata": {"name": "broken", "namespace": "other"},
                    "roleRef": {"kind": "Role", "name": "gone"},
                    "subjects": [{"kind": "ServiceAccount", "name": "kd", "namespace": "kubedirector"}]})),
            ],
        }
    }

    fn kd() -> UserInfo {
        UserInfo::service_account("kubedirector", "kd")
    }

    #[test]
    fn cluster_role_binding_grants_verbs_groups_and_resources_everywhere() {
        let p = policy();
        assert!(authorize(&p, &kd(), &res("list", "", "pods", "", "any", "")).allowed);
        assert!(authorize(&p, &kd(), &res("watch", "", "services", "", "", "")).allowed);
        assert!(!authorize(&p, &kd(), &res("delete", "", "pods", "", "any", "p")).allowed);
        assert!(!authorize(&p, &kd(), &res("list", "apps", "pods", "", "any", "")).allowed);
        assert!(!authorize(&p, &kd(), &res("list", "", "secrets", "", "any", "")).allowed);
        // Another service account of the same name elsewhere is someone else.
        let other = UserInfo::service_account("default", "kd");
        assert!(!authorize(&p, &other, &res("list", "", "pods", "", "any", "")).allowed);
    }

    #[test]
    fn subresources_need_their_own_grant_and_star_slash_sub_matches_any_resource() {
        let p = policy();
        assert!(authorize(&p, &kd(), &res("create", "", "pods", "exec", "ns", "p")).allowed);
        assert!(!authorize(&p, &kd(), &res("create", "", "pods", "attach", "ns", "p")).allowed);
        assert!(!authorize(&p, &kd(), &res("get", "", "pods", "log", "ns", "p")).allowed);
        let st = res(
            "patch",
            "kubedirector.hpe.com",
            "kubedirectorclusters",
            "status",
            "ns",
            "c",
        );
        assert!(authorize(&p, &kd(), &st).allowed);
        let main = res(
            "patch",
            "kubedirector.hpe.com",
            "kubedirectorclusters",
            "",
            "ns",
            "c",
        );
        assert!(!authorize(&p, &kd(), &main).allowed);
    }

    #[test]
    fn role_bindings_apply_in_their_namespace_only_and_resource_names_restrict() {
        let p = policy();
        let lease =
            |verb: &str, ns: &str, name: &str| res(verb, "coordination.k8s.io", "leases", "", ns, name);
        assert!(authorize(&p, &kd(), &lease("get", "apps", "kubedirector")).allowed);
        assert!(!authorize(&p, &kd(), &lease("get", "apps", "someone-else")).allowed);
        assert!(
            !authorize(&p, &kd(), &lease("list", "apps", "")).allowed,
            "resourceNames never match a list"
        );
        assert!(authorize(&p, &kd(), &lease("create", "apps", "")).allowed);
        assert!(!authorize(&p, &kd(), &lease("get", "other", "kubedirector")).allowed);
        assert!(!authorize(&p, &kd(), &lease("get", "", "kubedirector")).allowed);
        let dev = UserInfo {
            username: "alice".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
        };
        assert!(authorize(&p, &dev, &lease("create", "apps", "")).allowed);
    }

    #[test]
    fn masters_bootstrap_discovery_and_non_resource_urls() {
        let p = Policy::default();
        assert!(authorize(&p, &UserInfo::admin(), &res("delete", "x", "y", "z", "", "n")).allowed);
        let nr = |path: &str| Attributes {
            verb: "get".into(),
            path: path.into(),
            ..Attributes::default()
        };
        assert!(authorize(&p, &kd(), &nr("/apis/apps/v1")).allowed);
        assert!(!authorize(&p, &kd(), &nr("/metrics")).allowed);
        let review = res(
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "",
            "",
            "",
        );
        assert!(authorize(&p, &kd(), &review).allowed);
        let p = policy();
        assert!(authorize(&p, &kd(), &nr("/metrics")).allowed);
        assert!(authorize(&p, &kd(), &nr("/debug/pprof")).allowed);
        assert!(!authorize(&p, &kd(), &nr("/metricsx")).allowed);
    }

    #[test]
    fn denials_carry_the_api_servers_message_and_broken_bindings_the_reason() {
        let p = policy();
        let a = res("get", "", "configmaps", "", "ns1", "cfg");
        let d = authorize(&p, &kd(), &a);
        assert!(!d.allowed);
        let e = forbidden(&kd(), &a, &d.reason);
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "configmaps \"cfg\" is forbidden: User \"system:serviceaccount:kubedirector:kd\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"ns1\""
        );
        let a = res("list", "apps", "statefulsets", "", "", "");
        let e = forbidden(&kd(), &a, "");
        assert_eq!(
            e.message,
            "statefulsets.apps is forbidden: User \"system:serviceaccount:kubedirector:kd\" cannot list resource \"statefulsets\" in API group \"apps\" at the cluster scope"
        );
        let a = res("create", "", "pods", "attach", "ns", "p");
        assert!(forbidden(&kd(), &a, "")
            .message
            .contains("cannot create resource \"pods/attach\""));
        let d = authorize(&p, &kd(), &res("get", "", "configmaps", "", "other", "x"));
        assert_eq!(
            d.reason,
            "RBAC: role.rbac.authorization.k8s.io \"gone\" not found"
        );
    }
}
