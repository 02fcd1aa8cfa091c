//! The digest cache: a watch of every ConfigMap and Secret, kept as per-key digests (never the
//! data). Changes after the first listing are sent to the rollout controller, which the watch
//! waits for when its queue is full: a change is delayed, never dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use ring::hmac;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::checksum::{SourceDigest, SourceKind, SourceRef};
use crate::lookup::Lookup;
use crate::metrics::{Metrics, ResultLabels};
use crate::policy::schema::SourceSchema;
use crate::policy::settings::Selector;
use crate::report::drift::last_written;

/// A source in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub namespace: String,
    pub source: SourceRef,
}

/// The digests by namespace (stored once, not per entry), then source.
type Entries = HashMap<String, HashMap<SourceRef, Cached>>;

struct Cached {
    digest: SourceDigest,
    /// For DX ConfigMaps: what decides their schema (key-level checksums read it).
    schema: Option<SourceSchema>,
    /// The listing that last saw the source, to drop what a re-listing no longer has.
    listing: u32,
    /// When its content last changed (Unix seconds): its last write when first seen, then the
    /// write at which its digest changed. Stale-config reports read it.
    changed_at: Option<i64>,
}

pub struct ConfigCache {
    entries: RwLock<Entries>,
    config_maps_synced: AtomicBool,
    secrets_synced: AtomicBool,
    client: Client,
    key: hmac::Key,
    selector: Selector,
    metrics: Arc<Metrics>,
}

/// Listing pages of 100: each page is parsed whole before it is digested, and with 500 the
/// transient pages, not the digests, set the peak memory of a 50,000-ConfigMap cluster.
const PAGE_SIZE: u32 = 100;

/// Helm keeps releases in Secrets of this type; they are large and no pod reads them.
const HELM_RELEASES: &str = "type!=helm.sh/release.v1";

impl ConfigCache {
    pub fn start(
        client: Client,
        key: &[u8],
        selector: Selector,
        changes: Sender<SourceKey>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let cache = Arc::new(Self {
            entries: RwLock::new(HashMap::new()),
            config_maps_synced: AtomicBool::new(false),
            secrets_synced: AtomicBool::new(false),
            client: client.clone(),
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            selector,
            metrics,
        });
        let watch = Arc::clone(&cache);
        let (tx, stop_maps) = (changes.clone(), stop.clone());
        tokio::spawn(async move {
            watch
                .watch::<ConfigMap>(
                    Api::all(client.clone()),
                    watcher::Config::default().page_size(PAGE_SIZE),
                    SourceKind::ConfigMap,
                    tx,
                    stop_maps,
                )
                .await;
        });
        let watch = Arc::clone(&cache);
        let secrets = Api::<Secret>::all(cache.client.clone());
        tokio::spawn(async move {
            watch
                .watch::<Secret>(
                    secrets,
                    watcher::Config::default().fields(HELM_RELEASES).page_size(PAGE_SIZE),
                    SourceKind::Secret,
                    changes,
                    stop,
                )
                .await;
        });
        cache
    }

    fn digest_of<K: Digestible>(&self, object: &K) -> SourceDigest {
        object.digest(&self.key)
    }

    async fn watch<K: Digestible>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        kind: SourceKind,
        changes: Sender<SourceKey>,
        stop: CancellationToken,
    ) {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        // Each (re)listing stamps what it sees; at its end, sources of this kind it did not see
        // were deleted while the watch was down.
        let mut listing = 0u32;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = stream.next() => match event {
                    Some(event) => event,
                    None => return,
                },
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
                Event::Init => listing = listing.wrapping_add(1),
                Event::InitApply(object) | Event::Apply(object) => {
                    let key = key_of(&object, kind);
                    let digest = self.digest_of(&object);
                    let schema = object.source_schema(&self.selector);
                    let written = last_written(object.meta());
                    let previous = self.insert(&key, digest.clone(), schema, written, listing, true);
                    // A source first seen after the first listing is a change too: it was created,
                    // or came back in a re-listing after the API server was unreachable, and
                    // workloads admitted meanwhile may lack its checksum.
                    let changed = match previous {
                        Some(previous) => previous != digest,
                        None => self.is_kind_synced(kind),
                    };
                    if changed {
                        debug!(namespace = %key.namespace, source = %key.source, "source changed");
                        let _ = changes.send(key).await;
                    }
                }
                Event::Delete(object) => {
                    let key = key_of(&object, kind);
                    if let Ok(mut entries) = self.entries.write()
                        && let Some(sources) = entries.get_mut(&key.namespace)
                    {
                        sources.remove(&key.source);
                        if sources.is_empty() {
                            entries.remove(&key.namespace);
                        }
                    }
                    let _ = changes.send(key).await;
                }
                Event::InitDone => {
                    // Deleted while the watch was down: workloads may still carry their checksums.
                    let mut gone = Vec::new();
                    if let Ok(mut entries) = self.entries.write() {
                        for (namespace, sources) in entries.iter_mut() {
                            sources.retain(|source, cached| {
                                let keep = source.kind != kind || cached.listing == listing;
                                if !keep {
                                    gone.push(SourceKey { namespace: namespace.clone(), source: source.clone() });
                                }
                                keep
                            });
                        }
                        entries.retain(|_, sources| !sources.is_empty());
                    }
                    for key in gone {
                        let _ = changes.send(key).await;
                    }
                    match kind {
                        SourceKind::ConfigMap => self.config_maps_synced.store(true, Ordering::SeqCst),
                        SourceKind::Secret => self.secrets_synced.store(true, Ordering::SeqCst),
                    }
                }
            }
            if let Ok(entries) = self.entries.read() {
                self.metrics.config_cache_entries.set(entries.values().map(HashMap::len).sum::<usize>() as i64);
            }
        }
    }

    pub fn is_synced(&self) -> bool {
        self.is_kind_synced(SourceKind::ConfigMap) && self.is_kind_synced(SourceKind::Secret)
    }

    fn is_kind_synced(&self, kind: SourceKind) -> bool {
        match kind {
            SourceKind::ConfigMap => self.config_maps_synced.load(Ordering::SeqCst),
            SourceKind::Secret => self.secrets_synced.load(Ordering::SeqCst),
        }
    }

    /// Caches a digest (unless one is cached and `replace` is false); the one it replaces.
    fn insert(
        &self,
        key: &SourceKey,
        digest: SourceDigest,
        schema: Option<SourceSchema>,
        written: Option<i64>,
        listing: u32,
        replace: bool,
    ) -> Option<SourceDigest> {
        let mut entries = self.entries.write().ok()?;
        let sources = match entries.get_mut(&key.namespace) {
            Some(sources) => sources,
            None => entries.entry(key.namespace.clone()).or_default(),
        };
        if !replace && sources.contains_key(&key.source) {
            return None;
        }
        // An unchanged content keeps the time it last changed; other writes (labels) do not count.
        let changed_at = match sources.get(&key.source) {
            Some(cached) if cached.digest == digest => cached.changed_at,
            _ => written,
        };
        let mut source = key.source.clone();
        source.name.shrink_to_fit();
        sources.insert(source, Cached { digest, schema, listing, changed_at }).map(|previous| previous.digest)
    }

    /// The cached digest, if any.
    pub fn get(&self, key: &SourceKey) -> Option<SourceDigest> {
        Some(self.entries.read().ok()?.get(&key.namespace)?.get(&key.source)?.digest.clone())
    }

    /// When a cached source's content last changed (Unix seconds), when known.
    pub fn changed_at(&self, key: &SourceKey) -> Option<i64> {
        self.entries.read().ok()?.get(&key.namespace)?.get(&key.source)?.changed_at
    }

    /// What decides the schema of a cached DX ConfigMap; `None` for other sources.
    pub fn schema_of(&self, key: &SourceKey) -> Option<SourceSchema> {
        self.entries.read().ok()?.get(&key.namespace)?.get(&key.source)?.schema.clone()
    }

    /// The digest from the cache, else from one direct read (a source created just before the
    /// workload may not have reached the watch yet), which may take at most `timeout`.
    pub async fn get_or_fetch(&self, key: &SourceKey, timeout: Duration) -> Lookup<SourceDigest> {
        if let Some(digest) = self.get(key) {
            return Lookup::Found(digest);
        }
        let name = key.source.name.as_str();
        let read = match key.source.kind {
            SourceKind::ConfigMap => {
                let api = Api::<ConfigMap>::namespaced(self.client.clone(), &key.namespace);
                read(&api, name, timeout).await.map(|found| {
                    found.map(|o| (self.digest_of(&o), o.source_schema(&self.selector), last_written(&o.metadata)))
                })
            }
            SourceKind::Secret => {
                let api = Api::<Secret>::namespaced(self.client.clone(), &key.namespace);
                read(&api, name, timeout)
                    .await
                    .map(|found| found.map(|o| (self.digest_of(&o), None, last_written(&o.metadata))))
            }
        };
        let fetched = match read {
            Ok(Some((digest, schema, written))) => {
                // Unless the watch got there first; a listing running now re-stamps it if it still exists.
                self.insert(key, digest.clone(), schema, written, 0, false);
                Lookup::Found(digest)
            }
            Ok(None) => Lookup::Absent,
            Err(reason) => {
                // Why is logged here; callers only learn that it may or may not exist.
                let (namespace, source) = (&key.namespace, &key.source);
                warn!(%namespace, %source, %reason, "could not read a source missing from the cache");
                Lookup::Unreadable
            }
        };
        self.metrics.config_reads.get_or_create(&ResultLabels { result: fetched.result_label() }).inc();
        fetched
    }
}

/// One GET of a named object, bounded by `timeout`.
async fn read<K: Digestible>(api: &Api<K>, name: &str, timeout: Duration) -> Result<Option<K>, String> {
    match tokio::time::timeout(timeout, api.get_opt(name)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn key_of<K: ResourceExt>(object: &K, kind: SourceKind) -> SourceKey {
    SourceKey { namespace: object.namespace().unwrap_or_default(), source: SourceRef { kind, name: object.name_any() } }
}

/// The kinds the cache digests.
pub trait Digestible:
    kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
    fn digest(&self, key: &hmac::Key) -> SourceDigest;

    /// For a DX ConfigMap, what decides its schema.
    fn source_schema(&self, selector: &Selector) -> Option<SourceSchema>;
}

impl Digestible for ConfigMap {
    fn digest(&self, _: &hmac::Key) -> SourceDigest {
        SourceDigest::of_config_map(self)
    }

    fn source_schema(&self, selector: &Selector) -> Option<SourceSchema> {
        SourceSchema::of(&self.metadata, selector)
    }
}

impl Digestible for Secret {
    fn digest(&self, key: &hmac::Key) -> SourceDigest {
        SourceDigest::of_secret(self, key)
    }

    fn source_schema(&self, _: &Selector) -> Option<SourceSchema> {
        None
    }
}

impl std::fmt::Debug for ConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCache").field("synced", &self.is_synced()).finish()
    }
}
