//! Image pinning.

use super::{Context, Findings, containers};
use crate::policy::PodTemplate;
use crate::policy::values::ImageRef;

pub fn pinned(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(spec) = ctx.object.pod_spec() else { return };
    for at in containers(spec) {
        let path = at.path.field("image");
        let image = at.container.image.as_deref().unwrap_or("");
        match ImageRef::parse(image) {
            Err(error) => out.add(path, format!("image {image:?} {error}")),
            Ok(reference) if reference.is_pinned() => {}
            Ok(reference) if reference.tag.is_none() => {
                out.add(path, format!("image {image:?} has no tag, which means :latest"));
            }
            Ok(_) => out.add(path, format!("image {image:?} uses the moving tag latest")),
        }
    }
}
