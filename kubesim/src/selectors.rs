//! Label and field selectors (the string forms used in `?labelSelector=` / `?fieldSelector=`),
//! plus evaluation of structured `metav1.LabelSelector` objects (webhook selectors).

use crate::error::ApiError;
use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `k=v`, `k==v`.
    Eq(String, String),
    /// `k!=v`.
    NotEq(String, String),
    /// `k in (a,b)`.
    In(String, Vec<String>),
    /// `k notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn bad(sel: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why} (selector {sel:?})"))
}

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_set(sel: &str, rest: &str) -> Result<Vec<String>, ApiError> {
    let r = rest.trim();
    if !r.starts_with('(') || !r.ends_with(')') {
        return Err(bad(sel, "found '', expected: '('"));
    }
    Ok(r[1..r.len() - 1]
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parse the string form.
    pub fn parse(sel: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if sel.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(sel) {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad(sel, "found '', expected: identifier"));
            }
            let words: Vec<&str> = p.splitn(2, char::is_whitespace).collect();
            if words.len() == 2 {
                let rest = words[1].trim_start();
                if let Some(r) = rest.strip_prefix("notin") {
                    reqs.push(Requirement::NotIn(words[0].to_string(), parse_set(sel, r)?));
                    continue;
                }
                if let Some(r) = rest.strip_prefix("in") {
                    reqs.push(Requirement::In(words[0].to_string(), parse_set(sel, r)?));
                    continue;
                }
            }
            if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Requirement::NotEq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push(Requirement::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push(Requirement::Eq(k.trim().into(), v.trim().into()));
            } else if let Some(k) = p.strip_prefix('!') {
                reqs.push(Requirement::NotExists(k.trim().into()));
            } else if p.contains(char::is_whitespace) || p.contains('(') {
                return Err(bad(sel, "found unexpected token"));
            } else {
                reqs.push(Requirement::Exists(p.into()));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the selector is empty (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Match a labels map (`metadata.labels`, may be null).
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).map(|x| vs.iter().any(|v| v == x)).unwrap_or(false),
            Requirement::NotIn(k, vs) => get(k).map(|x| !vs.iter().any(|v| v == x)).unwrap_or(true),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Build from a structured `metav1.LabelSelector` (matchLabels + matchExpressions).
    pub fn from_structured(sel: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Requirement::Eq(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let vals: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let r = match e["operator"].as_str().unwrap_or_default() {
                    "In" => Requirement::In(key, vals),
                    "NotIn" => Requirement::NotIn(key, vals),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::NotExists(key),
                    other => return Err(format!("{other:?} is not a valid label selector operator")),
                };
                reqs.push(r);
            }
        }
        Ok(LabelSelector(reqs))
    }
}

/// A parsed field selector: `(field, value, equal?)` terms.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(pub Vec<(String, String, bool)>);

/// Fields selectable per resource beyond `metadata.name` / `metadata.namespace`.
pub fn allowed_fields(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "type",
            "reportingController",
        ],
        ("", "secrets") => &["type"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "persistentvolumeclaims") => &[],
        ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parse and check the fields against what the resource supports.
    pub fn parse(sel: &str, group: &str, resource: &str, kind: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        if sel.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for part in sel.split(',') {
            let p = part.trim();
            let (k, v, eq) = if let Some((k, v)) = p.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{sel}'; can't understand '{p}'"
                )));
            };
            let k = k.trim();
            if k != "metadata.name"
                && k != "metadata.namespace"
                && !allowed_fields(group, resource).contains(&k)
            {
                let _ = kind;
                return Err(ApiError::bad_request(format!("field label not supported: {k}")));
            }
            terms.push((k.to_string(), v.trim().to_string(), eq));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Match an object.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, v, eq)| {
            let actual = field_value(obj, k);
            (actual == *v) == *eq
        })
    }
}

/// The string value of a selectable field (missing → empty string, as the server does).
pub fn field_value(obj: &Value, path: &str) -> String {
    if path == "source" {
        return obj["source"]["component"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    let mut cur = obj;
    for seg in path.split('.') {
        cur = &cur[seg];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => {
            if path == "spec.unschedulable" || path == "spec.hostNetwork" {
                "false".into()
            } else {
                String::new()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_ops() {
        let l = json!({"app":"web","tier":"fe"});
        let t = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(t("app=web"));
        assert!(t("app==web,tier"));
        assert!(!t("app!=web"));
        assert!(t("app in (web, db)"));
        assert!(!t("app notin (web)"));
        assert!(t("!missing"));
        assert!(!t("missing"));
        assert!(t("missing notin (x)"));
        assert!(!t("missing in (x)"));
    }

    #[test]
    fn fields() {
        let p = json!({"metadata":{"name":"a"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}});
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending", "", "pods", "Pod").unwrap();
        assert!(f.matches(&p));
        assert!(FieldSelector::parse("spec.foo=1", "", "pods", "Pod").is_err());
        let f = FieldSelector::parse("spec.nodeName=", "", "pods", "Pod").unwrap();
        assert!(!f.matches(&p));
    }
}
