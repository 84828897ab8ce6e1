{{- define "kontext-receiver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kontext-receiver.fullname" -}}
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

{{- define "kontext-receiver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kontext-receiver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kontext-receiver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kontext-receiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of one component's pods: (dict "root" $ "component" "web"). */}}
{{- define "kontext-receiver.componentSelector" -}}
{{ include "kontext-receiver.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kontext-receiver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kontext-receiver.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kontext-receiver.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "kontext-receiver.secretName" -}}
{{- default (include "kontext-receiver.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The base URL BFL calls back: explicit, else the Ingress host, else the in-cluster Service. */}}
{{- define "kontext-receiver.publicUrl" -}}
{{- if .Values.config.publicUrl -}}
{{- .Values.config.publicUrl | trimSuffix "/" -}}
{{- else if .Values.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v" (include "kontext-receiver.fullname" .) .Release.Namespace .Values.service.port -}}
{{- end -}}
{{- end -}}

{{/* Combinations that would lose data or images, refused before anything is applied. */}}
{{- define "kontext-receiver.validate" -}}
{{- $several := or (gt (int .Values.web.replicaCount) 1) .Values.web.autoscaling.enabled .Values.worker.enabled -}}
{{- if and (eq .Values.store.type "sqlite") $several -}}
{{- fail "store.type=sqlite runs one web replica and no worker Deployment: use store.type=postgresql for more" -}}
{{- end -}}
{{- if and $several (hasPrefix "file://" .Values.blobs.url) -}}
{{- fail "several pods need shared image storage: set blobs.url to s3://bucket[/prefix][?endpoint=URL&region=R]" -}}
{{- end -}}
{{- if and (eq .Values.store.type "postgresql") (not .Values.store.postgresql.existingSecret) -}}
{{- fail "store.type=postgresql reads the DSN from a Secret: set store.postgresql.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* The container's environment: the ConfigMap, then each secret value by reference. */}}
{{- define "kontext-receiver.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "kontext-receiver.fullname" . }}
env:
  {{- $secret := include "kontext-receiver.secretName" . }}
  {{- range $key := list "BFL_API_KEY" "RECEIVER_SIGNING_KEYS" "RECEIVER_API_TOKENS" }}
  - name: {{ $key }}
    valueFrom:
      secretKeyRef: {name: {{ $secret }}, key: {{ $key }}}
  {{- end }}
  - name: RECEIVER_HTTP_SINK_SECRET
    valueFrom:
      secretKeyRef: {name: {{ $secret }}, key: RECEIVER_HTTP_SINK_SECRET, optional: true}
  {{- if eq .Values.store.type "postgresql" }}
  - name: RECEIVER_STORE_URL
    valueFrom:
      secretKeyRef: {name: {{ .Values.store.postgresql.existingSecret }}, key: {{ .Values.store.postgresql.key }}}
  {{- end }}
  {{- if .Values.sinks.existingSecret }}
  - name: RECEIVER_SINKS
    valueFrom:
      secretKeyRef: {name: {{ .Values.sinks.existingSecret }}, key: {{ .Values.sinks.key }}}
  {{- end }}
  {{- with .Values.blobs.s3.existingSecret }}
  - name: AWS_ACCESS_KEY_ID
    valueFrom:
      secretKeyRef: {name: {{ . }}, key: AWS_ACCESS_KEY_ID}
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom:
      secretKeyRef: {name: {{ . }}, key: AWS_SECRET_ACCESS_KEY}
  - name: AWS_SESSION_TOKEN
    valueFrom:
      secretKeyRef: {name: {{ . }}, key: AWS_SESSION_TOKEN, optional: true}
  {{- end }}
{{- end -}}

{{- define "kontext-receiver.volumeMounts" -}}
volumeMounts:
  - {name: tmp, mountPath: /tmp}
  - {name: data, mountPath: /data}
{{- end -}}

{{- define "kontext-receiver.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {medium: Memory, sizeLimit: {{ .Values.tmpSizeLimit }}}
  - name: data
    {{- if .Values.persistence.enabled }}
    persistentVolumeClaim:
      claimName: {{ default (printf "%s-data" (include "kontext-receiver.fullname" .)) .Values.persistence.existingClaim }}
    {{- else }}
    emptyDir: {}
    {{- end }}
{{- end -}}

{{/* What every pod template shares: (dict "root" $ "component" "web" "values" .Values.web). */}}
{{- define "kontext-receiver.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "kontext-receiver.serviceAccountName" $root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $root.Values.migration.enabled }}
initContainers:
  - name: migrate
    image: {{ include "kontext-receiver.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: ["kontext-receiver", "db", "migrate"]
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .values.resources | nindent 6 }}
    {{- include "kontext-receiver.env" $root | nindent 4 }}
    {{- include "kontext-receiver.volumeMounts" $root | nindent 4 }}
{{- end }}
{{- if $root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "kontext-receiver.componentSelector" (dict "root" $root "component" $.component) | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
  {{- end }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "kontext-receiver.volumes" $root | nindent 0 }}
{{- end -}}

{{/* Pod annotations that roll the pods when their configuration changes. */}}
{{- define "kontext-receiver.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if not .root.Values.secrets.existingSecret }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Probes on the component's http port. */}}
{{- define "kontext-receiver.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "kontext-receiver.terminationGracePeriodSeconds" -}}
{{- add (int .Values.web.preStopSleepSeconds) (mul 2 (int .Values.config.shutdownGraceSeconds)) 10 -}}
{{- end -}}
