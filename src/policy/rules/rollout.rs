//! What rolling updates depend on: probes and the StatefulSet update strategy.

use super::{Context, Findings, containers};
use crate::policy::PodTemplate;
use crate::policy::object::Object;
use crate::policy::path::FieldPath;

pub fn readiness_probe(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(spec) = ctx.object.pod_spec() else { return };
    for at in containers(spec).filter(|at| !at.init) {
        if at.container.readiness_probe.is_none() {
            out.add(
                at.path.field("readinessProbe"),
                format!("container {:?} has no readiness probe", at.container.name),
            );
        }
    }
}

pub fn liveness_probe(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(spec) = ctx.object.pod_spec() else { return };
    for at in containers(spec).filter(|at| !at.init) {
        if at.container.liveness_probe.is_none() {
            out.add(at.path.field("livenessProbe"), format!("container {:?} has no liveness probe", at.container.name));
        }
    }
}

pub fn statefulset_rolling_update(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Object::StatefulSet(set) = ctx.object else { return };
    let strategy = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        out.add(
            FieldPath::root("spec").field("updateStrategy").field("type"),
            "is OnDelete, so pods keep old config and images until deleted by hand",
        );
    }
}
