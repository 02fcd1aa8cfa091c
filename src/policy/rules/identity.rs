//! Which application an object belongs to, and the labels that say so.

use super::{Context, Findings};
use crate::policy::PodTemplate;
use crate::policy::annotations::VERSION_LABEL;
use crate::policy::object::{Component, ResourceKind};
use crate::policy::path::FieldPath;

fn component_path(ctx: &Context<'_>) -> FieldPath {
    FieldPath::root("metadata").field("labels").key(&ctx.settings.selector.component_label)
}

pub fn component_known(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let known: Vec<&str> = Component::ALL
        .iter()
        .filter(|c| **c != Component::Global || ctx.object.kind() == ResourceKind::ConfigMap)
        .map(|c| c.as_str())
        .collect();
    match (ctx.component_label, ctx.component) {
        (None, _) => out.add(
            component_path(ctx),
            format!("is missing; a DX object names its application (one of: {})", known.join(", ")),
        ),
        (Some(label), None) => {
            out.add(component_path(ctx), format!("{label:?} is not a DX application (known: {})", known.join(", ")))
        }
        (Some(_), Some(_)) => {}
    }
}

pub fn component_kind(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(component) = ctx.component else { return };
    let kind = ctx.object.kind();
    if component.allowed_on(kind) {
        return;
    }
    let message = match component.workload_kind() {
        Some(expected) => format!("{component} runs as a {expected}, not a {kind}"),
        None => format!("{component} names the deployment-wide ConfigMap and cannot label a {kind}"),
    };
    out.add(component_path(ctx), message);
}

pub fn template_labels(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let selector = &ctx.settings.selector;
    let labels = ctx.object.template_metadata().and_then(|m| m.labels.as_ref());
    let path = FieldPath::root("spec").field("template").field("metadata").field("labels");
    let mut expect = vec![(selector.part_of_label.as_str(), selector.part_of_value.as_str())];
    if let Some(component) = ctx.component_label {
        expect.push((selector.component_label.as_str(), component));
    }
    for (key, value) in expect {
        match labels.and_then(|l| l.get(key)) {
            Some(actual) if actual == value => {}
            Some(actual) => out.add(path.key(key), format!("is {actual:?} but the workload says {value:?}")),
            None => out.add(path.key(key), format!("is missing (expected {value:?})")),
        }
    }
}

pub fn version_label(ctx: &Context<'_>, out: &mut Findings<'_>) {
    if ctx.object.label(VERSION_LABEL).is_none_or(str::is_empty) {
        out.add(
            FieldPath::root("metadata").field("labels").key(VERSION_LABEL),
            "is missing; without it downgrades cannot be detected",
        );
    }
}
