//! The background evaluation: the Lease holder judges every existing DX object from the
//! watch-fed stores — on taking the Lease, when the schema set changes, and every
//! `--report-interval` — with the admission path's `evaluate` (as a CREATE), writes the results
//! as one PolicyReport per namespace (split above 1 MiB), and exports
//! `dx_admission_existing_findings`. A report is written only when a result changed; the reports
//! of namespaces without DX objects are deleted. Namespaces are judged one at a time, so memory
//! grows with the largest namespace, not the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Cluster;
use crate::metrics::ExistingFindingLabels;
use crate::policy::facts::unix_now;
use crate::policy::{Object, Policy};
use crate::report::judge;
use crate::report::policy_report::{self, API_GROUP, KIND, MANAGED_BY, Resource as Subject, SOURCE};

/// How often the loop looks at leadership, sync and the schema set.
const POLL: Duration = Duration::from_secs(1);
/// The wait before a failed scan is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// An existing DX object, as the stores hold it.
enum Stored {
    ConfigMap(Arc<ConfigMap>),
    StatefulSet(Arc<StatefulSet>),
    Deployment(Arc<Deployment>),
}

impl Stored {
    fn subject(&self) -> Subject {
        let (api_version, kind, meta) = match self {
            Self::ConfigMap(o) => ("v1", "ConfigMap", &o.metadata),
            Self::StatefulSet(o) => ("apps/v1", "StatefulSet", &o.metadata),
            Self::Deployment(o) => ("apps/v1", "Deployment", &o.metadata),
        };
        Subject {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }

    /// A copy to evaluate, made one at a time.
    fn object(&self) -> Object {
        match self {
            Self::ConfigMap(o) => Object::ConfigMap((**o).clone()),
            Self::StatefulSet(o) => Object::StatefulSet((**o).clone()),
            Self::Deployment(o) => Object::Deployment((**o).clone()),
        }
    }
}

/// What one scan did.
#[derive(Debug, Default)]
struct Scanned {
    objects: usize,
    namespaces: usize,
    failing: usize,
    written: usize,
    deleted: usize,
    /// Namespaces whose reports could not be written.
    unwritten: usize,
    /// Whether the PolicyReport API is served (else nothing is written).
    reports_served: bool,
    /// Time spent evaluating, of the whole scan.
    judging: Duration,
}

/// Runs the background evaluation until `stop`.
pub(super) fn spawn(cluster: Arc<Cluster>, client: Client, stop: CancellationToken) {
    tokio::spawn(async move {
        let interval = cluster.config.report_interval;
        let mut last: Option<(u64, Instant)> = None;
        let mut served_before = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            if !cluster.leader.is_leader() {
                // A replica that lost the Lease stops exporting what it no longer keeps current.
                cluster.metrics.existing_findings.clear();
                last = None;
                continue;
            }
            let fingerprint = cluster.schemas.current().fingerprint();
            let due = match last {
                None => true,
                Some((scanned, at)) => scanned != fingerprint || at.elapsed() >= interval,
            };
            if !due || !cluster.is_synced() || !cluster.health.is_synced() {
                continue;
            }
            let started = Instant::now();
            match scan(&cluster, &client).await {
                Ok(scanned) => {
                    if !scanned.reports_served && served_before {
                        warn!(
                            "{} is not served: PolicyReports are not written (install the CRD: the chart's reports.installCRD)",
                            policy_report::API_VERSION
                        );
                    }
                    served_before = scanned.reports_served;
                    info!(
                        objects = scanned.objects,
                        namespaces = scanned.namespaces,
                        failing = scanned.failing,
                        written = scanned.written,
                        deleted = scanned.deleted,
                        unwritten = scanned.unwritten,
                        seconds = started.elapsed().as_secs_f64(),
                        judging_seconds = scanned.judging.as_secs_f64(),
                        "existing DX objects judged"
                    );
                    last = Some((fingerprint, Instant::now()));
                }
                Err(error) => {
                    warn!(%error, "the background evaluation failed; retrying");
                    last = Some((fingerprint, Instant::now() - interval + RETRY));
                }
            }
        }
    });
}

fn report_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(API_GROUP, "v1alpha2", KIND);
    ApiResource::from_gvk_with_plural(&gvk, "policyreports")
}

async fn reports_served(client: &Client) -> bool {
    let Ok(list) = client.list_api_group_resources(policy_report::API_VERSION).await else { return false };
    list.resources.iter().any(|r| r.name == "policyreports")
}

/// Judges every DX object once and brings the reports and the metric up to date.
async fn scan(cluster: &Cluster, client: &Client) -> Result<Scanned, kube::Error> {
    let selector = &cluster.workloads.selector;
    let mut by_namespace: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    let mut add = |namespace: Option<String>, stored: Stored| {
        by_namespace.entry(namespace.unwrap_or_default()).or_default().push(stored);
    };
    for map in cluster.health.config_maps.state() {
        add(map.metadata.namespace.clone(), Stored::ConfigMap(map));
    }
    for set in cluster.workloads.stateful_sets.state().into_iter().filter(|w| selector.selects(&w.metadata)) {
        add(set.metadata.namespace.clone(), Stored::StatefulSet(set));
    }
    for deployment in cluster.workloads.deployments.state().into_iter().filter(|w| selector.selects(&w.metadata)) {
        add(deployment.metadata.namespace.clone(), Stored::Deployment(deployment));
    }
    let served = reports_served(client).await;
    let resource = report_resource();
    let labelled = ListParams::default().labels(&format!("{MANAGED_BY}={SOURCE}"));
    let mut namespaces: BTreeSet<String> = by_namespace.keys().cloned().collect();
    if served {
        let all = Api::<DynamicObject>::all_with(client.clone(), &resource);
        for report in all.list_metadata(&labelled).await?.items {
            namespaces.extend(report.metadata.namespace);
        }
    }
    let schemas = Arc::clone(&cluster.schemas.current());
    let mut scanned = Scanned { reports_served: served, ..Scanned::default() };
    let mut findings: BTreeMap<ExistingFindingLabels, i64> = BTreeMap::new();
    let now = unix_now();
    for namespace in namespaces {
        let objects = by_namespace.remove(&namespace).unwrap_or_default();
        scanned.objects += objects.len();
        scanned.namespaces += usize::from(!objects.is_empty());
        let judging = Instant::now();
        let results = judge_namespace(cluster, &schemas, &namespace, &objects, now, &mut findings);
        scanned.judging += judging.elapsed();
        scanned.failing += results.iter().filter(|r| r.result == "fail" || r.result == "warn").count();
        drop(objects);
        if served {
            // One namespace that cannot be written (being deleted, say) holds up no other.
            match write(client, &resource, &namespace, results, &labelled).await {
                Ok((written, deleted)) => {
                    scanned.written += written;
                    scanned.deleted += deleted;
                }
                Err(error) => {
                    warn!(%namespace, %error, "could not write the namespace's PolicyReports; next scan retries");
                    scanned.unwritten += 1;
                }
            }
        } else {
            // Between namespaces, other tasks get the thread.
            tokio::task::yield_now().await;
        }
    }
    let family = &cluster.metrics.existing_findings;
    family.clear();
    if cluster.leader.is_leader() {
        for (labels, count) in findings {
            family.get_or_create(&labels).set(count);
        }
    }
    Ok(scanned)
}

/// The results of a namespace's DX objects, counted into `findings` by rule and severity.
fn judge_namespace(
    cluster: &Cluster,
    schemas: &crate::policy::schema::SchemaSet,
    namespace: &str,
    objects: &[Stored],
    now: i64,
    findings: &mut BTreeMap<ExistingFindingLabels, i64>,
) -> Vec<policy_report::ReportResult> {
    let policy = Policy { settings: &cluster.settings, schemas, facts: cluster };
    let mut results = Vec::new();
    for stored in objects {
        let evaluation = judge(policy, namespace, &stored.object(), None);
        let judged = policy_report::results_of(&stored.subject(), &evaluation, now);
        for result in judged.iter().filter(|r| r.result == "fail" || r.result == "warn") {
            let severity = match result.dx_severity() {
                Some("deny") => "deny",
                Some("warn") => "warn",
                _ => "audit",
            };
            let labels = ExistingFindingLabels { namespace: namespace.to_owned(), rule: result.rule.clone(), severity };
            *findings.entry(labels).or_default() += 1;
        }
        results.extend(judged);
    }
    results
}

/// Brings a namespace's reports to what `results` say; (written, deleted).
async fn write(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    results: Vec<policy_report::ReportResult>,
    labelled: &ListParams,
) -> Result<(usize, usize), kube::Error> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource);
    let stored: Vec<DynamicObject> = api.list(labelled).await?.items;
    let stored_values: Vec<Value> = stored.iter().filter_map(|o| serde_json::to_value(o).ok()).collect();
    let desired =
        if results.is_empty() { Vec::new() } else { policy_report::reports(namespace, results, &stored_values) };
    let (mut written, mut deleted) = (0, 0);
    let mut names = BTreeSet::new();
    for report in desired {
        let name = report["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        names.insert(name.clone());
        let existing = stored.iter().zip(&stored_values).find(|(o, _)| o.metadata.name.as_deref() == Some(&name));
        let mut object: DynamicObject = serde_json::from_value(report.clone()).map_err(kube::Error::SerdeError)?;
        match existing {
            Some((_, value)) if policy_report::same_content(value, &report) => continue,
            Some((old, _)) => {
                object.meta_mut().resource_version = old.metadata.resource_version.clone();
                api.replace(&name, &PostParams::default(), &object).await?;
            }
            None => {
                api.create(&PostParams::default(), &object).await?;
            }
        }
        written += 1;
    }
    for old in &stored {
        let Some(name) = old.metadata.name.as_deref() else { continue };
        if !names.contains(name) {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok((written, deleted))
}
