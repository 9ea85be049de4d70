#!/usr/bin/env bash
# make image: the audit-guard container image, built without Docker or a registry.
#
# 1. The static audit-guard binary (scripts/static-binary.sh).
# 2. An OCI image FROM scratch, the same layout as the Dockerfile's: /usr/local/bin/audit-guard,
#    /etc/passwd and /etc/group with uid/gid 65532 (image/rootfs), Debian's CA bundle at
#    /etc/ssl/certs/ca-certificates.crt; user 65532:65532; entrypoint audit-guard, cmd serve.
# 3. Written as an OCI archive under the cache; the image reference is the one the manifests use.
#
# Prints the archive's path on stdout (progress on stderr). Skips the assembly when an archive
# of the same binary already exists.
set -euo pipefail
cd "$(dirname "$0")/.."
cache_root="${AUDIT_GUARD_CACHE:-$HOME/.cache/audit-guard}"
ref="$(sed -n 's/^ *image: *\([^ ]*\) *$/\1/p' manifests/base/webhook-deployment.yaml | head -1)"
[ -n "$ref" ] || { echo "no image: in manifests/base/webhook-deployment.yaml" >&2; exit 1; }
tag="${ref##*:}"

start=$SECONDS
bin="$(bash scripts/static-binary.sh)"
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "$ca missing (apt-get install ca-certificates)" >&2; exit 1; }

key="$(cat "$bin" image/rootfs/etc/passwd image/rootfs/etc/group "$ca" scripts/oci-image.sh <(echo "$ref") | sha256sum | cut -c1-16)"
out="$cache_root/image/audit-guard-$tag-$key.oci.tar"
if [ ! -f "$out" ]; then
  stage="$(mktemp -d "${TMPDIR:-/tmp}/audit-guard-image.XXXXXX")"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/usr/local/bin" "$stage/etc/ssl/certs"
  cp image/rootfs/etc/passwd image/rootfs/etc/group "$stage/etc/"
  cp "$ca" "$stage/etc/ssl/certs/ca-certificates.crt"
  install -m 0755 "$bin" "$stage/usr/local/bin/audit-guard"
  chmod 0644 "$stage/etc/passwd" "$stage/etc/group" "$stage/etc/ssl/certs/ca-certificates.crt"
  bash scripts/oci-image.sh "$out" "$tag" "$stage" \
    --config.user 65532:65532 --config.entrypoint /usr/local/bin/audit-guard --config.cmd serve \
    --config.exposedports 9443/tcp --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
    --config.exposedports 8085/tcp --config.workingdir / \
    --config.label "org.opencontainers.image.title=audit-guard" \
    --config.label "org.opencontainers.image.version=$tag"
  # Keep only the newest archive for this tag.
  find "$cache_root/image" -name "audit-guard-$tag-*.oci.tar" ! -path "$out" -delete
fi
ln -sfn "$(basename "$out")" "$cache_root/image/audit-guard.oci.tar"
echo ">> image $ref: $out ($(du -h "$out" | cut -f1), $((SECONDS - start))s)" >&2
echo "$out"
