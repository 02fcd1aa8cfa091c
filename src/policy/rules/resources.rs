//! Container resources: present, parseable, requests within limits.

use crate::policy::PodTemplate;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use super::{Context, Findings, containers};
use crate::policy::values::Quantity;

const RESOURCES: [&str; 2] = ["cpu", "memory"];

type Amounts = BTreeMap<String, KubeQuantity>;

pub fn required(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(spec) = ctx.object.pod_spec() else { return };
    for at in containers(spec) {
        let path = at.path.field("resources");
        let resources = at.container.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        let name = &at.container.name;
        if requests.is_none_or(BTreeMap::is_empty) && limits.is_none_or(BTreeMap::is_empty) {
            out.add(path, format!("container {name:?} sets no cpu or memory requests or limits"));
            continue;
        }
        for (section, amounts) in [("requests", requests), ("limits", limits)] {
            for resource in RESOURCES {
                if amounts.is_none_or(|a| !a.contains_key(resource)) {
                    out.add(
                        path.field(section).field(resource),
                        format!("container {name:?} sets no {resource} {}", singular(section)),
                    );
                }
            }
        }
    }
}

fn singular(section: &str) -> &str {
    section.trim_end_matches('s')
}

pub fn quantities(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(spec) = ctx.object.pod_spec() else { return };
    for at in containers(spec) {
        let Some(resources) = at.container.resources.as_ref() else { continue };
        for (section, amounts) in [("requests", &resources.requests), ("limits", &resources.limits)] {
            for (resource, amount) in amounts.iter().flatten() {
                if let Err(error) = amount.0.parse::<Quantity>() {
                    out.add(
                        at.path.field("resources").field(section).field(resource),
                        format!("{:?} is not a Kubernetes quantity: it {error}", amount.0),
                    );
                }
            }
        }
    }
}

pub fn request_within_limit(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(spec) = ctx.object.pod_spec() else { return };
    for at in containers(spec) {
        let Some(resources) = at.container.resources.as_ref() else { continue };
        let (Some(requests), Some(limits)) = (&resources.requests, &resources.limits) else { continue };
        for (resource, request) in requests {
            let Some(limit) = limits.get(resource) else { continue };
            if let (Some(r), Some(l)) = (parse(requests, resource), parse(limits, resource))
                && r > l
            {
                out.add(
                    at.path.field("resources").field("requests").field(resource),
                    format!("{resource} request {} is more than its limit {}", request.0, limit.0),
                );
            }
        }
    }
}

fn parse(amounts: &Amounts, resource: &str) -> Option<Quantity> {
    amounts.get(resource)?.0.parse().ok()
}
