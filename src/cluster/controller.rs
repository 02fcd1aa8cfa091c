//! The rollout controller: when a ConfigMap or Secret changes in the cluster, re-stamp the pod
//! templates of the workloads that use it, so their pods roll; and stamp a new or changed workload
//! whose checksums are not current (the webhook could not read a source when it admitted it).
//! A workload is patched only when its stored checksum differs from the new one: a `helm upgrade`
//! that changed the ConfigMap and its Deployment together was stamped already by the webhook,
//! and a restart patches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cache::SourceKey;
use super::index::{IndexedWorkload, WorkloadKey, WorkloadKind};
use super::{Change, Cluster};
use crate::checksum::patch::stamp_references;
use crate::lookup::Lookup;
use crate::metrics::Metrics;

/// The field manager of the controller's patches.
pub const FIELD_MANAGER: &str = "dx-admission-rollout";

pub fn spawn(client: Client, cluster: Arc<Cluster>, mut changes: UnboundedReceiver<Change>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut leadership = cluster.leader.subscribe();
        let pause = Duration::from_secs(1) / cluster.config.max_patches_per_second.max(1);
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return,
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *leadership.borrow() && synced(&cluster, &stop).await {
                        // A new leader catches up with changes made while nobody led.
                        let all = cluster.index.stamped();
                        reconcile(&client, &cluster, all, pause).await;
                    }
                    continue;
                }
                change = changes.recv() => match change { Some(change) => change, None => return },
            };
            // Debounce: gather the burst, then roll each affected workload once.
            let mut batch = BTreeSet::from([first]);
            let window = tokio::time::sleep(cluster.config.debounce);
            tokio::pin!(window);
            loop {
                tokio::select! {
                    () = &mut window => break,
                    Some(more) = changes.recv() => { batch.insert(more); }
                }
            }
            if !cluster.leader.is_leader() || !synced(&cluster, &stop).await {
                continue;
            }
            let mut affected = BTreeMap::new();
            for change in &batch {
                match change {
                    Change::Source(source) => affected.extend(cluster.index.users(source)),
                    Change::Workload(key) => affected.extend(cluster.index.get(key).map(|w| (key.clone(), w))),
                }
            }
            reconcile(&client, &cluster, affected.into_iter().collect(), pause).await;
        }
    });
}

/// Waits until the cache and the index have listed everything once (false when stopping): a
/// source missing from a cache still listing would read as deleted and unstamp its workloads.
async fn synced(cluster: &Cluster, stop: &CancellationToken) -> bool {
    while !cluster.is_synced() {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    true
}

async fn reconcile(
    client: &Client,
    cluster: &Cluster,
    workloads: Vec<(WorkloadKey, IndexedWorkload)>,
    pause: Duration,
) {
    for (key, workload) in workloads {
        let mut digests = BTreeMap::new();
        for source in workload.references.keys() {
            let source_key = SourceKey { namespace: key.namespace.clone(), source: source.clone() };
            if let Some(digest) = cluster.cache.get(&source_key) {
                digests.insert(source.clone(), digest);
            }
        }
        let desired =
            stamp_references(&workload.references, &key.namespace, None, |source| match digests.get(source) {
                Some(digest) => Lookup::Found(digest),
                None => Lookup::Absent,
            })
            .annotations;
        if desired == workload.stamped {
            continue;
        }
        // A merge patch: set every desired key, delete stale ones (null).
        let mut annotations: serde_json::Map<String, Value> =
            desired.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        for stale in workload.stamped.keys().filter(|k| !desired.contains_key(*k)) {
            annotations.insert(stale.clone(), Value::Null);
        }
        let patch = Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": annotations}}}}));
        let params = PatchParams::apply(FIELD_MANAGER);
        let params = PatchParams { force: false, field_manager: params.field_manager, ..PatchParams::default() };
        let result = match key.kind {
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), &key.namespace)
                .patch(&key.name, &params, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), &key.namespace)
                .patch(&key.name, &params, &patch)
                .await
                .map(|_| ()),
        };
        match &result {
            Ok(()) => info!(workload = %key, "config changed: pod template re-stamped, pods will roll"),
            Err(error) => warn!(workload = %key, %error, "could not re-stamp the pod template"),
        }
        Metrics::count_result(&cluster.metrics.rollouts, result.is_ok());
        tokio::time::sleep(pause).await;
    }
}
