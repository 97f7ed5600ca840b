{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "tritium.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "tritium.fullname" -}}
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

{{- define "tritium.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tritium.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritium.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tritium.labels" -}}
helm.sh/chart: {{ include "tritium.chart" . }}
{{ include "tritium.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tritium.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tritium.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The model repositories as a list: image.modelRepositoryPath (NVIDIA's chart)
     when set, else modelRepositoryPath (a string or a list). */}}
{{- define "tritium.modelRepositories" -}}
{{- $repos := .Values.modelRepositoryPath }}
{{- if .Values.image.modelRepositoryPath }}
{{- $repos = .Values.image.modelRepositoryPath }}
{{- end }}
{{- if kindIs "string" $repos }}
{{- $repos = list $repos }}
{{- end }}
{{- if not $repos }}
{{- fail "modelRepositoryPath must name at least one model repository" }}
{{- end }}
{{- toJson $repos }}
{{- end }}

{{/* Seconds the kubelet waits before SIGKILL: longer than the preStop sleep plus
     the server's own drain, or the drain is cut short. */}}
{{- define "tritium.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.preStopSleepSeconds) (int .Values.exitTimeoutSecs) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + exitTimeoutSecs (%v)" .Values.terminationGracePeriodSeconds $needed) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
