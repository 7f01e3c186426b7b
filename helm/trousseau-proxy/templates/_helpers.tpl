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

{{/* The fewest proxy replicas that run: autoscaling.minReplicas, else replicaCount. */}}
{{- define "trousseau-proxy.replicaFloor" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* The most proxy replicas that run: autoscaling.maxReplicas, else replicaCount. */}}
{{- define "trousseau-proxy.replicaCeiling" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.maxReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* An HTTPRoute's hostnames: $values.hostnames, else the host of config.public_url. Called
with (dict "root" $ "values" <httpRoute or gatewayExternalAuth>). */}}
{{- define "trousseau-proxy.routeHostnames" -}}
{{- $hostnames := .values.hostnames | default (list (urlParse .root.Values.config.public_url).hostname) }}
hostnames:
  {{- range $hostnames }}
  - {{ . | quote }}
  {{- end }}
{{- end }}

{{/* An HTTPRoute's parentRefs, required. Called like routeHostnames; .key names the values. */}}
{{- define "trousseau-proxy.routeParentRefs" -}}
{{- if not .values.parentRefs }}
{{- fail (printf "%s.parentRefs is required: the Gateway (and listener) the route attaches to, like [{name: public, namespace: gateways, sectionName: https}]" .key) }}
{{- end }}
parentRefs:
  {{- toYaml .values.parentRefs | nindent 2 }}
{{- end }}

{{/* Whether Redis is reached through Sentinel or a Cluster (config.session.redis_sentinel,
redis_cluster, or secret.redisClusterNodes) rather than one URL: "true" or "". */}}
{{- define "trousseau-proxy.redisHA" -}}
{{- $session := .Values.config.session | default dict }}
{{- if or $session.redis_sentinel $session.redis_cluster (and (not .Values.secret.existingSecret) .Values.secret.redisClusterNodes) }}true{{ end }}
{{- end }}

{{/* Whether the proxy reads a Redis URL (key redis_url of the Secret): "true" or "". */}}
{{- define "trousseau-proxy.usesRedis" -}}
{{- $session := .Values.config.session | default dict }}
{{- if not (include "trousseau-proxy.redisHA" .) }}
{{- if or (eq (toString $session.store) "redis") (eq (toString $session.revocations) "redis") (and (not .Values.secret.existingSecret) .Values.secret.redisUrl) }}true{{ end }}
{{- end }}
{{- end }}

{{/* The configuration file: .Values.config, with the Sentinel password files of the Secret. */}}
{{- define "trousseau-proxy.configFile" -}}
{{- $config := deepCopy .Values.config }}
{{- $session := $config.session | default dict }}
{{- if and $session.redis_sentinel (not .Values.secret.existingSecret) }}
{{- if .Values.secret.redisPassword }}
{{- $_ := set $session.redis_sentinel "password_file" "/var/run/secrets/trousseau-proxy/redis_password" }}
{{- end }}
{{- if .Values.secret.redisSentinelPassword }}
{{- $_ := set $session.redis_sentinel "sentinel_password_file" "/var/run/secrets/trousseau-proxy/redis_sentinel_password" }}
{{- end }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
Refuses, at render time, configurations the proxy would refuse at start or that could not work in
this chart: a Redis store without a URL, memory sessions over several replicas, CA files nowhere
in the container, volumes and mounts that do not match.
*/}}
{{- define "trousseau-proxy.checkConfig" -}}
{{- $session := .Values.config.session | default dict }}
{{- $store := toString ($session.store | default "cookie") }}
{{- $ha := list }}
{{- if .Values.secret.redisUrl }}{{ $ha = append $ha "secret.redisUrl" }}{{ end }}
{{- if $session.redis_sentinel }}{{ $ha = append $ha "config.session.redis_sentinel" }}{{ end }}
{{- if $session.redis_cluster }}{{ $ha = append $ha "config.session.redis_cluster" }}{{ end }}
{{- if .Values.secret.redisClusterNodes }}{{ $ha = append $ha "secret.redisClusterNodes" }}{{ end }}
{{- if gt (len $ha) 1 }}
{{- fail (printf "give Redis one way: %s are each a Redis (one URL, Sentinel, a Cluster without or with passwords)" (join " and " $ha)) }}
{{- end }}
{{- if and .Values.secret.existingSecret .Values.secret.redisClusterNodes }}
{{- fail "secret.redisClusterNodes goes in the chart's own Secret: with secret.existingSecret, give the cluster as config.session.redis_cluster (host:port, no password)" }}
{{- end }}
{{- if and (or .Values.secret.redisPassword .Values.secret.redisSentinelPassword) (not $session.redis_sentinel) }}
{{- fail "secret.redisPassword and secret.redisSentinelPassword are Sentinel's passwords: set config.session.redis_sentinel (a Cluster's password goes in the URLs of secret.redisClusterNodes)" }}
{{- end }}
{{- if and (include "trousseau-proxy.usesRedis" .) (not .Values.secret.existingSecret) (not .Values.secret.redisUrl) }}
{{- fail "secret.redisUrl is required when config.session.store or config.session.revocations is redis (or secret.existingSecret with key redis_url): the Redis URL, password included, like redis://:PASSWORD@redis:6379/0 (rediss:// for TLS). It goes in the Secret, never in config" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- if eq $store "memory" }}
{{- fail "autoscaling.enabled is refused with config.session.store: memory: each session lives in one replica's memory, so the replicas the autoscaler adds and removes would lose them. Use store: cookie (the default), or store: redis with secret.redisUrl" }}
{{- end }}
{{- if lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas) }}
{{- fail (printf "autoscaling.maxReplicas (%d) is below autoscaling.minReplicas (%d)" (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- end }}
{{- if not (.Values.resources.requests | default dict).cpu }}
{{- fail "autoscaling.enabled scales on CPU utilization, a share of the CPU each pod requests: set resources.requests.cpu" }}
{{- end }}
{{- else if and (eq $store "memory") (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "config.session.store: memory keeps each session in one replica's memory, so %d replicas would lose them: set replicaCount: 1, or store: redis with secret.redisUrl" (int .Values.replicaCount)) }}
{{- end }}
{{- include "trousseau-proxy.checkDisruptionBudget" . }}
{{- include "trousseau-proxy.checkGateway" . }}
{{- if and $session.redis_ca_file .Values.secret.redisUrl (not .Values.secret.existingSecret) (not (regexMatch "^(rediss|valkeys)://" .Values.secret.redisUrl)) }}
{{- fail "config.session.redis_ca_file is only used with a rediss:// (TLS) secret.redisUrl" }}
{{- end }}
{{- $volumes := list }}
{{- range .Values.extraVolumes }}
{{- $volumes = append $volumes .name }}
{{- end }}
{{- $mounts := list "/var/run/secrets/trousseau-proxy" }}
{{- range .Values.extraVolumeMounts }}
{{- if not (has .name $volumes) }}
{{- fail (printf "extraVolumeMounts: %s names no entry of extraVolumes" .name) }}
{{- end }}
{{- $mounts = append $mounts (trimSuffix "/" .mountPath) }}
{{- end }}
{{- $proxy := .Values.config.proxy | default dict }}
{{- $oidc := .Values.config.oidc | default dict }}
{{- range $key, $file := dict "config.proxy.ca_file" $proxy.ca_file "config.oidc.ca_file" $oidc.ca_file "config.session.redis_ca_file" $session.redis_ca_file }}
{{- if $file }}
{{- $found := false }}
{{- range $mounts }}
{{- if or (eq $file .) (hasPrefix (printf "%s/" .) $file) }}
{{- $found = true }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "%s %s is in no volume of the proxy: mount the CA with extraVolumes and extraVolumeMounts (or put it in secret.existingSecret, mounted at /var/run/secrets/trousseau-proxy)" $key $file) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget that allows no eviction at the fewest replicas blocks every node drain. */}}
{{- define "trousseau-proxy.checkDisruptionBudget" -}}
{{- $floor := include "trousseau-proxy.replicaFloor" . | int }}
{{- $min := .Values.podDisruptionBudget.minAvailable }}
{{- if and .Values.podDisruptionBudget.enabled (gt $floor 1) }}
{{- $of := ternary "autoscaling.minReplicas" "replicaCount" (eq .Values.autoscaling.enabled true) }}
{{- if kindIs "string" $min }}
{{- if eq $min "100%" }}
{{- fail (printf "podDisruptionBudget.minAvailable 100%% allows no eviction: no node running the proxy could ever be drained. Use a count below %s (%d), or a lower percentage" $of $floor) }}
{{- end }}
{{- else if ge (int $min) $floor }}
{{- fail (printf "podDisruptionBudget.minAvailable %d allows no eviction with %s %d: no node running the proxy could ever be drained. Keep it below %d" (int $min) $of $floor $floor) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The gRPC port and the Gateway API routes: what could not work is refused, named. */}}
{{- define "trousseau-proxy.checkGateway" -}}
{{- $grpc := .Values.grpcAuthz }}
{{- if and $grpc.enabled (has (int $grpc.port) (list 4180 9180)) }}
{{- fail (printf "grpcAuthz.port %d is taken: 4180 is the proxy's http port and 9180 its metrics port (9001, say)" (int $grpc.port)) }}
{{- end }}
{{- $auth := .Values.gatewayExternalAuth }}
{{- if $auth.enabled }}
{{- if .Values.httpRoute.enabled }}
{{- fail "httpRoute.enabled and gatewayExternalAuth.enabled both route the host: httpRoute sends everything to the proxy (standalone), gatewayExternalAuth sends it to the app with the gateway asking the proxy. Choose one" }}
{{- end }}
{{- if not $auth.backendRef.name }}
{{- fail "gatewayExternalAuth.backendRef.name is required: the app's Service, where the gateway sends the requests the proxy lets through" }}
{{- end }}
{{- if and (eq $auth.protocol "GRPC") (not $grpc.enabled) }}
{{- fail "gatewayExternalAuth.protocol GRPC asks the proxy's gRPC port: set grpcAuthz.enabled: true (or protocol: HTTP, /.trousseau/auth on the http port)" }}
{{- end }}
{{- end }}
{{- end }}
