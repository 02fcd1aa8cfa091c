//! The JSON patch that stamps a pod template with its checksum annotations: minimal, touching
//! no other annotation, creating the map when missing, and empty when already stamped (the API
//! server may call the webhook again, `reinvocationPolicy: IfNeeded`).

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ring::digest;
use serde_json::Value;

use super::annotations::{AGGREGATE, SOURCE_PREFIX, source_key, source_value};
use super::consumers::Narrowing;
use super::digest::{SourceDigest, hex};
use super::refs::{Keys, SourceRef, Usage, references};
use crate::lookup::Lookup;

/// The annotations a template should carry, and warnings for required sources that do not exist
/// and sources that could not be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub annotations: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

/// Computes the stamp of a pod spec from what `lookup` knows of each source; `current` is the
/// template's annotations now.
pub fn stamp<'a>(
    spec: &PodSpec,
    namespace: &str,
    current: Option<&BTreeMap<String, String>>,
    lookup: impl FnMut(&SourceRef) -> Lookup<&'a SourceDigest>,
) -> Stamp {
    stamp_references(&references(spec), namespace, current, Narrowing::Apply, lookup)
}

/// The same, from references already discovered (and perhaps narrowed, [`super::narrow`]). A
/// source that is [`Lookup::Unreadable`] keeps the checksum the template carries for it, so an
/// outage of the API server does not roll pods by itself; with [`Narrowing::KeepCurrentWhole`] a
/// narrowed source keeps a whole-source checksum the template carries while it is current.
pub fn stamp_references<'a>(
    references: &BTreeMap<SourceRef, Usage>,
    namespace: &str,
    current: Option<&BTreeMap<String, String>>,
    narrowing: Narrowing,
    mut lookup: impl FnMut(&SourceRef) -> Lookup<&'a SourceDigest>,
) -> Stamp {
    let mut stamp = Stamp::default();
    for (source, usage) in references {
        match lookup(source) {
            Lookup::Found(digest) => {
                let key = source_key(source);
                let mut value = source_value(source.kind, &digest.checksum(&usage.keys));
                if narrowing == Narrowing::KeepCurrentWhole && matches!(usage.keys, Keys::AllExcept(_)) {
                    let whole = source_value(source.kind, &digest.checksum(&Keys::All));
                    if current.and_then(|annotations| annotations.get(&key)) == Some(&whole) {
                        value = whole;
                    }
                }
                stamp.annotations.insert(key, value);
            }
            Lookup::Absent if usage.required => stamp.warnings.push(format!(
                "{} {namespace}/{} does not exist yet; pods will not start until it does",
                source.kind.as_str(),
                source.name
            )),
            Lookup::Absent => {}
            Lookup::Unreadable => {
                let key = source_key(source);
                if let Some(carried) = current.and_then(|annotations| annotations.get(&key)) {
                    stamp.annotations.insert(key, carried.clone());
                }
                // Why it could not be read is logged; the warning says what follows, in 120 characters.
                stamp.warnings.push(format!(
                    "{} {namespace}/{} not readable from the API server now; the rollout controller stamps its \
                     checksum later",
                    source.kind.as_str(),
                    source.name
                ));
            }
        }
    }
    if !stamp.annotations.is_empty() {
        let mut context = digest::Context::new(&digest::SHA256);
        for (key, value) in &stamp.annotations {
            context.update(key.as_bytes());
            context.update(b"=");
            context.update(value.as_bytes());
            context.update(b"\n");
        }
        stamp.annotations.insert(AGGREGATE.to_owned(), format!("sha256:{}", hex(context.finish().as_ref())));
    }
    stamp
}

/// Whether dx-admission owns an annotation key (and may remove it when stale).
pub fn is_checksum_key(key: &str) -> bool {
    key == AGGREGATE || key.starts_with(SOURCE_PREFIX)
}

/// Operations turning the template's annotations into `desired` for the keys dx-admission owns.
pub fn patch(template: Option<&ObjectMeta>, desired: &BTreeMap<String, String>) -> Vec<PatchOperation> {
    let base = ["spec", "template", "metadata"];
    let current = template.and_then(|m| m.annotations.as_ref());
    let Some(current) = current else {
        if desired.is_empty() {
            return Vec::new();
        }
        let map: serde_json::Map<String, Value> =
            desired.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        return if template.is_none() {
            vec![add(PointerBuf::from_tokens(base), serde_json::json!({ "annotations": map }))]
        } else {
            vec![add(PointerBuf::from_tokens(base.iter().copied().chain(["annotations"])), Value::Object(map))]
        };
    };
    let at = |key: &str| PointerBuf::from_tokens(base.iter().copied().chain(["annotations", key]));
    let mut operations = Vec::new();
    for (key, value) in desired {
        match current.get(key) {
            Some(existing) if existing == value => {}
            Some(_) => operations
                .push(PatchOperation::Replace(ReplaceOperation { path: at(key), value: Value::String(value.clone()) })),
            None => operations.push(add(at(key), Value::String(value.clone()))),
        }
    }
    for key in current.keys().filter(|k| is_checksum_key(k) && !desired.contains_key(*k)) {
        operations.push(PatchOperation::Remove(RemoveOperation { path: at(key) }));
    }
    operations
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::SourceKind;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn spec() -> PodSpec {
        serde_json::from_value(json!({"containers": [{"name": "app",
            "envFrom": [{"configMapRef": {"name": "dx-core-config"}}],
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "maybe", "key": "k", "optional": true}}},
                    {"name": "R", "valueFrom": {"configMapKeyRef": {"name": "needed", "key": "k"}}}]}]}))
        .unwrap()
    }

    fn digests() -> (SourceDigest, SourceDigest) {
        let config: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "dx-core-config"}, "data": {"a": "1"}})).unwrap();
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(json!({"metadata": {"name": "db"}, "data": {"password": "cw=="}})).unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        (SourceDigest::of_config_map(&config), SourceDigest::of_secret(&secret, &key))
    }

    fn stamped() -> Stamp {
        let (config, secret) = digests();
        stamp(&spec(), "dx", None, |source| match (source.kind, source.name.as_str()) {
            (SourceKind::ConfigMap, "dx-core-config") => Lookup::Found(&config),
            (SourceKind::Secret, "db") => Lookup::Found(&secret),
            _ => Lookup::Absent,
        })
    }

    #[test]
    fn stamps_one_annotation_per_source_and_the_aggregate() {
        let stamp = stamped();
        let keys: Vec<&str> = stamp.annotations.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "checksum.dx.hcl.com/configmap.dx-core-config",
                "checksum.dx.hcl.com/secret.db",
                "dx.hcl.com/config-checksum"
            ]
        );
        assert!(stamp.annotations["checksum.dx.hcl.com/secret.db"].starts_with("hmac-sha256:"));
        assert!(stamp.annotations["dx.hcl.com/config-checksum"].starts_with("sha256:"));
        // A missing optional source is skipped; a missing required one is a warning.
        assert_eq!(stamp.warnings, ["ConfigMap dx/needed does not exist yet; pods will not start until it does"]);
    }

    #[test]
    fn a_narrowed_source_keeps_a_current_whole_checksum_only_when_asked() {
        let global: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "g"}, "data": {"log.level": "info", "dam.cdn.url": "https://a"}}),
        )
        .unwrap();
        let changed: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "g"}, "data": {"log.level": "info", "dam.cdn.url": "https://b"}}),
        )
        .unwrap();
        let source = SourceRef { kind: SourceKind::ConfigMap, name: "g".into() };
        let narrowed = BTreeMap::from([(
            source.clone(),
            Usage { keys: Keys::AllExcept(["dam.cdn.url".to_owned()].into()), required: true },
        )]);
        let key = source_key(&source);
        let run = |digest: &SourceDigest, current: Option<&BTreeMap<String, String>>, narrowing| {
            stamp_references(&narrowed, "dx", current, narrowing, |_| Lookup::Found(digest)).annotations[&key].clone()
        };
        let (before, after) = (SourceDigest::of_config_map(&global), SourceDigest::of_config_map(&changed));
        let whole = source_value(SourceKind::ConfigMap, &before.checksum(&Keys::All));
        let carried = BTreeMap::from([(key.clone(), whole.clone())]);
        let narrow_value = run(&before, None, Narrowing::Apply);
        assert_ne!(narrow_value, whole);
        // Stamped before the schema declared consumers, still current: kept, nothing rolls.
        assert_eq!(run(&before, Some(&carried), Narrowing::KeepCurrentWhole), whole);
        assert_eq!(run(&before, Some(&carried), Narrowing::Apply), narrow_value);
        // Once the source changes, the whole checksum is stale: the narrowed one replaces it, and
        // it does not move for a change of an excluded key.
        assert_eq!(run(&after, Some(&carried), Narrowing::KeepCurrentWhole), narrow_value);
        assert_eq!(run(&after, None, Narrowing::Apply), narrow_value);
    }

    #[test]
    fn an_unreadable_source_keeps_the_checksum_the_template_carries_and_warns() {
        let (config, _) = digests();
        let kept = "sha256:kept";
        let current = BTreeMap::from([("checksum.dx.hcl.com/secret.db".to_owned(), kept.to_owned())]);
        let stamp = stamp(&spec(), "dx", Some(&current), |source| match (source.kind, source.name.as_str()) {
            (SourceKind::ConfigMap, "dx-core-config") => Lookup::Found(&config),
            (SourceKind::Secret, "db") | (SourceKind::ConfigMap, "needed") => Lookup::Unreadable,
            _ => Lookup::Absent,
        });
        assert_eq!(stamp.annotations["checksum.dx.hcl.com/secret.db"], kept);
        assert!(
            !stamp.annotations.contains_key("checksum.dx.hcl.com/configmap.needed"),
            "nothing to keep, nothing stamped"
        );
        assert_eq!(
            stamp.warnings,
            [
                "ConfigMap dx/needed not readable from the API server now; the rollout controller stamps its \
                 checksum later",
                "Secret dx/db not readable from the API server now; the rollout controller stamps its checksum later",
            ]
        );
    }

    fn template(annotations: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({"annotations": annotations})).unwrap()
    }

    #[test]
    fn creates_the_map_when_missing() {
        let desired = stamped().annotations;
        let ops = serde_json::to_value(patch(None, &desired)).unwrap();
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/spec/template/metadata");
        assert_eq!(ops[0]["value"]["annotations"].as_object().unwrap().len(), 3);
        let no_annotations: ObjectMeta = serde_json::from_value(json!({"labels": {"a": "b"}})).unwrap();
        let ops = serde_json::to_value(patch(Some(&no_annotations), &desired)).unwrap();
        assert_eq!(ops.as_array().unwrap().len(), 1);
        assert_eq!(ops[0]["path"], "/spec/template/metadata/annotations");
    }

    #[test]
    fn escapes_keys_touches_nothing_else_and_removes_stale_checksums() {
        let desired = stamped().annotations;
        let current = template(json!({
            "prometheus.io/scrape": "true",
            "dx.hcl.com/config-checksum": "sha256:old",
            "checksum.dx.hcl.com/configmap.gone": "sha256:old"
        }));
        let ops = serde_json::to_value(patch(Some(&current), &desired)).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "add", "path": "/spec/template/metadata/annotations/checksum.dx.hcl.com~1configmap.dx-core-config",
                 "value": desired["checksum.dx.hcl.com/configmap.dx-core-config"]},
                {"op": "add", "path": "/spec/template/metadata/annotations/checksum.dx.hcl.com~1secret.db",
                 "value": desired["checksum.dx.hcl.com/secret.db"]},
                {"op": "replace", "path": "/spec/template/metadata/annotations/dx.hcl.com~1config-checksum",
                 "value": desired["dx.hcl.com/config-checksum"]},
                {"op": "remove", "path": "/spec/template/metadata/annotations/checksum.dx.hcl.com~1configmap.gone"}
            ])
        );
        let tilde = BTreeMap::from([("checksum.dx.hcl.com/configmap.a~b".to_owned(), "x".to_owned())]);
        let ops = serde_json::to_value(patch(Some(&template(json!({}))), &tilde)).unwrap();
        assert_eq!(ops[0]["path"], "/spec/template/metadata/annotations/checksum.dx.hcl.com~1configmap.a~0b");
    }

    #[test]
    fn a_second_pass_returns_no_patch() {
        let desired = stamped().annotations;
        let mut document = json!({"spec": {"template": {"spec": {}}}});
        let first: json_patch::Patch = json_patch::Patch(patch(None, &desired));
        json_patch::patch(&mut document, &first).unwrap();
        let meta: ObjectMeta = serde_json::from_value(document["spec"]["template"]["metadata"].clone()).unwrap();
        assert!(patch(Some(&meta), &desired).is_empty(), "reinvocation is a no-op");
    }
}
