//! Kubernetes label and annotation validation (spec 2.6, U-1).
//!
//! Mirrors apimachinery's `ValidateLabels` / `ValidateAnnotations` and renders errors the way
//! `field.Error.Error()` does: `<field path>: Invalid value: "<value>": <detail>`. Map keys are
//! visited in sorted order (Go iterates maps randomly, so any order is upstream-compatible).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

/// Total size limit of all annotations of one object, in bytes.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_B: usize = 256 * 1024;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
                                  start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric \
                               characters, '-', '_' or '.', and must start and end with an \
                               alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
                                     alphanumeric characters, '-' or '.', and must start and end \
                                     with an alphanumeric character";

static QUALIFIED_NAME_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(&format!("^{QUALIFIED_NAME_FMT}$")).ok());
static LABEL_VALUE_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(&format!("^{LABEL_VALUE_FMT}$")).ok());
static DNS1123_SUBDOMAIN_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(&format!("^{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*$")).ok());

fn matches(re: &LazyLock<Option<Regex>>, s: &str) -> bool {
    re.as_ref().is_some_and(|r| r.is_match(s))
}

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{ex}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !matches(&DNS1123_SUBDOMAIN_RE, value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            &format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*"),
            &["example.com"],
        ));
    }
    errs
}

/// `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name part of at most 63
/// characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for msg in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches(&QUALIFIED_NAME_RE, name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches(&LABEL_VALUE_RE, value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Quotes a string as Go's `%q` (`strconv.Quote`) does: printable characters as they are,
/// `\a \b \f \n \r \t \v`, other ASCII controls as `\xNN`, other non-printable characters
/// (controls and non-ASCII spaces) as `\uNNNN` / `\UNNNNNNNN`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        let code = u32::from(c);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            _ if code < 0x20 || code == 0x7f => out.push_str(&format!("\\x{code:02x}")),
            _ if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if code < 0x10000 {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `field.Invalid` error as `field.Error.Error()` renders it.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {}: {detail}", go_quote(value))
}

fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Validates a label map found at `field_path` (absent/null maps are valid).
pub fn validate_labels(labels: Option<&Value>, field_path: &str) -> Vec<String> {
    let Some(Value::Object(map)) = labels else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    for (k, v) in sorted_entries(map) {
        for msg in is_qualified_name(k) {
            errs.push(invalid(field_path, k, &msg));
        }
        let v = value_str(v);
        for msg in is_valid_label_value(&v) {
            errs.push(invalid(field_path, &v, &msg));
        }
    }
    errs
}

/// Validates an annotation map found at `field_path` (absent/null maps are valid).
pub fn validate_annotations(annotations: Option<&Value>, field_path: &str) -> Vec<String> {
    let Some(Value::Object(map)) = annotations else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in sorted_entries(map) {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(invalid(field_path, k, &msg));
        }
        total += k.len() + value_str(v).len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_B {
        errs.push(format!(
            "{field_path}: Too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT_B} bytes"
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn good_labels_pass() {
        let l = json!({"app": "x", "example.com/tier": "gold", "empty": ""});
        assert!(validate_labels(Some(&l), "spec.podLabels").is_empty());
    }

    #[test]
    fn bad_label_key_and_value_are_reported_with_field_path() {
        let l = json!({"bad key": "ok", "k": "-bad"});
        let errs = validate_labels(Some(&l), "spec.roles[0].podLabels");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0]
            .starts_with("spec.roles[0].podLabels: Invalid value: \"bad key\": name part must consist"));
        assert!(errs[1].starts_with("spec.roles[0].podLabels: Invalid value: \"-bad\": a valid label"));
    }

    #[test]
    fn long_label_value_rejected() {
        let l = json!({"k": "a".repeat(64)});
        let errs = validate_labels(Some(&l), "p");
        assert!(errs[0].ends_with("must be no more than 63 characters"));
    }

    #[test]
    fn annotation_keys_are_case_insensitive_but_values_free() {
        let a = json!({"Example.COM/Note": "any value at all!"});
        assert!(validate_annotations(Some(&a), "p").is_empty());
        let bad = json!({"a/b/c": "x"});
        assert_eq!(validate_annotations(Some(&bad), "p").len(), 1);
        let big = json!({"k": "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_B)});
        assert!(validate_annotations(Some(&big), "p")[0].contains("Too long"));
    }

    #[test]
    fn values_are_quoted_like_go_percent_q() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("x\u{1}y\u{7f}"), r#""x\x01y\x7f""#);
        assert_eq!(go_quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(go_quote("nb\u{a0}sp é ✓"), "\"nb\\u00a0sp é ✓\"");
        let errs = validate_labels(Some(&json!({"k": "a\u{1}"})), "p");
        assert!(
            errs[0].starts_with(r#"p: Invalid value: "a\x01": a valid label"#),
            "{errs:?}"
        );
    }

    #[test]
    fn prefix_must_be_dns_subdomain() {
        assert!(is_qualified_name("Bad_Prefix/name")[0].starts_with("prefix part a lowercase RFC 1123"));
        assert_eq!(
            is_qualified_name("/name"),
            vec!["prefix part must be non-empty".to_string()]
        );
    }
}
