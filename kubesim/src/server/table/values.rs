//! Cell values: apimachinery's human durations and ages, the simple JSONPath of printer columns,
//! and typed cells.

use serde_json::{json, Value};

/// `duration.HumanDuration` from apimachinery.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age of a timestamp string.
pub fn age(ts: &Value) -> Value {
    match ts
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => json!(human_duration(
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()
        )),
        None => json!("<unknown>"),
    }
}

/// Evaluate a simple JSONPath (`.a.b`, `.a[0].b`, `.a[*].b`, `{.a}`).
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let p = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('.');
    let mut cur: Vec<&Value> = vec![obj];
    if p.is_empty() {
        return cur;
    }
    for seg in split_path(p) {
        let (field, idx) = match seg.find('[') {
            Some(i) => (&seg[..i], Some(seg[i + 1..].trim_end_matches(']').to_string())),
            None => (seg.as_str(), None),
        };
        let mut next = Vec::new();
        for c in cur {
            let v = if field.is_empty() { Some(c) } else { c.get(field) };
            let Some(v) = v else { continue };
            match &idx {
                None => next.push(v),
                Some(i) if i == "*" => {
                    if let Some(a) = v.as_array() {
                        next.extend(a.iter());
                    }
                }
                Some(i) => {
                    if let (Some(a), Ok(n)) = (v.as_array(), i.parse::<i64>()) {
                        // Negative indexes count from the end; no arithmetic that can overflow.
                        let at = match usize::try_from(n) {
                            Ok(n) => Some(n),
                            Err(_) => usize::try_from(n.unsigned_abs())
                                .ok()
                                .and_then(|k| a.len().checked_sub(k)),
                        };
                        if let Some(x) = at.and_then(|n| a.get(n)) {
                            next.push(x);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

fn split_path(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_br = false;
    for c in p.chars() {
        match c {
            '[' => {
                in_br = true;
                cur.push(c)
            }
            ']' => {
                in_br = false;
                cur.push(c)
            }
            '.' if !in_br => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

pub(super) fn cell_for(t: &str, v: Option<&Value>) -> Value {
    let Some(v) = v else { return Value::Null };
    match t {
        "date" => age(v),
        "integer" => v.as_i64().map(|n| json!(n)).unwrap_or(Value::Null),
        "number" => v.as_f64().map(|n| json!(n)).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(|b| json!(b)).unwrap_or(Value::Null),
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

pub(super) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn or_none(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn paths() {
        let o = json!({"spec":{"a":[{"b":1},{"b":2}]}});
        assert_eq!(json_path(&o, ".spec.a[1].b"), vec![&json!(2)]);
        assert_eq!(json_path(&o, ".spec.a[*].b").len(), 2);
        assert!(json_path(&o, ".spec.x").is_empty());
    }
}
