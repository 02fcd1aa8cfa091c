//! The cluster side: the digest cache of ConfigMaps and Secrets, the index of workloads that use
//! them, the rollout controller (one replica acts, chosen by a Lease), the lookups the mutating
//! path, the delete guard and the backup gate need, and the Lease holder's reports of the
//! deployment's state (PolicyReports, drift gauges).

pub mod backups;
mod cache;
pub mod certs;
mod controller;
mod facts;
mod health;
mod lease;
mod reports;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use cache::{ConfigCache, SourceKey};
pub use lease::LeaderElection;
pub use workloads::{AUTO_ROLLOUT, WorkloadKey, WorkloadKind, Workloads, wants_rollout};

use crate::checksum::{SourceRef, Usage};
use crate::client::{ConnectError, connect};
use crate::metrics::Metrics;
use crate::policy::Settings;
use crate::server::SchemaStore;

/// How the cluster side is configured.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// A kubeconfig file; `None` infers (in-cluster service account, else `$KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// The HMAC key for Secret digests, shared by all replicas.
    pub checksum_key: Vec<u8>,
    /// Changes arriving within this window roll each workload once.
    pub debounce: Duration,
    /// At most this many workload patches per second.
    pub max_patches_per_second: u32,
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease.
    pub identity: String,
    /// Time a direct read of a source missing from the cache may take.
    pub fetch_timeout: Duration,
    /// How often the Lease holder judges every existing DX object again (PolicyReports).
    pub report_interval: Duration,
    /// An updated pod not Ready for longer than this makes its rollout stuck.
    pub rollout_stuck_after: Duration,
}

/// Everything the server uses of the cluster.
pub struct Cluster {
    pub cache: Arc<ConfigCache>,
    /// Completed backup Jobs and VolumeSnapshots, for the backup gate.
    pub backups: backups::Backups,
    /// The schema set in service, for key-level checksums (`dxConsumers`).
    pub schemas: Arc<SchemaStore>,
    pub workloads: Workloads,
    /// DX ConfigMaps, pods and ReplicaSets, for the deployment's state reports.
    pub health: health::Health,
    /// The policy settings, for the background evaluation.
    pub settings: Settings,
    pub leader: Arc<LeaderElection>,
    pub config: ClusterConfig,
    pub metrics: Arc<Metrics>,
}

impl Cluster {
    /// Connects and starts the watches, the Lease and the controller.
    pub async fn start(
        config: ClusterConfig,
        settings: Settings,
        schemas: Arc<SchemaStore>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, ConnectError> {
        let client = client(&config).await?;
        let selector = settings.selector.clone();
        let pending = controller::Pending::default();
        let watches = (
            controller::watch(&client, &selector, &metrics, &pending),
            controller::watch(&client, &selector, &metrics, &pending),
        );
        let workloads =
            Workloads { stateful_sets: watches.0.store.clone(), deployments: watches.1.store.clone(), selector };
        let (sources, changed) = tokio::sync::mpsc::channel(controller::SOURCE_QUEUE);
        let cache = ConfigCache::start(
            client.clone(),
            &config.checksum_key,
            workloads.selector.clone(),
            sources,
            Arc::clone(&metrics),
            stop.clone(),
        );
        let leader = LeaderElection::start(client.clone(), &config, Arc::clone(&metrics), stop.clone());
        let backups = backups::Backups::start(client.clone(), Arc::clone(&metrics), stop.clone()).await;
        let health = health::Health::start(&client, &workloads.selector, &metrics, &stop);
        let cluster = Arc::new(Self { cache, backups, schemas, workloads, health, settings, leader, config, metrics });
        backups::spawn_gauge(Arc::clone(&cluster), stop.clone());
        health::spawn_gauges(Arc::clone(&cluster), stop.clone());
        reports::spawn(Arc::clone(&cluster), client.clone(), stop.clone());
        controller::run(client, Arc::clone(&cluster), watches, pending, changed, stop);
        Ok(cluster)
    }

    /// Narrows a workload's whole-ConfigMap uses to the keys its component uses, by the schemas
    /// in service and what the cache knows of each DX ConfigMap ([`crate::checksum::narrow`]).
    pub fn narrow(&self, references: &mut BTreeMap<SourceRef, Usage>, namespace: &str, workload: &ObjectMeta) {
        let Some(component) = self.workloads.component_of(workload) else { return };
        let schemas = self.schemas.current();
        crate::checksum::narrow(references, |source| {
            let key = SourceKey { namespace: namespace.to_owned(), source: source.clone() };
            self.cache.schema_of(&key).map(|s| schemas.keys_only_for_others(&s, component)).unwrap_or_default()
        });
    }

    /// Ready once the caches and the workload stores have listed everything once.
    pub fn is_synced(&self) -> bool {
        self.cache.is_synced() && self.workloads.is_synced() && self.backups.is_synced()
    }
}

/// Whether a store has completed its first listing (the library's "ready").
fn listed<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().now_or_never().is_some_and(|ready| ready.is_ok())
}

/// Runs a reflector watch into `writer` until `stop`; failures are logged, counted by `kind` and
/// retried with the library's backoff.
fn spawn_watch<K>(
    stream: impl futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    writer: reflector::store::Writer<K>,
    kind: &'static str,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (metrics, stop) = (Arc::clone(metrics), stop.clone());
    let events = stream
        .default_backoff()
        .inspect(move |event| {
            if let Err(error) = event {
                warn!(%error, kind, "watch failed; retrying");
                metrics.count_watch_error(kind);
            }
        })
        .reflect(writer)
        .for_each(|_| async {});
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = events => {}
        }
    });
}

/// Runs `refresh` every `period` until `stop`: the gauges brought up to date from the stores.
fn every(period: Duration, stop: CancellationToken, mut refresh: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => refresh(),
            }
        }
    });
}

async fn client(config: &ClusterConfig) -> Result<Client, ConnectError> {
    connect(config.kubeconfig.as_deref()).await
}
