//! The state an update is planned against: previous manifests, or what the API server holds now
//! (read with list calls only), and which of its objects the update may remove.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};

use super::{Key, key_of};
use crate::check::Manifests;
use crate::cluster::backups::{completed_job, ready_snapshot};
use crate::policy::Object;
use crate::policy::annotations::BACKUP_OF;
use crate::policy::facts::Backup;

/// The previous state.
#[derive(Debug, Default)]
pub struct Previous {
    pub objects: BTreeMap<Key, Object>,
    /// The objects the update removes when it no longer has them (the `--old` set, or the Helm
    /// release's objects); `None` when removals cannot be judged.
    pub removable: Option<BTreeSet<Key>>,
    /// Where it came from, for the plan's first line.
    pub description: String,
    /// Why removals are not judged (when `removable` is `None`).
    pub removals_not_judged: String,
    /// Read from the cluster: workloads carry the checksums their pods run with.
    pub live: bool,
    /// The completed backups (namespace, `dx.hcl.com/backup-of` value, backup), when read from
    /// the cluster.
    pub backups: Option<Vec<(String, String, Backup)>>,
}

/// Helm's release bookkeeping on every object it installs.
const RELEASE_NAME: &str = "meta.helm.sh/release-name";
const RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";
/// The label charts set from `.Release.Name`.
const INSTANCE: &str = "app.kubernetes.io/instance";

/// Whether an object belongs to the Helm release `release` of `namespace`: Helm's annotations
/// name it, or (for objects Helm has not annotated) the chart's `app.kubernetes.io/instance`.
pub fn in_release(metadata: &ObjectMeta, release: &str, namespace: &str) -> bool {
    let annotation = |key: &str| metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str);
    match annotation(RELEASE_NAME) {
        Some(name) => name == release && annotation(RELEASE_NAMESPACE).is_none_or(|ns| ns == namespace),
        None => metadata.labels.as_ref().and_then(|l| l.get(INSTANCE)).is_some_and(|name| name == release),
    }
}

/// From previous manifests: every object of them may be removed (of the release, if named).
pub fn from_manifests(old: Manifests, release: Option<&str>, release_namespace: &str) -> Previous {
    let mut previous = Previous { description: "the previous manifests".into(), ..Previous::default() };
    let mut removable = BTreeSet::new();
    for manifest in old.reviewed.into_iter().chain(old.secrets) {
        let key = key_of(&manifest.namespace, &manifest.object);
        if release.is_none_or(|r| in_release(manifest.object.metadata(), r, release_namespace)) {
            removable.insert(key.clone());
        }
        previous.objects.insert(key, manifest.object);
    }
    previous.removable = Some(removable);
    previous
}

/// From the API server: ConfigMaps, Secrets (not Helm's release records), StatefulSets and
/// Deployments of `namespaces`. Only objects of `release` may be removed; without a release no
/// removal is judged, rather than calling everything else in the namespace removed.
pub async fn from_cluster(
    client: Client,
    namespaces: &BTreeSet<String>,
    release: Option<&str>,
    release_namespace: &str,
) -> Result<Previous, kube::Error> {
    let mut objects = BTreeMap::new();
    for namespace in namespaces {
        let params = ListParams::default();
        let maps = Api::<ConfigMap>::namespaced(client.clone(), namespace).list(&params).await?;
        let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().fields("type!=helm.sh/release.v1"))
            .await?;
        let sets = Api::<StatefulSet>::namespaced(client.clone(), namespace).list(&params).await?;
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace).list(&params).await?;
        let all = (maps.items.into_iter().map(Object::ConfigMap))
            .chain(secrets.items.into_iter().map(Object::Secret))
            .chain(sets.items.into_iter().map(Object::StatefulSet))
            .chain(deployments.items.into_iter().map(Object::Deployment));
        for object in all {
            objects.insert(key_of(namespace, &object), object);
        }
    }
    let mut backups = Vec::new();
    let snapshots = crate::cluster::backups::snapshot_resource(&client).await;
    for namespace in namespaces {
        let labelled = ListParams::default().labels(BACKUP_OF);
        let jobs = Api::<Job>::namespaced(client.clone(), namespace).list(&labelled).await?;
        backups.extend(jobs.items.iter().filter_map(completed_job));
        if let Some(resource) = &snapshots {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource);
            backups.extend(api.list(&labelled).await?.items.iter().filter_map(ready_snapshot));
        }
    }
    let removable = release.map(|release| {
        objects
            .iter()
            .filter(|(_, object)| in_release(object.metadata(), release, release_namespace))
            .map(|(key, _)| key.clone())
            .collect()
    });
    let description = match release {
        Some(release) => format!("the cluster (Helm release {release} in {release_namespace})"),
        None => "the cluster".to_owned(),
    };
    Ok(Previous {
        objects,
        removable,
        description,
        removals_not_judged: "removals (R) are not judged: name the Helm release with --release".into(),
        live: true,
        backups: Some(backups),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn release_membership_reads_helm_annotations_else_the_instance_label() {
        let meta = |value: serde_json::Value| serde_json::from_value::<ObjectMeta>(value).unwrap();
        let helm = meta(json!({"annotations": {RELEASE_NAME: "dx", RELEASE_NAMESPACE: "dx-prod"}}));
        assert!(in_release(&helm, "dx", "dx-prod"));
        assert!(!in_release(&helm, "dx", "dx-test"), "a release of the same name elsewhere");
        assert!(!in_release(&helm, "other", "dx-prod"));
        let labelled = meta(json!({"labels": {INSTANCE: "dx"}}));
        assert!(in_release(&labelled, "dx", "dx-prod"));
        // Helm's annotation wins over a label that says otherwise.
        let adopted = meta(json!({"labels": {INSTANCE: "dx"}, "annotations": {RELEASE_NAME: "other"}}));
        assert!(!in_release(&adopted, "dx", "dx-prod"));
        assert!(!in_release(&meta(json!({})), "dx", "dx-prod"));
    }
}
