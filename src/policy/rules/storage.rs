//! Storage topology: shared farm volumes for Core and DAM, private volumes for persistence,
//! none for stateless applications.

use crate::policy::PodTemplate;
use k8s_openapi::api::core::v1::PodSpec;

use super::{Context, Findings, containers, pod_spec_path};
use crate::policy::object::{Component, Object};
use crate::policy::path::FieldPath;

/// Volumes of the pod spec that name a persistent volume claim, with their paths.
fn claim_volumes(spec: &PodSpec) -> impl Iterator<Item = (FieldPath, &str, &str)> {
    spec.volumes.iter().flatten().enumerate().filter_map(|(i, volume)| {
        let claim = volume.persistent_volume_claim.as_ref()?;
        let path = pod_spec_path().field("volumes").index(i).field("persistentVolumeClaim");
        Some((path, volume.name.as_str(), claim.claim_name.as_str()))
    })
}

pub fn stateless_no_pvc(ctx: &Context<'_>, out: &mut Findings<'_>) {
    if !ctx
        .component
        .is_some_and(|c| matches!(c, Component::RingApi | Component::ContentComposer | Component::ImageProcessor))
    {
        return;
    }
    let Some(spec) = ctx.object.pod_spec() else { return };
    for (path, volume, claim) in claim_volumes(spec) {
        out.add(
            path,
            format!(
                "volume {volume:?} mounts claim {claim:?}, but {} is stateless",
                ctx.component.map_or("", |c| c.as_str())
            ),
        );
    }
}

pub fn persistence_no_shared_claim(ctx: &Context<'_>, out: &mut Findings<'_>) {
    if ctx.component != Some(Component::Persistence) {
        return;
    }
    let Some(spec) = ctx.object.pod_spec() else { return };
    for (path, volume, claim) in claim_volumes(spec) {
        out.add(path, format!("volume {volume:?} mounts claim {claim:?}, which every persistence replica would share"));
    }
}

pub fn persistence_rwo(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let (Some(Component::Persistence), Object::StatefulSet(set)) = (ctx.component, ctx.object) else { return };
    let templates = set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_ref());
    for (i, template) in templates.into_iter().flatten().enumerate() {
        let path = FieldPath::root("spec").field("volumeClaimTemplates").index(i).field("spec").field("accessModes");
        let name = template.metadata.name.as_deref().unwrap_or("");
        let modes = template.spec.as_ref().and_then(|s| s.access_modes.as_ref());
        match modes {
            None => out.add(path, format!("claim template {name:?} sets no access mode")),
            Some(modes)
                if modes.iter().all(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod") && !modes.is_empty() => {}
            Some(modes) => out.add(path, format!("claim template {name:?} asks for [{}]", modes.join(", "))),
        }
    }
}

pub fn farm_shared_storage(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let storage = &ctx.settings.storage;
    let (what, mount_path) = match ctx.component {
        Some(Component::Core) => ("profile", storage.core_profile_mount_path.as_str()),
        Some(Component::Dam) => ("uploads", storage.dam_upload_mount_path.as_str()),
        _ => return,
    };
    let Object::StatefulSet(set) = ctx.object else { return };
    let Some(spec) = ctx.object.pod_spec() else { return };
    let templates = set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_ref());
    let wanted = mount_path.trim_end_matches('/');
    let mut mounted = false;
    for at in containers(spec).filter(|at| !at.init) {
        for (m, mount) in at.container.volume_mounts.iter().flatten().enumerate() {
            if mount.mount_path.trim_end_matches('/') != wanted {
                continue;
            }
            mounted = true;
            let path = at.path.field("volumeMounts").index(m);
            let volume = spec.volumes.iter().flatten().find(|v| v.name == mount.name);
            let template =
                templates.into_iter().flatten().position(|t| t.metadata.name.as_deref() == Some(&mount.name));
            match (volume, template) {
                (Some(v), _) if v.persistent_volume_claim.is_some() => {}
                (Some(_), _) => out.add(
                    path,
                    format!("the {what} at {mount_path} comes from volume {:?}, which is not a persistentVolumeClaim, so it is lost with the pod", mount.name),
                ),
                (None, Some(t)) => out.add_with_hint(
                    path,
                    format!(
                        "the {what} at {mount_path} comes from volumeClaimTemplates[{t}] ({:?}), which gives each pod its own diverging copy",
                        mount.name
                    ),
                    "add a persistentVolumeClaim volume naming one ReadWriteMany claim, mount that, and remove the claim template",
                ),
                (None, None) => out.add(path, format!("mounts volume {:?}, which the pod spec does not define", mount.name)),
            }
        }
    }
    if !mounted {
        out.add(pod_spec_path().field("containers"), format!("no container mounts the {what} at {mount_path}"));
    }
}
