{{/* What the operator needs in tenant namespaces (and the shared one). */}}
{{- define "sluice.tenantRules" -}}
- apiGroups: [sluice.dev]
  resources: [projects, endpoints, apikeys, providers]
  verbs: [get, list, watch]
{{- if .Values.dataPlane.gateway.keyManagement }}
# The key-management API: each project's gateways get a Role in its namespace to write its
# ApiKeys, which the operator may grant only if it holds the same verbs.
- apiGroups: [sluice.dev]
  resources: [apikeys]
  verbs: [create, update, patch, delete]
{{- end }}
# That Role and its binding (also removed when key management is turned off).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, create, update, patch, delete]
# The Project and Provider finalizers, applied server-side.
- apiGroups: [sluice.dev]
  resources: [projects, providers]
  verbs: [patch]
- apiGroups: [sluice.dev]
  resources: [projects/status, endpoints/status, apikeys/status, providers/status]
  verbs: [patch]
# Generated key Secrets are owned by their ApiKey with blockOwnerDeletion.
- apiGroups: [sluice.dev]
  resources: [apikeys/finalizers]
  verbs: [update]
# Credentials and key material: read; generated keys: create and rotate.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update]
# Providers' CA bundles (spec.tls.caBundle.configMapKeyRef): read only.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# The pods of self-hosted pools (Providers with spec.service): read only.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
{{- end -}}
