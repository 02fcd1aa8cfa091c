//! Known answers for the checksum annotations, which are public API (docs/annotations.md): for
//! fixed sources and a fixed HMAC key, the exact values a pod template is stamped with. The
//! literals were computed from the documented scheme by a separate implementation, not by this
//! code; a change here is a change every customer's pods see as a rollout.

use std::collections::BTreeMap;

use dx_admission::checksum::annotations::source_key;
use dx_admission::checksum::patch::stamp;
use dx_admission::checksum::{SourceDigest, SourceKind, SourceRef};
use dx_admission::lookup::Lookup;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use ring::hmac;
use serde_json::json;

/// The `--checksum-key-file` content of these answers (32 bytes).
const KEY: &[u8; 32] = b"known-answer checksum key, 32 b!";

#[test]
fn fixed_sources_give_the_documented_checksum_values() {
    let core: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "dx-core-config"},
        "data": {"log.level": "info", "dx.host": "dx.example.com"},
        "binaryData": {"logo.png": "iVBORw=="},
    }))
    .unwrap();
    let global: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "dx-global-config"},
        "data": {"theme": "dark", "unused": "x"},
    }))
    .unwrap();
    // data is base64 of "s3cr3t-marker"; stringData is hashed as data.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dx-db-credentials"},
        "data": {"password": "czNjcjN0LW1hcmtlcg=="},
        "stringData": {"user": "dx"},
    }))
    .unwrap();
    let spec: PodSpec = serde_json::from_value(json!({
        "containers": [{
            "name": "core",
            "envFrom": [{"configMapRef": {"name": "dx-core-config"}}],
            "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "dx-db-credentials", "key": "password"}}}],
        }],
        "volumes": [{"name": "global", "configMap": {"name": "dx-global-config", "items": [
            {"key": "theme", "path": "theme"}, {"key": "missing", "path": "missing"},
        ]}}],
    }))
    .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, KEY);
    let digests: BTreeMap<SourceRef, SourceDigest> = BTreeMap::from([
        (SourceRef { kind: SourceKind::ConfigMap, name: "dx-core-config".into() }, SourceDigest::of_config_map(&core)),
        (
            SourceRef { kind: SourceKind::ConfigMap, name: "dx-global-config".into() },
            SourceDigest::of_config_map(&global),
        ),
        (
            SourceRef { kind: SourceKind::Secret, name: "dx-db-credentials".into() },
            SourceDigest::of_secret(&secret, &key),
        ),
    ]);
    let stamped = stamp(&spec, "dx", None, |source| digests.get(source).map_or(Lookup::Absent, Lookup::Found));
    assert_eq!(stamped.warnings, Vec::<String>::new());
    let annotations: Vec<(&str, &str)> = stamped.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        annotations,
        [
            (
                "checksum.dx.hcl.com/configmap.dx-core-config",
                "sha256:5a2bdc3f6b78625ced17726639a39b4bfa22b38ce1f2bbdb1ea42e1d2deb80aa"
            ),
            (
                "checksum.dx.hcl.com/configmap.dx-global-config",
                "sha256:7e0e391b6a287a0365a802e4fdf1b4bf99a069428934eb9af241095646e48e33"
            ),
            (
                "checksum.dx.hcl.com/secret.dx-db-credentials",
                "hmac-sha256:9f328034968678f3566928195942e143af05f1ffc44c83f26843c2c9d12da077"
            ),
            ("dx.hcl.com/config-checksum", "sha256:81efe3bba890c052c1cf7aac16e60570ce81527ddc83b50eeca8a3f1634bf8e4"),
        ]
    );
}

#[test]
fn a_200_character_name_gives_the_documented_key() {
    let name = format!("dx-long-{}ab", "0123456789".repeat(19));
    assert_eq!(name.len(), 200);
    let key = |kind| source_key(&SourceRef { kind, name: name.clone() });
    assert_eq!(
        key(SourceKind::ConfigMap),
        "checksum.dx.hcl.com/configmap.dx-long-0123456789012345678901234567890123.78dd6f4aeb"
    );
    assert_eq!(
        key(SourceKind::Secret),
        "checksum.dx.hcl.com/secret.dx-long-0123456789012345678901234567890123456.78dd6f4aeb"
    );
}
