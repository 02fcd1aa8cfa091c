//! UPDATE-only checks: what may not change between the stored object and the new one.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::{Context, Findings};
use crate::policy::annotations::{ALLOW_DOWNGRADE, VERSION_LABEL};
use crate::policy::object::Object;
use crate::policy::path::FieldPath;
use crate::policy::values::{Quantity, version};

/// The parts of a claim template that matter, with API-server defaults filled in, so that a
/// defaulted stored template and a hand-written new one compare equal.
#[derive(Debug, PartialEq, Eq)]
struct ClaimShape {
    access_modes: BTreeSet<String>,
    storage: Option<Quantity>,
    storage_text: String,
    storage_class: Option<String>,
    volume_mode: String,
}

impl ClaimShape {
    fn of(template: &PersistentVolumeClaim) -> Self {
        let spec = template.spec.as_ref();
        let storage_text = spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        Self {
            access_modes: spec.and_then(|s| s.access_modes.clone()).into_iter().flatten().collect(),
            storage: storage_text.parse().ok(),
            storage_text,
            storage_class: spec.and_then(|s| s.storage_class_name.clone()),
            volume_mode: spec.and_then(|s| s.volume_mode.clone()).unwrap_or_else(|| "Filesystem".into()),
        }
    }

    /// Plain-words differences from `old` to `self`.
    fn changes_from(&self, old: &Self) -> Vec<String> {
        let mut changes = Vec::new();
        if self.storage != old.storage {
            changes.push(format!("storage request {} -> {}", shown(&old.storage_text), shown(&self.storage_text)));
        }
        if self.access_modes != old.access_modes {
            let list = |m: &BTreeSet<String>| m.iter().cloned().collect::<Vec<_>>().join(", ");
            changes.push(format!("accessModes [{}] -> [{}]", list(&old.access_modes), list(&self.access_modes)));
        }
        if self.storage_class != old.storage_class {
            let class = |c: &Option<String>| c.clone().unwrap_or_else(|| "(default)".into());
            changes.push(format!("storageClassName {} -> {}", class(&old.storage_class), class(&self.storage_class)));
        }
        if self.volume_mode != old.volume_mode {
            changes.push(format!("volumeMode {} -> {}", old.volume_mode, self.volume_mode));
        }
        changes
    }
}

fn shown(text: &str) -> &str {
    if text.is_empty() { "(none)" } else { text }
}

const RESIZE_HINT: &str = "volumeClaimTemplates cannot change in place: to grow storage, expand each existing PVC (kubectl edit pvc, if the StorageClass allows expansion), then run kubectl delete statefulset NAME --cascade=orphan and apply again with the new size; pods and data stay";
const MIGRATE_HINT: &str = "volumeClaimTemplates cannot change in place: back up the data, create the StatefulSet under a new name (or delete it with --cascade=orphan), and restore into the new claims";

pub fn claim_templates_change(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let (Object::StatefulSet(new), Some(Object::StatefulSet(old))) = (ctx.object, ctx.old) else { return };
    let templates = |set: &k8s_openapi::api::apps::v1::StatefulSet| {
        set.spec.as_ref().and_then(|s| s.volume_claim_templates.clone()).unwrap_or_default()
    };
    let (new_templates, old_templates) = (templates(new), templates(old));
    let name_of = |t: &PersistentVolumeClaim| t.metadata.name.clone().unwrap_or_default();
    let base = FieldPath::root("spec").field("volumeClaimTemplates");
    for (i, template) in new_templates.iter().enumerate() {
        let name = name_of(template);
        let path = base.index(i);
        match old_templates.iter().find(|t| name_of(t) == name) {
            None => out.add_with_hint(
                path,
                format!("adds claim template {name:?} to an existing StatefulSet"),
                MIGRATE_HINT,
            ),
            Some(old) => {
                let changes = ClaimShape::of(template).changes_from(&ClaimShape::of(old));
                if changes.is_empty() {
                    continue;
                }
                let only_growth = changes.len() == 1 && changes[0].starts_with("storage request");
                out.add_with_hint(
                    path,
                    format!("claim template {name:?} changes: {}", changes.join("; ")),
                    if only_growth { RESIZE_HINT } else { MIGRATE_HINT },
                );
            }
        }
    }
    for old in &old_templates {
        let name = name_of(old);
        if !new_templates.iter().any(|t| name_of(t) == name) {
            out.add_with_hint(base.clone(), format!("removes claim template {name:?}"), MIGRATE_HINT);
        }
    }
}

pub fn version_downgrade(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(old) = ctx.old else { return };
    let (Some(new_version), Some(old_version)) = (ctx.object.label(VERSION_LABEL), old.label(VERSION_LABEL)) else {
        return;
    };
    if version::compare(new_version, old_version) != Ordering::Less {
        return;
    }
    if ctx.object.annotation(ALLOW_DOWNGRADE) == Some("true") {
        return;
    }
    out.add(
        FieldPath::root("metadata").field("labels").key(VERSION_LABEL),
        format!(
            "{old_version} -> {new_version} is a downgrade; a rollback needs the backup taken before the update to {old_version}"
        ),
    );
}
