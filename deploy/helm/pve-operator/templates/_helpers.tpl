{{/* The chart name, or nameOverride: the label app.kubernetes.io/name. */}}
{{- define "pve-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Object names: fullnameOverride, else the name. Not prefixed with the release name: the operator is one per
cluster (cluster-wide CRDs and ClusterRole), and the defaults keep deploy/'s names (pve-operator,
pve-operator-metrics) so that docs and commands written for deploy/ apply to a Helm install.
*/}}
{{- define "pve-operator.fullname" -}}
{{- default (include "pve-operator.name" .) .Values.fullnameOverride | trunc 57 | trimSuffix "-" -}}
{{- end -}}

{{- define "pve-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object: deploy/'s (name, part-of) and Helm's. */}}
{{- define "pve-operator.labels" -}}
app.kubernetes.io/name: {{ include "pve-operator.name" . }}
app.kubernetes.io/part-of: pve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "pve-operator.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Deployment's selector: deploy/base's, so that a Deployment applied with kustomize can be taken over. */}}
{{- define "pve-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pve-operator.name" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "pve-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* watchNamespaces, checked: names, no duplicates. */}}
{{- define "pve-operator.watchNamespaces" -}}
{{- $seen := dict -}}
{{- range .Values.watchNamespaces -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" (toString .)) -}}
{{- fail (printf "watchNamespaces: %q is not a namespace name" (toString .)) -}}
{{- end -}}
{{- if hasKey $seen . -}}
{{- fail (printf "watchNamespaces: %q is listed twice" .) -}}
{{- end -}}
{{- $_ := set $seen . true -}}
{{- end -}}
{{- toJson .Values.watchNamespaces -}}
{{- end -}}
