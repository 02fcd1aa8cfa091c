//! Digests of what a pod can see of a source. The cache keeps these, never the data.
//!
//! ConfigMap values are hashed with SHA-256. Secret values are hashed with HMAC-SHA256 under a
//! key all replicas share, so an annotation cannot be used to test guesses of a secret offline.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use ring::{digest, hmac};

use super::refs::Keys;

pub type Digest = [u8; 32];

/// A digest per key of one ConfigMap or Secret, packed: the cache holds one per ConfigMap and
/// Secret in the cluster (tens of thousands), so two allocations each, not one per key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDigest {
    /// The key names, concatenated in key order.
    names: Box<str>,
    /// Per key, in key order: where its name ends in `names`, and its digest.
    keys: Box<[(u32, Digest)]>,
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
            keys.insert(key.as_str(), sha256(&[b"data", value.as_bytes()]));
        }
        for (key, value) in map.binary_data.iter().flatten() {
            keys.insert(key.as_str(), sha256(&[b"binaryData", &value.0]));
        }
        Self::pack(keys)
    }

    /// Keyed digests of a Secret's `data` and `stringData`.
    pub fn of_secret(secret: &Secret, key: &hmac::Key) -> Self {
        let mut keys = BTreeMap::new();
        for (name, value) in secret.data.iter().flatten() {
            keys.insert(name.as_str(), keyed(key, &[b"data", &value.0]));
        }
        for (name, value) in secret.string_data.iter().flatten() {
            keys.insert(name.as_str(), keyed(key, &[b"data", value.as_bytes()]));
        }
        Self::pack(keys)
    }

    fn pack(sorted: BTreeMap<&str, Digest>) -> Self {
        let mut names = String::with_capacity(sorted.keys().map(|k| k.len()).sum());
        let mut keys = Vec::with_capacity(sorted.len());
        for (name, digest) in sorted {
            names.push_str(name);
            // Kubernetes caps an object at a few MiB, far below u32::MAX bytes of key names.
            keys.push((u32::try_from(names.len()).unwrap_or(u32::MAX), digest));
        }
        Self { names: names.into_boxed_str(), keys: keys.into_boxed_slice() }
    }

    fn name(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |previous| self.keys[previous].0 as usize);
        self.names.get(start..self.keys[index].0 as usize).unwrap_or("")
    }

    /// Every key with its digest, in key order.
    fn entries(&self) -> impl Iterator<Item = (&str, &Digest)> {
        self.keys.iter().enumerate().map(|(i, (_, digest))| (self.name(i), digest))
    }

    /// A key's digest, by binary search over the sorted names.
    fn get(&self, key: &str) -> Option<&Digest> {
        let (mut low, mut high) = (0, self.keys.len());
        while low < high {
            let middle = (low + high) / 2;
            match self.name(middle).cmp(key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(&self.keys[middle].1),
            }
        }
        None
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
            Keys::All => self.entries().for_each(|(k, d)| add(k, Some(d))),
            Keys::AllExcept(excluded) => {
                self.entries().filter(|(k, _)| !excluded.contains(*k)).for_each(|(k, d)| add(k, Some(d)))
            }
            Keys::Some(selected) => selected.iter().for_each(|k| add(k, self.get(k))),
        }
        context.finish().as_ref().try_into().unwrap_or([0; 32])
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HMAC key for Secret digests, read from `--checksum-key-file` the same way by `serve`,
/// `plan` and `report` (trimmed of surrounding whitespace, at least 16 bytes), so all three give
/// a Secret the same checksum. The error names the flag and the file.
pub fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let key = std::fs::read(path).map_err(|e| format!("--checksum-key-file {}: {e}", path.display()))?;
    let key = key.trim_ascii().to_vec();
    if key.len() < 16 {
        return Err(format!(
            "--checksum-key-file {}: the key has {} bytes; use at least 16",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
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
    fn excluded_keys_do_not_count_and_excluding_none_is_all() {
        let a = SourceDigest::of_config_map(&config_map(json!({"log.level": "info", "dam.upload.maxSize": "1Gi"})));
        let b = SourceDigest::of_config_map(&config_map(json!({"log.level": "info", "dam.upload.maxSize": "2Gi"})));
        let except = Keys::AllExcept(["dam.upload.maxSize".to_owned()].into());
        assert_eq!(a.checksum(&except), b.checksum(&except));
        assert_ne!(a.checksum(&all()), b.checksum(&all()));
        assert_eq!(a.checksum(&Keys::AllExcept(Default::default())), a.checksum(&all()));
        // What is left counts like `some` of the remaining keys.
        assert_eq!(a.checksum(&except), a.checksum(&some(&["log.level"])));
    }

    #[test]
    fn every_selected_key_is_found_among_many() {
        let data: serde_json::Map<String, serde_json::Value> =
            (0..50).map(|i| (format!("key-{i}"), json!(format!("value {i}")))).collect();
        let many = SourceDigest::of_config_map(&config_map(serde_json::Value::Object(data)));
        for i in 0..50 {
            let one = SourceDigest::of_config_map(&config_map(json!({format!("key-{i}"): format!("value {i}")})));
            let key = format!("key-{i}");
            assert_eq!(many.checksum(&some(&[&key])), one.checksum(&some(&[&key])), "{key}");
        }
        assert_ne!(many.checksum(&some(&["key-x"])), many.checksum(&some(&["key-1"])));
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
