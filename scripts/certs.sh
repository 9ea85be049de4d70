#!/usr/bin/env bash
# make certs: a development CA, the webhook's and Data Storage's serving certificates in certs/
# (Data Storage's in certs/datastorage/), and the self-managed overlay's generated/ files (TLS
# Secret inputs and the caBundle patch).
set -euo pipefail
cd "$(dirname "$0")/.."
# AUDIT_GUARD_BIN: an audit-guard binary to use instead of building one (the tests pass theirs).
bin="${AUDIT_GUARD_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --quiet --bin audit-guard
  bin="${CARGO_TARGET_DIR:-target}/debug/audit-guard"
fi
"$bin" certs --out-dir certs >/dev/null
gen=manifests/overlays/self-managed/generated
mkdir -p "$gen/datastorage"
cp certs/tls.crt certs/tls.key "$gen/"
cp certs/datastorage/tls.crt certs/datastorage/tls.key certs/datastorage/ca.crt "$gen/datastorage/"
ca=$(base64 -w0 < certs/ca.crt)
cat > "$gen/ca-bundle.yaml" <<YAML
- op: add
  path: /webhooks/0/clientConfig/caBundle
  value: $ca
YAML
echo "certs/ written; caBundle in $gen/ca-bundle.yaml"
