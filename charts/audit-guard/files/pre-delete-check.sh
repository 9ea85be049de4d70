#!/bin/bash
# Refuses `helm uninstall` (exit 1) while any SignalProcessing is being deleted and still holds
# audit-guard's finalizer: only this release's controller would store its record and let it go.
set -euo pipefail
waiting="$(kubectl get signalprocessings.kubernaut.ai --all-namespaces -o go-template='{{range .items}}{{$o := .}}{{if .metadata.deletionTimestamp}}{{range .metadata.finalizers}}{{if eq . "kubernaut.ai/audit-persistence"}}{{$o.metadata.namespace}}/{{$o.metadata.name}}{{"\n"}}{{end}}{{end}}{{end}}{{end}}')"
if [ -n "$waiting" ]; then
  echo "refusing uninstall: these SignalProcessings are being deleted and wait for audit-guard to store their audit record:"
  echo "$waiting"
  echo "let audit-guard release them (they go once Data Storage holds their records), then uninstall again"
  exit 1
fi
echo "no SignalProcessing waits for audit-guard: uninstall may proceed"
