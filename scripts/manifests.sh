#!/usr/bin/env bash
# make manifests: regenerate the CRD component (and the chart's copy) from the Rust types, make sure the self-managed
# overlay has certificates (make certs), render the overlays with kustomize and check them.
set -euo pipefail
cd "$(dirname "$0")/.."
kubectl="$(bash controlplane/build.sh)/kubectl"
cargo build --quiet --bin audit-guard
"${CARGO_TARGET_DIR:-target}/debug/audit-guard" crd > manifests/components/crd/crd.yaml
# The Helm chart ships the same CRD (files/crds/, rendered by templates/crd.yaml unless crds.install is false).
cp manifests/components/crd/crd.yaml charts/audit-guard/files/crds/signalprocessings.kubernaut.ai.yaml
gen=manifests/overlays/self-managed/generated
if [ ! -f "$gen/tls.crt" ] || [ ! -f "$gen/datastorage/tls.crt" ]; then
  bash scripts/certs.sh
fi
mkdir -p manifests/rendered
for overlay in self-managed cert-manager kubernaut cloudnative-pg; do
  out="manifests/rendered/$overlay.yaml"
  "$kubectl" kustomize "manifests/overlays/$overlay" > "$out"
  kinds=$(grep -c '^kind:' "$out")
  echo "manifests/overlays/$overlay: $kinds objects -> $out"
done
# The rendered self-managed overlay must carry a real caBundle on both webhook configurations.
test "$(grep -c 'caBundle: [A-Za-z0-9+/=]\{100,\}' manifests/rendered/self-managed.yaml)" -ge 2
grep -q 'cert-manager.io/inject-ca-from: audit-guard/audit-guard-webhook' manifests/rendered/cert-manager.yaml
# The kubernaut overlay writes events to Kubernaut's Data Storage and ships none of its own.
grep -q 'value: events' manifests/rendered/kubernaut.yaml
! grep -q 'name: audit-guard-datastorage' manifests/rendered/kubernaut.yaml
# The cloudnative-pg overlay: a Cluster, and Data Storage trusting its CA.
grep -q 'kind: Cluster' manifests/rendered/cloudnative-pg.yaml
grep -q 'secretName: audit-guard-pg-ca' manifests/rendered/cloudnative-pg.yaml
echo "manifests ok"
