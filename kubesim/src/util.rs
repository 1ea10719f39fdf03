//! Small JSON helpers that never panic on unexpected shapes.

use serde_json::{Map, Value};

/// Set `path` to `v`, replacing any non-object value met on the way.
pub fn set_path(obj: &mut Value, path: &[&str], v: Value) {
    let mut cur = obj;
    for seg in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(m) = cur.as_object_mut() else { return };
        cur = m.entry(seg.to_string()).or_insert(Value::Null);
    }
    *cur = v;
}

/// Set `path` to `v` only when it is currently missing or null.
pub fn default_path(obj: &mut Value, path: &[&str], v: Value) {
    if get_path(obj, path).is_none_or(Value::is_null) {
        set_path(obj, path, v);
    }
}

/// Read a path.
pub fn get_path<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = cur.as_object()?.get(*seg)?;
    }
    Some(cur)
}

/// Remove a key at a path.
pub fn remove_path(obj: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parent) = path.split_last()?;
    let mut cur = obj;
    for seg in parent {
        cur = cur.as_object_mut()?.get_mut(*seg)?;
    }
    cur.as_object_mut()?.remove(*last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_replaces_scalars() {
        let mut v = json!({"a": "x"});
        set_path(&mut v, &["a", "b"], json!(1));
        assert_eq!(v, json!({"a": {"b": 1}}));
        default_path(&mut v, &["a", "b"], json!(2));
        assert_eq!(v["a"]["b"], 1);
        assert_eq!(remove_path(&mut v, &["a", "b"]), Some(json!(1)));
    }
}
