//! The state of a DX deployment: existing objects judged again (as the Lease holder does in the
//! background, and under a candidate schema version), which workloads run on stale config, how
//! many pods run an older template, and which rollouts are stuck.
//!
//! `dx-admission report` prints it from the API server or from manifests; the server writes
//! the findings as PolicyReports ([`policy_report`]) and exports the drift as metrics.

pub mod drift;
mod live;
pub mod policy_report;
mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use drift::{Drift, Rollout, SourceCheck, Stale};
pub use render::{render_json, render_text};

use crate::check::{self, EXIT_CLEAN, EXIT_DENIED, EXIT_INPUT};
use crate::policy::annotations::{SCHEMA_VERSION, VERSION_LABEL};
use crate::policy::schema::SchemaSet;
use crate::policy::{
    Component, Evaluation, Identity, Object, Operation, Policy, ResourceKind, Review, Settings, evaluate,
};

/// How long an updated pod may stay not Ready before its rollout counts as stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(600);

/// An existing object judged as a CREATE: what it would be told if it were applied now. Rules
/// of UPDATE and DELETE only do not run. With `candidate`, it is judged as if it named that
/// schema version.
pub fn judge(policy: Policy<'_>, namespace: &str, object: &Object, candidate: Option<&str>) -> Evaluation {
    let review = |object| Review { operation: Operation::Create, namespace, object: Some(object), old_object: None };
    match candidate {
        Some(version) => evaluate(policy, review(&object.with_annotation(SCHEMA_VERSION, version))),
        None => evaluate(policy, review(object)),
    }
}

/// One existing DX object and its evaluation.
#[derive(Debug)]
pub struct Judged {
    pub namespace: String,
    pub kind: ResourceKind,
    pub name: String,
    pub component: Option<Component>,
    /// Its `app.kubernetes.io/version` label.
    pub version: Option<String>,
    pub evaluation: Evaluation,
}

/// One DX workload's drift.
#[derive(Debug)]
pub struct WorkloadState {
    pub namespace: String,
    pub kind: ResourceKind,
    pub name: String,
    pub component: Option<Component>,
    pub drift: Drift,
}

/// The report of a DX deployment.
#[derive(Debug, Default)]
pub struct Report {
    pub objects: Vec<Judged>,
    /// `None` when read from manifests: nothing runs there.
    pub workloads: Option<Vec<WorkloadState>>,
    /// The schema version every object was judged under, when one was asked for.
    pub candidate: Option<String>,
    /// Where it was read from, for the first line.
    pub scope: String,
}

impl Report {
    /// Judges the DX objects of `objects` (others are left out).
    pub fn judge_all(
        policy: Policy<'_>,
        objects: impl IntoIterator<Item = (String, Object)>,
        candidate: Option<&str>,
    ) -> Vec<Judged> {
        let mut judged: Vec<Judged> = objects
            .into_iter()
            .filter_map(|(namespace, object)| {
                let Identity::Dx { component, .. } = Identity::of(&object, &policy.settings.selector) else {
                    return None;
                };
                let evaluation = judge(policy, &namespace, &object, candidate);
                Some(Judged {
                    kind: object.kind(),
                    name: object.name().to_owned(),
                    component,
                    version: object.label(VERSION_LABEL).map(str::to_owned),
                    evaluation,
                    namespace,
                })
            })
            .collect();
        judged.sort_by(|a, b| {
            (&a.namespace, a.component, a.kind, &a.name).cmp(&(&b.namespace, b.component, b.kind, &b.name))
        });
        judged
    }

    /// Whether anything is wrong: a denial, stale config, a stuck rollout.
    pub fn unhealthy(&self) -> bool {
        self.objects.iter().any(|o| o.evaluation.denied())
            || self
                .workloads
                .iter()
                .flatten()
                .any(|w| w.drift.stale.is_some() || matches!(w.drift.rollout, Rollout::Stuck { .. }))
    }

    /// The components by namespace, in order.
    fn components(&self) -> BTreeMap<(String, Option<Component>), ()> {
        let mut found = BTreeMap::new();
        for object in &self.objects {
            found.insert((object.namespace.clone(), object.component), ());
        }
        for workload in self.workloads.iter().flatten() {
            found.insert((workload.namespace.clone(), workload.component), ());
        }
        found
    }
}

/// Where `report` reads the deployment from.
#[derive(Clone, Debug)]
pub enum ReportFrom {
    Cluster { kubeconfig: Option<PathBuf> },
    Files(Vec<PathBuf>),
}

/// What `report` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub from: ReportFrom,
    /// Only this namespace (the namespace of manifests that name none, with `-f`).
    pub namespace: Option<String>,
    pub schema_version: Option<String>,
    pub schemas: PathBuf,
    /// The replicas' HMAC key: Secret checksums on pod templates can be compared too.
    pub checksum_key_file: Option<PathBuf>,
    pub stuck_after: Duration,
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Runs `report` end to end: 0 healthy, 1 something is wrong, 2 bad input.
pub fn run(options: &Options, settings: &Settings) -> i32 {
    let schemas = match SchemaSet::load(&options.schemas) {
        Ok(schemas) => schemas,
        Err(error) => {
            eprintln!("error: --schemas: {error}");
            return EXIT_INPUT;
        }
    };
    if let Some(version) = &options.schema_version
        && schemas.version(version).is_none()
    {
        let known: Vec<&str> = schemas.version_names().collect();
        eprintln!(
            "error: --schema-version {version}: not in {} (it has {})",
            options.schemas.display(),
            known.join(", ")
        );
        return EXIT_INPUT;
    }
    let policy = Policy::offline(settings, &schemas);
    let candidate = options.schema_version.as_deref();
    let report = match &options.from {
        ReportFrom::Files(files) => {
            let namespace = options.namespace.as_deref().unwrap_or("default");
            let manifests = match check::read_manifests(files, namespace) {
                Ok(manifests) => manifests,
                Err(error) => {
                    eprintln!("error: {error}");
                    return EXIT_INPUT;
                }
            };
            let objects = manifests.reviewed.into_iter().map(|m| (m.namespace, m.object));
            Report {
                objects: Report::judge_all(policy, objects, candidate),
                workloads: None,
                candidate: options.schema_version.clone(),
                scope: "the manifests".to_owned(),
            }
        }
        ReportFrom::Cluster { kubeconfig } => {
            let key = match &options.checksum_key_file {
                None => None,
                Some(path) => match crate::checksum::digest::read_key_file(path) {
                    Ok(key) => Some(key),
                    Err(error) => {
                        eprintln!("error: {error}");
                        return EXIT_INPUT;
                    }
                },
            };
            let read = live::Read {
                kubeconfig: kubeconfig.as_deref(),
                namespace: options.namespace.as_deref(),
                key: key.as_deref(),
                stuck_after: options.stuck_after,
            };
            match live::read(&read, policy, candidate) {
                Ok(report) => report,
                Err(error) => {
                    eprintln!("error: cannot read the deployment from the cluster: {error}");
                    return EXIT_INPUT;
                }
            }
        }
    };
    match options.format {
        Format::Text => crate::cli::output(&render_text(&report)),
        Format::Json => crate::cli::output(&format!("{:#}\n", render_json(&report))),
    }
    if report.unhealthy() { EXIT_DENIED } else { EXIT_CLEAN }
}
