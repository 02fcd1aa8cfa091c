//! The versioned schema set: `schemas/index.yaml`, one directory per version, and inside it one
//! file per kind and component (`v2/configmap/core.json`), plus shared definitions in `common/`.
//!
//! Everything is read and compiled once, at load; a request only runs compiled validators.
//! `$ref` resolves between the loaded files only: nothing is fetched from the network.

mod keywords;
mod load;

use std::collections::{BTreeMap, BTreeSet};

use jsonschema::Validator;
use regex::Regex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::annotations::SCHEMA_VERSION;
use super::object::{Component, ResourceKind};
use super::settings::Selector;
use super::settings::Severity;

pub use keywords::{
    DX_CONSUMERS, DX_DOCUMENT, DX_KEYWORDS, DX_MAXIMUM, DX_MINIMUM, DX_MODIFIERS, DX_RENAMED_KEYS, DX_TYPE,
    DX_UNKNOWN_KEYS,
};
pub use load::{SchemaError, json_files};

/// Every schema version that was loaded, and which one applies by default.
pub struct SchemaSet {
    default_version: String,
    versions: BTreeMap<String, SchemaVersion>,
    /// Version names as `index.yaml` lists them (`v10` after `v9`, as the DX team wrote it).
    order: Vec<String>,
    /// Identifies the files the set was built from, so a reload of identical files is a no-op.
    fingerprint: u64,
    files: usize,
}

/// One schema version: a schema per (kind, component) that has one.
pub struct SchemaVersion {
    pub name: String,
    pub notes: String,
    schemas: BTreeMap<(ResourceKind, Component), DocumentSchema>,
}

/// A compiled schema for one kind and component.
pub struct DocumentSchema {
    /// The file it came from, relative to the schema directory.
    pub file: String,
    pub validator: Validator,
    /// ConfigMap keys the schema declares (`properties`) and key patterns (`patternProperties`).
    known_keys: BTreeSet<String>,
    key_patterns: Vec<Regex>,
    /// What an undeclared ConfigMap key is (`dxUnknownKeys`); `None` lets it pass.
    pub unknown_keys: Option<Severity>,
    /// Keys renamed in this version (`dxRenamedKeys`: old → new).
    pub renamed_keys: BTreeMap<String, String>,
    /// Keys only some components use (`dxConsumers`), with those components.
    pub consumers: BTreeMap<String, BTreeSet<Component>>,
}

/// What decides a DX ConfigMap's schema: its component and the version it asks for. The digest
/// cache keeps it beside each DX ConfigMap's digests, for key-level checksums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSchema {
    pub component: Component,
    pub version: Option<Box<str>>,
}

impl SourceSchema {
    /// Of a ConfigMap's metadata; `None` when it is not a DX ConfigMap of a known component.
    pub fn of(metadata: &ObjectMeta, selector: &Selector) -> Option<Self> {
        if !selector.selects(metadata) {
            return None;
        }
        let component = Component::parse(metadata.labels.as_ref()?.get(&selector.component_label)?)?;
        let version = metadata.annotations.as_ref().and_then(|a| a.get(SCHEMA_VERSION)).map(|v| v.as_str().into());
        Some(Self { component, version })
    }
}

/// The outcome of looking up the version an object asks for.
pub enum VersionLookup<'a> {
    Found(&'a SchemaVersion),
    /// The annotation names a version that is not loaded.
    Unknown {
        requested: &'a str,
    },
}

impl SchemaSet {
    /// The version for an object: the one its annotation names, else the default.
    pub fn resolve<'a>(&'a self, requested: Option<&'a str>) -> VersionLookup<'a> {
        let name = requested.unwrap_or(&self.default_version);
        match self.versions.get(name) {
            Some(version) => VersionLookup::Found(version),
            None => VersionLookup::Unknown { requested: name },
        }
    }

    pub fn default_version(&self) -> &str {
        &self.default_version
    }

    /// Version names in index order.
    pub fn version_names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// How many schema files the set holds (shared definitions included).
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// An empty set, used where no schema directory is configured: rules still apply.
    pub fn empty() -> Self {
        Self {
            default_version: "none".into(),
            versions: BTreeMap::from([(
                "none".into(),
                SchemaVersion { name: "none".into(), notes: String::new(), schemas: BTreeMap::new() },
            )]),
            order: vec!["none".into()],
            fingerprint: 0,
            files: 0,
        }
    }

    pub fn version(&self, name: &str) -> Option<&SchemaVersion> {
        self.versions.get(name)
    }

    /// The keys of a DX ConfigMap that the pods of `consumer` do not use, by `dxConsumers` in
    /// the schema the ConfigMap is checked under (none when it declares none).
    pub fn keys_only_for_others(&self, source: &SourceSchema, consumer: Component) -> BTreeSet<String> {
        let VersionLookup::Found(version) = self.resolve(source.version.as_deref()) else { return BTreeSet::new() };
        version
            .schema(ResourceKind::ConfigMap, source.component)
            .map(|schema| schema.keys_only_for_others(consumer))
            .unwrap_or_default()
    }
}

impl SchemaVersion {
    pub fn schema(&self, kind: ResourceKind, component: Component) -> Option<&DocumentSchema> {
        self.schemas.get(&(kind, component))
    }

    /// The (kind, component) pairs this version has schemas for.
    pub fn coverage(&self) -> impl Iterator<Item = (ResourceKind, Component)> + '_ {
        self.schemas.keys().copied()
    }
}

impl DocumentSchema {
    /// Whether the schema declares a ConfigMap key, by name or by pattern.
    pub fn declares_key(&self, key: &str) -> bool {
        self.known_keys.contains(key) || self.key_patterns.iter().any(|p| p.is_match(key))
    }

    /// The keys whose `dxConsumers` leave `component` out: a change of them never reaches its pods.
    pub fn keys_only_for_others(&self, component: Component) -> BTreeSet<String> {
        self.consumers.iter().filter(|(_, users)| !users.contains(&component)).map(|(key, _)| key.clone()).collect()
    }

    /// The ConfigMap keys the schema declares by name.
    pub fn declared_keys(&self) -> impl Iterator<Item = &str> {
        self.known_keys.iter().map(String::as_str)
    }
}
