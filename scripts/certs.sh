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
# The transparency log's checkpoint key (Data Storage's --log-signing-key-file), kept across
# runs: a new key would make every saved checkpoint unverifiable.
if [ ! -s certs/datastorage/log.key ]; then
  "$bin" keys --log-key certs/datastorage/log.key >/dev/null
fi
echo "transparency log key: certs/datastorage/log.key (verifier key for auditors: certs/datastorage/log.key.pub)"

# The API server's admission client certificate, which the webhook asks for on 9443 (mutual TLS
# is on in both overlays): a CA of its own, kept across runs (the ConfigMap and the API server's
# files must keep matching), and a clientAuth certificate it signs.
wc=certs/webhook-client
mkdir -p "$wc"
if [ ! -s "$wc/ca.crt" ] || [ ! -s "$wc/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=audit-guard webhook client CA" -keyout "$wc/ca.key" -out "$wc/ca.crt" 2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kube-apiserver-audit-guard-webhook-client" \
  -keyout "$wc/apiserver-client.key" -out "$wc/apiserver-client.csr" 2>/dev/null
openssl x509 -req -in "$wc/apiserver-client.csr" -CA "$wc/ca.crt" -CAkey "$wc/ca.key" -CAcreateserial -days 365 \
  -extfile <(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n') \
  -out "$wc/apiserver-client.crt" 2>/dev/null
rm -f "$wc/apiserver-client.csr" "$wc/ca.srl"
cat <<TEXT
$wc/ written: the API server's admission client certificate and the CA that signed it.
  on every control-plane node: $wc/apiserver-client.crt and .key (e.g. /etc/kubernetes/pki/audit-guard-client.{crt,key}),
    named in the AdmissionConfiguration's kubeconfig (docs/deploying.md, "Only the API server may call the webhook");
  in the cluster, before applying the overlay:
    kubectl create configmap audit-guard-webhook-client-ca -n audit-guard --from-file=ca.crt=$wc/ca.crt
TEXT
