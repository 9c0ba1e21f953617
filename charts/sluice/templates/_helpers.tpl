{{/* Name of the release's objects. */}}
{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "sluice.labels" -}}
app.kubernetes.io/name: sluice-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: sluice-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.sharedNamespace" -}}
{{- default .Release.Namespace .Values.sharedNamespace -}}
{{- end -}}

{{/* Tenant namespaces plus the shared one: where a namespaced watch list needs Roles. */}}
{{- define "sluice.readNamespaces" -}}
{{- $namespaces := list (include "sluice.sharedNamespace" .) -}}
{{- range .Values.watchNamespaces -}}
{{- $namespaces = append $namespaces . -}}
{{- end -}}
{{- $namespaces | uniq | join "," -}}
{{- end -}}

{{- define "sluice.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "sluice.gatewayImage" -}}
{{- printf "%s:%s" .Values.dataPlane.gateway.image.repository (default .Chart.AppVersion .Values.dataPlane.gateway.image.tag) -}}
{{- end -}}

{{/* The gateway pod defaults as the operator reads them (--gateway-pod-defaults): empty values left out. */}}
{{- define "sluice.gatewayPodDefaults" -}}
{{- $pod := dict "topologySpread" .Values.dataPlane.gateway.pod.topologySpread -}}
{{- range $key := list "resources" "nodeSelector" "tolerations" "affinity" "priorityClassName" "imagePullSecrets" "podLabels" "podAnnotations" "terminationGracePeriodSeconds" -}}
{{- $value := index $.Values.dataPlane.gateway.pod $key -}}
{{- if $value }}{{ $_ := set $pod $key $value }}{{ end -}}
{{- end -}}
{{- toJson $pod -}}
{{- end -}}
