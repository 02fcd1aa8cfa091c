//! The cluster side of config checksums: a kube client, the digest cache of ConfigMaps and
//! Secrets, the index of workloads that use them, the rollout controller (one replica acts,
//! chosen by a Lease), and the lookups the mutating path and the delete guard need.

pub mod backups;
mod cache;
pub mod certs;
mod controller;
mod facts;
mod lease;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use tokio_util::sync::CancellationToken;

pub use cache::{ConfigCache, SourceKey};
pub use lease::LeaderElection;
pub use workloads::{AUTO_ROLLOUT, WorkloadKey, WorkloadKind, Workloads, wants_rollout};

use crate::checksum::{SourceRef, Usage};
use crate::metrics::Metrics;
use crate::policy::settings::Selector;
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
}

/// Why the cluster side did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("cannot configure a Kubernetes client (in-cluster or $KUBECONFIG): {0}")]
    Infer(String),
}

/// Everything the server uses of the cluster.
pub struct Cluster {
    pub cache: Arc<ConfigCache>,
    /// Completed backup Jobs and VolumeSnapshots, for the backup gate.
    pub backups: backups::Backups,
    /// The schema set in service, for key-level checksums (`dxConsumers`).
    pub schemas: Arc<SchemaStore>,
    pub workloads: Workloads,
    pub leader: Arc<LeaderElection>,
    pub config: ClusterConfig,
    pub metrics: Arc<Metrics>,
}

impl Cluster {
    /// Connects and starts the watches, the Lease and the controller.
    pub async fn start(
        config: ClusterConfig,
        selector: Selector,
        schemas: Arc<SchemaStore>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = client(&config).await?;
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
        let cluster = Arc::new(Self { cache, backups, schemas, workloads, leader, config, metrics });
        backups::spawn_gauge(Arc::clone(&cluster), stop.clone());
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

async fn client(config: &ClusterConfig) -> Result<Client, ClusterError> {
    connect(config.kubeconfig.as_deref()).await
}

/// A client from a kubeconfig file, else inferred (in-cluster service account, else $KUBECONFIG).
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client, ClusterError> {
    let kube_config = match kubeconfig {
        Some(path) => {
            let error = |message: String| ClusterError::Kubeconfig { path: path.to_owned(), message };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| error(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| ClusterError::Infer(e.to_string()))?,
    };
    Client::try_from(kube_config).map_err(|e| ClusterError::Infer(e.to_string()))
}
