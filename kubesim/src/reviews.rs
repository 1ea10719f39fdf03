//! Create-only review resources (authorization.k8s.io SubjectAccessReview & co.,
//! authentication.k8s.io TokenReview/SelfSubjectReview): answered, never stored.

use crate::error::ApiError;
use crate::resources::ResourceInfo;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether access reviews answer `allowed: true` (default) — switchable via the control API.
pub static DENY_ACCESS_REVIEWS: AtomicBool = AtomicBool::new(false);

/// Answer a review object.
pub fn answer(info: &ResourceInfo, mut obj: Value) -> Result<Value, ApiError> {
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
    match info.kind.as_str() {
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
