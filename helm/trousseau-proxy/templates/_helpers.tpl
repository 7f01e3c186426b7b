{{/* Names, labels and the shared pieces of both modes. */}}

{{- define "trousseau-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trousseau-proxy.fullname" -}}
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

{{/* The injector's objects: <fullname>-injector, kept within 63 characters. */}}
{{- define "trousseau-proxy.injectorName" -}}
{{- printf "%s-injector" (include "trousseau-proxy.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "trousseau-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "trousseau-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ if eq .Values.mode "injector" }}injector{{ else }}proxy{{ end }}
{{- end }}

{{- define "trousseau-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trousseau-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ if eq .Values.mode "injector" }}injector{{ else }}proxy{{ end }}
{{- end }}

{{- define "trousseau-proxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "trousseau-proxy.secretName" -}}
{{- default (include "trousseau-proxy.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* public_url without a trailing slash, for the URIs to register. */}}
{{- define "trousseau-proxy.publicUrl" -}}
{{- .Values.config.public_url | trimSuffix "/" }}
{{- end }}

{{/* Restricted Pod Security Standard, pod level. */}}
{{- define "trousseau-proxy.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Restricted Pod Security Standard, container level. */}}
{{- define "trousseau-proxy.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling and metadata options shared by both modes' pods. */}}
{{- define "trousseau-proxy.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Spread replicas over nodes when possible. $ is the root context, .replicas the count. */}}
{{- define "trousseau-proxy.topologySpread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "trousseau-proxy.selectorLabels" . | nindent 8 }}
{{- end }}

{{/* Keep serving while endpoints forget the pod, then SIGTERM (the sleep action needs 1.30). */}}
{{- define "trousseau-proxy.preStop" -}}
{{- if and (gt (int .Values.shutdownDelaySeconds) 0) (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ .Values.shutdownDelaySeconds }}
{{- end }}
{{- end }}
