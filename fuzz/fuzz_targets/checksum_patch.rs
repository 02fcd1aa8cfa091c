//! Any pod spec and template annotations: the checksum patch applies cleanly, touches only the
//! keys dx-admission owns, and a second pass over the patched template returns no patch.
#![no_main]

use std::collections::BTreeMap;

use dx_admission::checksum::patch::{is_checksum_key, patch, stamp};
use dx_admission::checksum::{SourceDigest, SourceKind};
use dx_admission::lookup::Lookup;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|input: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(input) else { return };
    let Ok(spec) = serde_json::from_value::<PodSpec>(value["spec"].clone()) else { return };
    let template: Option<ObjectMeta> = serde_json::from_value(value["template"].clone()).ok();
    let map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": value["data"].to_string()}})).unwrap();
    let digest = SourceDigest::of_config_map(&map);
    let stamped = stamp(&spec, "ns", None, |source| {
        if source.kind == SourceKind::ConfigMap && source.name.len() % 2 == 0 {
            Lookup::Found(&digest)
        } else {
            Lookup::Absent
        }
    });
    let operations = patch(template.as_ref(), &stamped.annotations);
    let mut document =
        json!({"spec": {"template": {"metadata": serde_json::to_value(&template).unwrap_or(Value::Null)}}});
    if template.is_none() {
        document = json!({"spec": {"template": {}}});
    }
    let before: BTreeMap<String, String> = template.as_ref().and_then(|t| t.annotations.clone()).unwrap_or_default();
    json_patch::patch(&mut document, &json_patch::Patch(operations)).expect("the patch applies");
    let after: ObjectMeta =
        serde_json::from_value(document["spec"]["template"]["metadata"].clone()).unwrap_or_default();
    let annotations = after.annotations.clone().unwrap_or_default();
    for (key, value) in &before {
        if !is_checksum_key(key) {
            assert_eq!(annotations.get(key), Some(value), "other annotations are untouched");
        }
    }
    assert!(patch(Some(&after), &stamped.annotations).is_empty(), "a second pass returns no patch");
});
