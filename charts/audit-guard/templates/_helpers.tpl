{{/* Base name of every object: the release name, unless fullnameOverride says otherwise. */}}
{{- define "audit-guard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: the same as the kustomize manifests', so an install can move between the two. */}}
{{- define "audit-guard.selector" -}}
app.kubernetes.io/name: audit-guard
{{- end -}}
{{- define "audit-guard.datastorage.selector" -}}
app.kubernetes.io/name: audit-guard-datastorage
{{- end -}}

{{/*
Object metadata. Takes a dict: ctx (the root context), name, and optionally
namespaced (bool), labels (dict), annotations (dict).
*/}}
{{- define "audit-guard.metadata" -}}
{{- $ctx := .ctx -}}
name: {{ .name }}
{{- if .namespaced }}
namespace: {{ $ctx.Release.Namespace }}
{{- end }}
labels:
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  app.kubernetes.io/part-of: audit-guard
  app.kubernetes.io/instance: {{ $ctx.Release.Name }}
  app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
  app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
  helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" }}
  {{- with $ctx.Values.commonLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := merge (dict) (.annotations | default dict) ($ctx.Values.commonAnnotations | default dict) }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
An image reference from {registry, repository, tag, digest} (the dict `image`) and a tag to use
when it names none: registry/repository, then @digest when given (it pins the bytes, so it wins
over the tag), else :tag.
*/}}
{{- define "audit-guard.imageRef" -}}
{{- $repo := .image.repository -}}
{{- with .image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- if .image.digest -}}
{{ $repo }}@{{ .image.digest }}
{{- else -}}
{{ $repo }}:{{ .image.tag | default .defaultTag }}
{{- end -}}
{{- end -}}

{{- define "audit-guard.image" -}}
{{ include "audit-guard.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end -}}

{{/* The serve pods' ServiceAccount: created by the chart (named after the release) or yours. */}}
{{- define "audit-guard.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "audit-guard.fullname" .) -}}
{{- end -}}

{{/* LOG_FORMAT and, when logLevel is set, RUST_LOG (audit-guard's log filter). */}}
{{- define "audit-guard.logEnv" -}}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.logLevel }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
A PodDisruptionBudget. Takes a dict: ctx, name, selector (YAML), replicas, pdb (the values).
With one replica and minAvailable it would block every node drain, so then none is rendered.
*/}}
{{- define "audit-guard.pdb" -}}
{{- $pdb := .pdb -}}
{{- $max := toString $pdb.maxUnavailable -}}
{{- if and $pdb.enabled (or (gt (int .replicas) 1) $max) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- include "audit-guard.metadata" (dict "ctx" .ctx "name" .name "namespaced" true) | nindent 2 }}
spec:
  {{- if $max }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- else }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- .selector | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The username that may take the finalizer off: this release's ServiceAccount. */}}
{{- define "audit-guard.controllerIdentity" -}}
{{- .Values.controller.identity | default (printf "system:serviceaccount:%s:%s" .Release.Namespace (include "audit-guard.serviceAccountName" .)) -}}
{{- end -}}

{{- define "audit-guard.datastorageURL" -}}
{{- if .Values.datastorage.enabled -}}
https://{{ include "audit-guard.fullname" . }}-datastorage.{{ .Release.Namespace }}.svc:8085
{{- else -}}
{{- required "datastorage.externalURL is needed when datastorage.enabled is false" .Values.datastorage.externalURL -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the webhook's tls.crt and tls.key. */}}
{{- define "audit-guard.tlsSecret" -}}
{{- if eq .Values.certs.mode "existing-secret" -}}
{{- .Values.certs.existingSecret.name -}}
{{- else -}}
{{- include "audit-guard.fullname" . }}-webhook-tls
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding Data Storage's tls.crt, tls.key and ca.crt. */}}
{{- define "audit-guard.datastorageTLSSecret" -}}
{{- if and (eq .Values.certs.mode "existing-secret") .Values.certs.existingSecret.datastorageName -}}
{{- .Values.certs.existingSecret.datastorageName -}}
{{- else -}}
{{- include "audit-guard.fullname" . }}-datastorage-tls
{{- end -}}
{{- end -}}

{{/*
Self-signed mode: the CA, the webhook's and Data Storage's serving certificates, generated once
and then read back from the Secrets on every upgrade (lookup), so the caBundle and the pods'
certificates never change by themselves (all are generated anew together if either Secret is
missing: the CA's key is not kept). Returns YAML with keys ca, crt, key, dsCrt, dsKey (PEM).
`helm template` cannot look anything up and so generates new ones every time.
*/}}
{{- define "audit-guard.selfSignedCerts" -}}
{{- $secretName := include "audit-guard.tlsSecret" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- $ds := lookup "v1" "Secret" .Release.Namespace (include "audit-guard.datastorageTLSSecret" .) -}}
{{- $data := $existing.data | default dict -}}
{{- $dsData := $ds.data | default dict -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") (index $dsData "tls.crt") (index $dsData "tls.key") -}}
ca: {{ index $data "ca.crt" | b64dec | quote }}
crt: {{ index $data "tls.crt" | b64dec | quote }}
key: {{ index $data "tls.key" | b64dec | quote }}
dsCrt: {{ index $dsData "tls.crt" | b64dec | quote }}
dsKey: {{ index $dsData "tls.key" | b64dec | quote }}
{{- else -}}
{{- $service := printf "%s-webhook" (include "audit-guard.fullname" .) -}}
{{- $dsService := printf "%s-datastorage" (include "audit-guard.fullname" .) -}}
{{- $ns := .Release.Namespace -}}
{{- $days := int .Values.certs.selfSigned.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "audit-guard.fullname" .)) $days -}}
{{- $dns := list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.cluster.local" $service $ns) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $service $ns) nil $dns $days $ca -}}
{{- $dsDns := list $dsService (printf "%s.%s" $dsService $ns) (printf "%s.%s.svc" $dsService $ns) (printf "%s.%s.svc.cluster.local" $dsService $ns) -}}
{{- $dsCert := genSignedCert (printf "%s.%s.svc" $dsService $ns) nil $dsDns $days $ca -}}
ca: {{ $ca.Cert | quote }}
crt: {{ $cert.Cert | quote }}
key: {{ $cert.Key | quote }}
dsCrt: {{ $dsCert.Cert | quote }}
dsKey: {{ $dsCert.Key | quote }}
{{- end -}}
{{- end -}}

{{/* Webhooks' namespaceSelector: the watched namespaces when listed, else all but this one. */}}
{{- define "audit-guard.webhookNamespaceSelector" -}}
{{- /* Every namespace, the release's own included, unless the controller watches only some. */ -}}
{{- if .Values.controller.watchNamespaces }}
namespaceSelector:
  matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values: {{ toJson .Values.controller.watchNamespaces }}
{{- end }}
{{- end -}}
