//! The workloads whose pods roll on config changes: one kube-runtime reflector store per kind,
//! listed and watched by the library (which also re-lists after an outage), and the lookups the
//! controller, the mutating path and the cluster facts need — which workloads use a source.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::cache::SourceKey;
use super::listed;
use crate::checksum::{SourceRef, Usage, references};
use crate::policy::settings::Selector;
use crate::policy::{Component, PodTemplate};

/// On a workload: `"true"` opts any workload in to checksums and rollouts, `"false"` opts a DX
/// workload out.
pub const AUTO_ROLLOUT: &str = "dx.hcl.com/auto-rollout";

/// Whether a workload's pods should roll on config changes.
pub fn wants_rollout(metadata: &ObjectMeta, selector: &Selector) -> bool {
    let annotation = metadata.annotations.as_ref().and_then(|a| a.get(AUTO_ROLLOUT)).map(String::as_str);
    match annotation {
        Some("true") => true,
        Some("false") => false,
        _ => selector.selects(metadata),
    }
}

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

impl WorkloadKey {
    pub fn of<K: Workload>(workload: &K) -> Self {
        Self { kind: K::KIND, namespace: workload.namespace().unwrap_or_default(), name: workload.name_any() }
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// StatefulSets and Deployments, as the controller and the stores read them.
pub trait Workload:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + PodTemplate
    + Clone
    + fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: WorkloadKind;

    /// The sources its pod template uses, when its pods roll on config changes.
    fn rollout_references(&self, selector: &Selector) -> Option<BTreeMap<SourceRef, Usage>> {
        wants_rollout(self.meta(), selector).then(|| self.pod_spec().map(references)).flatten()
    }
}

impl Workload for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;
}

impl Workload for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;
}

/// The two stores, read-only here; the controller's watches write them.
pub struct Workloads {
    pub stateful_sets: Store<StatefulSet>,
    pub deployments: Store<Deployment>,
    pub selector: Selector,
}

impl Workloads {
    /// Both stores have completed their first listing (the library's "ready").
    pub fn is_synced(&self) -> bool {
        listed(&self.stateful_sets) && listed(&self.deployments)
    }

    /// Workloads of the source's namespace that roll when it changes, with how they use it.
    pub fn users(&self, source: &SourceKey) -> Vec<(WorkloadKey, Usage)> {
        let mut users = self.users_in(&self.stateful_sets, source);
        users.extend(self.users_in(&self.deployments, source));
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users
    }

    fn users_in<K: Workload>(&self, store: &Store<K>, source: &SourceKey) -> Vec<(WorkloadKey, Usage)> {
        store
            .state()
            .iter()
            .filter(|w| w.namespace().as_deref() == Some(source.namespace.as_str()))
            .filter_map(|w| {
                let usage = w.rollout_references(&self.selector)?.remove(&source.source)?;
                Some((WorkloadKey::of(w.as_ref()), usage))
            })
            .collect()
    }

    /// The DX workloads of a component in a namespace, sorted.
    pub fn of_component(&self, namespace: &str, component: Component) -> Vec<WorkloadKey> {
        let selected = |meta: &ObjectMeta| {
            meta.namespace.as_deref() == Some(namespace)
                && self.selector.selects(meta)
                && meta.labels.as_ref().and_then(|l| l.get(&self.selector.component_label)).map(String::as_str)
                    == Some(component.as_str())
        };
        let mut found: Vec<WorkloadKey> = self
            .stateful_sets
            .state()
            .iter()
            .filter(|w| selected(&w.metadata))
            .map(|w| WorkloadKey::of(w.as_ref()))
            .collect();
        found.extend(
            self.deployments.state().iter().filter(|w| selected(&w.metadata)).map(|w| WorkloadKey::of(w.as_ref())),
        );
        found.sort();
        found
    }

    /// The DX component of a workload, by its labels; `None` for workloads that are not DX's.
    pub fn component_of(&self, meta: &ObjectMeta) -> Option<Component> {
        let label = &self.selector.component_label;
        self.selector
            .selects(meta)
            .then(|| meta.labels.as_ref()?.get(label).and_then(|c| Component::parse(c)))
            .flatten()
    }

    /// The DX components whose workloads use the source (DX workloads only, by their labels).
    pub fn components_using(&self, source: &SourceKey) -> BTreeSet<Component> {
        let component = |meta: &ObjectMeta| self.component_of(meta);
        let mut found = BTreeSet::new();
        for (key, _) in self.users(source) {
            let meta = match key.kind {
                WorkloadKind::StatefulSet => self
                    .stateful_sets
                    .get(&ObjectRef::new(&key.name).within(&key.namespace))
                    .map(|w| w.metadata.clone()),
                WorkloadKind::Deployment => {
                    self.deployments.get(&ObjectRef::new(&key.name).within(&key.namespace)).map(|w| w.metadata.clone())
                }
            };
            found.extend(meta.as_ref().and_then(component));
        }
        found
    }

    /// Workloads that cannot start without the source (references without `optional: true`).
    pub fn required_by(&self, source: &SourceKey) -> Vec<WorkloadKey> {
        self.users(source).into_iter().filter(|(_, usage)| usage.required).map(|(key, _)| key).collect()
    }
}

/// The object the stores keep: without `managedFields`, which is most of a workload's size and
/// read by nobody here.
pub fn slim<K: Workload>(workload: &mut K) {
    workload.meta_mut().managed_fields = None;
}

impl fmt::Debug for Workloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workloads").field("synced", &self.is_synced()).finish()
    }
}
