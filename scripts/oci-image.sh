#!/usr/bin/env bash
# Assembles an OCI image FROM scratch with umoci (Debian's `umoci`) and writes it as an OCI
# archive: a tar of an OCI image layout, which `ctr images import` and skopeo's
# `oci-archive:` transport read. No Docker engine, no registry.
#
# usage: oci-image.sh OUT.tar TAG ROOTFS_DIR [umoci config flags...]
#   ROOTFS_DIR  a directory laid out as the image's / (copied into one layer)
#   flags       passed to `umoci config`, e.g. --config.user 65532:65532 --config.entrypoint /bin/x
#
# File times and the image's creation time are pinned (SOURCE_DATE_EPOCH, default 0), so the
# same inputs give the same image digest.
set -euo pipefail
out="$1" tag="$2" rootfs="$3"
shift 3
command -v umoci >/dev/null || { echo "umoci not found (apt-get install umoci; scripts/install-deps.sh)" >&2; exit 1; }
epoch="${SOURCE_DATE_EPOCH:-0}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
work="$(mktemp -d "${TMPDIR:-/tmp}/oci-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"
cp -a "$rootfs"/. "$work/rootfs/"
chmod 0755 "$work/rootfs"
# The one layer, written by GNU tar (umoci 0.4.7's `insert` leaves the layer's last entry
# unpadded and the archive without its end blocks, which containerd refuses to unpack).
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=pax \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$work/rootfs" -cf "$work/layer.tar" .
umoci init --layout "$work/layout"
umoci new --image "$work/layout:$tag"
umoci raw add-layer --image "$work/layout:$tag" --history.created "$created" \
  --history.created_by "scripts/oci-image.sh" "$work/layer.tar"
umoci config --image "$work/layout:$tag" --created "$created" --history.created "$created" \
  --config.env PATH=/usr/local/bin:/usr/bin:/bin "$@"
umoci gc --layout "$work/layout"
mkdir -p "$(dirname "$out")"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$work/layout" -cf "$out.tmp" .
mv "$out.tmp" "$out"
