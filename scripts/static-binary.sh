#!/usr/bin/env bash
# The static audit-guard binary that the image and the release tarball ship: glibc target with
# crt-static (rustls needs no OpenSSL), checked with `file` and `ldd`. Prints its path on stdout
# (progress on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
cache_root="${AUDIT_GUARD_CACHE:-$HOME/.cache/audit-guard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
# Called from a cargo test (tests/release_tarball.rs), cargo's per-test variables (CARGO_PKG_*,
# CARGO_MANIFEST_DIR, ...) would look like a changed environment and rebuild the release binary
# that `make image` just built: build with the environment `make` gives.
while IFS= read -r var; do
  case "$var" in CARGO_HOME | CARGO_TARGET_DIR) ;; CARGO*) unset "$var" ;; esac
done < <(compgen -e)
target=x86_64-unknown-linux-gnu
start=$SECONDS
echo ">> building the static audit-guard binary (release, $target, crt-static; the first build takes several minutes)" >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" --bin audit-guard >&2
bin="$CARGO_TARGET_DIR/$target/release/audit-guard"
echo ">> binary ready after $((SECONDS - start))s ($(file -b "$bin" | grep -Eo 'static(-pie)? linked'))" >&2
# Statically linked: `file` says so and ldd finds no shared library to load.
file -b "$bin" | grep -Eq 'static(-pie)? linked' || { echo "not a static binary: $(file -b "$bin")" >&2; exit 1; }
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "the binary loads shared libraries:" >&2
  ldd "$bin" >&2
  exit 1
fi
echo "$bin"
