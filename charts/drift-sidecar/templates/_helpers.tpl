{{/*
Named templates for YOUR pod spec, and the helpers behind them.

Public templates (docs/deploy.md; examples/model-server shows each in place) take the
root context, `$`, of whichever chart includes them:

  drift-sidecar.initContainers      the baseline copy (if any) and the native sidecar
  drift-sidecar.container           the sidecar container alone
  drift-sidecar.volumes             socket emptyDir, config, baselines, state, tmp
  drift-sidecar.clientVolumeMounts  the socket mount for the model server container
  drift-sidecar.clientEnv           DRIFT_SIDECAR_SOCKET for the model server container
  drift-sidecar.podLabels           the label the PodMonitor and Service select
  drift-sidecar.podAnnotations      a checksum of the config, so a change rolls the pods
  drift-sidecar.podSecurityContext  fsGroup and the rest, for pods that set none

Called from a parent chart, they find this chart among the parent's `.Subcharts` (by
the `drift-sidecar/chart` annotation, so an alias works) and use its values, name and
appVersion; called from this chart, they use its own. Each list template renders list
items, without the key: put it under `initContainers:`, `volumes:` and so on.
*/}}

{{/* The subchart's scope when called from a parent chart, else the context itself. */}}
{{- define "drift-sidecar._scope" -}}
{{- $scope := . -}}
{{- range $_, $sub := (.Subcharts | default dict) -}}
{{- if eq (index ($sub.Chart.Annotations | default dict) "drift-sidecar/chart" | toString) "true" -}}
{{- $scope = $sub -}}
{{- end -}}
{{- end -}}
{{- $_ := set . "_driftSidecarScope" $scope -}}
{{- end -}}

{{- define "drift-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drift-sidecar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "drift-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drift-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drift-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "drift-sidecar.labels" -}}
helm.sh/chart: {{ include "drift-sidecar.chart" . }}
{{ include "drift-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* What the monitors and the Service select: podSelector, else the podLabels label. */}}
{{- define "drift-sidecar.selector" -}}
{{- if .Values.podSelector -}}
{{- toYaml .Values.podSelector -}}
{{- else -}}
drift-sidecar/instance: {{ include "drift-sidecar.fullname" . }}
{{- end -}}
{{- end -}}

{{- define "drift-sidecar.configMapName" -}}
{{- printf "%s-config" (include "drift-sidecar.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drift-sidecar.configFile" -}}
/etc/drift-sidecar/sidecar.yaml
{{- end -}}

{{/* The sidecar.yaml the ConfigMap holds: config, checked for what the pod relies on. */}}
{{- define "drift-sidecar.configYaml" -}}
{{- $config := .Values.config -}}
{{- $socket := (($config.socket | default dict).path | default "") | toString -}}
{{- if not (hasPrefix "/" $socket) -}}
{{- fail (printf "config.socket.path: must be an absolute path (its folder is the shared socket volume), got %q" $socket) -}}
{{- end -}}
{{- $state := ($config.state_dir | default "") | toString -}}
{{- if not (hasPrefix "/" $state) -}}
{{- fail (printf "config.state_dir: must be an absolute path (the state volume is mounted there), got %q" $state) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "drift-sidecar.port" -}}
{{- ((.Values.config.http | default dict).port | default 9108) | int -}}
{{- end -}}

{{- define "drift-sidecar.socketDir" -}}
{{- dir .Values.config.socket.path -}}
{{- end -}}

{{- define "drift-sidecar.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "drift-sidecar._hasBaselines" -}}
{{- if or .Values.baselines.image.repository .Values.baselines.volume -}}true{{- end -}}
{{- end -}}

{{- define "drift-sidecar._container" -}}
- name: drift-sidecar
  image: {{ include "drift-sidecar.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  # A native sidecar: up before the model server's first request, stopped after it,
  # so the last events are drained. No readinessProbe: it never gates the pod.
  restartPolicy: Always
  args:
    - --config
    - {{ include "drift-sidecar.configFile" . }}
    {{- range .Values.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: drift-metrics
      containerPort: {{ include "drift-sidecar.port" . }}
      protocol: TCP
  {{- with .Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: drift-sidecar-socket
      mountPath: {{ include "drift-sidecar.socketDir" . }}
    - name: drift-sidecar-config
      mountPath: {{ dir (include "drift-sidecar.configFile" .) }}
      readOnly: true
    {{- if include "drift-sidecar._hasBaselines" . }}
    - name: drift-sidecar-baselines
      mountPath: {{ .Values.baselines.mountPath }}
      readOnly: true
    {{- end }}
    - name: drift-sidecar-state
      mountPath: {{ .Values.config.state_dir }}
    - name: drift-sidecar-tmp
      mountPath: /tmp
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "drift-sidecar._initContainers" -}}
{{- if .Values.baselines.image.repository }}
{{- $image := .Values.baselines.image }}
# Baselines are parquet files too large for a ConfigMap: they ship in a small image
# versioned with the model and are copied into an emptyDir before the sidecar starts.
- name: drift-sidecar-baselines
  image: {{ printf "%s:%s" $image.repository ($image.tag | default "latest" | toString) | quote }}
  imagePullPolicy: {{ $image.pullPolicy }}
  command: ["cp", "-R", {{ printf "%s/." (trimSuffix "/" $image.path) | quote }}, "/target/"]
  {{- with .Values.baselines.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: drift-sidecar-baselines
      mountPath: /target
{{- end }}
{{ include "drift-sidecar._container" . }}
{{- end -}}

{{- define "drift-sidecar._volumes" -}}
- name: drift-sidecar-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: drift-sidecar-config
  configMap:
    name: {{ include "drift-sidecar.configMapName" . }}
{{- if .Values.baselines.image.repository }}
- name: drift-sidecar-baselines
  emptyDir:
    sizeLimit: {{ .Values.baselines.sizeLimit }}
{{- else if .Values.baselines.volume }}
- name: drift-sidecar-baselines
  {{- toYaml .Values.baselines.volume | nindent 2 }}
{{- end }}
- name: drift-sidecar-state
  emptyDir:
    sizeLimit: {{ .Values.state.sizeLimit }}
- name: drift-sidecar-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "drift-sidecar._clientVolumeMounts" -}}
- name: drift-sidecar-socket
  mountPath: {{ include "drift-sidecar.socketDir" . }}
{{- end -}}

{{- define "drift-sidecar._clientEnv" -}}
- name: DRIFT_SIDECAR_SOCKET
  value: {{ .Values.config.socket.path | quote }}
{{- end -}}

{{- define "drift-sidecar._podLabels" -}}
drift-sidecar/instance: {{ include "drift-sidecar.fullname" . }}
{{- end -}}

{{- define "drift-sidecar._podAnnotations" -}}
checksum/drift-sidecar-config: {{ include "drift-sidecar.configYaml" . | sha256sum }}
{{- end -}}

{{/* The public templates: resolve the scope, then render with it. */}}
{{- define "drift-sidecar.initContainers" -}}
{{- include "drift-sidecar._scope" . -}}
{{- include "drift-sidecar._initContainers" ._driftSidecarScope | trim -}}
{{- end -}}

{{- define "drift-sidecar.container" -}}
{{- include "drift-sidecar._scope" . -}}
{{- include "drift-sidecar._container" ._driftSidecarScope | trim -}}
{{- end -}}

{{- define "drift-sidecar.volumes" -}}
{{- include "drift-sidecar._scope" . -}}
{{- include "drift-sidecar._volumes" ._driftSidecarScope | trim -}}
{{- end -}}

{{- define "drift-sidecar.clientVolumeMounts" -}}
{{- include "drift-sidecar._scope" . -}}
{{- include "drift-sidecar._clientVolumeMounts" ._driftSidecarScope | trim -}}
{{- end -}}

{{- define "drift-sidecar.clientEnv" -}}
{{- include "drift-sidecar._scope" . -}}
{{- include "drift-sidecar._clientEnv" ._driftSidecarScope | trim -}}
{{- end -}}

{{- define "drift-sidecar.podLabels" -}}
{{- include "drift-sidecar._scope" . -}}
{{- include "drift-sidecar._podLabels" ._driftSidecarScope | trim -}}
{{- end -}}

{{- define "drift-sidecar.podAnnotations" -}}
{{- include "drift-sidecar._scope" . -}}
{{- include "drift-sidecar._podAnnotations" ._driftSidecarScope | trim -}}
{{- end -}}

{{- define "drift-sidecar.podSecurityContext" -}}
{{- include "drift-sidecar._scope" . -}}
{{- toYaml ._driftSidecarScope.Values.podSecurityContext | trim -}}
{{- end -}}
