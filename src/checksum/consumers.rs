//! Key-level checksums of a shared ConfigMap: a ConfigMap schema may say which components use a
//! key (`dxConsumers`). A workload that takes the whole ConfigMap (`envFrom`, a volume without
//! `items`) is stamped with a checksum of only the keys its component uses, so a change of a
//! DAM-only key of the global ConfigMap rolls DAM alone. Under schemas without `dxConsumers`
//! nothing narrows and the checksums are exactly the whole-source ones.

use std::collections::{BTreeMap, BTreeSet};

use super::refs::{Keys, SourceKind, SourceRef, Usage};

/// Narrows whole-ConfigMap uses to every key but those `excluded` names for the source (the
/// keys the workload's component does not use: `SchemaSet::keys_only_for_others`). Single-key
/// uses are left as they are.
pub fn narrow(references: &mut BTreeMap<SourceRef, Usage>, excluded: impl Fn(&SourceRef) -> BTreeSet<String>) {
    for (source, usage) in references.iter_mut() {
        if source.kind != SourceKind::ConfigMap || usage.keys != Keys::All {
            continue;
        }
        let excluded = excluded(source);
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

    #[test]
    fn only_whole_config_map_uses_narrow() {
        let source = |kind, name: &str| SourceRef { kind, name: name.into() };
        let mut references = BTreeMap::from([
            (source(SourceKind::ConfigMap, "global"), Usage { keys: Keys::All, required: true }),
            (source(SourceKind::ConfigMap, "other"), Usage { keys: Keys::All, required: true }),
            (
                source(SourceKind::ConfigMap, "keyed"),
                Usage { keys: Keys::Some(["a".to_owned()].into()), required: true },
            ),
            (source(SourceKind::Secret, "global"), Usage { keys: Keys::All, required: true }),
        ]);
        narrow(&mut references, |s| if s.name == "other" { BTreeSet::new() } else { ["a".to_owned()].into() });
        let keys: Vec<&Keys> = references.values().map(|u| &u.keys).collect();
        assert_eq!(
            keys,
            [&Keys::AllExcept(["a".to_owned()].into()), &Keys::Some(["a".to_owned()].into()), &Keys::All, &Keys::All]
        );
    }
}
