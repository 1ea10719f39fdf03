//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::PathBuf;

/// `<workspace root>/../shared/spec/upstream`, or `None` (after printing a SKIPPED line) when
/// it is not present.
pub fn upstream_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/upstream");
    if dir.is_dir() {
        Some(dir)
    } else {
        skipped("../shared/spec/upstream not present");
        None
    }
}

/// Reads a JSON or YAML upstream file as a JSON value.
pub fn read_doc(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    } else {
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    }
}

/// Lists the differences between two JSON values (paths), empty when semantically identical.
pub fn json_diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => json_diff(&format!("{path}.{k}"), va, vb, out),
                    None => out.push(format!("{path}.{k}: dropped (was {va})")),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(format!("{path}.{k}: added ({vb})"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ => {
            if a != b {
                out.push(format!("{path}: {a} != {b}"));
            }
        }
    }
}

/// The one way a test of this crate says it could not run: prints a `SKIPPED: <reason>` line (cargo's harness
/// shows it only for failing tests or under `--nocapture`) and, when `KD_SKIP_LOG` names a file, appends
/// `<crate>/<test binary>: <test>: <reason>` to it so tests/ci.sh counts skips in its summary line (and fails
/// the run under `CI=true`).
pub fn skipped(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    eprintln!("SKIPPED: {test}: {reason}");
    if let Some(path) = std::env::var_os("KD_SKIP_LOG") {
        // One short write per line with O_APPEND: concurrent tests do not interleave lines.
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let line = format!("{}/{binary}: {test}: {reason}\n", env!("CARGO_PKG_NAME"));
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("KD_SKIP_LOG {}: {e}", std::path::Path::new(&path).display()));
    }
}
