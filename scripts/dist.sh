#!/usr/bin/env bash
# make dist: the release tarball an auditor (or an admin without the image) downloads: the static
# audit-guard binary with the README, the auditors' guide, the changelog and the licence name, and
# a SHA-256 file beside it that `sha256sum -c` checks. The tarball is reproducible from the same
# binary (sorted names, fixed owner and times, gzip without a timestamp), so two builds of one
# commit can be compared by their digests.
#
# Writes dist/audit-guard-<version>-x86_64-linux.tar.gz and its .sha256; prints the tarball's path.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${DIST_DIR:-$PWD/dist}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
[ -n "$version" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
bin="$(bash scripts/static-binary.sh)"
"$bin" --version | grep -qx "audit-guard $version" || { echo "the binary says $("$bin" --version), Cargo.toml $version" >&2; exit 1; }

name="audit-guard-$version-x86_64-linux"
stage="$(mktemp -d "${TMPDIR:-/tmp}/audit-guard-dist.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/docs"
install -m 0755 "$bin" "$stage/$name/audit-guard"
install -m 0644 README.md CHANGELOG.md "$stage/$name/"
install -m 0644 docs/auditors.md "$stage/$name/docs/"
license="$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
printf 'audit-guard %s is licensed under %s (https://spdx.org/licenses/%s.html).\n' "$version" "$license" "$license" >"$stage/$name/LICENSE"
chmod 0644 "$stage/$name/LICENSE"
# The commit's time, not the build's, so the bytes depend only on the content.
epoch="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
mkdir -p "$out_dir"
tarball="$out_dir/$name.tar.gz"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu \
  -C "$stage" -cf - "$name" | gzip -n -9 >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"
(cd "$out_dir" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo ">> $tarball ($(du -h "$tarball" | cut -f1)), sha256 $(cut -d' ' -f1 "$tarball.sha256")" >&2
echo "$tarball"
