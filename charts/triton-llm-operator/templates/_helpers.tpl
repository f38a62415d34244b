{{/* Names, labels and the service account, as `helm create` scaffolds them. */}}

{{- define "triton-llm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The object name prefix: the release name, plus the chart name unless the release name contains it, at most
63 characters (a DNS label).
*/}}
{{- define "triton-llm-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "triton-llm-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object (helm.sh/chart changes with the chart version: never in a selector). */}}
{{- define "triton-llm-operator.labels" -}}
helm.sh/chart: {{ include "triton-llm-operator.chart" . }}
{{ include "triton-llm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmops
{{- end }}

{{/* The stable labels that select the operator's pods. */}}
{{- define "triton-llm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "triton-llm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "triton-llm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "triton-llm-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image@digest, else image:tag with the tag defaulting to the chart's appVersion. */}}
{{- define "triton-llm-operator.image" -}}
{{- include "triton-llm-operator.imageRef" (list . .Values.image) }}
{{- end }}

{{/* The runtime image the operator puts in model pods (llmctl run --runtime-image). */}}
{{- define "triton-llm-operator.runtimeImage" -}}
{{- include "triton-llm-operator.imageRef" (list . .Values.runtimeImage) }}
{{- end }}

{{/* repository[:tag|@digest] of an image value; imageRegistry, when set, replaces everything before the name. */}}
{{- define "triton-llm-operator.imageRef" -}}
{{- $root := index . 0 }}
{{- $img := index . 1 }}
{{- $repo := $img.repository }}
{{- if $root.Values.imageRegistry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" $root.Values.imageRegistry) (last (splitList "/" $img.repository)) }}
{{- end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The name of the metrics Service; the ServiceMonitor's job label and the operator alerts use it. */}}
{{- define "triton-llm-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "triton-llm-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
