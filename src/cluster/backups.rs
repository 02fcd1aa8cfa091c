//! Backups as cluster facts: watches of the Jobs and (where the cluster serves the API)
//! VolumeSnapshots labelled `dx.hcl.com/backup-of`, cluster-wide. The backup gate reads them
//! from memory, never with an API call on the hot path.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::{BackupLabels, Metrics};
use crate::policy::Component;
use crate::policy::annotations::BACKUP_OF;
use crate::policy::facts::Backup;

const SNAPSHOT_GROUP_VERSION: &str = "snapshot.storage.k8s.io/v1";

/// The stores the watches fill.
pub struct Backups {
    jobs: Store<Job>,
    /// `None` where the cluster does not serve `snapshot.storage.k8s.io/v1`.
    snapshots: Option<Store<DynamicObject>>,
}

impl Backups {
    /// Starts the watches; VolumeSnapshots only when the API server serves them now.
    pub async fn start(client: Client, metrics: Arc<Metrics>, stop: CancellationToken) -> Self {
        let labelled = || watcher::Config::default().labels(BACKUP_OF);
        let (jobs, writer) = reflector::store::<Job>();
        super::spawn_watch(
            watcher::watcher(Api::<Job>::all(client.clone()), labelled()),
            writer,
            "Job",
            &metrics,
            &stop,
        );
        let snapshots = match snapshot_resource(&client).await {
            Some(resource) => {
                let writer = reflector::store::Writer::new(resource.clone());
                let store = writer.as_reader();
                let api = Api::<DynamicObject>::all_with(client, &resource);
                super::spawn_watch(watcher::watcher(api, labelled()), writer, "VolumeSnapshot", &metrics, &stop);
                Some(store)
            }
            None => {
                info!("{SNAPSHOT_GROUP_VERSION} is not served: backups are Jobs only");
                None
            }
        };
        Self { jobs, snapshots }
    }

    /// Both watches have listed everything once.
    pub fn is_synced(&self) -> bool {
        super::listed(&self.jobs) && self.snapshots.as_ref().is_none_or(super::listed)
    }

    /// The completed backups of `component` (or `all`) in `namespace`.
    pub fn completed(&self, namespace: &str, component: Component) -> Vec<Backup> {
        let jobs = self.jobs.state().iter().filter_map(|job| completed_job(job)).collect::<Vec<_>>();
        let snapshots =
            self.snapshots.iter().flat_map(Store::state).filter_map(|s| ready_snapshot(&s)).collect::<Vec<_>>();
        let mut found: Vec<Backup> = jobs
            .into_iter()
            .chain(snapshots)
            .filter(|(ns, of, _)| ns == namespace && (of == component.as_str() || of == "all"))
            .map(|(_, _, backup)| backup)
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }
}

/// The namespace and `dx.hcl.com/backup-of` value of a labelled object.
fn labelled(meta: &ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.labels.as_ref()?.get(BACKUP_OF)?.clone()))
}

/// A labelled Job that completed: `Complete=True`, with its `completionTime`.
pub fn completed_job(job: &Job) -> Option<(String, String, Backup)> {
    let (namespace, of) = labelled(&job.metadata)?;
    let status = job.status.as_ref()?;
    if !status.conditions.iter().flatten().any(|c| c.type_ == "Complete" && c.status == "True") {
        return None;
    }
    let completed = status.completion_time.as_ref()?.0.as_second();
    let name = format!("Job {namespace}/{}", job.metadata.name.as_deref().unwrap_or(""));
    Some((namespace, of, Backup { name, completed, claim: None }))
}

/// A labelled VolumeSnapshot that is `readyToUse`, with its `creationTime` and source claim.
pub fn ready_snapshot(snapshot: &DynamicObject) -> Option<(String, String, Backup)> {
    let (namespace, of) = labelled(&snapshot.metadata)?;
    let status = &snapshot.data["status"];
    if status["readyToUse"] != true {
        return None;
    }
    let completed = status["creationTime"].as_str()?.parse::<k8s_openapi::jiff::Timestamp>().ok()?.as_second();
    let name = format!("VolumeSnapshot {namespace}/{}", snapshot.metadata.name.as_deref().unwrap_or(""));
    let claim = snapshot.data["spec"]["source"]["persistentVolumeClaimName"].as_str().map(str::to_owned);
    Some((namespace, of, Backup { name, completed, claim }))
}

/// The VolumeSnapshot resource, when the cluster serves it.
pub async fn snapshot_resource(client: &Client) -> Option<ApiResource> {
    let list = client.list_api_group_resources(SNAPSHOT_GROUP_VERSION).await.ok()?;
    list.resources.iter().any(|r| r.name == "volumesnapshots").then(|| {
        let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
        ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots")
    })
}

/// How often the backup gauge is brought up to date from the stores.
const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `dx_admission_backup_completed_timestamp_seconds` current: one series per namespace and
/// stateful DX component that has a workload, the newest backup covering it, or 0.
pub fn spawn_gauge(cluster: Arc<super::Cluster>, stop: CancellationToken) {
    super::every(GAUGE_REFRESH, stop, move || {
        if !cluster.is_synced() {
            return;
        }
        let mut newest: std::collections::BTreeMap<(String, Component), i64> = Default::default();
        for set in cluster.workloads.stateful_sets.state() {
            let Some(component) = cluster.workloads.component_of(&set.metadata) else { continue };
            let namespace = set.metadata.namespace.clone().unwrap_or_default();
            let object = crate::policy::Object::StatefulSet((*set).clone());
            let backups = cluster.backups.completed(&namespace, component);
            let completed = crate::policy::rules::newest(&object, &backups).map_or(0, |b| b.completed);
            let entry = newest.entry((namespace, component)).or_default();
            *entry = (*entry).max(completed);
        }
        let family = &cluster.metrics.backup_completed;
        family.clear();
        for ((namespace, component), completed) in newest {
            family.get_or_create(&BackupLabels { namespace, component: component.as_str() }).set(completed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(labels: serde_json::Value, status: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "b", "namespace": "dx", "labels": labels}, "status": status}),
        )
        .unwrap()
    }

    #[test]
    fn only_labelled_jobs_that_completed_are_backups() {
        let complete = json!({"completionTime": "2026-11-30T00:53:20Z",
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]});
        let found = completed_job(&job(json!({"dx.hcl.com/backup-of": "all"}), complete.clone()));
        assert_eq!(
            found,
            Some((
                "dx".into(),
                "all".into(),
                Backup { name: "Job dx/b".into(), completed: 1_796_000_000, claim: None }
            ))
        );
        let failed = json!({"conditions": [{"type": "Failed", "status": "True"}]});
        assert_eq!(completed_job(&job(json!({"dx.hcl.com/backup-of": "core"}), failed)), None, "a failed Job");
        let running = json!({"active": 1});
        assert_eq!(completed_job(&job(json!({"dx.hcl.com/backup-of": "core"}), running)), None, "a running Job");
        assert_eq!(completed_job(&job(json!({"app": "other"}), complete)), None, "an unlabelled Job");
    }

    #[test]
    fn only_labelled_snapshots_that_are_ready_are_backups() {
        let snapshot = |ready: bool| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "s", "namespace": "dx", "labels": {"dx.hcl.com/backup-of": "dam"}},
                "spec": {"source": {"persistentVolumeClaimName": "dx-dam-upload"}},
                "status": {"readyToUse": ready, "creationTime": "2026-11-30T00:53:20Z"}
            }))
            .unwrap()
        };
        let backup = Backup {
            name: "VolumeSnapshot dx/s".into(),
            completed: 1_796_000_000,
            claim: Some("dx-dam-upload".into()),
        };
        assert_eq!(ready_snapshot(&snapshot(true)), Some(("dx".into(), "dam".into(), backup)));
        assert_eq!(ready_snapshot(&snapshot(false)), None);
    }
}
