#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks need, when missing. Needs root to
# install; as another user it names exactly what is missing and stops. Quiet when nothing is.
set -euo pipefail
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The test node (tests/e2e_node.rs) and `make image`: containerd, runc, the CNI plugins,
# umoci for the OCI images, iptables/ipset/nftables for kube-proxy and kube-router, conntrack.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ipset >/dev/null 2>&1 || need+=(ipset)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v file >/dev/null 2>&1 || need+=(file)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# promtool, for the alert rule and dashboard query tests, comes with Debian's prometheus
# package, installed below without recommends.
need_promtool=0
command -v promtool >/dev/null 2>&1 || need_promtool=1
if [ ${#need[@]} -eq 0 ] && [ "$need_promtool" = 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  {
    echo "missing Debian packages; install them as root, then run this again:"
    if [ ${#need[@]} -gt 0 ]; then echo "  apt-get update && apt-get install -y ${need[*]}"; fi
    if [ "$need_promtool" = 1 ]; then echo "  apt-get install -y --no-install-recommends prometheus   # for promtool"; fi
  } >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo ">> installing Debian packages:${need[*]:+ ${need[*]}}$([ "$need_promtool" = 1 ] && echo ' prometheus (promtool)') (a minute or two)"
apt-get -o DPkg::Lock::Timeout=600 update -qq
if [ ${#need[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
fi
# Service starts are denied while prometheus installs (policy-rc.d): the Prometheus server in
# the package is not wanted running.
if [ "$need_promtool" = 1 ]; then
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
  fi
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
fi
