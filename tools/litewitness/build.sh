#!/usr/bin/env bash
# Builds torchwood's litewitness and witnessctl (filippo.io/torchwood, pinned in go.mod) into a
# cache outside the repository, keyed by the content of this module; prints the directory holding
# both binaries on stdout, progress on stderr. A second run with the same module is instant.
# Their SQLite is modernc.org/sqlite (pure Go), so no C compiler is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${AUDIT_GUARD_CACHE:-$HOME/.cache/audit-guard}"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/tools.go" | sha256sum | cut -c1-16)"
bin="$cache_root/litewitness/$key/bin"
built() { [ -x "$bin/litewitness" ] && [ -x "$bin/witnessctl" ]; }
if built; then echo "$bin"; exit 0; fi
mkdir -p "$bin"
exec 9>"$cache_root/litewitness/$key.lock"
flock 9
if built; then echo "$bin"; exit 0; fi
cd "$here"
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
version="$(sed -n 's#^require filippo.io/torchwood \(v[^ ]*\)$#\1#p' go.mod)"
start=$SECONDS
echo ">> downloading Go modules for torchwood $version" >&2
go mod download >&2
for cmd in litewitness witnessctl; do
	echo ">> building $cmd (torchwood $version)" >&2
	go build -trimpath -ldflags "-s -w" -o "$bin/$cmd.tmp" "filippo.io/torchwood/cmd/$cmd" >&2
	mv "$bin/$cmd.tmp" "$bin/$cmd"
done
echo ">> built litewitness and witnessctl in $((SECONDS - start))s" >&2
echo "$bin"
