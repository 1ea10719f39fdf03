//! API errors and their `metav1.Status` wire form.
//!
//! Every failure the API server reports is an [`ApiError`]; [`ApiError::to_status`] renders it
//! the way kube-apiserver does (`kind: Status`, `status: Failure`, `reason`, `code`, `details`).

use serde_json::{json, Value};

/// One entry of `Status.details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: String,
    /// Human-readable message (without the field prefix).
    pub message: String,
    /// JSONPath-like field, e.g. `metadata.name`, `spec.replicas`.
    pub field: String,
}

impl Cause {
    /// Build a cause.
    pub fn new(reason: &str, field: &str, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.to_string(),
            message: message.into(),
            field: field.to_string(),
        }
    }

    /// `FieldValueInvalid` with the real server's `Invalid value: <v>: <detail>` message.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {}: {}", value_for_message(value), detail),
        )
    }

    /// `FieldValueRequired` (`Required value`).
    pub fn required(field: &str, detail: &str) -> Self {
        let msg = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause::new("FieldValueRequired", field, msg)
    }

    /// `FieldValueForbidden`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Cause::new("FieldValueForbidden", field, format!("Forbidden: {detail}"))
    }

    /// `FieldValueTypeInvalid` (`Invalid value: ...: must be of type x`).
    pub fn type_invalid(field: &str, value: &Value, detail: &str) -> Self {
        Cause::new(
            "FieldValueTypeInvalid",
            field,
            format!("Invalid value: {}: {}", value_for_message(value), detail),
        )
    }

    /// `FieldValueNotSupported` (enum violations).
    pub fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let list: Vec<String> = allowed.iter().map(value_for_message).collect();
        Cause::new(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                value_for_message(value),
                list.join(", ")
            ),
        )
    }

    /// `field: message` as embedded in the top-level message.
    pub fn line(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Render a value the way Go's `%#v`-ish error messages do for simple values.
pub fn value_for_message(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`, `Conflict`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details` (already in wire form), if any.
    pub details: Option<Box<Value>>,
}

fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut d = serde_json::Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    if !kind.is_empty() {
        d.insert("kind".into(), json!(kind));
    }
    Value::Object(d)
}

/// `resource.group` or just `resource` for the core group (how the server names a resource).
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    /// Build a bare error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 `<resource> "<name>" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", qualified(group, resource), name),
            details: Some(Box::new(details(group, resource, name))),
        }
    }

    /// 404 for an unknown path / resource.
    pub fn no_route() -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(Box::new(
                json!({"causes":[{"reason":"UnexpectedServerResponse","message":"404 page not found"}]}),
            )),
        }
    }

    /// 409 `<resource> "<name>" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", qualified(group, resource), name),
            details: Some(Box::new(details(group, resource, name))),
        }
    }

    /// 409 Conflict with the standard optimistic-concurrency message.
    pub fn conflict_modified(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict: `Operation cannot be fulfilled on <res> "<name>": <msg>`.
    pub fn conflict(group: &str, resource: &str, name: &str, msg: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                qualified(group, resource),
                name,
                msg
            ),
            details: Some(Box::new(details(group, resource, name))),
        }
    }

    /// 422 Invalid: `<Kind> "<name>" is invalid: <causes>`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let kind_q = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let msg = if causes.len() == 1 {
            format!("{} \"{}\" is invalid: {}", kind_q, name, causes[0].line())
        } else {
            let lines: Vec<String> = causes.iter().map(Cause::line).collect();
            format!("{} \"{}\" is invalid: [{}]", kind_q, name, lines.join(", "))
        };
        let mut d = details(group, kind, name);
        if let Value::Object(m) = &mut d {
            let cs: Vec<Value> = causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            m.insert("causes".into(), Value::Array(cs));
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: msg,
            details: Some(Box::new(d)),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    /// 403 Forbidden.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 Expired (too old resource version).
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(_ct: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(msg: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", msg)
    }

    /// 500 InternalError.
    pub fn internal(msg: impl Into<String>) -> Self {
        let m = msg.into();
        ApiError {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {m}"),
            details: Some(Box::new(json!({"causes":[{"message": m}]}))),
        }
    }

    /// 429 TooManyRequests.
    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", msg)
    }

    /// 504 Timeout.
    pub fn timeout(msg: impl Into<String>) -> Self {
        Self::new(504, "Timeout", msg)
    }

    /// The canonical reason for a bare status code (used by fault injection).
    pub fn from_code(code: u16, msg: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, msg)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), json!("Status"));
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("metadata".into(), json!({}));
        m.insert("status".into(), json!("Failure"));
        m.insert("message".into(), json!(self.message));
        m.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            m.insert("details".into(), (**d).clone());
        }
        m.insert("code".into(), json!(self.code));
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_single_and_multi() {
        let e = ApiError::invalid("", "Pod", "x", vec![Cause::required("metadata.name", "")]);
        assert_eq!(e.message, "Pod \"x\" is invalid: metadata.name: Required value");
        let e = ApiError::invalid(
            "example.com",
            "Widget",
            "w",
            vec![Cause::required("spec.a", ""), Cause::required("spec.b", "")],
        );
        assert_eq!(
            e.message,
            "Widget.example.com \"w\" is invalid: [spec.a: Required value, spec.b: Required value]"
        );
        assert_eq!(e.to_status()["details"]["causes"][1]["field"], "spec.b");
    }

    #[test]
    fn not_found_names_group() {
        let e = ApiError::not_found("apps", "statefulsets", "s");
        assert_eq!(e.message, "statefulsets.apps \"s\" not found");
        assert_eq!(e.to_status()["details"]["group"], "apps");
    }
}
