//! What is under review: the typed object, its kind, and whether (and as what) it is a DX object.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::settings::Selector;
use crate::checksum::patch::is_checksum_key;
use crate::checksum::{SourceKind, SourceRef};

/// The kinds dx-admission reviews. Every other kind is allowed untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    ConfigMap,
    StatefulSet,
    Deployment,
    /// Reviewed only by rules that apply to any object (the delete guard); never a DX object,
    /// because its values are never read.
    Secret,
}

impl ResourceKind {
    pub const ALL: [Self; 4] = [Self::ConfigMap, Self::StatefulSet, Self::Deployment, Self::Secret];
    /// The kinds a DX object can be: those DX schemas describe.
    pub const DX: [Self; 3] = [Self::ConfigMap, Self::StatefulSet, Self::Deployment];

    /// From an admission request's group and kind; `None` for kinds that are not reviewed.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("", "ConfigMap") => Some(Self::ConfigMap),
            ("apps", "StatefulSet") => Some(Self::StatefulSet),
            ("apps", "Deployment") => Some(Self::Deployment),
            ("", "Secret") => Some(Self::Secret),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::StatefulSet => "StatefulSet",
            Self::Deployment => "Deployment",
            Self::Secret => "Secret",
        }
    }

    /// The directory name of this kind in the schema layout.
    pub fn schema_dir(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::StatefulSet => "statefulset",
            Self::Deployment => "deployment",
            Self::Secret => "secret",
        }
    }

    /// The kind a schema directory describes; only DX kinds have schemas.
    pub fn from_schema_dir(dir: &str) -> Option<Self> {
        Self::DX.into_iter().find(|kind| kind.schema_dir() == dir)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The DX applications, named by the `app.kubernetes.io/component` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Core,
    Dam,
    Persistence,
    RingApi,
    ContentComposer,
    ImageProcessor,
    /// The deployment-wide ConfigMap; never a workload.
    Global,
}

impl Component {
    pub const ALL: [Self; 7] = [
        Self::Core,
        Self::Dam,
        Self::Persistence,
        Self::RingApi,
        Self::ContentComposer,
        Self::ImageProcessor,
        Self::Global,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Dam => "dam",
            Self::Persistence => "persistence",
            Self::RingApi => "ring-api",
            Self::ContentComposer => "content-composer",
            Self::ImageProcessor => "image-processor",
            Self::Global => "global",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == label)
    }

    /// The workload kind this application runs as; `None` for `global`, which is config only.
    pub fn workload_kind(self) -> Option<ResourceKind> {
        match self {
            Self::Core | Self::Dam | Self::Persistence => Some(ResourceKind::StatefulSet),
            Self::RingApi | Self::ContentComposer | Self::ImageProcessor => Some(ResourceKind::Deployment),
            Self::Global => None,
        }
    }

    /// Whether an object of `kind` may carry this component.
    pub fn allowed_on(self, kind: ResourceKind) -> bool {
        kind == ResourceKind::ConfigMap || self.workload_kind() == Some(kind)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pod template of a workload kind: the one set of accessors the rules, the mutating path
/// and the rollout controller use.
pub trait PodTemplate {
    fn pod_template(&self) -> Option<&PodTemplateSpec>;

    fn pod_spec(&self) -> Option<&PodSpec> {
        self.pod_template()?.spec.as_ref()
    }

    fn template_metadata(&self) -> Option<&ObjectMeta> {
        self.pod_template()?.metadata.as_ref()
    }

    /// The checksum annotations its pod template carries now.
    fn stamped(&self) -> BTreeMap<String, String> {
        let annotations = self.template_metadata().and_then(|m| m.annotations.as_ref());
        annotations
            .map(|a| a.iter().filter(|(k, _)| is_checksum_key(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

impl PodTemplate for StatefulSet {
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }
}

impl PodTemplate for Deployment {
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }
}

/// A reviewed object, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    ConfigMap(ConfigMap),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    Secret(Secret),
}

impl Object {
    /// Parses a JSON object of the given kind. The error names the first field that does not fit.
    pub fn from_json(kind: ResourceKind, value: serde_json::Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            ResourceKind::ConfigMap => Self::ConfigMap(serde_json::from_value(value)?),
            ResourceKind::StatefulSet => Self::StatefulSet(serde_json::from_value(value)?),
            ResourceKind::Deployment => Self::Deployment(serde_json::from_value(value)?),
            ResourceKind::Secret => Self::Secret(serde_json::from_value(value)?),
        })
    }

    /// Parses JSON text of the given kind straight into its type.
    pub fn parse(kind: ResourceKind, text: &str) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            ResourceKind::ConfigMap => Self::ConfigMap(serde_json::from_str(text)?),
            ResourceKind::StatefulSet => Self::StatefulSet(serde_json::from_str(text)?),
            ResourceKind::Deployment => Self::Deployment(serde_json::from_str(text)?),
            ResourceKind::Secret => Self::Secret(serde_json::from_str(text)?),
        })
    }

    /// An object known by its name only (a DELETE whose request carries no `oldObject`).
    pub fn named(kind: ResourceKind, namespace: &str, name: &str) -> Self {
        let metadata = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()).filter(|n| !n.is_empty()),
            ..ObjectMeta::default()
        };
        match kind {
            ResourceKind::ConfigMap => Self::ConfigMap(ConfigMap { metadata, ..ConfigMap::default() }),
            ResourceKind::StatefulSet => Self::StatefulSet(StatefulSet { metadata, ..StatefulSet::default() }),
            ResourceKind::Deployment => Self::Deployment(Deployment { metadata, ..Deployment::default() }),
            ResourceKind::Secret => Self::Secret(Secret { metadata, ..Secret::default() }),
        }
    }

    /// The object as JSON, for schemas that describe whole workloads.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Self::ConfigMap(o) => serde_json::to_value(o),
            Self::StatefulSet(o) => serde_json::to_value(o),
            Self::Deployment(o) => serde_json::to_value(o),
            Self::Secret(o) => serde_json::to_value(o),
        };
        // Serialising a typed object to a `Value` cannot fail: every key is a string.
        value.unwrap_or(serde_json::Value::Null)
    }

    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::ConfigMap(_) => ResourceKind::ConfigMap,
            Self::StatefulSet(_) => ResourceKind::StatefulSet,
            Self::Deployment(_) => ResourceKind::Deployment,
            Self::Secret(_) => ResourceKind::Secret,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::ConfigMap(o) => &o.metadata,
            Self::StatefulSet(o) => &o.metadata,
            Self::Deployment(o) => &o.metadata,
            Self::Secret(o) => &o.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::ConfigMap(o) => &mut o.metadata,
            Self::StatefulSet(o) => &mut o.metadata,
            Self::Deployment(o) => &mut o.metadata,
            Self::Secret(o) => &mut o.metadata,
        }
    }

    /// The ConfigMap or Secret as a source pods can use; `None` for workloads.
    pub fn as_source(&self) -> Option<SourceRef> {
        let kind = match self {
            Self::ConfigMap(_) => SourceKind::ConfigMap,
            Self::Secret(_) => SourceKind::Secret,
            Self::StatefulSet(_) | Self::Deployment(_) => return None,
        };
        Some(SourceRef { kind, name: self.name().to_owned() })
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        label(self.metadata().labels.as_ref(), key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        label(self.metadata().annotations.as_ref(), key)
    }

    /// A copy with `key` set to `value` among its annotations.
    pub fn with_annotation(&self, key: &str, value: &str) -> Self {
        let mut copy = self.clone();
        let metadata = match &mut copy {
            Self::ConfigMap(o) => &mut o.metadata,
            Self::StatefulSet(o) => &mut o.metadata,
            Self::Deployment(o) => &mut o.metadata,
            Self::Secret(o) => &mut o.metadata,
        };
        metadata.annotations.get_or_insert_default().insert(key.to_owned(), value.to_owned());
        copy
    }
}

impl PodTemplate for Object {
    /// A workload's pod template; `None` for ConfigMaps and Secrets.
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Self::ConfigMap(_) | Self::Secret(_) => None,
            Self::StatefulSet(o) => o.pod_template(),
            Self::Deployment(o) => o.pod_template(),
        }
    }
}

fn label<'a>(map: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    map?.get(key).map(String::as_str)
}

/// How an object relates to DX, read from its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity<'a> {
    /// Not part of DX: allowed untouched.
    Foreign,
    /// Part of DX; the component label's raw value (if any) and what it names (if known).
    Dx { component_label: Option<&'a str>, component: Option<Component> },
}

impl<'a> Identity<'a> {
    /// DX objects are ConfigMaps, StatefulSets and Deployments the selector picks.
    pub fn of(object: &'a Object, selector: &Selector) -> Self {
        if !ResourceKind::DX.contains(&object.kind()) || !selector.selects(object.metadata()) {
            return Self::Foreign;
        }
        let component_label = object.label(&selector.component_label);
        Self::Dx { component_label, component: component_label.and_then(Component::parse) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_comes_from_the_part_of_and_component_labels() {
        let selector = Selector::default();
        let object = |labels: serde_json::Value| {
            Object::from_json(ResourceKind::ConfigMap, json!({"metadata": {"name": "c", "labels": labels}})).unwrap()
        };
        let foreign = object(json!({"app": "web"}));
        assert_eq!(Identity::of(&foreign, &selector), Identity::Foreign);
        let other_suite = object(json!({"app.kubernetes.io/part-of": "other"}));
        assert_eq!(Identity::of(&other_suite, &selector), Identity::Foreign);
        let core = object(json!({"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "core"}));
        assert_eq!(
            Identity::of(&core, &selector),
            Identity::Dx { component_label: Some("core"), component: Some(Component::Core) }
        );
        let unknown = object(json!({"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "cms"}));
        assert_eq!(Identity::of(&unknown, &selector), Identity::Dx { component_label: Some("cms"), component: None });
    }

    #[test]
    fn components_belong_to_one_workload_kind() {
        assert!(Component::Core.allowed_on(ResourceKind::StatefulSet));
        assert!(!Component::Core.allowed_on(ResourceKind::Deployment));
        assert!(Component::RingApi.allowed_on(ResourceKind::Deployment));
        assert!(!Component::RingApi.allowed_on(ResourceKind::StatefulSet));
        assert!(Component::Global.allowed_on(ResourceKind::ConfigMap));
        assert!(!Component::Global.allowed_on(ResourceKind::Deployment));
    }
}
