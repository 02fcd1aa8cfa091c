//! Digests of what a pod can see of a source. The cache keeps these, never the data.
//!
//! ConfigMap values are hashed with SHA-256. Secret values are hashed with HMAC-SHA256 under a
//! key all replicas share, so an annotation cannot be used to test guesses of a secret offline.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use ring::{digest, hmac};

use super::refs::Keys;

pub type Digest = [u8; 32];

/// A digest per key of one ConfigMap or Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDigest {
    keys: BTreeMap<String, Digest>,
}

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context.finish().as_ref().try_into().unwrap_or([0; 32])
}

fn keyed(key: &hmac::Key, parts: &[&[u8]]) -> Digest {
    let mut context = hmac::Context::with_key(key);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context.sign().as_ref().try_into().unwrap_or([0; 32])
}

impl SourceDigest {
    /// Digests of a ConfigMap's `data` and `binaryData` (kept apart, so moving a value between
    /// them is a change).
    pub fn of_config_map(map: &ConfigMap) -> Self {
        let mut keys = BTreeMap::new();
        for (key, value) in map.data.iter().flatten() {
            keys.insert(key.clone(), sha256(&[b"data", value.as_bytes()]));
        }
        for (key, value) in map.binary_data.iter().flatten() {
            keys.insert(key.clone(), sha256(&[b"binaryData", &value.0]));
        }
        Self { keys }
    }

    /// Keyed digests of a Secret's `data` and `stringData`.
    pub fn of_secret(secret: &Secret, key: &hmac::Key) -> Self {
        let mut keys = BTreeMap::new();
        for (name, value) in secret.data.iter().flatten() {
            keys.insert(name.clone(), keyed(key, &[b"data", &value.0]));
        }
        for (name, value) in secret.string_data.iter().flatten() {
            keys.insert(name.clone(), keyed(key, &[b"data", value.as_bytes()]));
        }
        Self { keys }
    }

    /// The checksum of what a pod sees: the selected keys, in key order, each with its digest
    /// (a selected key that is absent counts as absent, so adding it later is a change).
    pub fn checksum(&self, selection: &Keys) -> Digest {
        let mut context = digest::Context::new(&digest::SHA256);
        let mut add = |key: &str, value: Option<&Digest>| {
            context.update(&(key.len() as u64).to_be_bytes());
            context.update(key.as_bytes());
            match value {
                Some(d) => context.update(d),
                None => context.update(b"absent"),
            }
        };
        match selection {
            Keys::All => self.keys.iter().for_each(|(k, d)| add(k, Some(d))),
            Keys::Some(selected) => selected.iter().for_each(|k| add(k, self.keys.get(k))),
        }
        context.finish().as_ref().try_into().unwrap_or([0; 32])
    }

    /// Bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.keys.keys().map(|k| k.capacity() + 32 + 3 * std::mem::size_of::<usize>()).sum()
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_map(data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": data})).unwrap()
    }

    fn all() -> Keys {
        Keys::All
    }

    fn some(keys: &[&str]) -> Keys {
        Keys::Some(keys.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn key_order_never_matters_and_every_value_does() {
        let a = SourceDigest::of_config_map(&config_map(json!({"x": "1", "y": "2"})));
        let b: ConfigMap = serde_json::from_str(r#"{"metadata":{"name":"c"},"data":{"y":"2","x":"1"}}"#).unwrap();
        assert_eq!(a.checksum(&all()), SourceDigest::of_config_map(&b).checksum(&all()));
        let changed = SourceDigest::of_config_map(&config_map(json!({"x": "1", "y": "3"})));
        assert_ne!(a.checksum(&all()), changed.checksum(&all()));
    }

    #[test]
    fn only_the_selected_keys_count() {
        let a = SourceDigest::of_config_map(&config_map(json!({"x": "1", "y": "2"})));
        let b = SourceDigest::of_config_map(&config_map(json!({"x": "1", "y": "changed"})));
        assert_eq!(a.checksum(&some(&["x"])), b.checksum(&some(&["x"])));
        assert_ne!(a.checksum(&some(&["y"])), b.checksum(&some(&["y"])));
        // Adding a selected key that was absent is a change.
        let c = SourceDigest::of_config_map(&config_map(json!({"x": "1", "y": "2", "z": "new"})));
        assert_ne!(a.checksum(&some(&["x", "z"])), c.checksum(&some(&["x", "z"])));
    }

    #[test]
    fn binary_data_counts_and_is_kept_apart_from_data() {
        let text: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "AQI="}})).unwrap();
        let binary: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "c"}, "binaryData": {"k": "AQI="}})).unwrap();
        let other: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "c"}, "binaryData": {"k": "AQM="}})).unwrap();
        let digest = |m: &ConfigMap| SourceDigest::of_config_map(m).checksum(&all());
        assert_ne!(digest(&text), digest(&binary));
        assert_ne!(digest(&binary), digest(&other));
    }

    #[test]
    fn secret_digests_depend_on_the_shared_key() {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg=="}})).unwrap();
        let one = hmac::Key::new(hmac::HMAC_SHA256, b"replica key one");
        let two = hmac::Key::new(hmac::HMAC_SHA256, b"replica key two");
        let first = SourceDigest::of_secret(&secret, &one).checksum(&all());
        assert_eq!(first, SourceDigest::of_secret(&secret, &one).checksum(&all()), "replicas sharing a key agree");
        assert_ne!(first, SourceDigest::of_secret(&secret, &two).checksum(&all()));
        // Without the key, the plain SHA-256 of the value does not give the digest.
        let unkeyed: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"password": "hunter2"}})).unwrap();
        assert_ne!(first, SourceDigest::of_config_map(&unkeyed).checksum(&all()));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
