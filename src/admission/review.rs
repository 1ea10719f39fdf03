//! The AdmissionReview envelope (spec 2.1, rules W-1..W-5): HTTP body in, HTTP reply out.
//!
//! Accepts `admission.k8s.io/v1beta1` (what upstream registers) and `admission.k8s.io/v1`
//! requests and answers in the request's version with `apiVersion`/`kind` set (upstream left
//! them empty). Notes about skipped checks are returned as admission `warnings`.

use base64::Engine as _;
use serde_json::{json, Value};

use super::{
    app::admit_app, cluster::admit_cluster, config::admit_config, pvc::admit_pvc, AdmissionContext,
    ClusterFacts, Entropy, Operation, UserInfo, Verdict,
};

/// AdmissionReview API group/version used when the request's own cannot be determined.
pub const DEFAULT_REVIEW_VERSION: &str = "admission.k8s.io/v1beta1";

/// An HTTP reply of the `/validate` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// HTTP status code.
    pub status: u16,
    /// Content type of the body.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The reviewed object's kind as a bounded label: one of [`REVIEW_KINDS`] ([`OTHER_KIND`]
    /// for any other kind and for a review whose kind could not be read).
    pub kind: &'static str,
    /// What the reply decided.
    pub outcome: ReviewOutcome,
}

/// The kinds the webhook tells apart in its metrics (`kind` label values).
pub const REVIEW_KINDS: &[&str] = &[
    "KubeDirectorApp",
    "KubeDirectorCluster",
    "KubeDirectorConfig",
    "PersistentVolumeClaim",
    OTHER_KIND,
];

/// The `kind` label of a review of another kind, or of one that could not be decoded.
pub const OTHER_KIND: &str = "other";

/// The bounded label of an object kind.
pub fn kind_label(kind: &str) -> &'static str {
    REVIEW_KINDS
        .iter()
        .copied()
        .find(|k| *k == kind)
        .unwrap_or(OTHER_KIND)
}

/// What a `/validate` reply decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// Admitted (possibly with a patch).
    Allowed,
    /// Refused by a rule.
    Denied,
    /// The request could not be handled: HTTP error, undecodable review, unknown operation.
    Malformed,
}

impl HttpReply {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            kind: OTHER_KIND,
            outcome: ReviewOutcome::Malformed,
        }
    }
}

/// Runs the rules for one object kind (W-4 dispatch). Unknown kinds are allowed.
pub fn admit(
    kind: &str,
    op: Operation,
    old: Option<&Value>,
    new: Option<&Value>,
    ctx: &AdmissionContext<'_>,
) -> Verdict {
    match kind {
        "KubeDirectorApp" => admit_app(op, old, new, ctx),
        "KubeDirectorCluster" => admit_cluster(op, old, new, ctx),
        "KubeDirectorConfig" => admit_config(op, old, new, ctx),
        "PersistentVolumeClaim" => admit_pvc(op, new, ctx),
        _ => Verdict::allow(),
    }
}

/// Renders the rejection message as upstream does: a leading newline, messages joined by newlines.
pub fn joined_message(messages: &[String]) -> String {
    format!("\n{}", messages.join("\n"))
}

fn user_info(v: Option<&Value>) -> UserInfo {
    let Some(v) = v else { return UserInfo::default() };
    UserInfo {
        username: v
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        uid: v
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        groups: v
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        extra: v
            .get("extra")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    }
}

fn review(api_version: &str, response: Value) -> HttpReply {
    let body = json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response});
    HttpReply {
        status: 200,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        kind: OTHER_KIND,
        outcome: ReviewOutcome::Malformed,
    }
}

fn response_of(uid: &str, verdict: &Verdict) -> Value {
    let mut resp = json!({"uid": uid, "allowed": verdict.allowed});
    if !verdict.allowed {
        let message = if verdict.verbatim {
            verdict.messages.join("\n")
        } else {
            joined_message(&verdict.messages)
        };
        resp["status"] = json!({"message": message});
    } else if !verdict.patch.is_empty() {
        // Serialising a Vec<PatchOperation> of JSON values cannot fail; keep the P-3 style
        // message for the impossible case rather than panicking.
        match verdict.patch_json() {
            Ok(bytes) => {
                resp["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
                resp["patchType"] = json!("JSONPatch");
            }
            Err(_) => {
                resp["allowed"] = json!(false);
                resp["status"] = json!({"message": joined_message(&[
                    "Internal error: failed to populate default values for unspecified properties.".to_string()
                ])});
            }
        }
    }
    if !verdict.notes.is_empty() {
        resp["warnings"] = json!(verdict.notes);
    }
    resp
}

/// Handles one `/validate` request: W-1 (empty body → 400), W-2 (Content-Type not exactly
/// `application/json` → 415), W-3 (bad review → `allowed=false` with the decode error), W-4
/// (dispatch), W-5 (response envelope; a [`Verdict::verbatim`] message goes out as is).
pub fn handle_review(
    content_type: Option<&str>,
    body: &[u8],
    kd_namespace: Option<String>,
    facts: &dyn ClusterFacts,
    entropy: &dyn Entropy,
) -> HttpReply {
    // Upstream answers these with Go's http.Error, which appends a newline; its Content-Type
    // test is an exact string comparison (the API server sends exactly `application/json`).
    if body.is_empty() {
        return HttpReply::text(400, "empty body\n");
    }
    if content_type != Some("application/json") {
        return HttpReply::text(415, "invalid Content-Type, expect `application/json`\n");
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return review(
                DEFAULT_REVIEW_VERSION,
                json!({"uid": "", "allowed": false, "status": {"message": e.to_string()}}),
            )
        }
    };
    let api_version = match parsed.get("apiVersion").and_then(Value::as_str) {
        Some(v @ ("admission.k8s.io/v1" | "admission.k8s.io/v1beta1")) => v.to_string(),
        _ => DEFAULT_REVIEW_VERSION.to_string(),
    };
    let Some(request) = parsed.get("request").filter(|r| r.is_object()) else {
        return review(
            &api_version,
            json!({"uid": "", "allowed": false, "status": {"message": "AdmissionReview has no request"}}),
        );
    };
    let uid = request.get("uid").and_then(Value::as_str).unwrap_or_default();
    let op_str = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(op) = Operation::parse(op_str) else {
        return review(
            &api_version,
            json!({"uid": uid, "allowed": false,
                   "status": {"message": format!("unknown admission operation {op_str:?}")}}),
        );
    };
    let kind = request
        .get("kind")
        .and_then(|k| k.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = request.get("object").filter(|o| !o.is_null());
    let old_object = request.get("oldObject").filter(|o| !o.is_null());
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = request
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| {
            object
                .or(old_object)
                .and_then(|o| super::get_str(o, &["metadata", "name"]))
        })
        .unwrap_or_default()
        .to_string();
    let ctx = AdmissionContext {
        facts,
        kd_namespace,
        namespace,
        name,
        user: user_info(request.get("userInfo")),
        entropy,
    };
    let verdict = admit(kind, op, old_object, object, &ctx);
    let response = response_of(uid, &verdict);
    let allowed = response.get("allowed") == Some(&Value::Bool(true));
    HttpReply {
        kind: kind_label(kind),
        outcome: if allowed {
            ReviewOutcome::Allowed
        } else {
            ReviewOutcome::Denied
        },
        ..review(&api_version, response)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::testutil::{CountingEntropy, FakeFacts};

    fn call(ct: Option<&str>, body: &[u8], facts: &FakeFacts) -> HttpReply {
        let e = CountingEntropy(0.into());
        handle_review(ct, body, Some("kd-system".into()), facts, &e)
    }

    fn body_json(r: &HttpReply) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn config_review(version: &str, namespace: &str) -> Vec<u8> {
        json!({
            "apiVersion": version, "kind": "AdmissionReview",
            "request": {
                "uid": "req-1", "kind": {"group": "kubedirector.hpe.com", "version": "v1beta1", "kind": "KubeDirectorConfig"},
                "operation": "CREATE", "namespace": namespace, "name": "kd-global-config",
                "userInfo": {"username": "admin", "groups": ["system:masters"]},
                "object": {"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
                           "metadata": {"name": "kd-global-config", "namespace": namespace}}
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn w1_empty_body_is_400() {
        let r = call(Some("application/json"), b"", &FakeFacts::new());
        assert_eq!((r.status, r.body.as_slice()), (400, b"empty body\n".as_slice()));
    }

    #[test]
    fn w2_wrong_content_type_is_415() {
        let r = call(Some("text/plain"), b"{}", &FakeFacts::new());
        assert_eq!(
            (r.status, r.body.as_slice()),
            (
                415,
                b"invalid Content-Type, expect `application/json`\n".as_slice()
            )
        );
        assert_eq!(call(None, b"{}", &FakeFacts::new()).status, 415);
        // upstream compares the header verbatim
        assert_eq!(
            call(Some("application/json; charset=utf-8"), b"{}", &FakeFacts::new()).status,
            415
        );
    }

    #[test]
    fn w3_undecodable_review_is_disallowed_with_error_text() {
        let r = call(Some("application/json"), b"{not json", &FakeFacts::new());
        assert_eq!(r.status, 200);
        let b = body_json(&r);
        assert_eq!(b["response"]["allowed"], false);
        assert!(b["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("key must be a string"));
    }

    #[test]
    fn w4_other_kinds_are_allowed() {
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "x", "kind": {"kind": "ConfigMap"}, "operation": "CREATE", "object": {}}});
        let b = body_json(&call(
            Some("application/json"),
            body.to_string().as_bytes(),
            &FakeFacts::new(),
        ));
        assert_eq!(b["response"], json!({"uid": "x", "allowed": true}));
    }

    #[test]
    fn w5_allowed_mutation_carries_base64_json_patch_in_request_version() {
        for version in ["admission.k8s.io/v1beta1", "admission.k8s.io/v1"] {
            let r = call(
                Some("application/json"),
                &config_review(version, "kd-system"),
                &FakeFacts::new(),
            );
            let b = body_json(&r);
            assert_eq!(b["apiVersion"], version);
            assert_eq!(b["kind"], "AdmissionReview");
            assert_eq!(b["response"]["uid"], "req-1");
            assert_eq!(b["response"]["allowed"], true);
            assert_eq!(b["response"]["patchType"], "JSONPatch");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b["response"]["patch"].as_str().unwrap())
                .unwrap();
            let patch: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(patch[0], json!({"op": "add", "path": "/spec", "value": {}}));
        }
    }

    #[test]
    fn w5_rejection_message_starts_with_newline_joins_with_newlines_and_has_no_patch() {
        let mut review: Value =
            serde_json::from_slice(&config_review("admission.k8s.io/v1", "kd-system")).unwrap();
        review["request"]["object"]["spec"] =
            json!({"defaultStorageClassName": "nope", "podLabels": {"k": "-bad"}});
        let r = call(
            Some("application/json"),
            review.to_string().as_bytes(),
            &FakeFacts::new(),
        );
        let b = body_json(&r);
        assert_eq!(b["response"]["allowed"], false);
        let msg = b["response"]["status"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(
                "\nUnable to fetch storageClass object with the provided name(nope).\nspec.podLabels: Invalid value: \"-bad\": "
            ),
            "{msg:?}"
        );
        assert_eq!(msg.matches('\n').count(), 2, "{msg:?}");
        assert!(b["response"].get("patch").is_none());
        assert!(b["response"].get("patchType").is_none());
        assert_eq!(joined_message(&["a".into(), "b".into()]), "\na\nb");
    }

    #[test]
    fn w5_k3_namespace_message_is_sent_as_upstream_built_it() {
        // upstream: fmt.Sprintf("Invalid namespace '%s', must be '%s'.\n", ...), no leading newline
        let r = call(
            Some("application/json"),
            &config_review("admission.k8s.io/v1beta1", "elsewhere"),
            &FakeFacts::new(),
        );
        let b = body_json(&r);
        assert_eq!(b["response"]["allowed"], false);
        assert_eq!(
            b["response"]["status"]["message"],
            "Invalid namespace 'elsewhere', must be 'kd-system'.\n"
        );
        let e = CountingEntropy(0.into());
        let r = handle_review(
            Some("application/json"),
            &config_review("admission.k8s.io/v1beta1", "kd-system"),
            None,
            &FakeFacts::new(),
            &e,
        );
        assert_eq!(
            body_json(&r)["response"]["status"]["message"],
            "Failed to get kubedirector namespace"
        );
    }

    #[test]
    fn replies_carry_a_bounded_kind_label_and_their_outcome_for_metrics() {
        let f = FakeFacts::new();
        let outcome = |r: HttpReply| (r.kind, r.outcome);
        assert_eq!(
            outcome(call(Some("application/json"), b"", &f)),
            (OTHER_KIND, ReviewOutcome::Malformed)
        );
        assert_eq!(
            outcome(call(Some("text/plain"), b"{}", &f)),
            (OTHER_KIND, ReviewOutcome::Malformed)
        );
        assert_eq!(
            outcome(call(Some("application/json"), b"{not json", &f)),
            (OTHER_KIND, ReviewOutcome::Malformed)
        );
        let allowed = call(
            Some("application/json"),
            &config_review("admission.k8s.io/v1", "kd-system"),
            &f,
        );
        assert_eq!(outcome(allowed), ("KubeDirectorConfig", ReviewOutcome::Allowed));
        let denied = call(
            Some("application/json"),
            &config_review("admission.k8s.io/v1", "elsewhere"),
            &f,
        );
        assert_eq!(outcome(denied), ("KubeDirectorConfig", ReviewOutcome::Denied));
        let other = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "x", "kind": {"kind": "ConfigMap"}, "operation": "CREATE", "object": {}}});
        assert_eq!(
            outcome(call(Some("application/json"), other.to_string().as_bytes(), &f)),
            (OTHER_KIND, ReviewOutcome::Allowed)
        );
        assert_eq!(kind_label("PersistentVolumeClaim"), "PersistentVolumeClaim");
        assert_eq!(kind_label("kubedirectorcluster"), OTHER_KIND);
    }
}
