{{/* Names and labels shared by every template. */}}
{{- define "cigate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cigate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cigate.labels" -}}
{{ include "cigate.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "cigate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "cigate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "cigate.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end -}}

{{- define "cigate.secretName" -}}
{{ .Values.secrets.existingSecret | default (include "cigate.fullname" .) }}
{{- end -}}

{{/* Render-time checks: a chart that would start replicas that cannot work fails here. */}}
{{- define "cigate.validate" -}}
{{- if not .Values.upstream.url -}}
{{- fail "upstream.url is required (https://RESOURCE.openai.azure.com)" -}}
{{- end -}}
{{- if not .Values.secrets.existingSecret -}}
{{- if not .Values.database.url -}}
{{- fail "database.url is required (a PostgreSQL URL every replica shares), or secrets.existingSecret" -}}
{{- end -}}
{{- if not .Values.blobs.url -}}
{{- fail "blobs.url is required (azure://CONTAINER?...), or secrets.existingSecret" -}}
{{- end -}}
{{- if lt (len .Values.secrets.linkSecret) 32 -}}
{{- fail "secrets.linkSecret must be set, at least 32 characters, the same for every replica (openssl rand -base64 48), or use secrets.existingSecret" -}}
{{- end -}}
{{- if and (eq .Values.upstream.auth "key") (not .Values.secrets.upstreamKey) -}}
{{- fail "secrets.upstreamKey is required with upstream.auth=key, or secrets.existingSecret" -}}
{{- end -}}
{{- if hasPrefix "sqlite" .Values.database.url -}}
{{- fail "database.url must be PostgreSQL: every replica has its own SQLite file" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret, mounted as files at /run/secrets/cigate (0440, group fsGroup). */}}
{{- define "cigate.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ include "cigate.secretName" . }}
    defaultMode: 0440
{{- end -}}
