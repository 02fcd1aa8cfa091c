//! The mutating path: stamp DX workloads' pod templates with config checksum annotations.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use kube::core::admission::AdmissionResponse;

use super::AppState;
use crate::admission::Decoded;
use crate::checksum::patch::{patch, stamp_references};
use crate::checksum::{Narrowing, SourceDigest, SourceRef, references};
use crate::cluster::{SourceKey, wants_rollout};
use crate::lookup::Lookup;
use crate::policy::finding::{WARNING_LIMIT, truncate};
use crate::policy::{Object, Operation, PodTemplate};

/// Allowed, with a patch when the template's checksums are missing or stale.
pub async fn stamp(state: &AppState, decoded: &Decoded) -> AdmissionResponse {
    let response = AdmissionResponse::from(&decoded.request);
    let Some(cluster) = &state.cluster else { return response };
    let Some(object) =
        decoded.object.as_ref().filter(|_| matches!(decoded.operation, Operation::Create | Operation::Update))
    else {
        return response;
    };
    if !matches!(object, Object::StatefulSet(_) | Object::Deployment(_))
        || !wants_rollout(object.metadata(), &state.settings.selector)
    {
        return response;
    }
    let Some(spec) = object.pod_spec() else { return response };
    let namespace = decoded.namespace();
    let mut references = references(spec);
    // Read concurrently: with the API server unreachable, the whole review waits one timeout.
    let reads = references.keys().map(|source| {
        let key = SourceKey { namespace: namespace.to_owned(), source: source.clone() };
        async move { cluster.cache.get_or_fetch(&key, cluster.config.fetch_timeout).await }
    });
    let fetched: BTreeMap<SourceRef, Lookup<SourceDigest>> =
        references.keys().cloned().zip(join_all(reads).await).collect();
    cluster.narrow(&mut references, namespace, object.metadata());
    // The narrower checksum of a shared ConfigMap applies when the pod spec changes anyway (or
    // the workload is new); an unchanged spec keeps a whole-source checksum that is current.
    let spec_unchanged = decoded.old_object.as_ref().is_some_and(|old| old.pod_spec() == Some(spec));
    let narrowing = if spec_unchanged { Narrowing::KeepCurrentWhole } else { Narrowing::Apply };
    let template = object.template_metadata();
    let current = template.and_then(|m| m.annotations.as_ref());
    let stamp = stamp_references(&references, namespace, current, narrowing, |source| fetched[source].as_ref());
    let operations = patch(template, &stamp.annotations);
    let mut response = response;
    if !stamp.warnings.is_empty() {
        response.warnings = Some(stamp.warnings.iter().map(|w| truncate(w, WARNING_LIMIT)).collect());
    }
    if operations.is_empty() {
        return response;
    }
    match response.clone().with_patch(json_patch::Patch(operations)) {
        Ok(patched) => patched,
        Err(error) => {
            // Serialising a patch of strings cannot fail; if it did, admit without a patch.
            tracing::error!(%error, "checksum patch could not be serialised");
            response
        }
    }
}
