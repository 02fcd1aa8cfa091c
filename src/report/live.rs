//! `report --cluster`: the deployment read from the API server with list and get calls only —
//! DX objects, their pods and ReplicaSets by the DX label, and the ConfigMaps and Secrets their
//! pods use (Secrets as metadata only, unless the replicas' checksum key is given).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client};
use ring::hmac;

use super::drift::{judge_workload, last_written, source_checks};
use super::{Report, WorkloadState};
use crate::checksum::{SourceDigest, SourceKind, SourceRef, narrow, references};
use crate::policy::facts::unix_now;
use crate::policy::schema::SourceSchema;
use crate::policy::{Identity, Object, PodTemplate, Policy};

pub struct Read<'a> {
    pub kubeconfig: Option<&'a Path>,
    /// One namespace, else all.
    pub namespace: Option<&'a str>,
    pub key: Option<&'a [u8]>,
    pub stuck_after: Duration,
}

pub fn read(read: &Read<'_>, policy: Policy<'_>, candidate: Option<&str>) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = crate::client::connect(read.kubeconfig).await.map_err(|e| e.to_string())?;
        gather(client, read, policy, candidate).await.map_err(|e| e.to_string())
    })
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn gather(
    client: Client,
    read: &Read<'_>,
    policy: Policy<'_>,
    candidate: Option<&str>,
) -> Result<Report, kube::Error> {
    let selector = &policy.settings.selector;
    let dx = ListParams::default().labels(&selector.label_selector());
    let ns = read.namespace;
    let maps = api::<ConfigMap>(&client, ns).list(&dx).await?.items;
    let sets = api::<StatefulSet>(&client, ns).list(&dx).await?.items;
    let deployments = api::<Deployment>(&client, ns).list(&dx).await?.items;
    let pods = api::<Pod>(&client, ns).list(&dx).await?.items;
    let replica_sets = api::<ReplicaSet>(&client, ns).list(&dx).await?.items;
    let namespace_of =
        |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| meta.namespace.clone().unwrap_or_default();
    let objects: Vec<(String, Object)> = (maps.into_iter().map(|o| (namespace_of(&o.metadata), Object::ConfigMap(o))))
        .chain(sets.into_iter().map(|o| (namespace_of(&o.metadata), Object::StatefulSet(o))))
        .chain(deployments.into_iter().map(|o| (namespace_of(&o.metadata), Object::Deployment(o))))
        .collect();
    let key = read.key.map(|key| hmac::Key::new(hmac::HMAC_SHA256, key));
    let (pods, replica_sets): (Vec<&Pod>, Vec<&ReplicaSet>) = (pods.iter().collect(), replica_sets.iter().collect());
    let now = unix_now();
    let mut workloads = Vec::new();
    for (namespace, object) in &objects {
        let Identity::Dx { component, .. } = Identity::of(object, selector) else { continue };
        let Some(spec) = object.pod_spec() else { continue };
        let mut used = references(spec);
        let mut known: BTreeMap<SourceRef, SourceFacts> = BTreeMap::new();
        for source in used.keys() {
            known.insert(source.clone(), source_facts(&client, namespace, source, key.as_ref(), selector).await?);
        }
        if let Some(component) = component {
            narrow(&mut used, |source| {
                let schema = known.get(source).and_then(|(_, _, schema)| schema.as_ref());
                schema.map(|s| policy.schemas.keys_only_for_others(s, component)).unwrap_or_default()
            });
        }
        let checks = source_checks(
            &used,
            namespace,
            &object.stamped(),
            |source| known.get(source).and_then(|(digest, _, _)| digest.as_ref()),
            |source| known.get(source).and_then(|(_, changed, _)| *changed),
        );
        if let Some(drift) = judge_workload(object, &pods, &replica_sets, &checks, now, read.stuck_after) {
            workloads.push(WorkloadState {
                namespace: namespace.clone(),
                kind: object.kind(),
                name: object.name().to_owned(),
                component,
                drift,
            });
        }
    }
    let scope = match ns {
        Some(namespace) => format!("the cluster (namespace {namespace})"),
        None => "the cluster (all namespaces)".to_owned(),
    };
    Ok(Report {
        objects: Report::judge_all(policy, objects, candidate),
        workloads: Some(workloads),
        candidate: candidate.map(str::to_owned),
        scope,
    })
}

/// What is known of one source: its digest (a Secret's only with the key), when it was last
/// written, and the schema of a DX ConfigMap.
type SourceFacts = (Option<SourceDigest>, Option<i64>, Option<SourceSchema>);

async fn source_facts(
    client: &Client,
    namespace: &str,
    source: &SourceRef,
    key: Option<&hmac::Key>,
    selector: &crate::policy::settings::Selector,
) -> Result<SourceFacts, kube::Error> {
    Ok(match (source.kind, key) {
        (SourceKind::ConfigMap, _) => {
            match Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(&source.name).await? {
                Some(map) => (
                    Some(SourceDigest::of_config_map(&map)),
                    last_written(&map.metadata),
                    SourceSchema::of(&map.metadata, selector),
                ),
                None => (None, None, None),
            }
        }
        (SourceKind::Secret, Some(key)) => {
            match Api::<Secret>::namespaced(client.clone(), namespace).get_opt(&source.name).await? {
                Some(secret) => (Some(SourceDigest::of_secret(&secret, key)), last_written(&secret.metadata), None),
                None => (None, None, None),
            }
        }
        (SourceKind::Secret, None) => {
            match Api::<Secret>::namespaced(client.clone(), namespace).get_metadata_opt(&source.name).await? {
                Some(secret) => (None, last_written(&secret.metadata), None),
                None => (None, None, None),
            }
        }
    })
}
