//! Authentication and authorization of API requests: the one hook of the request path
//! ([`Auth::check`]), bearer tokens issued for ServiceAccounts, and the RBAC evaluator
//! ([`rbac`]) over the stored Role/ClusterRole/bindings.
//!
//! With [`AuthorizationMode::AlwaysAllow`] (the default) every request is served as the admin,
//! whatever its token, as before. With [`AuthorizationMode::Rbac`] a request needs a known
//! bearer token: the admin token (`system:masters`, full access) or one issued by
//! [`Auth::issue_service_account_token`] for a ServiceAccount that exists; anything else is 401,
//! and the request is authorized by RBAC (403 with the API server's message when denied).

pub mod rbac;

pub use rbac::{Attributes, Decision, Policy, UserInfo};

use crate::error::ApiError;
use crate::resources::storage_of;
use crate::store::Store;
use axum::http::{header, HeaderMap};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

/// The admin kubeconfig's token.
pub const ADMIN_TOKEN: &str = "kubesim";

/// How requests are authorized (`kube-apiserver --authorization-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Everything is allowed (any token is the admin).
    #[default]
    AlwaysAllow,
    /// RBAC over the stored roles and bindings.
    Rbac,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always-allow" | "AlwaysAllow" => Ok(Self::AlwaysAllow),
            "rbac" | "RBAC" => Ok(Self::Rbac),
            _ => Err(format!("unknown authorization mode {s:?} (always-allow, rbac)")),
        }
    }
}

/// Tokens and the authorization mode of one simulator.
#[derive(Debug, Default)]
pub struct Auth {
    mode: AuthorizationMode,
    /// token -> (namespace, service account)
    tokens: RwLock<HashMap<String, (String, String)>>,
    /// Requests allowed by RBAC (not the admin's), for [`Auth::used_by`].
    used: Mutex<BTreeSet<Used>>,
    /// Requests RBAC refused, for [`Auth::denied_to`].
    denied: Mutex<BTreeSet<Used>>,
}

/// One kind of request a user made and RBAC allowed: who, verb, API group, resource,
/// subresource, object name (empty for collections).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Used {
    /// Username.
    pub user: String,
    /// Verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource.
    pub resource: String,
    /// Subresource ("" when none).
    pub subresource: String,
    /// Object name ("" for collections and creates).
    pub name: String,
}

impl Auth {
    /// With this mode.
    pub fn new(mode: AuthorizationMode) -> Self {
        Auth {
            mode,
            tokens: RwLock::default(),
            used: Mutex::default(),
            denied: Mutex::default(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> AuthorizationMode {
        self.mode
    }

    /// A new bearer token authenticating as `system:serviceaccount:<namespace>:<name>` (valid
    /// while that ServiceAccount exists, like a legacy service-account token).
    pub fn issue_service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("kubesim-sa-{:032x}", rand::random::<u128>());
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), (namespace.to_string(), name.to_string()));
        token
    }

    /// Who sent this request (401 Unauthorized in RBAC mode for a missing or unknown token).
    pub fn authenticate(&self, store: &Store, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        self.user_of_token(store, token)
    }

    /// The user a bearer token stands for (TokenReview uses it too).
    pub fn user_of_token(&self, store: &Store, token: Option<&str>) -> Result<UserInfo, ApiError> {
        let unauthorized = || ApiError::new(401, "Unauthorized", "Unauthorized");
        let sa = token.and_then(|t| {
            self.tokens
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(t)
                .cloned()
        });
        match (sa, self.mode) {
            (Some((ns, name)), _) => {
                let exists = store
                    .get(
                        &crate::resources::ResourceKey::core("serviceaccounts"),
                        Some(&ns),
                        &name,
                    )
                    .is_some();
                if exists {
                    Ok(UserInfo::service_account(&ns, &name))
                } else if self.mode == AuthorizationMode::Rbac {
                    Err(unauthorized())
                } else {
                    Ok(UserInfo::admin())
                }
            }
            (None, AuthorizationMode::AlwaysAllow) => Ok(UserInfo::admin()),
            (None, AuthorizationMode::Rbac) if token == Some(ADMIN_TOKEN) => Ok(UserInfo::admin()),
            (None, AuthorizationMode::Rbac) => Err(unauthorized()),
        }
    }

    /// The kinds of requests `username` made that RBAC allowed (the request log the operator's
    /// grants are checked against).
    pub fn used_by(&self, username: &str) -> Vec<Used> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.iter().filter(|u| u.user == username).cloned().collect()
    }

    /// The kinds of requests of `username` RBAC refused.
    pub fn denied_to(&self, username: &str) -> Vec<Used> {
        let denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        denied.iter().filter(|u| u.user == username).cloned().collect()
    }

    /// The RBAC decision for `user` (used by requests and by access reviews alike).
    pub fn decide(&self, store: &Store, user: &UserInfo, attrs: &Attributes) -> Decision {
        rbac::authorize(&policy(store), user, attrs)
    }

    /// The request-path hook: Ok when `user` may do `attrs`, else the 403 to answer.
    pub fn check(&self, store: &Store, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
        if self.mode == AuthorizationMode::AlwaysAllow {
            return Ok(());
        }
        let d = self.decide(store, user, attrs);
        let record = Used {
            user: user.username.clone(),
            verb: attrs.verb.clone(),
            group: attrs.api_group.clone(),
            resource: attrs.resource.clone(),
            subresource: attrs.subresource.clone(),
            name: attrs.name.clone(),
        };
        if d.allowed {
            if !user.groups.iter().any(|g| g == "system:masters") && attrs.resource_request {
                self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(record);
            }
            Ok(())
        } else {
            let e = rbac::forbidden(user, attrs, &d.reason);
            tracing::debug!(message = %e.message, "request forbidden");
            self.denied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(record);
            Err(e)
        }
    }
}

/// The stored RBAC objects, now.
pub fn policy(store: &Store) -> Policy {
    let list = |r: &str| {
        store
            .list_arcs(&storage_of("rbac.authorization.k8s.io", r), None)
            .0
    };
    Policy {
        roles: list("roles"),
        cluster_roles: list("clusterroles"),
        role_bindings: list("rolebindings"),
        cluster_role_bindings: list("clusterrolebindings"),
    }
}

/// The attributes of a resource request (`pods/exec`, `pods/attach` and `pods/portforward` are
/// `create` whatever the method, as for WebSocket upgrades since Kubernetes 1.31; a namespace
/// object's own namespace is its name).
pub fn resource_attributes(
    verb: &str,
    group: &str,
    version: &str,
    resource: &str,
    sub: Option<&str>,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Attributes {
    let sub = sub.unwrap_or_default();
    let verb = if group.is_empty() && resource == "pods" && matches!(sub, "exec" | "attach" | "portforward") {
        "create"
    } else {
        verb
    };
    let namespace = match (group, resource, name) {
        ("", "namespaces", Some(n)) => n,
        _ => namespace.unwrap_or_default(),
    };
    Attributes {
        verb: verb.to_string(),
        resource_request: true,
        api_group: group.to_string(),
        api_version: version.to_string(),
        resource: resource.to_string(),
        subresource: sub.to_string(),
        name: name.unwrap_or_default().to_string(),
        namespace: namespace.to_string(),
        path: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceKey;
    use crate::WriteOptions;
    use serde_json::json;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        h
    }

    fn store() -> Store {
        let st = Store::new(
            crate::StoreConfig::default(),
            Default::default(),
            Default::default(),
            std::sync::Arc::new(crate::kinds::ApiKinds),
        );
        crate::cluster::bootstrap(&st, 0);
        st
    }

    #[test]
    fn rbac_mode_knows_the_admin_and_issued_tokens_of_existing_service_accounts_only() {
        let st = store();
        let auth = Auth::new(AuthorizationMode::Rbac);
        assert_eq!(
            auth.authenticate(&st, &bearer(ADMIN_TOKEN)).unwrap(),
            UserInfo::admin()
        );
        assert_eq!(auth.authenticate(&st, &bearer("guess")).unwrap_err().code, 401);
        assert_eq!(auth.authenticate(&st, &HeaderMap::new()).unwrap_err().code, 401);
        let t = auth.issue_service_account_token("default", "op");
        assert_eq!(
            auth.authenticate(&st, &bearer(&t)).unwrap_err().code,
            401,
            "no such SA yet"
        );
        let info = st.registry().get(&ResourceKey::core("serviceaccounts")).unwrap();
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op", "namespace": "default"}});
        st.commit_create(&info, sa, &WriteOptions::default(), "Update")
            .unwrap();
        assert_eq!(
            auth.authenticate(&st, &bearer(&t)).unwrap(),
            UserInfo::service_account("default", "op")
        );
        let always = Auth::new(AuthorizationMode::AlwaysAllow);
        assert_eq!(
            always.authenticate(&st, &bearer("guess")).unwrap(),
            UserInfo::admin()
        );
    }

    #[test]
    fn exec_is_create_and_a_namespace_is_its_own_namespace() {
        let a = resource_attributes("get", "", "v1", "pods", Some("exec"), Some("p"), Some("ns"));
        assert_eq!((a.verb.as_str(), a.subresource.as_str()), ("create", "exec"));
        let a = resource_attributes("get", "", "v1", "pods", Some("log"), Some("p"), Some("ns"));
        assert_eq!(a.verb, "get");
        let a = resource_attributes("delete", "", "v1", "namespaces", None, Some("team"), None);
        assert_eq!(a.namespace, "team");
    }
}
