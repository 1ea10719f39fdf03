//! Name, label and annotation validation with the real server's messages.

use crate::error::Cause;
use regex::Regex;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn re(cell: &'static OnceLock<Option<Regex>>, pat: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pat).ok()).as_ref()
}

fn matches(cell: &'static OnceLock<Option<Regex>>, pat: &str, s: &str) -> bool {
    re(cell, pat).map(|r| r.is_match(s)).unwrap_or(false)
}

static LABEL: OnceLock<Option<Regex>> = OnceLock::new();
static SUBDOMAIN: OnceLock<Option<Regex>> = OnceLock::new();
static DNS1035: OnceLock<Option<Regex>> = OnceLock::new();
static QNAME: OnceLock<Option<Regex>> = OnceLock::new();
static LABEL_VALUE: OnceLock<Option<Regex>> = OnceLock::new();

/// Errors (details) for a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, max 63).
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 63 {
        e.push("must be no more than 63 characters".to_string());
    }
    if !matches(&LABEL, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", s) {
        e.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string());
    }
    e
}

/// Errors for a DNS-1123 subdomain (max 253).
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 253 {
        e.push("must be no more than 253 characters".to_string());
    }
    if !matches(
        &SUBDOMAIN,
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        s,
    ) {
        e.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
    }
    e
}

/// Errors for a DNS-1035 label (services): must start with a letter.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 63 {
        e.push("must be no more than 63 characters".to_string());
    }
    if !matches(&DNS1035, r"^[a-z]([-a-z0-9]*[a-z0-9])?$", s) {
        e.push("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string());
    }
    e
}

/// Which name rule a resource uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (namespaces, ...).
    Label,
    /// DNS-1035 label (services).
    Dns1035,
    /// Path segment only (RBAC, events...): no `/`, `%`, not `.`/`..`.
    PathSegment,
}

/// The name rule for a group/resource.
pub fn name_rule(group: &str, resource: &str) -> NameRule {
    match (group, resource) {
        ("", "namespaces") => NameRule::Label,
        ("", "services") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// Validate a name; returns causes for `metadata.name`.
pub fn validate_name(rule: NameRule, name: &str) -> Vec<Cause> {
    let errs = match rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::Dns1035 => dns1035_label(name),
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                vec![format!("may not be '{name}'")]
            } else if name.contains('/') {
                vec!["may not contain '/'".to_string()]
            } else if name.contains('%') {
                vec!["may not contain '%'".to_string()]
            } else {
                vec![]
            }
        }
    };
    errs.iter()
        .map(|d| Cause::invalid("metadata.name", &json!(name), d))
        .collect()
}

/// Validate a qualified name (label / annotation key).
pub fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut e = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            e.push("prefix part must be non-empty".to_string());
        } else {
            for d in dns1123_subdomain(p) {
                e.push(format!("prefix part {d}"));
            }
        }
    }
    if name.is_empty() {
        e.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        e.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !matches(&QNAME, r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$", name) {
        e.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string());
    }
    e
}

/// Validate a label value.
pub fn label_value(v: &str) -> Vec<String> {
    let mut e = Vec::new();
    if v.len() > 63 {
        e.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !matches(&LABEL_VALUE, r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", v) {
        e.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    e
}

/// Validate metadata.labels and metadata.annotations of an object.
pub fn validate_meta(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = &obj["metadata"];
    match &meta["labels"] {
        Value::Object(labels) => {
            for (k, v) in labels {
                for d in qualified_name(k) {
                    causes.push(Cause::invalid("metadata.labels", &json!(k), &d));
                }
                match v {
                    Value::String(s) => {
                        for d in label_value(s) {
                            causes.push(Cause::invalid("metadata.labels", &json!(s), &d));
                        }
                    }
                    Value::Null => {}
                    other => causes.push(Cause::type_invalid(
                        &format!("metadata.labels.{k}"),
                        other,
                        "must be of type string",
                    )),
                }
            }
        }
        Value::Null => {}
        other => causes.push(Cause::type_invalid(
            "metadata.labels",
            other,
            "must be of type object",
        )),
    }
    match &meta["annotations"] {
        Value::Object(ann) => {
            let mut total = 0usize;
            for (k, v) in ann {
                for d in qualified_name(&k.to_lowercase()) {
                    causes.push(Cause::invalid("metadata.annotations", &json!(k), &d));
                }
                total += k.len() + v.as_str().map(str::len).unwrap_or(0);
            }
            if total > 256 * 1024 {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    "metadata.annotations",
                    "Too long: may not be more than 262144 bytes",
                ));
            }
        }
        Value::Null => {}
        other => causes.push(Cause::type_invalid(
            "metadata.annotations",
            other,
            "must be of type object",
        )),
    }
    causes
}

/// The alphabet the real server uses for generateName suffixes.
pub const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` + 5 random characters (prefix truncated to 58 characters).
pub fn generate_name(base: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let base: String = base.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| GENERATE_ALPHABET[rng.random_range(0..GENERATE_ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("a.b-c").is_empty());
        assert!(!dns1123_subdomain("A").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(dns1035_label("abc1").is_empty());
        assert_eq!(dns1123_label(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn labels() {
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name("-bad").is_empty());
        assert!(!label_value("bad value").is_empty());
        assert!(label_value("").is_empty());
    }

    #[test]
    fn generated_names_use_alphabet() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n[4..].bytes().all(|b| GENERATE_ALPHABET.contains(&b)));
        assert_eq!(generate_name(&"x".repeat(70)).len(), 63);
    }
}
