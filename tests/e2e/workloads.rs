//! What a DX operator sees of workloads on the simulated nodes: ReplicaSets, StatefulSet
//! revisions, pods and their readiness, read with kubectl, and rollouts counted as users count
//! them (new ReplicaSets, new controller revisions, the order pods are replaced in).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Env;

/// The annotation Deployments and ReplicaSets carry their rollout number in.
const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub name: String,
    /// `Kind/name` of the ReplicaSet or StatefulSet that owns it.
    pub owner: String,
    /// `pod-template-hash` (ReplicaSets) or `controller-revision-hash` (StatefulSets).
    pub revision: String,
    pub ready: bool,
    pub terminating: bool,
    /// The aggregate config checksum its template carried.
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSet {
    pub name: String,
    /// The Deployment that owns it.
    pub deployment: String,
    pub revision: u64,
    pub replicas: u64,
    pub ready: u64,
    pub checksum: Option<String>,
}

/// One reading of a namespace's workloads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub replica_sets: Vec<ReplicaSet>,
    /// `(StatefulSet, ControllerRevision name)`.
    pub revisions: BTreeSet<(String, String)>,
    pub pods: Vec<Pod>,
    /// Why the workloads are not all rolled out (empty: every one is).
    pub pending: Vec<String>,
}

impl Snapshot {
    /// The ReplicaSets of `deployment`.
    pub fn replica_sets_of(&self, deployment: &str) -> Vec<&ReplicaSet> {
        self.replica_sets.iter().filter(|r| r.deployment == deployment).collect()
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or_default()
}

fn owner(value: &Value) -> (String, String) {
    let owner = value.pointer("/metadata/ownerReferences/0").cloned().unwrap_or_default();
    (str_at(&owner, "/kind").to_owned(), str_at(&owner, "/name").to_owned())
}

fn checksum(template: &Value) -> Option<String> {
    template
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(dx_admission::checksum::annotations::AGGREGATE))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn pod_of(item: &Value) -> Pod {
    let labels = &item["metadata"]["labels"];
    let revision = labels
        .get("pod-template-hash")
        .or_else(|| labels.get("controller-revision-hash"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (kind, owner_name) = owner(item);
    Pod {
        name: str_at(item, "/metadata/name").to_owned(),
        owner: format!("{kind}/{owner_name}"),
        revision: revision.to_owned(),
        ready: item["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")),
        terminating: item["metadata"].get("deletionTimestamp").is_some(),
        checksum: checksum(item),
    }
}

/// Why a Deployment or StatefulSet is not rolled out: every replica updated and Ready, and no
/// pod of an older revision left.
fn not_rolled_out(workload: &Value) -> Option<String> {
    let name = format!("{}/{}", str_at(workload, "/kind"), str_at(workload, "/metadata/name"));
    let wanted = workload.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1);
    let status = |field: &str| u64_at(workload, &format!("/status/{field}"));
    let observed = status("observedGeneration") >= u64_at(workload, "/metadata/generation");
    let done = observed
        && status("updatedReplicas") == wanted
        && status("readyReplicas") == wanted
        && status("replicas") == wanted
        && (str_at(workload, "/kind") != "StatefulSet"
            || str_at(workload, "/status/currentRevision") == str_at(workload, "/status/updateRevision"));
    (!done).then(|| format!("{name}: {}", workload["status"]))
}

/// Reads the workloads, ReplicaSets, revisions and pods of `namespace`.
pub fn snapshot(env: &Env, namespace: &str) -> Snapshot {
    let (ok, out, err) = env.kubectl(&[
        "get",
        "deployments,statefulsets,replicasets,controllerrevisions,pods",
        "-n",
        namespace,
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    let mut snapshot =
        Snapshot { replica_sets: Vec::new(), revisions: BTreeSet::new(), pods: Vec::new(), pending: Vec::new() };
    for item in list["items"].as_array().expect("items") {
        let name = str_at(item, "/metadata/name").to_owned();
        match str_at(item, "/kind") {
            "Deployment" | "StatefulSet" => snapshot.pending.extend(not_rolled_out(item)),
            "ReplicaSet" => snapshot.replica_sets.push(ReplicaSet {
                deployment: owner(item).1,
                revision: str_at(item, &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")))
                    .parse()
                    .unwrap_or_default(),
                replicas: u64_at(item, "/status/replicas"),
                ready: u64_at(item, "/status/readyReplicas"),
                checksum: checksum(&item["spec"]["template"]),
                name,
            }),
            "ControllerRevision" => {
                snapshot.revisions.insert((owner(item).1, name));
            }
            "Pod" => snapshot.pods.push(pod_of(item)),
            _ => {}
        }
    }
    snapshot
}

/// The pods of `namespace`.
pub fn pods(env: &Env, namespace: &str) -> Vec<Pod> {
    snapshot(env, namespace).pods
}

/// Waits until every Deployment and StatefulSet of `namespace` is rolled out (see
/// [`not_rolled_out`]), and returns that snapshot.
pub async fn wait_until_rolled_out(env: &Env, namespace: &str, timeout: Duration) -> Snapshot {
    let deadline = Instant::now() + timeout;
    loop {
        let now = snapshot(env, namespace);
        if now.pending.is_empty() {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{namespace} not rolled out within {timeout:?}:\n{}\npods: {:#?}",
            now.pending.join("\n"),
            now.pods
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One pod event of a [`PodWatch`], with when the test received it.
#[derive(Debug, Clone)]
pub struct PodEvent {
    pub at: Instant,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: String,
    pub pod: Pod,
}

/// `kubectl get pods --watch` of one namespace, every event kept in order: the exact sequence
/// in which pods are created, turn Ready and go, which polling could miss.
pub struct PodWatch {
    child: std::process::Child,
    events: std::sync::Arc<std::sync::Mutex<Vec<PodEvent>>>,
}

impl PodWatch {
    /// Starts watching, and returns once the watch has listed the pods that exist.
    pub async fn start(env: &Env, namespace: &str) -> Self {
        let existing = pods(env, namespace).len();
        let mut child = std::process::Command::new(&env.cluster.bins.kubectl)
            .arg(format!("--kubeconfig={}", env.cluster.kubeconfig.display()))
            .args(["get", "pods", "-n", namespace, "--watch", "--output-watch-events", "-o", "json"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl starts");
        let stdout = child.stdout.take().expect("stdout");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&events);
        std::thread::spawn(move || {
            for event in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
                let Ok(event) = event else { break };
                let pod = pod_of(&event["object"]);
                let kind = str_at(&event, "/type").to_owned();
                sink.lock().unwrap().push(PodEvent { at: Instant::now(), kind, pod });
            }
        });
        let watch = Self { child, events };
        let listed = crate::common::eventually(Duration::from_secs(10), || async {
            watch.events.lock().unwrap().len() >= existing
        });
        assert!(listed.await, "kubectl get pods --watch listed the {existing} pods of {namespace}");
        watch
    }

    /// The events received so far.
    pub fn events(&self) -> Vec<PodEvent> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How one StatefulSet rolled to `revision`, read from the pod events: the pods in the order
/// they were created at that revision, and whether each old pod went only after the pod
/// replaced before it was Ready (one at a time).
pub fn statefulset_roll(events: &[PodEvent], statefulset: &str, revision: &str) -> (Vec<String>, bool) {
    let owner = format!("StatefulSet/{statefulset}");
    let mut order: Vec<String> = Vec::new();
    let mut one_at_a_time = true;
    // A pod replaced whose successor is not Ready yet.
    let mut in_flight: Option<String> = None;
    for event in events.iter().filter(|e| e.pod.owner == owner) {
        let pod = &event.pod;
        if pod.revision == revision {
            if !order.contains(&pod.name) {
                order.push(pod.name.clone());
            }
            if pod.ready && in_flight.as_deref() == Some(&pod.name) {
                in_flight = None;
            }
        } else if pod.terminating || event.kind == "DELETED" {
            match &in_flight {
                Some(other) if *other != pod.name => one_at_a_time = false,
                _ => in_flight = Some(pod.name.clone()),
            }
        }
    }
    (order, one_at_a_time)
}

/// When the last pod that `counts` turned Ready.
pub fn last_ready(events: &[PodEvent], counts: impl Fn(&Pod) -> bool) -> Option<Instant> {
    events.iter().filter(|e| e.pod.ready && counts(&e.pod)).map(|e| e.at).max()
}

/// What one change rolled in a namespace, counted as users count it.
#[derive(Debug)]
pub struct Rolled {
    /// Per Deployment, the ReplicaSets it did not have before.
    pub new_replica_sets: BTreeMap<String, Vec<ReplicaSet>>,
    /// Per StatefulSet, the revisions it did not have before.
    pub new_revisions: BTreeMap<String, Vec<String>>,
    /// Per StatefulSet that rolled, its pods in the order they were replaced, and whether one
    /// at a time.
    pub order: BTreeMap<String, (Vec<String>, bool)>,
    /// From the change to the last new pod Ready.
    pub took: Duration,
    /// The namespace as it was once everything rolled out.
    pub after: Snapshot,
}

impl Rolled {
    /// `deployment: N` for each Deployment with new ReplicaSets, `statefulset: N` for each
    /// StatefulSet with new revisions.
    pub fn counts(&self) -> Vec<String> {
        let sets = self.new_replica_sets.iter().map(|(d, r)| format!("deployment/{d}: {}", r.len()));
        let revisions = self.new_revisions.iter().map(|(s, r)| format!("statefulset/{s}: {}", r.len()));
        sets.chain(revisions).collect()
    }

    /// Prints the figures of one scenario.
    pub fn report(&self, what: &str) {
        let sets: usize = self.new_replica_sets.values().map(Vec::len).sum();
        let revisions: usize = self.new_revisions.values().map(Vec::len).sum();
        println!(
            "e2e: {what}: {sets} new ReplicaSets, {revisions} new StatefulSet revisions, last new pod Ready {:.1}s after the change",
            self.took.as_secs_f64()
        );
    }
}

/// The ReplicaSets and revisions a later snapshot has that an earlier one had not.
#[derive(Debug)]
pub struct New {
    /// Per Deployment.
    pub replica_sets: BTreeMap<String, Vec<ReplicaSet>>,
    /// Per StatefulSet.
    pub revisions: BTreeMap<String, Vec<String>>,
}

impl New {
    pub fn between(before: &Snapshot, now: &Snapshot) -> Self {
        let old_sets: BTreeSet<&str> = before.replica_sets.iter().map(|r| r.name.as_str()).collect();
        let mut replica_sets: BTreeMap<String, Vec<ReplicaSet>> = BTreeMap::new();
        for set in now.replica_sets.iter().filter(|r| !old_sets.contains(r.name.as_str())) {
            replica_sets.entry(set.deployment.clone()).or_default().push(set.clone());
        }
        let mut revisions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (statefulset, revision) in now.revisions.difference(&before.revisions) {
            revisions.entry(statefulset.clone()).or_default().push(revision.clone());
        }
        Self { replica_sets, revisions }
    }

    pub fn count(&self) -> usize {
        self.replica_sets.values().map(Vec::len).sum::<usize>() + self.revisions.values().map(Vec::len).sum::<usize>()
    }
}

/// Makes `change`, waits until `expected` new ReplicaSets and revisions exist in `namespace`
/// and everything there is rolled out, holds [`crate::rollout::NOTHING_MORE`] to see nothing
/// more come, and counts what rolled.
pub async fn roll(env: &Env, namespace: &str, expected: usize, change: impl FnOnce(&Env)) -> Rolled {
    let before = snapshot(env, namespace);
    assert!(before.pending.is_empty(), "{namespace} is rolled out before the change: {:?}", before.pending);
    let watch = PodWatch::start(env, namespace).await;
    let changed = Instant::now();
    change(env);
    let new_of = |now: &Snapshot| New::between(&before, now);
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let now = snapshot(env, namespace);
        let new = new_of(&now);
        if now.pending.is_empty() && new.count() >= expected {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}: {} of {expected} new ReplicaSets and revisions within 120s, or not rolled out: {:?}\n{new:#?}",
            new.count(),
            now.pending
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let settled = new_of(&after);
    let nothing_more = crate::common::holds_for(crate::rollout::NOTHING_MORE, || async {
        new_of(&snapshot(env, namespace)).count() == settled.count()
    });
    assert!(
        nothing_more.await,
        "{namespace}: more rolled within {:?} after {settled:#?}",
        crate::rollout::NOTHING_MORE
    );
    let New { replica_sets: new_replica_sets, revisions: new_revisions } = settled;
    let events = watch.events();
    let order = new_revisions
        .iter()
        .map(|(statefulset, revisions)| (statefulset.clone(), statefulset_roll(&events, statefulset, &revisions[0])))
        .collect();
    let new_pod = |pod: &Pod| {
        new_revisions.values().flatten().any(|r| *r == pod.revision)
            || new_replica_sets.values().flatten().any(|r| pod.owner == format!("ReplicaSet/{}", r.name))
    };
    let took = last_ready(&events, new_pod).map_or(Duration::ZERO, |at| at - changed);
    Rolled { new_replica_sets, new_revisions, order, took, after }
}

/// Patches the data of ConfigMap `name` in `namespace` with `data` (a JSON object), as
/// `kubectl patch` does.
pub fn patch_config_map(env: &Env, namespace: &str, name: &str, data: &str) {
    let patch = format!("{{\"data\":{data}}}");
    let (ok, out, err) = env.kubectl(&["patch", "configmap", name, "-n", namespace, "--type=merge", "-p", &patch]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("configmap/{name} patched\n"));
}

/// Editing a ConfigMap in the cluster rolls each workload that uses it exactly once, and no
/// other: DX Core's own ConfigMap rolls DX Core alone, the global one all six workloads; each
/// StatefulSet replaces its pods one at a time from the highest ordinal down.
pub async fn a_config_map_edit_rolls_each_workload_that_uses_it_once(env: &mut Env) {
    let rolled =
        roll(env, "dx", 1, |env| patch_config_map(env, "dx", "dx-core-config", r#"{"session.timeout":"45m"}"#)).await;
    rolled.report("kubectl patch of dx-core-config");
    assert_eq!(rolled.counts(), ["statefulset/dx-core: 1"]);
    assert_eq!(rolled.order["dx-core"], (vec!["dx-core-1".to_owned(), "dx-core-0".to_owned()], true));

    let rolled =
        roll(env, "dx", 6, |env| patch_config_map(env, "dx", "dx-global-config", r#"{"dx.cluster.name":"prod-eu-2"}"#))
            .await;
    rolled.report("kubectl patch of dx-global-config");
    assert_eq!(
        rolled.counts(),
        [
            "deployment/dx-content-composer: 1",
            "deployment/dx-image-processor: 1",
            "deployment/dx-ring-api: 1",
            "statefulset/dx-core: 1",
            "statefulset/dx-dam: 1",
            "statefulset/dx-persistence: 1",
        ]
    );
    for statefulset in ["dx-core", "dx-dam", "dx-persistence"] {
        let pods = vec![format!("{statefulset}-1"), format!("{statefulset}-0")];
        assert_eq!(rolled.order[statefulset], (pods, true), "{statefulset}");
    }
    // Each new ReplicaSet holds every replica, Ready; the old ones are scaled to zero.
    for (deployment, sets) in &rolled.new_replica_sets {
        assert_eq!((sets[0].replicas, sets[0].ready), (2, 2), "{deployment}: {sets:?}");
        let old: Vec<u64> = rolled
            .after
            .replica_sets_of(deployment)
            .iter()
            .filter(|r| r.name != sets[0].name)
            .map(|r| r.replicas)
            .collect();
        assert_eq!(old, [0], "{deployment}");
    }
}
