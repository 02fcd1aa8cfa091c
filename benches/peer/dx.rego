# The Go peer of the load benchmark: dx-admission's workload rules written in Rego and served by
# OPA as a validating webhook (POST / evaluates data.system.main with the AdmissionReview as input).
# Same rule ids and verdicts as dx-admission on the benchmark's workloads; the JSON-schema rule is
# not included (its DX keywords have no OPA equivalent), so the peer does less work than dx-admission.
package system

import rego.v1

components := {"core", "dam", "persistence", "ring-api", "content-composer", "image-processor"}

stateful := {"core", "dam", "persistence"}

obj := input.request.object

component := obj.metadata.labels["app.kubernetes.io/component"]

is_dx if obj.metadata.labels["app.kubernetes.io/part-of"] == "dx"

is_workload if input.request.kind.kind in {"StatefulSet", "Deployment"}

reviewed if {
	is_dx
	is_workload
	input.request.operation in {"CREATE", "UPDATE"}
}

containers contains c if {
	some c in obj.spec.template.spec.containers
}

containers contains c if {
	some c in obj.spec.template.spec.initContainers
}

deny contains "component-known: label app.kubernetes.io/component names no DX application" if {
	reviewed
	not component in components
}

deny contains sprintf("component-kind: %s must run as a %s", [component, want]) if {
	reviewed
	component in components
	want := kind_for(component)
	input.request.kind.kind != want
}

kind_for(c) := "StatefulSet" if c in stateful

kind_for(c) := "Deployment" if not c in stateful

deny contains sprintf("resources-required: container %s sets no %s.%s", [c.name, section, resource]) if {
	reviewed
	some c in containers
	some section in ["requests", "limits"]
	some resource in ["cpu", "memory"]
	not c.resources[section][resource]
}

deny contains sprintf("resources-request-within-limit: container %s requests more %s than its limit", [c.name, r]) if {
	reviewed
	some c in containers
	some r in ["cpu", "memory"]
	units.parse(c.resources.requests[r]) > units.parse(c.resources.limits[r])
}

deny contains sprintf("image-pinned: container %s image %s is not pinned", [c.name, c.image]) if {
	reviewed
	some c in containers
	not pinned(c.image)
}

pinned(image) if contains(image, "@sha256:")

pinned(image) if {
	not contains(image, "@")
	tag := regex.find_all_string_submatch_n(`:([^:/]+)$`, image, 1)[0][1]
	tag != "latest"
}

deny contains sprintf("readiness-probe: container %s has no readinessProbe", [c.name]) if {
	reviewed
	some c in obj.spec.template.spec.containers
	not c.readinessProbe
}

deny contains sprintf("stateless-no-pvc: volume %s mounts a claim", [v.name]) if {
	reviewed
	input.request.kind.kind == "Deployment"
	some v in obj.spec.template.spec.volumes
	v.persistentVolumeClaim
}

deny contains "statefulset-rolling-update: updateStrategy must be RollingUpdate" if {
	reviewed
	input.request.kind.kind == "StatefulSet"
	obj.spec.updateStrategy.type == "OnDelete"
}

warn contains sprintf("liveness-probe: container %s has no livenessProbe", [c.name]) if {
	reviewed
	some c in obj.spec.template.spec.containers
	not c.livenessProbe
}

warn contains "version-label: label app.kubernetes.io/version is not set" if {
	reviewed
	not obj.metadata.labels["app.kubernetes.io/version"]
}

warn contains "template-labels: the pod template lacks the DX labels" if {
	reviewed
	not obj.spec.template.metadata.labels["app.kubernetes.io/component"]
}

main := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": response,
}

default response := {"allowed": true}

response := r if {
	r := object.union(
		{"uid": input.request.uid, "allowed": count(deny) == 0, "warnings": sort(warn)},
		status,
	)
}

status := {} if count(deny) == 0

status := {"status": {"code": 403, "message": concat("\n", sort(deny))}} if count(deny) > 0
