//! The semantic form of an object: what a change of it means, with everything that is not the
//! user's intent taken out. Objects read from the cluster come back defaulted, with status and
//! bookkeeping; rendered manifests (`helm template`) carry none of that. Both are brought to one
//! form — status, managed fields and Helm's bookkeeping dropped, API-server defaults removed where
//! they hold the default value, empty maps and lists removed — so an unchanged object compares
//! equal whichever side it came from.

use serde_json::{Map, Value};

use crate::checksum::patch::is_checksum_key;
use crate::policy::ResourceKind;
use crate::policy::values::ImageRef;

/// Labels and annotations written by tools, not by the user: Helm's release bookkeeping, the
/// chart label that changes with every chart version, kubectl's and the controllers' own.
const BOOKKEEPING: [&str; 6] = [
    "meta.helm.sh/release-name",
    "meta.helm.sh/release-namespace",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// The semantic form of `object` (its JSON) of `kind`. Pod-template checksum annotations are
/// kept: callers that compare rendered manifests with live objects drop them with
/// [`without_checksums`].
pub fn normalized(kind: ResourceKind, object: &Value) -> Value {
    let mut out = Map::new();
    if let Some(metadata) = object.get("metadata") {
        out.insert("metadata".into(), metadata_of(metadata));
    }
    match kind {
        ResourceKind::ConfigMap => {
            for field in ["data", "binaryData", "immutable"] {
                if let Some(value) = object.get(field) {
                    out.insert(field.into(), value.clone());
                }
            }
        }
        ResourceKind::Secret => {
            // `stringData` is written into `data` by the API server; `type` defaults to Opaque.
            let mut data = object.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
            for (key, value) in object.get("stringData").and_then(Value::as_object).into_iter().flatten() {
                if let Some(text) = value.as_str() {
                    use base64::Engine;
                    data.insert(key.clone(), Value::String(base64::engine::general_purpose::STANDARD.encode(text)));
                }
            }
            out.insert("data".into(), Value::Object(data));
            if let Some(kind) = object.get("type").filter(|t| t.as_str() != Some("Opaque")) {
                out.insert("type".into(), kind.clone());
            }
        }
        ResourceKind::StatefulSet | ResourceKind::Deployment => {
            if let Some(spec) = object.get("spec") {
                let mut spec = spec.clone();
                strip_workload_defaults(kind, &mut spec);
                out.insert("spec".into(), spec);
            }
        }
    }
    let mut value = Value::Object(out);
    prune(&mut value);
    value
}

/// The same form without dx-admission's checksum annotations on the pod template.
pub fn without_checksums(mut value: Value) -> Value {
    if let Some(annotations) = value.pointer_mut("/spec/template/metadata/annotations").and_then(Value::as_object_mut) {
        annotations.retain(|key, _| !is_checksum_key(key));
    }
    prune(&mut value);
    value
}

fn metadata_of(metadata: &Value) -> Value {
    let mut out = Map::new();
    for field in ["labels", "annotations"] {
        if let Some(map) = metadata.get(field).and_then(Value::as_object) {
            let kept: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.insert(field.into(), Value::Object(kept));
        }
    }
    Value::Object(out)
}

/// The defaults kube-apiserver v1.32 fills in on workloads, removed where they hold the default.
fn strip_workload_defaults(kind: ResourceKind, spec: &mut Value) {
    let common: &[(&str, Value)] =
        &[("replicas", 1.into()), ("revisionHistoryLimit", 10.into()), ("minReadySeconds", 0.into())];
    strip_all(spec, common);
    match kind {
        ResourceKind::Deployment => {
            strip_all(spec, &[("progressDeadlineSeconds", 600.into())]);
            if let Some(strategy) = spec.get_mut("strategy") {
                strip_all(
                    strategy,
                    &[("rollingUpdate.maxSurge", "25%".into()), ("rollingUpdate.maxUnavailable", "25%".into())],
                );
                strip_all(strategy, &[("type", "RollingUpdate".into())]);
            }
        }
        ResourceKind::StatefulSet => {
            strip_all(
                spec,
                &[
                    ("podManagementPolicy", "OrderedReady".into()),
                    ("updateStrategy.rollingUpdate.partition", 0.into()),
                    ("persistentVolumeClaimRetentionPolicy.whenDeleted", "Retain".into()),
                    ("persistentVolumeClaimRetentionPolicy.whenScaled", "Retain".into()),
                ],
            );
            if let Some(strategy) = spec.get_mut("updateStrategy") {
                prune(strategy);
                strip_all(strategy, &[("type", "RollingUpdate".into())]);
            }
            for template in each(spec, "volumeClaimTemplates") {
                for field in ["apiVersion", "kind", "status"] {
                    remove(template, field);
                }
                if let Some(metadata) = template.get_mut("metadata") {
                    remove(metadata, "creationTimestamp");
                }
                strip_all(template, &[("spec.volumeMode", "Filesystem".into())]);
            }
        }
        ResourceKind::ConfigMap | ResourceKind::Secret => {}
    }
    let Some(template) = spec.get_mut("template") else { return };
    if let Some(metadata) = template.get_mut("metadata") {
        remove(metadata, "creationTimestamp");
    }
    let Some(pod) = template.get_mut("spec") else { return };
    strip_all(
        pod,
        &[
            ("restartPolicy", "Always".into()),
            ("terminationGracePeriodSeconds", 30.into()),
            ("dnsPolicy", "ClusterFirst".into()),
            ("schedulerName", "default-scheduler".into()),
            ("enableServiceLinks", true.into()),
        ],
    );
    for list in ["containers", "initContainers"] {
        for container in each(pod, list) {
            strip_container_defaults(container);
        }
    }
    for volume in each(pod, "volumes") {
        for source in ["configMap", "secret", "projected", "downwardAPI"] {
            strip_all(volume, &[(&format!("{source}.defaultMode"), 420.into())]);
        }
        for item in each_at(volume, &["downwardAPI", "items"]) {
            strip_all(item, &[("fieldRef.apiVersion", "v1".into())]);
        }
    }
}

fn strip_container_defaults(container: &mut Value) {
    strip_all(
        container,
        &[("terminationMessagePath", "/dev/termination-log".into()), ("terminationMessagePolicy", "File".into())],
    );
    // `Always` for a moving tag (`latest`, or none without a digest), else `IfNotPresent`.
    let moving = container
        .get("image")
        .and_then(Value::as_str)
        .and_then(|image| ImageRef::parse(image).ok())
        .is_some_and(|image| image.digest.is_none() && image.tag.is_none_or(|tag| tag == "latest"));
    let pull_default = if moving { "Always" } else { "IfNotPresent" };
    strip_all(container, &[("imagePullPolicy", pull_default.into())]);
    for port in each(container, "ports") {
        strip_all(port, &[("protocol", "TCP".into())]);
    }
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe) {
            strip_all(
                probe,
                &[
                    ("timeoutSeconds", 1.into()),
                    ("periodSeconds", 10.into()),
                    ("successThreshold", 1.into()),
                    ("failureThreshold", 3.into()),
                    ("httpGet.scheme", "HTTP".into()),
                ],
            );
        }
    }
    for hook in ["postStart", "preStop"] {
        strip_all(container, &[(&format!("lifecycle.{hook}.httpGet.scheme"), "HTTP".into())]);
    }
    for env in each(container, "env") {
        strip_all(env, &[("valueFrom.fieldRef.apiVersion", "v1".into())]);
    }
}

/// Removes each dotted path whose value equals its default.
fn strip_all(value: &mut Value, defaults: &[(&str, Value)]) {
    for (path, default) in defaults {
        let (parent, last) = match path.rsplit_once('.') {
            Some((parent, last)) => (Some(parent), last),
            None => (None, *path),
        };
        let holder = match parent {
            Some(parent) => parent.split('.').try_fold(&mut *value, |v, key| v.get_mut(key)),
            None => Some(&mut *value),
        };
        if let Some(map) = holder.and_then(Value::as_object_mut)
            && map.get(last) == Some(default)
        {
            map.remove(last);
        }
    }
}

fn remove(value: &mut Value, field: &str) {
    if let Some(map) = value.as_object_mut() {
        map.remove(field);
    }
}

fn each<'a>(value: &'a mut Value, list: &str) -> impl Iterator<Item = &'a mut Value> + use<'a> {
    each_at(value, &[list])
}

fn each_at<'a>(value: &'a mut Value, path: &[&str]) -> impl Iterator<Item = &'a mut Value> + use<'a> {
    path.iter()
        .try_fold(value, |v, key| v.get_mut(*key))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|items| items.iter_mut())
}

/// Removes nulls and empty maps and lists from maps, recursively (list elements stay in place).
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                prune(child);
            }
            map.retain(|_, child| !is_empty(child));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}
