//! Whether a DX workload runs on its current config, how many of its pods still run an older pod
//! template, and whether its rollout is stuck. One judgement, fed by the Lease holder's watches
//! (for the metrics) and by `report --cluster`'s list calls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::checksum::annotations::source_key;
use crate::checksum::patch::stamp_references;
use crate::checksum::{Narrowing, SourceDigest, SourceRef, Usage};
use crate::lookup::Lookup;
use crate::policy::Object;

/// The label the StatefulSet controller puts on each pod: the revision it was made from.
const REVISION_HASH: &str = "controller-revision-hash";
/// The label the Deployment controller puts on each ReplicaSet and its pods.
const TEMPLATE_HASH: &str = "pod-template-hash";
/// The Deployment controller's revision of a Deployment and of each of its ReplicaSets.
const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";

/// What is known of one source a workload uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    /// The pod template carries the checksum of what the source holds now.
    Current,
    /// The pod template carries a checksum of an older content.
    Outdated,
    /// The pod template carries no checksum of it (opted out of rollouts, or never stamped):
    /// judged by when the source last changed (Unix seconds), when known.
    Unstamped { changed_at: Option<i64> },
}

/// One running pod of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    /// When it started (its `startTime`, else its creation), Unix seconds.
    pub started: i64,
    /// Whether it runs the workload's current pod template.
    pub updated: bool,
    pub ready: bool,
    /// Since when its readiness is what it is (its Ready condition's last transition, else its
    /// creation), Unix seconds.
    pub ready_since: i64,
}

/// Why a workload's config is stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Its pod template carries an outdated checksum of `source` (the controller has not caught
    /// up, or the workload opted out after it was stamped).
    OutdatedChecksum { source: SourceRef },
    /// `source` changed after its oldest running pod started, and no checksum rolls it.
    ChangedAfterStart { source: SourceRef, changed_at: i64, oldest_pod_started: i64 },
}

impl Stale {
    pub fn source(&self) -> &SourceRef {
        match self {
            Self::OutdatedChecksum { source } | Self::ChangedAfterStart { source, .. } => source,
        }
    }

    /// Why, for people.
    pub fn reason(&self) -> String {
        match self {
            Self::OutdatedChecksum { source } => format!("the pod template carries an outdated checksum of {source}"),
            Self::ChangedAfterStart { source, changed_at, oldest_pod_started } => format!(
                "{source} changed {} after the oldest pod started",
                crate::policy::rules::age(changed_at - oldest_pod_started)
            ),
        }
    }
}

/// Where a workload's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// No pod runs.
    NoPods,
    /// Every running pod runs the current template and is Ready.
    Complete,
    /// Pods on the old template remain, or updated pods are not Ready yet.
    Progressing,
    /// An updated pod has not been Ready for longer than the threshold.
    Stuck { pod: String, not_ready_seconds: i64 },
}

impl Rollout {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoPods => "no pods",
            Self::Complete => "complete",
            Self::Progressing => "progressing",
            Self::Stuck { .. } => "stuck",
        }
    }
}

/// The judgement of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// `None`: it runs on its current config.
    pub stale: Option<Stale>,
    pub pods: usize,
    pub pods_on_old_config: usize,
    pub rollout: Rollout,
}

/// Judges a workload from its sources and its running pods at `now` (Unix seconds).
pub fn assess(sources: &BTreeMap<SourceRef, SourceCheck>, pods: &[PodFacts], now: i64, stuck_after: Duration) -> Drift {
    let oldest_pod_started = pods.iter().map(|p| p.started).min();
    let outdated = sources.iter().find(|(_, check)| **check == SourceCheck::Outdated);
    let stale = match outdated {
        Some((source, _)) => Some(Stale::OutdatedChecksum { source: source.clone() }),
        None => oldest_pod_started.and_then(|oldest| {
            sources.iter().find_map(|(source, check)| match check {
                SourceCheck::Unstamped { changed_at: Some(changed_at) } if *changed_at > oldest => {
                    Some(Stale::ChangedAfterStart {
                        source: source.clone(),
                        changed_at: *changed_at,
                        oldest_pod_started: oldest,
                    })
                }
                _ => None,
            })
        }),
    };
    let pods_on_old_config = pods.iter().filter(|p| !p.updated).count();
    let stuck_after = stuck_after.as_secs() as i64;
    let stuck = pods
        .iter()
        .filter(|p| p.updated && !p.ready)
        .map(|p| (p, now - p.ready_since))
        .filter(|(_, not_ready)| *not_ready > stuck_after)
        .max_by_key(|(_, not_ready)| *not_ready);
    let rollout = match stuck {
        _ if pods.is_empty() => Rollout::NoPods,
        Some((pod, not_ready_seconds)) => Rollout::Stuck { pod: pod.name.clone(), not_ready_seconds },
        None if pods_on_old_config == 0 && pods.iter().all(|p| p.ready) => Rollout::Complete,
        None => Rollout::Progressing,
    };
    Drift { stale, pods: pods.len(), pods_on_old_config, rollout }
}

/// What each source of a workload is, from the checksums `/mutate` would stamp now (by the same
/// narrowing and code) against those its template carries. `digest` answers `None` for a
/// source whose content cannot be known here (a Secret without the replicas' checksum key);
/// `changed_at` says when a source last changed.
pub fn source_checks<'a>(
    references: &BTreeMap<SourceRef, Usage>,
    namespace: &str,
    stamped: &BTreeMap<String, String>,
    mut digest: impl FnMut(&SourceRef) -> Option<&'a SourceDigest>,
    changed_at: impl Fn(&SourceRef) -> Option<i64>,
) -> BTreeMap<SourceRef, SourceCheck> {
    let known: BTreeSet<&SourceRef> = references.keys().filter(|s| digest(s).is_some()).collect();
    let desired = stamp_references(references, namespace, Some(stamped), Narrowing::KeepCurrentWhole, |source| {
        digest(source).map_or(Lookup::Absent, Lookup::Found)
    })
    .annotations;
    references
        .keys()
        .map(|source| {
            let key = source_key(source);
            let check = match (stamped.get(&key), desired.get(&key)) {
                (Some(carried), Some(wanted)) if known.contains(source) => {
                    if carried == wanted {
                        SourceCheck::Current
                    } else {
                        SourceCheck::Outdated
                    }
                }
                _ => SourceCheck::Unstamped { changed_at: changed_at(source) },
            };
            (source.clone(), check)
        })
        .collect()
}

/// When an object was last written, by its managed fields (else its creation), Unix seconds.
pub fn last_written(metadata: &ObjectMeta) -> Option<i64> {
    let written = metadata.managed_fields.iter().flatten().filter_map(|f| f.time.as_ref()).map(seconds).max();
    written.or_else(|| metadata.creation_timestamp.as_ref().map(seconds))
}

fn seconds(time: &Time) -> i64 {
    time.0.as_second()
}

/// Whether a pod still runs: not finished, not being deleted.
pub fn running(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Which pods of a workload run its current pod template: the label they carry must match.
pub enum Updated<'a> {
    /// Pods whose label has this value run it.
    Label { key: &'static str, value: &'a str },
    /// The controller has not caught up with the template yet: no pod runs it.
    Nothing,
}

impl Updated<'_> {
    fn of(&self, pod: &Pod) -> bool {
        match self {
            Self::Label { key, value } => {
                pod.metadata.labels.as_ref().and_then(|l| l.get(*key)).map(String::as_str) == Some(value)
            }
            Self::Nothing => false,
        }
    }
}

fn caught_up(metadata: &ObjectMeta, observed_generation: Option<i64>) -> bool {
    observed_generation.unwrap_or(0) >= metadata.generation.unwrap_or(0)
}

/// A StatefulSet's pods run its update revision.
pub fn updated_stateful_set(set: &StatefulSet) -> Updated<'_> {
    let status = set.status.as_ref();
    match status.and_then(|s| s.update_revision.as_deref()) {
        Some(value) if caught_up(&set.metadata, status.and_then(|s| s.observed_generation)) => {
            Updated::Label { key: REVISION_HASH, value }
        }
        _ => Updated::Nothing,
    }
}

/// A Deployment's pods run the template of its ReplicaSet of the Deployment's revision.
pub fn updated_deployment<'a>(deployment: &Deployment, replica_sets: &[&'a ReplicaSet]) -> Updated<'a> {
    let revision = |meta: &ObjectMeta| meta.annotations.as_ref()?.get(DEPLOYMENT_REVISION).cloned();
    if !caught_up(&deployment.metadata, deployment.status.as_ref().and_then(|s| s.observed_generation)) {
        return Updated::Nothing;
    }
    let Some(current) = revision(&deployment.metadata) else { return Updated::Nothing };
    let newest = replica_sets.iter().find(|r| revision(&r.metadata).as_ref() == Some(&current));
    match newest.and_then(|r| r.metadata.labels.as_ref()?.get(TEMPLATE_HASH)) {
        Some(value) => Updated::Label { key: TEMPLATE_HASH, value },
        None => Updated::Nothing,
    }
}

/// Whether `metadata` names an owner of `kind` and `name` (and, when known, `uid`).
pub fn owned_by(metadata: &ObjectMeta, kind: &str, name: &str, uid: Option<&str>) -> bool {
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.kind == kind && owner.name == name && uid.is_none_or(|uid| owner.uid == uid))
}

/// The facts of a running pod.
pub fn pod_facts(pod: &Pod, updated: &Updated<'_>) -> PodFacts {
    let created = pod.metadata.creation_timestamp.as_ref().map_or(0, seconds);
    let status = pod.status.as_ref();
    let ready_condition =
        status.and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    PodFacts {
        name: pod.metadata.name.clone().unwrap_or_default(),
        started: status.and_then(|s| s.start_time.as_ref()).map_or(created, seconds),
        updated: updated.of(pod),
        ready: ready_condition.is_some_and(|c| c.status == "True"),
        ready_since: ready_condition.and_then(|c| c.last_transition_time.as_ref()).map_or(created, seconds),
    }
}

/// Judges one workload from the pods and ReplicaSets of its namespace (it picks its own by their
/// owner references) and what is known of its sources. `None` for objects that are not workloads.
pub fn judge_workload(
    workload: &Object,
    pods: &[&Pod],
    replica_sets: &[&ReplicaSet],
    sources: &BTreeMap<SourceRef, SourceCheck>,
    now: i64,
    stuck_after: Duration,
) -> Option<Drift> {
    let namespace = workload.metadata().namespace.as_deref();
    let name = workload.name();
    let uid = workload.metadata().uid.as_deref();
    let in_namespace = |meta: &ObjectMeta| meta.namespace.as_deref() == namespace;
    let (owners, updated): (Vec<String>, Updated<'_>) = match workload {
        Object::StatefulSet(set) => (vec![name.to_owned()], updated_stateful_set(set)),
        Object::Deployment(deployment) => {
            let own: Vec<&ReplicaSet> = replica_sets
                .iter()
                .copied()
                .filter(|r| in_namespace(&r.metadata) && owned_by(&r.metadata, "Deployment", name, uid))
                .collect();
            let names = own.iter().filter_map(|r| r.metadata.name.clone()).collect();
            (names, updated_deployment(deployment, &own))
        }
        Object::ConfigMap(_) | Object::Secret(_) => return None,
    };
    let owner_kind = if matches!(workload, Object::StatefulSet(_)) { "StatefulSet" } else { "ReplicaSet" };
    let facts: Vec<PodFacts> = pods
        .iter()
        .filter(|p| in_namespace(&p.metadata) && running(p))
        .filter(|p| owners.iter().any(|owner| owned_by(&p.metadata, owner_kind, owner, None)))
        .map(|p| pod_facts(p, &updated))
        .collect();
    Some(assess(sources, &facts, now, stuck_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::SourceKind;

    const MINUTE: i64 = 60;
    const TEN_MINUTES: Duration = Duration::from_secs(600);

    fn config_map(name: &str) -> SourceRef {
        SourceRef { kind: SourceKind::ConfigMap, name: name.into() }
    }

    fn pod(name: &str, started: i64, updated: bool, ready: bool, ready_since: i64) -> PodFacts {
        PodFacts { name: name.into(), started, updated, ready, ready_since }
    }

    #[test]
    fn an_unstamped_source_changed_after_the_oldest_pod_started_makes_the_config_stale() {
        let sources =
            BTreeMap::from([(config_map("dx-core-config"), SourceCheck::Unstamped { changed_at: Some(1_000) })]);
        let pods = [pod("dx-core-0", 900, true, true, 900), pod("dx-core-1", 1_100, true, true, 1_100)];
        let drift = assess(&sources, &pods, 2_000, TEN_MINUTES);
        let stale = drift.stale.expect("stale");
        assert_eq!(stale.reason(), "ConfigMap dx-core-config changed 1m after the oldest pod started");
        assert_eq!((drift.pods, drift.pods_on_old_config, drift.rollout), (2, 0, Rollout::Complete));
        // Pods that started after the change run it; so do workloads with no pods at all.
        assert_eq!(assess(&sources, &pods[1..], 2_000, TEN_MINUTES).stale, None);
        let none = assess(&sources, &[], 2_000, TEN_MINUTES);
        assert_eq!((none.stale, none.rollout), (None, Rollout::NoPods));
    }

    #[test]
    fn an_outdated_checksum_is_stale_whatever_the_pods_and_a_current_one_never() {
        let sources =
            BTreeMap::from([(config_map("a"), SourceCheck::Current), (config_map("b"), SourceCheck::Outdated)]);
        let stale = assess(&sources, &[], 0, TEN_MINUTES).stale.unwrap();
        assert_eq!(stale.reason(), "the pod template carries an outdated checksum of ConfigMap b");
        let current = BTreeMap::from([(config_map("a"), SourceCheck::Current)]);
        assert_eq!(assess(&current, &[pod("p", 0, true, true, 0)], 5_000, TEN_MINUTES).stale, None);
    }

    fn replica_set(hash: &str, revision: &str) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({"metadata": {
            "name": format!("dx-ring-api-{hash}"), "namespace": "dx",
            "labels": {TEMPLATE_HASH: hash}, "annotations": {DEPLOYMENT_REVISION: revision},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "dx-ring-api", "uid": "d-1"}],
        }}))
        .unwrap()
    }

    fn replica_set_pod(name: &str, hash: &str, ready: &str, since: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "dx", "labels": {TEMPLATE_HASH: hash},
                "creationTimestamp": "2026-12-01T10:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("dx-ring-api-{hash}"), "uid": "r"}]},
            "status": {"phase": "Running", "startTime": "2026-12-01T10:00:00Z",
                "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_deployments_updated_pods_are_those_of_its_replica_set_of_its_revision() {
        let deployment = |observed: i64| {
            Object::Deployment(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "dx-ring-api", "namespace": "dx", "uid": "d-1", "generation": 2,
                        "annotations": {DEPLOYMENT_REVISION: "2"}},
                    "status": {"observedGeneration": observed},
                }))
                .unwrap(),
            )
        };
        let sets = [replica_set("aaa", "1"), replica_set("bbb", "2")];
        let pods = [
            replica_set_pod("dx-ring-api-aaa-1", "aaa", "True", "2026-12-01T10:00:00Z"),
            replica_set_pod("dx-ring-api-bbb-1", "bbb", "False", "2026-12-01T10:00:00Z"),
            // Another Deployment's pod in the namespace counts for nothing here.
            replica_set_pod("other-ccc-1", "ccc", "False", "2026-12-01T10:00:00Z"),
        ];
        let (sets, pods): (Vec<&ReplicaSet>, Vec<&Pod>) = (sets.iter().collect(), pods.iter().collect());
        let now = "2026-12-01T10:11:40Z".parse::<k8s_openapi::jiff::Timestamp>().unwrap().as_second();
        let drift = judge_workload(&deployment(2), &pods, &sets, &BTreeMap::new(), now, TEN_MINUTES).unwrap();
        assert_eq!((drift.pods, drift.pods_on_old_config), (2, 1));
        assert_eq!(drift.rollout, Rollout::Stuck { pod: "dx-ring-api-bbb-1".into(), not_ready_seconds: 700 });
        // The controller has not observed generation 2 yet: no pod runs the new template.
        let behind = judge_workload(&deployment(1), &pods, &sets, &BTreeMap::new(), now, TEN_MINUTES).unwrap();
        assert_eq!((behind.pods_on_old_config, behind.rollout), (2, Rollout::Progressing));
    }

    #[test]
    fn an_updated_pod_not_ready_past_the_threshold_is_a_stuck_rollout() {
        let sources = BTreeMap::new();
        let now = 100 * MINUTE;
        let old = pod("dx-core-0", 0, false, true, 0);
        let new_not_ready = |since_minutes: i64| {
            pod("dx-core-1", now - since_minutes * MINUTE, true, false, now - since_minutes * MINUTE)
        };
        let drift = assess(&sources, &[old.clone(), new_not_ready(11)], now, TEN_MINUTES);
        assert_eq!(drift.rollout, Rollout::Stuck { pod: "dx-core-1".into(), not_ready_seconds: 11 * MINUTE });
        assert_eq!(drift.pods_on_old_config, 1);
        // Exactly at the threshold it is still progressing; an old pod not Ready is never stuck.
        assert_eq!(assess(&sources, &[old.clone(), new_not_ready(10)], now, TEN_MINUTES).rollout, Rollout::Progressing);
        let old_not_ready = pod("dx-core-0", 0, false, false, 0);
        assert_eq!(assess(&sources, &[old_not_ready], now, TEN_MINUTES).rollout, Rollout::Progressing);
    }
}
