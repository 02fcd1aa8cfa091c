//! The workload index: every StatefulSet and Deployment whose pods roll on config changes, the
//! sources each uses, and the checksum annotations its template carries now.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Change;
use super::cache::SourceKey;
use crate::checksum::patch::is_checksum_key;
use crate::checksum::{SourceRef, Usage, references};
use crate::metrics::Metrics;
use crate::policy::PodTemplate;
use crate::policy::settings::Selector;

/// On a workload: `"true"` opts any workload in to checksums and rollouts, `"false"` opts a DX
/// workload out.
pub const AUTO_ROLLOUT: &str = "dx.hcl.com/auto-rollout";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    StatefulSet,
    Deployment,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StatefulSet => "StatefulSet",
            Self::Deployment => "Deployment",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What the index keeps of a workload.
#[derive(Clone, Debug)]
pub struct IndexedWorkload {
    pub references: BTreeMap<SourceRef, Usage>,
    /// The checksum annotations its pod template carries now.
    pub stamped: BTreeMap<String, String>,
}

/// Whether a workload's pods should roll on config changes.
pub fn wants_rollout(metadata: &ObjectMeta, selector: &Selector) -> bool {
    let annotation = metadata.annotations.as_ref().and_then(|a| a.get(AUTO_ROLLOUT)).map(String::as_str);
    match annotation {
        Some("true") => true,
        Some("false") => false,
        _ => selector.selects(metadata),
    }
}

#[derive(Default)]
struct Index {
    workloads: HashMap<WorkloadKey, IndexedWorkload>,
    by_source: HashMap<SourceKey, BTreeSet<WorkloadKey>>,
}

impl Index {
    fn remove(&mut self, key: &WorkloadKey) {
        if let Some(old) = self.workloads.remove(key) {
            for source in old.references.keys() {
                let source_key = SourceKey { namespace: key.namespace.clone(), source: source.clone() };
                if let Some(users) = self.by_source.get_mut(&source_key) {
                    users.remove(key);
                    if users.is_empty() {
                        self.by_source.remove(&source_key);
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: WorkloadKey, workload: IndexedWorkload) {
        self.remove(&key);
        for source in workload.references.keys() {
            let source_key = SourceKey { namespace: key.namespace.clone(), source: source.clone() };
            self.by_source.entry(source_key).or_default().insert(key.clone());
        }
        self.workloads.insert(key, workload);
    }
}

pub struct WorkloadIndex {
    inner: RwLock<Index>,
    synced: AtomicUsize,
    selector: Selector,
    metrics: Arc<Metrics>,
    changes: UnboundedSender<Change>,
}

impl WorkloadIndex {
    pub fn start(
        client: Client,
        selector: Selector,
        changes: UnboundedSender<Change>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let inner = RwLock::default();
        let index = Arc::new(Self { inner, synced: AtomicUsize::new(0), selector, metrics, changes });
        let watch = Arc::clone(&index);
        let (api, halt) = (Api::<StatefulSet>::all(client.clone()), stop.clone());
        tokio::spawn(async move { watch.watch(api, WorkloadKind::StatefulSet, halt).await });
        let watch = Arc::clone(&index);
        let api = Api::<Deployment>::all(client);
        tokio::spawn(async move { watch.watch(api, WorkloadKind::Deployment, stop).await });
        index
    }

    async fn watch<K: Workload>(&self, api: Api<K>, kind: WorkloadKind, stop: CancellationToken) {
        let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut listing: Option<BTreeSet<WorkloadKey>> = None;
        let mut counted = false;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = stream.next() => match event { Some(event) => event, None => return },
            };
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    warn!(%error, kind = kind.as_str(), "watch failed; retrying");
                    self.metrics.count_watch_error(kind.as_str());
                    continue;
                }
            };
            match event {
                Event::Init => listing = Some(BTreeSet::new()),
                Event::InitApply(object) | Event::Apply(object) => {
                    let key = WorkloadKey {
                        kind,
                        namespace: object.meta().namespace.clone().unwrap_or_default(),
                        name: object.meta().name.clone().unwrap_or_default(),
                    };
                    if let Some(seen) = listing.as_mut() {
                        seen.insert(key.clone());
                    }
                    self.apply(key, &object, counted);
                }
                Event::Delete(object) => {
                    let key = WorkloadKey {
                        kind,
                        namespace: object.meta().namespace.clone().unwrap_or_default(),
                        name: object.meta().name.clone().unwrap_or_default(),
                    };
                    if let Ok(mut inner) = self.inner.write() {
                        inner.remove(&key);
                    }
                }
                Event::InitDone => {
                    if let (Some(seen), Ok(mut inner)) = (listing.take(), self.inner.write()) {
                        let gone: Vec<WorkloadKey> =
                            inner.workloads.keys().filter(|k| k.kind == kind && !seen.contains(*k)).cloned().collect();
                        for key in gone {
                            inner.remove(&key);
                        }
                    }
                    if !counted {
                        counted = true;
                        self.synced.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// Indexes a workload. After the first listing (`listed`), a workload that is new or uses
    /// other sources than before is sent to the controller: the webhook may have admitted it
    /// while a source could not be read, and the cache may hold that source by now.
    fn apply<K: Workload>(&self, key: WorkloadKey, object: &K, listed: bool) {
        let Ok(mut inner) = self.inner.write() else { return };
        let (Some(spec), true) = (object.pod_spec(), wants_rollout(object.meta(), &self.selector)) else {
            inner.remove(&key);
            return;
        };
        let stamped = object
            .template_metadata()
            .and_then(|m| m.annotations.as_ref())
            .map(|a| a.iter().filter(|(k, _)| is_checksum_key(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let references = references(spec);
        let changed = inner.workloads.get(&key).is_none_or(|known| known.references != references);
        if listed && changed {
            let _ = self.changes.send(Change::Workload(key.clone()));
        }
        inner.insert(key, IndexedWorkload { references, stamped });
    }

    pub fn is_synced(&self) -> bool {
        // Both watches (StatefulSets, Deployments) have listed once.
        self.synced.load(Ordering::SeqCst) >= 2
    }

    /// Workloads that use a source.
    pub fn users(&self, source: &SourceKey) -> Vec<(WorkloadKey, IndexedWorkload)> {
        let Ok(inner) = self.inner.read() else { return Vec::new() };
        inner
            .by_source
            .get(source)
            .into_iter()
            .flatten()
            .filter_map(|key| Some((key.clone(), inner.workloads.get(key)?.clone())))
            .collect()
    }

    /// One workload, if indexed.
    pub fn get(&self, key: &WorkloadKey) -> Option<IndexedWorkload> {
        self.inner.read().ok()?.workloads.get(key).cloned()
    }

    /// Workloads that cannot start without a source (non-optional references).
    pub fn required_by(&self, source: &SourceKey) -> Vec<WorkloadKey> {
        self.users(source)
            .into_iter()
            .filter(|(_, w)| w.references.get(&source.source).is_some_and(|u| u.required))
            .map(|(k, _)| k)
            .collect()
    }

    /// Every indexed workload that carries checksum annotations already.
    pub fn stamped(&self) -> Vec<(WorkloadKey, IndexedWorkload)> {
        let Ok(inner) = self.inner.read() else { return Vec::new() };
        inner.workloads.iter().filter(|(_, w)| !w.stamped.is_empty()).map(|(k, w)| (k.clone(), w.clone())).collect()
    }
}

/// StatefulSets and Deployments, as the index reads them.
pub trait Workload:
    kube::Resource<DynamicType = ()>
    + PodTemplate
    + Clone
    + fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl Workload for StatefulSet {}
impl Workload for Deployment {}
