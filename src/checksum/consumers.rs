//! Key-level checksums of a shared ConfigMap: a ConfigMap schema may say which components use a
//! key (`dxConsumers`). A workload that takes the whole ConfigMap (`envFrom`, a volume without
//! `items`) is stamped with a checksum of only the keys its component uses, so a change of a
//! DAM-only key of the global ConfigMap rolls DAM alone. Under schemas without `dxConsumers`
//! nothing narrows and the checksums are exactly the whole-source ones.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::refs::{Keys, SourceKind, SourceRef, Usage};
use crate::policy::annotations::SCHEMA_VERSION;
use crate::policy::schema::{SchemaSet, VersionLookup};
use crate::policy::settings::Selector;
use crate::policy::{Component, ResourceKind};

/// What decides a DX ConfigMap's schema: its component and the version it asks for.
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
        let labels = metadata.labels.as_ref()?;
        let component = Component::parse(labels.get(&selector.component_label)?)?;
        let version = metadata.annotations.as_ref().and_then(|a| a.get(SCHEMA_VERSION)).map(|v| v.as_str().into());
        Some(Self { component, version })
    }
}

/// Narrows the whole-ConfigMap uses of `consumer`'s pod template to the keys its component uses,
/// by the schema each DX ConfigMap is checked under. Single-key uses are left as they are.
pub fn narrow(
    references: &mut BTreeMap<SourceRef, Usage>,
    consumer: Option<Component>,
    schemas: &SchemaSet,
    schema_of: impl Fn(&SourceRef) -> Option<SourceSchema>,
) {
    let Some(consumer) = consumer else { return };
    for (source, usage) in references.iter_mut() {
        if source.kind != SourceKind::ConfigMap || usage.keys != Keys::All {
            continue;
        }
        let Some(schema) = schema_of(source) else { continue };
        let VersionLookup::Found(version) = schemas.resolve(schema.version.as_deref()) else { continue };
        let Some(document) = version.schema(ResourceKind::ConfigMap, schema.component) else { continue };
        let excluded = document.keys_only_for_others(consumer);
        if !excluded.is_empty() {
            usage.keys = Keys::AllExcept(excluded);
        }
    }
}

/// How a template stamped over a whole source is treated once that source narrows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Narrowing {
    /// Keep the whole-source checksum it carries while that is still current: a schema change
    /// alone never rolls pods (the rollout controller, and `/mutate` when the pod spec is as it was).
    KeepCurrentWhole,
    /// Stamp the narrowed checksum (a created workload, or one whose pod spec changes anyway).
    Apply,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn global() -> SourceRef {
        SourceRef { kind: SourceKind::ConfigMap, name: "dx-global-config".into() }
    }

    fn whole() -> BTreeMap<SourceRef, Usage> {
        BTreeMap::from([
            (global(), Usage { keys: Keys::All, required: true }),
            (
                SourceRef { kind: SourceKind::ConfigMap, name: "other".into() },
                Usage { keys: Keys::All, required: true },
            ),
        ])
    }

    #[test]
    fn only_dx_config_maps_whose_schema_declares_consumers_narrow() {
        let schemas = SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap();
        let schema_of = |source: &SourceRef| {
            (source.name == "dx-global-config").then_some(SourceSchema { component: Component::Global, version: None })
        };
        let mut core = whole();
        narrow(&mut core, Some(Component::Core), &schemas, schema_of);
        assert_eq!(core[&global()].keys, Keys::AllExcept(["dam.cdn.url".to_owned()].into()));
        assert_eq!(core[&SourceRef { kind: SourceKind::ConfigMap, name: "other".into() }].keys, Keys::All);
        let mut dam = whole();
        narrow(&mut dam, Some(Component::Dam), &schemas, schema_of);
        assert_eq!(dam[&global()].keys, Keys::All, "DAM uses every key");
        let mut unlabelled = whole();
        narrow(&mut unlabelled, None, &schemas, schema_of);
        assert_eq!(unlabelled[&global()].keys, Keys::All, "a workload of no component counts every key");
        // Under v1, which declares no consumers, nothing narrows.
        let v1 = |_: &SourceRef| Some(SourceSchema { component: Component::Global, version: Some("v1".into()) });
        let mut old = whole();
        narrow(&mut old, Some(Component::Core), &schemas, v1);
        assert_eq!(old[&global()].keys, Keys::All);
    }
}
