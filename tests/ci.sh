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
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One summary line over every test binary, in the plain form CI reads.
awk '/^test result:/ { for (i=1;i<=NF;i++) { if ($(i+1) ~ /^passed/) p+=$i; if ($(i+1) ~ /^failed/) f+=$i; if ($(i+1) ~ /^ignored/) s+=$i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
exit "$status"
