#!/usr/bin/env bash
# Adds up cargo test's per-binary "test result" lines into one closing line, and counts the
# control planes the run booted (the harness prints one line per boot).
set -euo pipefail
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     /control plane booted:/ { c++ }
     END { printf "control planes booted: %d\n", c; printf "total: %d passed, %d failed, %d skipped\n", p, f, s; exit (f > 0) }' "$1"
