#!/usr/bin/env bash
# Builds Kubernetes from the Go module proxy into a cache outside the repository, keyed by the
# content of what is built; prints the bin directory on stdout. A second run with the same
# inputs is instant.
#
#   build.sh        the control plane: etcd, kube-apiserver, kube-controller-manager, kubectl
#   build.sh node   the node of tests/e2e_node.rs: kubelet, kube-scheduler, kube-proxy (this
#                   module, so the same k8s.io/kubernetes release), CoreDNS (coredns/: the
#                   CoreDNS module with the plugins cluster DNS needs), kube-router (`go install
#                   mod@version`), the pause and probe commands (node/), and the OCI archives of
#                   the pause, CoreDNS and probe images (in ../images)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${AUDIT_GUARD_CACHE:-$HOME/.cache/audit-guard}"
what="${1:-controlplane}"
# kube-router, installed with `go install mod@version` (see docs/testing.md for its security notes).
KUBE_ROUTER_VERSION=v2.1.0
COREDNS_VERSION="$(sed -n 's#^require github.com/coredns/coredns \(v[^ ]*\)$#\1#p' "$here/coredns/go.mod")"
case "$what" in
  controlplane)
    key="$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" | sha256sum | cut -c1-16)"
    dir="$cache_root/controlplane/$key"
    cmds=(etcd kube-apiserver kube-controller-manager kubectl)
    ;;
  node)
    key="$(cat "$here/go.mod" "$here/go.sum" "$here"/node/*/main.go "$here"/coredns/go.* \
      "$here/coredns/main.go" "$here/build.sh" "$here/../scripts/oci-image.sh" | sha256sum | cut -c1-16)"
    dir="$cache_root/node/$key"
    cmds=(kubelet kube-scheduler kube-proxy coredns kube-router pause probe)
    ;;
  *) echo "usage: $0 [node]" >&2; exit 2 ;;
esac
bin="$dir/bin"
complete=1
for c in "${cmds[@]}"; do [ -x "$bin/$c" ] || complete=0; done
if [ "$what" = node ]; then
  for i in pause coredns probe; do [ -f "$dir/images/$i.oci.tar" ] || complete=0; done
fi
if [ "$complete" = 1 ]; then echo "$bin"; exit 0; fi
mkdir -p "$bin"
exec 9>"$dir.lock"
flock 9
cd "$here"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
ldflags="-s -w"
# The apiserver reports this version; without it the build says v0.0.0 and some clients balk.
kver="$(sed -n 's#^\s*k8s.io/kubernetes \(v[^ ]*\)$#\1#p' go.mod | head -1)"
vpkg=k8s.io/component-base/version
kldflags="$ldflags -X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$(echo "$kver" | cut -d. -f2) -X $vpkg.gitTreeState=clean"
build() { # name package [module dir, default: this one; its own ldflags: none of Kubernetes']
  if [ -x "$bin/$1" ]; then return; fi
  echo ">> building $1 (a first build takes minutes on 2 cores)" >&2
  local start=$SECONDS flags="$kldflags"
  [ -n "${3:-}" ] && flags="$ldflags"
  (cd "${3:-.}" && go build -trimpath -ldflags "$flags" -o "$bin/$1.tmp" "$2") >&2
  mv "$bin/$1.tmp" "$bin/$1"
  echo ">> built $1 in $((SECONDS - start))s" >&2
}
install_mod() { # name module@version (a module of its own, built as its go.mod says)
  if [ -x "$bin/$1" ]; then return; fi
  echo ">> go install $2 (a first build takes minutes on 2 cores)" >&2
  local start=$SECONDS tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$2") >&2
  mv "$tmp/$(basename "${2%@*}")" "$bin/$1"
  rm -rf "$tmp"
  echo ">> built $1 in $((SECONDS - start))s" >&2
}
image() { # name tag binary [umoci config flags...]: a FROM scratch image with one static binary
  local name="$1" tag="$2" binary="$3" stage
  shift 3
  if [ -f "$dir/images/$name.oci.tar" ]; then return; fi
  stage="$(mktemp -d)"
  install -D -m 0755 "$bin/$binary" "$stage/usr/local/bin/$binary"
  bash "$here/../scripts/oci-image.sh" "$dir/images/$name.oci.tar" "$tag" "$stage" \
    --config.entrypoint "/usr/local/bin/$binary" "$@" >&2
  rm -rf "$stage"
  echo ">> image $name:$tag" >&2
}
echo ">> downloading Go modules for $what" >&2
go mod download >&2
case "$what" in
  controlplane)
    build etcd ./etcd
    build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
    build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
    build kubectl k8s.io/kubernetes/cmd/kubectl
    ;;
  node)
    build pause ./node/pause
    build probe ./node/probe
    build kubelet k8s.io/kubernetes/cmd/kubelet
    build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
    build kube-proxy k8s.io/kubernetes/cmd/kube-proxy
    (cd coredns && go mod download) >&2
    build coredns . coredns
    install_mod kube-router "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
    mkdir -p "$dir/images"
    image pause 3.10 pause --config.user 65535:65535
    image probe 1.0 probe --config.user 65532:65532 --config.cmd sleep
    image coredns "$COREDNS_VERSION" coredns --config.user 65532:65532
    ;;
esac
echo "$bin"
