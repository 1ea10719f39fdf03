#!/usr/bin/env bash
# The one test command (README "Testing"): installs what the tests need, then runs every check
# CI runs: formatting, clippy with -D warnings, CRD drift and all tests of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkg() { # need_pkg <command> <debian package>
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "ci: installing $2 (for $1)"
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    else
      echo "ci: $1 missing and cannot install $2 (not root); tests that need it will say SKIPPED"
    fi
  fi
}
need_pkg bwrap bubblewrap
need_pkg curl curl
need_pkg prometheus prometheus   # also provides promtool (tests/prometheus_e2e.rs, tests/monitoring.rs)
command -v kubectl >/dev/null 2>&1 || echo "ci: kubectl not found; kubectl end-to-end tests will say SKIPPED"

export CARGO_TERM_COLOR=never
echo "ci: cargo fmt --check"
cargo fmt --all -- --check
echo "ci: cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "ci: cargo test"
log=$(mktemp)
# Every test that cannot run calls its crate's `skipped()` helper (tests/skip_support,
# kubesim/tests/common, crds/tests/common), which appends one line here.
export KD_SKIP_LOG
KD_SKIP_LOG=$(mktemp)
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One summary line over every test binary, in the plain form CI reads. A skipped test passed in
# cargo's eyes, so it is moved from "passed" to "skipped"; #[ignore]d tests count as skipped too.
# One line per skip site reached; a test counts once (lines are "<crate>/<binary>: <test>: why").
skips=$(awk -F': ' '{ print $1 ": " $2 }' "$KD_SKIP_LOG" | sort -u | wc -l)
if [ "$skips" -gt 0 ]; then
  echo "ci: skipped tests:"
  sed 's/^/ci:   /' "$KD_SKIP_LOG"
fi
awk -v k="$skips" '/^test result:/ { for (i=1;i<=NF;i++) { if ($(i+1) ~ /^passed/) p+=$i; if ($(i+1) ~ /^failed/) f+=$i; if ($(i+1) ~ /^ignored/) s+=$i } }
     END { printf "%d passed, %d failed, %d skipped\n", p-k, f, s+k }' "$log"
rm -f "$log" "$KD_SKIP_LOG"
if [ "${CI:-}" = true ] && [ "$skips" -gt 0 ]; then
  echo "ci: CI=true and $skips test(s) skipped: failing the run"
  exit 1
fi
exit "$status"
