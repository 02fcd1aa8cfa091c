//! `dx-admission plan`: what an update (rendered manifests, e.g. `helm template`) does to what is
//! there now (`--old` manifests, or the cluster): per DX object, whether it is added, removed,
//! changed or unchanged, its update categories, what changed, whether its pods roll and why, what
//! the API server and dx-admission's rules will refuse, and whether a backup is needed first.
//!
//! [`plan`] is pure: the previous state comes in as [`Previous`], read by `previous.rs`.

mod previous;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ring::hmac;

pub use previous::{Previous, from_cluster, from_manifests};
pub use render::{render_json, render_markdown, render_text};

use crate::check::{self, Manifests};
use crate::checksum::patch::stamp_references;
use crate::checksum::{Narrowing, SourceDigest, SourceKind, SourceRef, Usage, narrow, references};
use crate::cluster::wants_rollout;
use crate::lookup::Lookup;
use crate::policy::annotations::VERSION_LABEL;
use crate::policy::facts::{Backup, ClusterFacts};
use crate::policy::schema::{SchemaSet, SourceSchema};
use crate::policy::update::{Category, Change, Checksums, Compared, ComponentBefore, compare};
use crate::policy::values::version;
use crate::policy::{
    Component, Evaluation, Identity, Object, Operation, PodTemplate, Policy, ResourceKind, Review, Settings, evaluate,
};

/// What `plan` is asked to do. The CLI's flags convert into it.
#[derive(Clone, Debug)]
pub struct Options {
    /// The update: rendered manifests (files, directories, `-`).
    pub files: Vec<PathBuf>,
    /// Where the previous state comes from.
    pub previous: PreviousFrom,
    /// Only objects of this Helm release can be removed by the update.
    pub release: Option<String>,
    pub schemas: PathBuf,
    /// Namespace of objects that name none (and of the release).
    pub namespace: String,
    /// The HMAC key the replicas share for Secret checksums, to compare with the checksums the
    /// live pods carry.
    pub checksum_key_file: Option<PathBuf>,
    pub format: Format,
}

#[derive(Clone, Debug)]
pub enum PreviousFrom {
    /// Previous manifests.
    Old(Vec<PathBuf>),
    /// The API server, read-only.
    Cluster { kubeconfig: Option<PathBuf> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// An object by namespace, kind and name.
pub type Key = (String, ResourceKind, String);

fn key_of(namespace: &str, object: &Object) -> Key {
    (namespace.to_owned(), object.kind(), object.name().to_owned())
}

/// The plan of one object.
#[derive(Debug)]
pub struct Planned {
    pub kind: ResourceKind,
    pub namespace: String,
    pub name: String,
    /// Its DX component; for a Secret, that of the first DX workload using it.
    pub component: Option<Component>,
    pub compared: Compared,
    /// Whether the update replaces its pods, and why.
    pub rolls: bool,
    pub roll_reasons: Vec<String>,
    /// What dx-admission's rules say of the change (none for an unchanged object).
    pub evaluation: Option<Evaluation>,
    /// Why a backup is needed before this change, if it is.
    pub backup_needed_because: Option<String>,
    /// The newest completed backup of its component, when one is needed.
    pub backup: BackupState,
}

/// What the plan found of the backup a change needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupState {
    /// Without a cluster (or for a component without data of its own).
    NotJudged(String),
    Absent,
    Found {
        name: String,
        age_seconds: i64,
    },
}

impl BackupState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotJudged(_) => "not-judged",
            Self::Absent => "absent",
            Self::Found { .. } => "found",
        }
    }
}

impl Planned {
    /// Whether dx-admission or the API server would refuse this change.
    pub fn refused(&self) -> bool {
        !self.compared.refused.is_empty() || self.evaluation.as_ref().is_some_and(Evaluation::denied)
    }
}

/// The plan of an update.
#[derive(Debug)]
pub struct Plan {
    pub objects: Vec<Planned>,
    /// Where the previous state came from, for the first line.
    pub against: String,
    /// Why removals were not judged, when they were not.
    pub removals_not_judged: Option<String>,
    /// Documents of kinds dx-admission does not review, and non-DX objects.
    pub other_kinds: usize,
}

impl Plan {
    pub fn count(&self, category: Category) -> usize {
        self.objects.iter().filter(|o| o.compared.categories.contains(category)).count()
    }

    pub fn refused(&self) -> bool {
        self.objects.iter().any(Planned::refused)
    }
}

/// Exit codes: admitted, refused in part, usage or input error.
pub const EXIT_ADMITTED: i32 = 0;
pub const EXIT_REFUSED: i32 = 1;
pub const EXIT_INPUT: i32 = 2;

/// The state before and after the update, as the plan reads it.
struct States<'a> {
    previous: &'a Previous,
    new: BTreeMap<Key, &'a Object>,
    removed: BTreeSet<Key>,
    selector: &'a crate::policy::settings::Selector,
    schemas: &'a SchemaSet,
    secret_key: &'a SecretKey,
}

impl<'a> States<'a> {
    fn before(&self, key: &Key) -> Option<&'a Object> {
        self.previous.objects.get(key)
    }

    fn after(&self, key: &Key) -> Option<&'a Object> {
        match self.new.get(key) {
            Some(object) => Some(*object),
            None if self.removed.contains(key) => None,
            None => self.previous.objects.get(key),
        }
    }

    /// Workloads of a side, in a namespace.
    fn workloads(&self, after: bool) -> Vec<(String, &'a Object)> {
        let mut keys: BTreeSet<&Key> = self.previous.objects.keys().collect();
        keys.extend(self.new.keys());
        keys.into_iter()
            .filter(|(_, kind, _)| matches!(kind, ResourceKind::StatefulSet | ResourceKind::Deployment))
            .filter_map(|key| {
                let object = if after { self.after(key) } else { self.before(key) }?;
                Some((key.0.clone(), object))
            })
            .collect()
    }

    fn component(&self, object: &Object) -> Option<Component> {
        match Identity::of(object, self.selector) {
            Identity::Dx { component, .. } => component,
            Identity::Foreign => None,
        }
    }
}

/// The cluster facts as the update leaves them: which workloads need a source afterwards, and
/// which DX workloads were there before.
struct PlanFacts<'a, 'b>(&'b States<'a>);

impl ClusterFacts for PlanFacts<'_, '_> {
    fn workloads_requiring(&self, namespace: &str, source: &SourceRef) -> Lookup<Vec<String>> {
        let mut users: Vec<String> = self
            .0
            .workloads(true)
            .into_iter()
            .filter(|(ns, object)| ns == namespace && wants_rollout(object.metadata(), self.0.selector))
            .filter(|(_, object)| {
                object.pod_spec().is_some_and(|spec| references(spec).get(source).is_some_and(|usage| usage.required))
            })
            .map(|(ns, object)| format!("{} {ns}/{}", object.kind(), object.name()))
            .collect();
        users.sort();
        if users.is_empty() { Lookup::Absent } else { Lookup::Found(users) }
    }

    fn dx_workloads(&self, namespace: &str, component: Component) -> Lookup<Vec<String>> {
        let found: Vec<String> = self
            .0
            .workloads(false)
            .into_iter()
            .filter(|(ns, object)| ns == namespace && self.0.component(object) == Some(component))
            .map(|(ns, object)| format!("{} {ns}/{}", object.kind(), object.name()))
            .collect();
        if found.is_empty() { Lookup::Absent } else { Lookup::Found(found) }
    }

    fn backups(&self, namespace: &str, component: Component) -> Lookup<Vec<Backup>> {
        match &self.0.previous.backups {
            None => Lookup::Unreadable,
            Some(all) => {
                let found: Vec<Backup> = all
                    .iter()
                    .filter(|(ns, of, _)| ns == namespace && (of == component.as_str() || of == "all"))
                    .map(|(_, _, backup)| backup.clone())
                    .collect();
                if found.is_empty() { Lookup::Absent } else { Lookup::Found(found) }
            }
        }
    }

    fn now(&self) -> i64 {
        crate::policy::facts::unix_now()
    }

    fn unreadable_because(&self) -> &'static str {
        if self.0.previous.live { "the plan could not read backups" } else { "no cluster is connected" }
    }
}

/// The key Secret values are digested with (values are never kept).
pub struct SecretKey {
    pub key: hmac::Key,
    /// Whether it is the replicas' own (`--checksum-key-file`): then the Secret checksums the
    /// live pods carry can be compared too.
    pub shared: bool,
}

impl SecretKey {
    /// A key of this run only: Secrets compare before with after, not with what pods carry.
    pub fn ephemeral() -> Self {
        let mut bytes = [0u8; 32];
        // The system's random source does not fail on Linux; a zero key still compares consistently.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, &bytes), shared: false }
    }

    pub fn shared(bytes: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, bytes), shared: true }
    }
}

/// Plans the update `new` over `previous`.
pub fn plan(
    settings: &Settings,
    schemas: &SchemaSet,
    new: &Manifests,
    previous: &Previous,
    secret_key: &SecretKey,
) -> Plan {
    let selector = &settings.selector;
    let new_objects: BTreeMap<Key, &Object> =
        new.reviewed.iter().chain(&new.secrets).map(|m| (key_of(&m.namespace, &m.object), &m.object)).collect();
    let removed: BTreeSet<Key> = match &previous.removable {
        Some(removable) => removable.iter().filter(|k| !new_objects.contains_key(*k)).cloned().collect(),
        None => BTreeSet::new(),
    };
    let states = States { previous, new: new_objects, removed, selector, schemas, secret_key };
    let facts = PlanFacts(&states);
    let policy = Policy { settings, schemas, facts: &facts };
    let used_secrets = secrets_used_by_dx_workloads(&states);
    let mut subjects: BTreeSet<Key> = states.new.keys().cloned().collect();
    subjects.extend(states.removed.iter().cloned());
    let mut objects = Vec::new();
    let mut other_kinds = new.other_kinds - new.secrets.len();
    for key in subjects {
        let (old, object) = (states.before(&key), states.after(&key));
        let Some(subject) = object.or(old) else { continue };
        let component = match key.1 {
            ResourceKind::Secret => match used_secrets.get(&key) {
                Some(component) => *component,
                None => continue,
            },
            _ if matches!(Identity::of(subject, selector), Identity::Foreign) => {
                other_kinds += usize::from(object.is_some());
                continue;
            }
            _ => states.component(subject),
        };
        let before = match component {
            Some(c) if matches!(facts.dx_workloads(&key.0, c), Lookup::Found(_)) => ComponentBefore::Present,
            _ => ComponentBefore::Absent,
        };
        let compared = compare(old, object, component, before, Checksums::Ignored);
        let (rolls, roll_reasons) = match (old, object) {
            (Some(old), Some(new)) => rolls(&states, &key.0, (old, new), &compared),
            _ => (false, Vec::new()),
        };
        let operation = match (old, object) {
            (None, Some(_)) => Operation::Create,
            (Some(_), Some(_)) => Operation::Update,
            _ => Operation::Delete,
        };
        let judged = key.1 != ResourceKind::Secret || operation == Operation::Delete;
        let evaluation = (judged && compared.change != Change::Unchanged)
            .then(|| evaluate(policy, Review { operation, namespace: &key.0, object, old_object: old }));
        let backup_needed_because = backup_needed(old, object, component, &compared);
        let backup = match (object, component) {
            (Some(object), Some(c))
                if object.kind() == ResourceKind::StatefulSet
                    && c.workload_kind() == Some(ResourceKind::StatefulSet) =>
            {
                match facts.backups(&key.0, c) {
                    Lookup::Unreadable => BackupState::NotJudged(facts.unreadable_because().to_owned()),
                    found => {
                        let backups = if let Lookup::Found(backups) = found { backups } else { Vec::new() };
                        match crate::policy::rules::newest(object, &backups) {
                            Some(newest) => BackupState::Found {
                                name: newest.name.clone(),
                                age_seconds: facts.now() - newest.completed,
                            },
                            None => BackupState::Absent,
                        }
                    }
                }
            }
            _ => BackupState::NotJudged("only the StatefulSets of core, dam and persistence are backed up".to_owned()),
        };
        objects.push(Planned {
            kind: key.1,
            namespace: key.0.clone(),
            name: key.2.clone(),
            component,
            compared,
            rolls,
            roll_reasons,
            evaluation,
            backup_needed_because,
            backup,
        });
    }
    // Sources first, then the workloads that use them.
    let rank = |kind: ResourceKind| match kind {
        ResourceKind::ConfigMap => 0,
        ResourceKind::Secret => 1,
        ResourceKind::StatefulSet => 2,
        ResourceKind::Deployment => 3,
    };
    objects.sort_by(|a, b| (&a.namespace, rank(a.kind), &a.name).cmp(&(&b.namespace, rank(b.kind), &b.name)));
    Plan {
        objects,
        against: previous.description.clone(),
        removals_not_judged: previous.removable.is_none().then(|| previous.removals_not_judged.clone()),
        other_kinds,
    }
}

/// The Secrets DX workloads use (before or after the update), with the component of the first.
fn secrets_used_by_dx_workloads(states: &States<'_>) -> BTreeMap<Key, Option<Component>> {
    let mut used = BTreeMap::new();
    for after in [true, false] {
        for (namespace, workload) in states.workloads(after) {
            let component = match Identity::of(workload, states.selector) {
                Identity::Dx { component, .. } => component,
                Identity::Foreign => continue,
            };
            for source in workload.pod_spec().map(references).unwrap_or_default().into_keys() {
                if source.kind == SourceKind::Secret {
                    used.entry((namespace.clone(), ResourceKind::Secret, source.name)).or_insert(component);
                }
            }
        }
    }
    used
}

/// The checksum stamp a workload carries on one side of the update, by the code `/mutate` runs.
fn stamp_side(
    states: &States<'_>,
    namespace: &str,
    workload: &Object,
    after: bool,
    current: Option<&BTreeMap<String, String>>,
    narrowing: Narrowing,
) -> BTreeMap<String, String> {
    let Some(spec) = workload.pod_spec() else { return BTreeMap::new() };
    let source_of = |source: &SourceRef| {
        let kind = match source.kind {
            SourceKind::ConfigMap => ResourceKind::ConfigMap,
            SourceKind::Secret => ResourceKind::Secret,
        };
        let key = (namespace.to_owned(), kind, source.name.clone());
        if after { states.after(&key) } else { states.before(&key) }
    };
    let mut references: BTreeMap<SourceRef, Usage> = references(spec);
    if let Some(component) = states.component(workload) {
        narrow(&mut references, |source| {
            let schema = source_of(source).and_then(|object| SourceSchema::of(object.metadata(), states.selector));
            schema.map(|s| states.schemas.keys_only_for_others(&s, component)).unwrap_or_default()
        });
    }
    let digests: BTreeMap<&SourceRef, SourceDigest> = references
        .keys()
        .filter_map(|source| {
            let digest = match source_of(source)? {
                Object::ConfigMap(map) => SourceDigest::of_config_map(map),
                Object::Secret(secret) => SourceDigest::of_secret(secret, &states.secret_key.key),
                Object::StatefulSet(_) | Object::Deployment(_) => return None,
            };
            Some((source, digest))
        })
        .collect();
    stamp_references(&references, namespace, current, narrowing, |source| {
        digests.get(source).map_or(Lookup::Absent, Lookup::Found)
    })
    .annotations
}

/// Whether the update replaces a workload's pods, and why: its pod template changes, or the
/// checksum `/mutate` stamps for a ConfigMap or Secret it uses does.
fn rolls(
    states: &States<'_>,
    namespace: &str,
    (old, new): (&Object, &Object),
    compared: &Compared,
) -> (bool, Vec<String>) {
    if !matches!(new.kind(), ResourceKind::StatefulSet | ResourceKind::Deployment) {
        return (false, Vec::new());
    }
    let mut reasons = Vec::new();
    if compared.template_changed {
        reasons.push("its pod template changes".to_owned());
    }
    if wants_rollout(new.metadata(), states.selector) {
        let carried = old.template_metadata().and_then(|m| m.annotations.as_ref());
        let before = stamp_side(states, namespace, old, false, carried, Narrowing::KeepCurrentWhole);
        let narrowing = if compared.template_changed { Narrowing::Apply } else { Narrowing::KeepCurrentWhole };
        let after = stamp_side(states, namespace, new, true, Some(&before), narrowing);
        let mut sources: BTreeSet<SourceRef> = old.pod_spec().map(references).unwrap_or_default().into_keys().collect();
        sources.extend(new.pod_spec().map(references).unwrap_or_default().into_keys());
        let used_after: BTreeSet<SourceRef> = new.pod_spec().map(references).unwrap_or_default().into_keys().collect();
        for source in sources {
            let annotation = crate::checksum::annotations::source_key(&source);
            let reason = match (before.get(&annotation), after.get(&annotation)) {
                (Some(a), Some(b)) if a != b => format!("{source} changes"),
                // The live pods do not carry what /mutate stamps now (the controller has not
                // re-stamped them, or they predate dx-admission): the next apply rolls them.
                (Some(_), Some(stamped))
                    if states.previous.live
                        && (source.kind == SourceKind::ConfigMap || states.secret_key.shared)
                        && carried.and_then(|c| c.get(&annotation)) != Some(stamped) =>
                {
                    match carried.and_then(|c| c.get(&annotation)) {
                        Some(_) => format!("its pods carry an outdated checksum of {source}"),
                        None => format!("its pods carry no checksum of {source} yet"),
                    }
                }
                (None, Some(_)) => format!("it starts using {source}"),
                (Some(_), None) if used_after.contains(&source) => format!("{source} is removed"),
                (Some(_), None) => format!("it stops using {source}"),
                _ => continue,
            };
            reasons.push(reason);
        }
    }
    (!reasons.is_empty(), reasons)
}

/// Why a change needs a backup first: an application or persistence schema change of a stateful
/// component (the rule `backup-before-update`), or a version going down.
fn backup_needed(
    old: Option<&Object>,
    new: Option<&Object>,
    component: Option<Component>,
    compared: &Compared,
) -> Option<String> {
    let (old, new) = (old?, new?);
    if let (Some(from), Some(to)) = (old.label(VERSION_LABEL), new.label(VERSION_LABEL))
        && version::compare(to, from) == std::cmp::Ordering::Less
    {
        return Some(format!("{from} -> {to} is a downgrade"));
    }
    let component = component.filter(|c| c.workload_kind() == Some(ResourceKind::StatefulSet))?;
    if new.kind() != ResourceKind::StatefulSet {
        return None;
    }
    let gated = compared.categories.needing_backup()?;
    Some(format!("a category {gated} change of {component}"))
}

/// Runs `plan` end to end and returns the exit code.
pub fn run(options: &Options, settings: &Settings) -> i32 {
    let schemas = match SchemaSet::load(&options.schemas) {
        Ok(schemas) => schemas,
        Err(error) => {
            eprintln!("error: --schemas: {error}");
            return EXIT_INPUT;
        }
    };
    let new = match check::read_manifests(&options.files, &options.namespace) {
        Ok(new) => new,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_INPUT;
        }
    };
    let key = match &options.checksum_key_file {
        None => SecretKey::ephemeral(),
        Some(path) => match crate::checksum::digest::read_key_file(path) {
            Ok(bytes) => SecretKey::shared(&bytes),
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_INPUT;
            }
        },
    };
    let release = options.release.as_deref();
    let previous = match &options.previous {
        PreviousFrom::Old(paths) => match check::read_manifests(paths, &options.namespace) {
            Ok(old) => from_manifests(old, release, &options.namespace),
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_INPUT;
            }
        },
        PreviousFrom::Cluster { kubeconfig } => {
            let mut namespaces: BTreeSet<String> =
                new.reviewed.iter().chain(&new.secrets).map(|m| m.namespace.clone()).collect();
            namespaces.insert(options.namespace.clone());
            match read_cluster(kubeconfig.as_deref(), &namespaces, release, &options.namespace) {
                Ok(previous) => previous,
                Err(error) => {
                    eprintln!("error: cannot read the previous state from the cluster: {error}");
                    return EXIT_INPUT;
                }
            }
        }
    };
    let plan = plan(settings, &schemas, &new, &previous, &key);
    match options.format {
        Format::Text => crate::cli::output(&render_text(&plan)),
        Format::Json => crate::cli::output(&format!("{:#}\n", render_json(&plan))),
        Format::Markdown => crate::cli::output(&render_markdown(&plan)),
    }
    if plan.refused() { EXIT_REFUSED } else { EXIT_ADMITTED }
}

fn read_cluster(
    kubeconfig: Option<&std::path::Path>,
    namespaces: &BTreeSet<String>,
    release: Option<&str>,
    release_namespace: &str,
) -> Result<Previous, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = crate::client::connect(kubeconfig).await.map_err(|e| e.to_string())?;
        from_cluster(client, namespaces, release, release_namespace).await.map_err(|e| e.to_string())
    })
}
