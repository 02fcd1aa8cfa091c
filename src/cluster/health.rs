//! What the deployment's state reports need beyond the workload stores: watches of DX
//! ConfigMaps (whole, for the background evaluation), DX pods and DX ReplicaSets (their metadata
//! and status only), all by the DX label; and the drift of every DX workload, which the Lease
//! holder exports as gauges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::{Cluster, SourceKey};
use crate::checksum::{SourceDigest, SourceRef, references};
use crate::metrics::{NamespaceLabels, WorkloadLabels};
use crate::policy::settings::Selector;
use crate::policy::{Object, PodTemplate, ResourceKind};
use crate::report::drift::{judge_workload, source_checks};
use crate::report::{Drift, Rollout, WorkloadState};

/// How often the drift gauges are brought up to date from the stores.
const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// The stores the watches fill.
pub struct Health {
    pub config_maps: Store<ConfigMap>,
    pub pods: Store<Pod>,
    pub replica_sets: Store<ReplicaSet>,
}

impl Health {
    pub fn start(
        client: &Client,
        selector: &Selector,
        metrics: &Arc<crate::metrics::Metrics>,
        stop: &CancellationToken,
    ) -> Self {
        let dx = || watcher::Config::default().labels(&selector.label_selector());
        let (config_maps, writer) = reflector::store::<ConfigMap>();
        let stream = watcher::watcher(Api::<ConfigMap>::all(client.clone()), dx()).modify(|map| {
            map.metadata.managed_fields = None;
        });
        super::spawn_watch(stream, writer, "ConfigMap", metrics, stop);
        let (pods, writer) = reflector::store::<Pod>();
        let stream = watcher::watcher(Api::<Pod>::all(client.clone()), dx()).modify(|pod| {
            pod.metadata.managed_fields = None;
            pod.spec = None;
        });
        super::spawn_watch(stream, writer, "Pod", metrics, stop);
        let (replica_sets, writer) = reflector::store::<ReplicaSet>();
        let stream = watcher::watcher(Api::<ReplicaSet>::all(client.clone()), dx()).modify(|set| {
            set.metadata.managed_fields = None;
            set.spec = None;
            set.status = None;
        });
        super::spawn_watch(stream, writer, "ReplicaSet", metrics, stop);
        Self { config_maps, pods, replica_sets }
    }

    /// Every watch has listed everything once.
    pub fn is_synced(&self) -> bool {
        use super::listed;
        listed(&self.config_maps) && listed(&self.pods) && listed(&self.replica_sets)
    }
}

impl Cluster {
    /// The drift of every DX workload, sorted by namespace, kind and name.
    pub fn drifts(&self, now: i64) -> Vec<WorkloadState> {
        let pods = self.health.pods.state();
        let replica_sets = self.health.replica_sets.state();
        let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
        let replica_sets: Vec<&ReplicaSet> = replica_sets.iter().map(AsRef::as_ref).collect();
        let selector = &self.workloads.selector;
        let workloads = (self.workloads.stateful_sets.state().into_iter().filter(|w| selector.selects(&w.metadata)))
            .map(|w| Object::StatefulSet((*w).clone()))
            .chain(
                self.workloads
                    .deployments
                    .state()
                    .into_iter()
                    .filter(|w| selector.selects(&w.metadata))
                    .map(|w| Object::Deployment((*w).clone())),
            );
        let mut found: Vec<WorkloadState> = workloads
            .filter_map(|workload| {
                let drift = self.drift(&workload, &pods, &replica_sets, now)?;
                Some(WorkloadState {
                    namespace: workload.metadata().namespace.clone().unwrap_or_default(),
                    kind: workload.kind(),
                    name: workload.name().to_owned(),
                    component: self.workloads.component_of(workload.metadata()),
                    drift,
                })
            })
            .collect();
        found.sort_by(|a, b| (&a.namespace, a.kind, &a.name).cmp(&(&b.namespace, b.kind, &b.name)));
        found
    }

    /// One workload's drift, by what the digest cache knows of its sources.
    fn drift(&self, workload: &Object, pods: &[&Pod], replica_sets: &[&ReplicaSet], now: i64) -> Option<Drift> {
        let namespace = workload.metadata().namespace.clone().unwrap_or_default();
        let mut used = references(workload.pod_spec()?);
        self.narrow(&mut used, &namespace, workload.metadata());
        let key = |source: &SourceRef| SourceKey { namespace: namespace.clone(), source: source.clone() };
        let digests: BTreeMap<SourceRef, SourceDigest> =
            used.keys().filter_map(|source| Some((source.clone(), self.cache.get(&key(source))?))).collect();
        let checks = source_checks(
            &used,
            &namespace,
            &workload.stamped(),
            |source| digests.get(source),
            |source| self.cache.changed_at(&key(source)),
        );
        judge_workload(workload, pods, replica_sets, &checks, now, self.config.rollout_stuck_after)
    }
}

/// Keeps the drift gauges current on the Lease holder; a replica that does not hold the Lease
/// exports none, so sums over replicas count each workload once.
pub fn spawn_gauges(cluster: Arc<Cluster>, stop: CancellationToken) {
    super::every(GAUGE_REFRESH, stop, move || {
        let metrics = &cluster.metrics;
        if !cluster.leader.is_leader() || !cluster.is_synced() || !cluster.health.is_synced() {
            metrics.workloads_stale_config.clear();
            metrics.pods_on_old_config.clear();
            metrics.rollout_stuck.clear();
            return;
        }
        let drifts = cluster.drifts(crate::policy::facts::unix_now());
        let mut stale: BTreeMap<String, i64> = BTreeMap::new();
        for state in &drifts {
            *stale.entry(state.namespace.clone()).or_default() += i64::from(state.drift.stale.is_some());
        }
        metrics.workloads_stale_config.clear();
        for (namespace, count) in stale {
            metrics.workloads_stale_config.get_or_create(&NamespaceLabels { namespace }).set(count);
        }
        metrics.pods_on_old_config.clear();
        metrics.rollout_stuck.clear();
        for state in drifts {
            let labels = WorkloadLabels { namespace: state.namespace.clone(), workload: workload_label(&state) };
            metrics.pods_on_old_config.get_or_create(&labels).set(state.drift.pods_on_old_config as i64);
            let stuck = matches!(state.drift.rollout, Rollout::Stuck { .. });
            metrics.rollout_stuck.get_or_create(&labels).set(i64::from(stuck));
        }
    });
}

/// A workload as the metrics name it: `statefulset/dx-core`, as kubectl does.
fn workload_label(state: &WorkloadState) -> String {
    let kind = match state.kind {
        ResourceKind::StatefulSet => "statefulset",
        ResourceKind::Deployment => "deployment",
        ResourceKind::ConfigMap => "configmap",
        ResourceKind::Secret => "secret",
    };
    format!("{kind}/{}", state.name)
}
