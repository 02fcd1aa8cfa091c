//! Reference discovery: every ConfigMap and Secret a pod template reads, and which keys.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

/// A ConfigMap or Secret, by name, in the workload's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRef {
    pub kind: SourceKind,
    pub name: String,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// Which keys of a source the pod can see (or, for `AllExcept`, which of them count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    All,
    Some(BTreeSet<String>),
    /// Every key but these: the global ConfigMap's keys that its schema says only other
    /// components use (`dxConsumers`). With none excluded it is exactly `All`.
    AllExcept(BTreeSet<String>),
}

/// How a pod template uses one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub keys: Keys,
    /// Whether any use is non-optional (the pod cannot start without the source).
    pub required: bool,
}

impl Usage {
    fn merge(&mut self, keys: Keys, required: bool) {
        self.required |= required;
        self.keys = match (std::mem::replace(&mut self.keys, Keys::All), keys) {
            (Keys::Some(mut a), Keys::Some(b)) => {
                a.extend(b);
                Keys::Some(a)
            }
            _ => Keys::All,
        };
    }
}

#[derive(Default)]
struct Collector(BTreeMap<SourceRef, Usage>);

impl Collector {
    fn add(&mut self, kind: SourceKind, name: &str, keys: Keys, optional: Option<bool>) {
        if name.is_empty() {
            return;
        }
        let required = !optional.unwrap_or(false);
        let source = SourceRef { kind, name: name.to_owned() };
        match self.0.get_mut(&source) {
            Some(usage) => usage.merge(keys, required),
            None => {
                self.0.insert(source, Usage { keys, required });
            }
        }
    }

    fn container(&mut self, container: &Container) {
        for env in container.env.iter().flatten() {
            let Some(from) = &env.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                self.add(SourceKind::ConfigMap, &r.name, one(&r.key), r.optional);
            }
            if let Some(r) = &from.secret_key_ref {
                self.add(SourceKind::Secret, &r.name, one(&r.key), r.optional);
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                self.add(SourceKind::ConfigMap, &r.name, Keys::All, r.optional);
            }
            if let Some(r) = &from.secret_ref {
                self.add(SourceKind::Secret, &r.name, Keys::All, r.optional);
            }
        }
    }
}

fn one(key: &str) -> Keys {
    Keys::Some(BTreeSet::from([key.to_owned()]))
}

/// Keys named by a volume's `items`, or all keys when it has none.
fn item_keys(items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>) -> Keys {
    match items {
        Some(items) if !items.is_empty() => Keys::Some(items.iter().map(|i| i.key.clone()).collect()),
        _ => Keys::All,
    }
}

/// Every source the pod spec reads: env key refs, envFrom, configMap/secret volumes and projected
/// sources, in containers and init containers.
pub fn references(spec: &PodSpec) -> BTreeMap<SourceRef, Usage> {
    let mut found = Collector::default();
    for container in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        found.container(container);
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(v) = &volume.config_map {
            found.add(SourceKind::ConfigMap, &v.name, item_keys(v.items.as_ref()), v.optional);
        }
        if let Some(v) = &volume.secret {
            found.add(
                SourceKind::Secret,
                v.secret_name.as_deref().unwrap_or(""),
                item_keys(v.items.as_ref()),
                v.optional,
            );
        }
        for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(v) = &source.config_map {
                found.add(SourceKind::ConfigMap, &v.name, item_keys(v.items.as_ref()), v.optional);
            }
            if let Some(v) = &source.secret {
                found.add(SourceKind::Secret, &v.name, item_keys(v.items.as_ref()), v.optional);
            }
        }
    }
    found.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn source(kind: SourceKind, name: &str) -> SourceRef {
        SourceRef { kind, name: name.into() }
    }

    fn keys(names: &[&str]) -> Keys {
        Keys::Some(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn finds_every_kind_of_reference_in_containers_init_containers_and_volumes() {
        let spec = spec(json!({
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "a"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "password", "optional": true}}},
                    {"name": "C", "value": "literal"}
                ],
                "envFrom": [{"configMapRef": {"name": "cm-all"}}, {"secretRef": {"name": "s-all"}}]
            }],
            "initContainers": [{"name": "init", "env": [{"name": "D", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "d"}}}]}],
            "volumes": [
                {"name": "v1", "configMap": {"name": "cm-vol", "items": [{"key": "x.yaml", "path": "x.yaml"}]}},
                {"name": "v2", "secret": {"secretName": "s-vol", "optional": true}},
                {"name": "v3", "projected": {"sources": [
                    {"configMap": {"name": "cm-proj"}},
                    {"secret": {"name": "s-proj", "items": [{"key": "tls.crt", "path": "tls.crt"}]}},
                    {"serviceAccountToken": {"path": "token"}}
                ]}},
                {"name": "v4", "emptyDir": {}}
            ]
        }));
        let found = references(&spec);
        let expected = BTreeMap::from([
            (source(SourceKind::ConfigMap, "cm-all"), Usage { keys: Keys::All, required: true }),
            (source(SourceKind::ConfigMap, "cm-env"), Usage { keys: keys(&["a", "d"]), required: true }),
            (source(SourceKind::ConfigMap, "cm-proj"), Usage { keys: Keys::All, required: true }),
            (source(SourceKind::ConfigMap, "cm-vol"), Usage { keys: keys(&["x.yaml"]), required: true }),
            (source(SourceKind::Secret, "s-all"), Usage { keys: Keys::All, required: true }),
            (source(SourceKind::Secret, "s-env"), Usage { keys: keys(&["password"]), required: false }),
            (source(SourceKind::Secret, "s-proj"), Usage { keys: keys(&["tls.crt"]), required: true }),
            (source(SourceKind::Secret, "s-vol"), Usage { keys: Keys::All, required: false }),
        ]);
        assert_eq!(found, expected);
    }

    #[test]
    fn a_whole_object_use_wins_over_single_keys_and_one_required_use_makes_it_required() {
        let spec = spec(json!({
            "containers": [{
                "name": "app",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "a", "optional": true}}}],
                "envFrom": [{"configMapRef": {"name": "cm"}}]
            }]
        }));
        assert_eq!(references(&spec)[&source(SourceKind::ConfigMap, "cm")], Usage { keys: Keys::All, required: true });
    }
}
