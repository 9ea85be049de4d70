#!/usr/bin/env bash
# Builds the helm client from the Go module proxy (helm.sh/helm/v4, pinned in go.mod) into a
# cache outside the repository, keyed by the content of this module; prints the path of the
# helm binary on stdout. A second run with the same module is instant.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${AUDIT_GUARD_CACHE:-$HOME/.cache/audit-guard}"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/tools.go" | sha256sum | cut -c1-16)"
bin="$cache_root/helm/$key/bin"
if [ -x "$bin/helm" ]; then echo "$bin/helm"; exit 0; fi
mkdir -p "$bin"
exec 9>"$cache_root/helm/$key.lock"
flock 9
if [ -x "$bin/helm" ]; then echo "$bin/helm"; exit 0; fi
cd "$here"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
version="$(sed -n 's#^require helm.sh/helm/v4 \(v[^ ]*\)$#\1#p' go.mod)"
# Without this the binary reports the minor version only ("v4.3").
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
start=$SECONDS
echo ">> downloading Go modules for helm $version" >&2
go mod download >&2
echo ">> building helm $version (first build takes a few minutes on 2 cores)" >&2
go build -trimpath -ldflags "$ldflags" -o "$bin/helm.tmp" helm.sh/helm/v4/cmd/helm >&2
mv "$bin/helm.tmp" "$bin/helm"
echo ">> built helm in $((SECONDS - start))s" >&2
echo "$bin/helm"
