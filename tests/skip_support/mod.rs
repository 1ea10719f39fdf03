//! The one way a test of this crate says it could not run: `skipped(reason)` prints a `SKIPPED: <reason>`
//! line on stderr (cargo's harness shows it only for failing tests or under `--nocapture`) and, when
//! `KD_SKIP_LOG` names a file, appends `<crate>/<test binary>: <test>: <reason>` to it so tests/ci.sh counts
//! skips in its summary line (and fails the run under `CI=true`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support code

use std::io::Write;

/// Report that the calling test is skipped, and why.
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
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("KD_SKIP_LOG {}: {e}", std::path::Path::new(&path).display()));
    }
}
