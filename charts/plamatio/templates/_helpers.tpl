{{/*
Chart name, possibly overridden.
*/}}
{{- define "plamatio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object: <release>-<chart>, or the release name alone when it already
contains the chart name. Truncated so that the longest suffix ("-eval-api-key-digests") still fits 63 and StatefulSet revision labels stay valid.
*/}}
{{- define "plamatio.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 36 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 36 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 36 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "plamatio.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object; "component" is passed as .component.
*/}}
{{- define "plamatio.labels" -}}
helm.sh/chart: {{ include "plamatio.chart" .root }}
app.kubernetes.io/name: {{ include "plamatio.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: plamatio
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component.
*/}}
{{- define "plamatio.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plamatio.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "plamatio.operatorName" -}}
{{- printf "%s-operator" (include "plamatio.fullname" .) }}
{{- end }}

{{- define "plamatio.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "plamatio.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to the chart's appVersion.
*/}}
{{- define "plamatio.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Whether leader election runs: "auto" means when more than one replica runs.
*/}}
{{- define "plamatio.leaderElection" -}}
{{- $setting := .Values.operator.leaderElection.enabled }}
{{- if eq (toString $setting) "auto" }}
{{- ternary "true" "false" (gt (int .Values.operator.replicas) 1) }}
{{- else }}
{{- ternary "true" "false" (eq (toString $setting) "true") }}
{{- end }}
{{- end }}

{{/*
A stable secret value: .given when the user set one; else the release's existing Secret .secret key
.key (so an upgrade keeps what the first install generated); else .fresh (a new random value).
*/}}
{{- define "plamatio.stableSecret" -}}
{{- if .given }}
{{- .given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- .fresh }}
{{- end }}
{{- end }}
{{- end }}

{{/* Names of the evaluation-mode objects. */}}
{{- define "plamatio.eval.postgres" -}}{{ printf "%s-eval-postgres" (include "plamatio.fullname" .) }}{{- end }}
{{- define "plamatio.eval.redis" -}}{{ printf "%s-eval-redis" (include "plamatio.fullname" .) }}{{- end }}
{{- define "plamatio.eval.kafka" -}}{{ printf "%s-eval-kafka" (include "plamatio.fullname" .) }}{{- end }}
{{- define "plamatio.eval.apiKeys" -}}{{ printf "%s-eval-api-keys" (include "plamatio.fullname" .) }}{{- end }}
{{- define "plamatio.eval.apiKeyDigests" -}}{{ printf "%s-eval-api-key-digests" (include "plamatio.fullname" .) }}{{- end }}

{{/*
Pod-level hardening of an evaluation-mode workload running as .uid.
*/}}
{{- define "plamatio.eval.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container-level hardening shared by every container of the chart.
*/}}
{{- define "plamatio.containerSecurityContext" -}}
runAsNonRoot: true
privileged: false
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
