{{/* The release's full name, at most 63 characters. */}}
{{- define "dx-admission.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dx-admission.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dx-admission.labels" -}}
{{ include "dx-admission.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dx-admission.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dx-admission.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* DNS names of the webhook Service, for the serving certificate. */}}
{{- define "dx-admission.dnsNames" -}}
{{- $service := include "dx-admission.fullname" . -}}
- {{ $service }}
- {{ $service }}.{{ .Release.Namespace }}
- {{ $service }}.{{ .Release.Namespace }}.svc
- {{ $service }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{- define "dx-admission.tlsSecret" -}}
{{- printf "%s-tls" (include "dx-admission.fullname" .) -}}
{{- end -}}

{{- define "dx-admission.checksumKeySecret" -}}
{{- default (printf "%s-checksum-key" (include "dx-admission.fullname" .)) .Values.rollout.checksumKeySecret -}}
{{- end -}}

{{/* Namespaces the webhooks never see: kube-system, the release's own, and any configured. */}}
{{- define "dx-admission.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        - kube-system
        - {{ .Release.Namespace }}
        {{- range .Values.webhook.excludeNamespaces }}
        - {{ . }}
        {{- end }}
{{- end -}}

{{- define "dx-admission.objectSelector" -}}
objectSelector:
  matchLabels:
    {{ .Values.policy.selector.partOfLabel }}: {{ .Values.policy.selector.partOfValue | quote }}
{{- end -}}

{{/* cert-manager injects the CA into the webhook configurations from this Certificate. */}}
{{/* The CA the cainjector publishes: the chart's root, or the CA of an issuer given by issuerRef. */}}
{{- define "dx-admission.caInjection" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}
annotations:
  {{- if .Values.certificates.certManager.issuerRef }}
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "dx-admission.fullname" . }}
  {{- else }}
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "dx-admission.fullname" . }}-root
  {{- end }}
{{- end }}
{{- end -}}
