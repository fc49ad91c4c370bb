{{/*
Names are "<release>-<suffix>", cut to 63 characters: the chart creates cluster-scoped objects
(ClusterRoles, ClusterRoleBindings), so two releases must never share a name.
*/}}
{{- define "flageval-operator.name" -}}
{{- printf "%s-%s" .root.Release.Name .suffix | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "flageval-operator.operatorName" -}}
{{- include "flageval-operator.name" (dict "root" . "suffix" "operator") -}}
{{- end }}

{{- define "flageval-operator.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "flageval-operator.operatorName" .) -}}
{{- end }}

{{/* Selector labels of the operator's pods. */}}
{{- define "flageval-operator.selectorLabels" -}}
app.kubernetes.io/name: flageval-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object; pass (dict "root" $ "component" "operator"). */}}
{{- define "flageval-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: flageval-operator
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The operator's image. */}}
{{- define "flageval-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{/* The runner Jobs' image: runner.image, else the operator's (one image holds both). */}}
{{- define "flageval-operator.runnerImage" -}}
{{- $r := .Values.runner.image -}}
{{- printf "%s:%s" ($r.repository | default .Values.image.repository) ($r.tag | default .Values.image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{/* The metrics port, 0 when metrics are off. */}}
{{- define "flageval-operator.metricsPort" -}}
{{- if .Values.metrics.enabled }}{{ int .Values.metrics.port }}{{ else }}0{{ end -}}
{{- end }}

{{/* Users' suites (values.suites): the ConfigMap, and where the operator and the REST API read it (FLAGEVAL_SUITES). */}}
{{- define "flageval-operator.suitesName" -}}
{{- include "flageval-operator.name" (dict "root" . "suffix" "suites") -}}
{{- end }}

{{- define "flageval-operator.suitesDir" -}}/etc/flageval/suites{{- end }}
