#!/usr/bin/env bash
# make run: build what is needed (with progress on the first, long build), then start the quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
echo ">> building the control plane (cached after the first build)"
bash controlplane/build.sh >/dev/null
echo ">> building audit-guard and the quickstart (first build: several minutes)"
cargo build --bin audit-guard --example quickstart
target="${CARGO_TARGET_DIR:-$PWD/target}"
export AUDIT_GUARD_BIN="$target/debug/audit-guard"
exec "$target/debug/examples/quickstart"
