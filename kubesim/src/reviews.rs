//! Create-only review resources (authorization.k8s.io SubjectAccessReview & co.,
//! authentication.k8s.io TokenReview/SelfSubjectReview): answered, never stored. Under
//! `--authorization rbac` access reviews are answered by the same evaluator that authorizes
//! requests ([`crate::auth`]); otherwise they allow everything (or deny, via the control API).

use crate::auth::{rbac, Attributes, Auth, AuthorizationMode, UserInfo};
use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::store::Store;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether access reviews answer `allowed: true` (default) — switchable via the control API.
pub static DENY_ACCESS_REVIEWS: AtomicBool = AtomicBool::new(false);

fn review_attributes(spec: &Value, namespace: Option<&str>) -> Attributes {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        let mut a = crate::auth::resource_attributes(
            r["verb"].as_str().unwrap_or_default(),
            r["group"].as_str().unwrap_or_default(),
            r["version"].as_str().unwrap_or_default(),
            r["resource"].as_str().unwrap_or_default(),
            r["subresource"].as_str(),
            r["name"].as_str(),
            r["namespace"].as_str().or(namespace),
        );
        // A review asks about exactly the verb it names.
        a.verb = s(&r["verb"]);
        a
    } else {
        let n = &spec["nonResourceAttributes"];
        Attributes {
            verb: s(&n["verb"]),
            path: s(&n["path"]),
            ..Attributes::default()
        }
    }
}

fn rbac_access_status(auth: &Auth, store: &Store, user: &UserInfo, a: &Attributes) -> Value {
    let d = auth.decide(store, user, a);
    let mut st = json!({"allowed": d.allowed});
    if !d.reason.is_empty() {
        st["reason"] = json!(d.reason);
    }
    st
}

fn rules_review(store: &Store, user: &UserInfo, namespace: &str) -> Value {
    if user.groups.iter().any(|g| g == "system:masters") {
        return json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false
        });
    }
    let policy = crate::auth::policy(store);
    let (rules, errors) = rbac::rules_for(&policy, user, namespace);
    let boot = rbac::bootstrap_rules();
    let all = boot.iter().chain(rules);
    let (non, res): (Vec<&Value>, Vec<&Value>) = all.partition(|r| r.get("nonResourceURLs").is_some());
    let mut st = json!({"resourceRules": res, "nonResourceRules": non, "incomplete": !errors.is_empty()});
    if !errors.is_empty() {
        st["evaluationError"] = json!(errors.join(", "));
    }
    st
}

/// Answer a review object sent by `caller` (in `namespace` for the namespaced reviews).
pub fn answer(
    info: &ResourceInfo,
    mut obj: Value,
    auth: &Auth,
    store: &Store,
    caller: &UserInfo,
    namespace: Option<&str>,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is unrecognized (must be a JSON object)",
        ));
    }
    obj["apiVersion"] = json!(info.api_version());
    obj["kind"] = json!(info.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    let rbac_mode = auth.mode() == AuthorizationMode::Rbac;
    match info.kind.as_str() {
        "SubjectAccessReview" | "SelfSubjectAccessReview" | "LocalSubjectAccessReview" if rbac_mode => {
            let spec = &obj["spec"];
            let user = if info.kind == "SelfSubjectAccessReview" {
                caller.clone()
            } else {
                UserInfo {
                    username: spec["user"].as_str().unwrap_or_default().to_string(),
                    groups: spec["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect(),
                }
            };
            let ns = if info.kind == "LocalSubjectAccessReview" {
                namespace
            } else {
                None
            };
            let attrs = review_attributes(spec, ns);
            obj["status"] = rbac_access_status(auth, store, &user, &attrs);
        }
        "SelfSubjectRulesReview" if rbac_mode => {
            let ns = obj["spec"]["namespace"].as_str().unwrap_or_default().to_string();
            obj["status"] = rules_review(store, caller, &ns);
        }
        "TokenReview" if rbac_mode => {
            obj["status"] = match auth.user_of_token(store, obj["spec"]["token"].as_str()) {
                Ok(u) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": obj["spec"]["audiences"].clone()})
                }
                Err(_) => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
        }
        "SelfSubjectReview" if rbac_mode => {
            obj["status"] = json!({"userInfo": caller.to_json()});
        }
        "SubjectAccessReview" | "SelfSubjectAccessReview" | "LocalSubjectAccessReview" => {
            let deny = DENY_ACCESS_REVIEWS.load(Ordering::SeqCst);
            obj["status"] = if deny {
                json!({"allowed": false, "denied": true, "reason": "kubesim: access reviews configured to deny"})
            } else {
                json!({"allowed": true, "reason": "kubesim: all access allowed"})
            };
        }
        "SelfSubjectRulesReview" => {
            obj["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false
            });
        }
        "TokenReview" => {
            obj["status"] = json!({
                "authenticated": true,
                "user": {"username": "kubesim-admin", "groups": ["system:masters", "system:authenticated"]},
                "audiences": obj["spec"]["audiences"].clone(),
            });
        }
        "SelfSubjectReview" => {
            obj["status"] = json!({"userInfo": {"username": "kubesim-admin", "groups": ["system:masters", "system:authenticated"]}});
        }
        _ => {}
    }
    Ok(obj)
}
