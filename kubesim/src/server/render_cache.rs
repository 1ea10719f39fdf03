//! Serialized objects shared by all watch streams.

use axum::body::Bytes;

/// Serialized objects shared by all watchers (keyed by resourceVersion and served version), so
/// an event fanned out to many watchers is serialized once.
#[derive(Debug, Default)]
pub struct RenderCache {
    map: std::sync::Mutex<std::collections::HashMap<(u64, String), Bytes>>,
}

impl RenderCache {
    pub(super) fn get_or_render(&self, rv: u64, key: &str, f: impl FnOnce() -> Bytes) -> Bytes {
        let k = (rv, key.to_string());
        if let Some(b) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&k) {
            return b.clone();
        }
        let b = f();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= 20_000 {
            m.clear();
        }
        m.insert(k, b.clone());
        b
    }
}
