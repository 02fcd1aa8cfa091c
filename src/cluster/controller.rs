//! The rollout controller, on kube-runtime's `Controller`: one per workload kind, each fed by the
//! reflector watch of its kind, by the digest cache's source changes (mapped to the workloads that
//! use the source), and by this replica becoming the Lease holder (everything once).
//!
//! Reconciling a workload makes its pod template carry the checksums of what its sources hold
//! now; it patches only when they differ, so a `helm upgrade` stamped by the webhook, a restart
//! and a new leader patch nothing. A failed patch is an error: the controller requeues the
//! workload with a backoff (1 s doubling to 60 s) until it carries the desired checksums or is
//! gone — a change is never forgotten. Requests for one workload are merged (the runtime's
//! scheduler keeps one per object), so its queue is bounded by the number of workloads, and
//! `--rollout-debounce` merges a burst of changes into one rollout.
//!
//! A workload that carries no checksum at all (created before dx-admission, or while it was down)
//! is stamped only on a change of its own or of a source it uses, never by a restart or a new
//! leader: installing dx-admission does not roll every DX pod at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Cluster;
use super::cache::SourceKey;
use super::listed;
use super::workloads::{Workload, WorkloadKey, WorkloadKind, slim};
use crate::checksum::patch::stamp_references;
use crate::checksum::{Narrowing, SourceKind};
use crate::lookup::Lookup;
use crate::metrics::{ChangeLabels, Metrics};
use crate::policy::settings::Selector;
use crate::policy::update::Category;

/// The field manager of the controller's patches.
pub const FIELD_MANAGER: &str = "dx-admission-rollout";

/// Source changes waiting to be mapped to workloads; the cache's watch waits when it is full.
pub const SOURCE_QUEUE: usize = 1024;
/// Workload triggers waiting for a controller; the mapping waits when it is full.
const TRIGGER_QUEUE: usize = 1024;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Why a reconcile failed; the error policy requeues the workload.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("could not re-stamp the pod template: {0}")]
    Patch(#[source] kube::Error),
}

/// Workloads without checksums that a change of their own or of a source asks to stamp.
pub type Pending = Arc<Mutex<HashSet<WorkloadKey>>>;

/// What every reconcile shares.
struct Rollout {
    client: Client,
    cluster: Arc<Cluster>,
    pending: Pending,
    /// Consecutive failures per workload, for the backoff.
    failures: Mutex<HashMap<WorkloadKey, u32>>,
    /// The earliest time of the next patch (`--rollout-max-patches-per-second`).
    next_patch: tokio::sync::Mutex<Instant>,
    pause: Duration,
}

impl Rollout {
    fn is_pending(&self, key: &WorkloadKey) -> bool {
        self.pending.lock().is_ok_and(|pending| pending.contains(key))
    }

    /// The workload carries what it should: nothing to retry, nothing pending.
    fn settled(&self, key: &WorkloadKey) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(key);
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    async fn wait_for_patch_slot(&self) {
        let mut next = self.next_patch.lock().await;
        tokio::time::sleep_until(*next).await;
        *next = Instant::now() + self.pause;
    }
}

/// A watch of one workload kind and the store it fills.
pub struct Watch<K: Workload> {
    pub store: Store<K>,
    stream: std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>,
}

/// Sets up the reflector watch of a kind; it runs once the controller runs. After the first
/// listing, a workload that is new or uses other sources than before goes into `pending`: the
/// webhook may have admitted it while a source could not be read, so it is stamped even if it
/// carries no checksum yet.
pub fn watch<K: Workload>(client: &Client, selector: &Selector, metrics: &Arc<Metrics>, pending: &Pending) -> Watch<K> {
    let (store, writer) = reflector::store::<K>();
    let (before, selector, metrics, pending) =
        (store.clone(), selector.clone(), Arc::clone(metrics), Arc::clone(pending));
    let stream = watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .inspect(move |event| match event {
            Err(error) => {
                warn!(%error, kind = K::KIND.as_str(), "watch failed; retrying");
                metrics.count_watch_error(K::KIND.as_str());
            }
            // Compared with the store before the event reaches it.
            Ok(Event::Apply(workload) | Event::InitApply(workload)) if listed(&before) => {
                let references = workload.rollout_references(&selector);
                let known = before.get(&ObjectRef::from_obj(workload)).map(|k| k.rollout_references(&selector));
                if references.is_some()
                    && known.as_ref() != Some(&references)
                    && let Ok(mut pending) = pending.lock()
                {
                    pending.insert(WorkloadKey::of(workload));
                }
            }
            Ok(Event::Delete(workload)) => {
                if let Ok(mut pending) = pending.lock() {
                    pending.remove(&WorkloadKey::of(workload));
                }
            }
            Ok(_) => {}
        })
        .reflect(writer)
        .applied_objects()
        .boxed();
    Watch { store, stream }
}

/// Runs both controllers and the mapping of source changes to workloads until `stop`.
pub fn run(
    client: Client,
    cluster: Arc<Cluster>,
    watches: (Watch<StatefulSet>, Watch<Deployment>),
    pending: Pending,
    sources: mpsc::Receiver<SourceKey>,
    stop: CancellationToken,
) {
    let pause = Duration::from_secs(1) / cluster.config.max_patches_per_second.max(1);
    let rollout = Arc::new(Rollout {
        client,
        cluster,
        pending,
        failures: Mutex::default(),
        next_patch: tokio::sync::Mutex::new(Instant::now()),
        pause,
    });
    let (stateful_sets, deployments) = (mpsc::channel(TRIGGER_QUEUE), mpsc::channel(TRIGGER_QUEUE));
    tokio::spawn(map_sources(Arc::clone(&rollout), sources, stateful_sets.0, deployments.0, stop.clone()));
    spawn_controller(watches.0, stateful_sets.1, Arc::clone(&rollout), stop.clone());
    spawn_controller(watches.1, deployments.1, rollout, stop);
}

fn spawn_controller<K: Workload>(
    watch: Watch<K>,
    triggers: mpsc::Receiver<ObjectRef<K>>,
    rollout: Arc<Rollout>,
    stop: CancellationToken,
) {
    let config = ControllerConfig::default().debounce(rollout.cluster.config.debounce).concurrency(1);
    let controller = Controller::for_stream(watch.stream, watch.store)
        .with_config(config)
        .reconcile_on(receiver_stream(triggers))
        .reconcile_all_on(leadership_gained(rollout.cluster.leader.subscribe()))
        .graceful_shutdown_on(stop.cancelled_owned());
    tokio::spawn(controller.run(reconcile::<K>, error_policy::<K>, rollout).for_each(|result| async move {
        // Failed patches are logged where they fail; a workload deleted meanwhile is expected.
        if let Err(error) = result {
            debug!(%error, kind = K::KIND.as_str(), "reconcile ended without success");
        }
    }));
}

/// Every source change becomes a trigger for each workload that uses the source.
async fn map_sources(
    rollout: Arc<Rollout>,
    mut sources: mpsc::Receiver<SourceKey>,
    stateful_sets: mpsc::Sender<ObjectRef<StatefulSet>>,
    deployments: mpsc::Sender<ObjectRef<Deployment>>,
    stop: CancellationToken,
) {
    loop {
        let source = tokio::select! {
            () = stop.cancelled() => return,
            source = sources.recv() => match source { Some(source) => source, None => return },
        };
        count_secret_change(&rollout.cluster, &source);
        for (key, _) in rollout.cluster.workloads.users(&source) {
            if let Ok(mut pending) = rollout.pending.lock() {
                pending.insert(key.clone());
            }
            let sent = match key.kind {
                WorkloadKind::StatefulSet => stateful_sets.send(object_ref(&key)).await.is_ok(),
                WorkloadKind::Deployment => deployments.send(object_ref(&key)).await.is_ok(),
            };
            if !sent {
                return;
            }
        }
    }
}

/// A Secret DX workloads use is a configuration change (C) of their components. No webhook sees
/// Secret updates, so the Lease holder counts them as its watch sees them (one replica, so the
/// sum over replicas counts each change once); ConfigMaps are counted where they are admitted.
fn count_secret_change(cluster: &Cluster, source: &SourceKey) {
    if source.source.kind != SourceKind::Secret || !cluster.leader.is_leader() {
        return;
    }
    let components = cluster.workloads.components_using(source);
    if components.is_empty() {
        return;
    }
    for component in &components {
        let labels = ChangeLabels { component: component.as_str(), category: Category::Configuration.letter() };
        cluster.metrics.changes.get_or_create(&labels).inc();
    }
    let names: Vec<&str> = components.iter().map(|c| c.as_str()).collect();
    info!(namespace = %source.namespace, source = %source.source, components = %names.join(","), categories = "C", "a Secret DX workloads use changed");
}

fn object_ref<K: Workload>(key: &WorkloadKey) -> ObjectRef<K> {
    ObjectRef::new(&key.name).within(&key.namespace)
}

async fn reconcile<K: Workload>(workload: Arc<K>, rollout: Arc<Rollout>) -> Result<Action, RolloutError> {
    let cluster = &rollout.cluster;
    if !cluster.leader.is_leader() {
        return Ok(Action::await_change());
    }
    if !cluster.is_synced() {
        // A source the cache has not listed yet would read as deleted and unstamp (roll) pods.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let key = WorkloadKey::of(workload.as_ref());
    let Some(mut references) = workload.rollout_references(&cluster.workloads.selector) else {
        rollout.settled(&key);
        return Ok(Action::await_change());
    };
    let stamped = workload.stamped();
    if stamped.is_empty() && !rollout.is_pending(&key) {
        return Ok(Action::await_change());
    }
    let digests: BTreeMap<_, _> = references
        .keys()
        .filter_map(|source| {
            let cached = cluster.cache.get(&SourceKey { namespace: key.namespace.clone(), source: source.clone() });
            Some((source.clone(), cached?))
        })
        .collect();
    cluster.narrow(&mut references, &key.namespace, workload.meta());
    // A whole-source checksum the template carries stays while current: no schema change rolls pods.
    let desired =
        stamp_references(&references, &key.namespace, Some(&stamped), Narrowing::KeepCurrentWhole, |source| {
            digests.get(source).map_or(Lookup::Absent, Lookup::Found)
        })
        .annotations;
    if desired == stamped {
        rollout.settled(&key);
        return Ok(Action::await_change());
    }
    // A merge patch: set every desired key, delete stale ones (null).
    let mut annotations: serde_json::Map<String, Value> = desired.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    for stale in stamped.keys().filter(|k| !desired.contains_key(*k)) {
        annotations.insert(stale.clone(), Value::Null);
    }
    let patch = Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": annotations}}}}));
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    rollout.wait_for_patch_slot().await;
    let result = Api::<K>::namespaced(rollout.client.clone(), &key.namespace).patch(&key.name, &params, &patch).await;
    Metrics::count_result(&cluster.metrics.rollouts, result.is_ok());
    match result {
        Ok(_) => {
            info!(workload = %key, "config changed: pod template re-stamped, pods will roll");
            rollout.settled(&key);
            Ok(Action::await_change())
        }
        Err(error) => {
            warn!(workload = %key, %error, "could not re-stamp the pod template; retrying with backoff");
            Err(RolloutError::Patch(error))
        }
    }
}

/// A failed reconcile comes back after a backoff that doubles with each consecutive failure.
fn error_policy<K: Workload>(workload: Arc<K>, _: &RolloutError, rollout: Arc<Rollout>) -> Action {
    let key = WorkloadKey::of(workload.as_ref());
    let failures = rollout.failures.lock().map_or(1, |mut failures| {
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    });
    Action::requeue(backoff(failures))
}

/// The wait after the `failures`-th consecutive failure: 1 s, 2 s, 4 s, ... at most 60 s.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

/// One `()` each time this replica becomes the Lease holder: a new leader looks at everything.
fn leadership_gained(leadership: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    stream::unfold(leadership, |mut leadership| async move {
        loop {
            leadership.changed().await.ok()?;
            if *leadership.borrow_and_update() {
                return Some(((), leadership));
            }
        }
    })
}

fn receiver_stream<T: Send + 'static>(receiver: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static {
    stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_one_second_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
    }
}
