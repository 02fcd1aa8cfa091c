//! The DX rules: each a value with a stable id, a title, the kinds and operations it applies
//! to, a default severity, why it exists, how to fix what it finds, and the check itself.
//!
//! Rule ids are public API (configuration, metrics labels, messages, `docs/rules.md`): never
//! rename one; retire it and add another.

mod backup;
pub use backup::{age, newest};
mod config;
mod identity;
mod images;
mod resources;
mod rollout;
mod schema;
mod storage;
mod upgrade;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::facts::{ClusterFacts, Fact};
use super::finding::Finding;
use super::object::{Component, Object, ResourceKind};
use super::operation::Operation;
use super::path::FieldPath;
use super::schema::{SchemaSet, VersionLookup};
use super::settings::{Settings, Severity};

/// Everything a rule may look at. Nothing in it performs I/O: the cluster is seen through
/// `facts`, answered from memory.
pub struct Context<'a> {
    /// The object judged: the new object on CREATE and UPDATE, the stored one on DELETE.
    pub object: &'a Object,
    /// The stored object, on UPDATE.
    pub old: Option<&'a Object>,
    /// The update categories of the change (DX objects; empty for others).
    pub categories: crate::policy::update::Categories,
    pub namespace: &'a str,
    /// `namespace/name`, as messages name the object.
    pub object_name: &'a str,
    pub component_label: Option<&'a str>,
    pub component: Option<Component>,
    pub schemas: &'a SchemaSet,
    pub version: VersionLookup<'a>,
    pub settings: &'a Settings,
    pub facts: &'a dyn ClusterFacts,
}

/// Which objects of its kinds a rule judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// DX objects only (the selector's labels).
    Dx,
    /// Every object of the kinds, DX or not: a Secret a DX workload needs is rarely labelled DX.
    Any,
}

/// A rule of the catalogue.
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub kinds: &'static [ResourceKind],
    pub operations: &'static [Operation],
    pub scope: Scope,
    /// The cluster facts the check reads; without them it says it could not judge.
    pub facts: &'static [Fact],
    pub severity: Severity,
    /// Why DX needs this rule.
    pub rationale: &'static str,
    /// How to fix what it finds (findings may carry a more specific hint).
    pub fix: &'static str,
    pub check: fn(&Context<'_>, &mut Findings<'_>),
}

impl Rule {
    /// Whether the rule judges this review.
    pub fn applies(&self, kind: ResourceKind, operation: Operation, dx: bool) -> bool {
        self.kinds.contains(&kind) && self.operations.contains(&operation) && (dx || self.scope == Scope::Any)
    }
}

/// Collects a rule's findings, stamping them with the rule's id.
pub struct Findings<'a> {
    rule: &'static str,
    items: &'a mut Vec<Finding>,
}

impl<'a> Findings<'a> {
    pub fn new(rule: &'static str, items: &'a mut Vec<Finding>) -> Self {
        Self { rule, items }
    }

    pub fn add(&mut self, path: FieldPath, message: impl Into<String>) {
        self.push(path, message.into(), None, None);
    }

    pub fn add_with_hint(&mut self, path: FieldPath, message: impl Into<String>, hint: impl Into<String>) {
        self.push(path, message.into(), Some(hint.into()), None);
    }

    fn push(&mut self, path: FieldPath, message: String, hint: Option<String>, requested: Option<Severity>) {
        self.items.push(Finding { rule: self.rule, path, message, hint, requested, not_judged: false });
    }

    /// The rule could not judge because a cluster fact is unreadable: `not judged: <why>`, a
    /// warning at most.
    pub fn not_judged(&mut self, path: FieldPath, why: &str) {
        let message = format!("not judged: {why}");
        self.items.push(Finding { rule: self.rule, path, message, hint: None, requested: None, not_judged: true });
    }

    /// A finding that asks for a severity of its own (declared in a schema).
    pub fn add_requesting(
        &mut self,
        path: FieldPath,
        message: impl Into<String>,
        hint: Option<String>,
        severity: Severity,
    ) {
        self.push(path, message.into(), hint, Some(severity));
    }
}

const CONFIGMAP: &[ResourceKind] = &[ResourceKind::ConfigMap];
const WORKLOADS: &[ResourceKind] = &[ResourceKind::StatefulSet, ResourceKind::Deployment];
const STATEFULSET: &[ResourceKind] = &[ResourceKind::StatefulSet];
const DEPLOYMENT: &[ResourceKind] = &[ResourceKind::Deployment];
const DX_KINDS: &[ResourceKind] = &ResourceKind::DX;
const SOURCES: &[ResourceKind] = &[ResourceKind::ConfigMap, ResourceKind::Secret];
const WRITES: &[Operation] = &[Operation::Create, Operation::Update];
const UPDATE: &[Operation] = &[Operation::Update];
const DELETE: &[Operation] = &[Operation::Delete];

/// The catalogue, in the order findings are reported.
pub static RULES: &[Rule] = &[
    Rule {
        id: "component-known",
        title: "DX objects name a known DX application",
        kinds: DX_KINDS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "The component label decides which schema and which rules apply; an unknown or missing one means nothing is checked.",
        fix: "set label app.kubernetes.io/component to core, dam, persistence, ring-api, content-composer, image-processor (or global on a ConfigMap)",
        check: identity::component_known,
    },
    Rule {
        id: "component-kind",
        title: "Stateful applications run as StatefulSets, stateless ones as Deployments",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "Core, DAM and persistence keep per-pod identity and storage; RingAPI, Content Composer and Image Processor are stateless and scale freely.",
        fix: "deploy core, dam and persistence as StatefulSets and ring-api, content-composer and image-processor as Deployments",
        check: identity::component_kind,
    },
    Rule {
        id: "schema-version-known",
        title: "The requested schema version is loaded",
        kinds: DX_KINDS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "An object written for a schema version this server does not know cannot be checked.",
        fix: "set annotation dx.hcl.com/schema-version to a known version, or remove it to use the default",
        check: schema::version_known,
    },
    Rule {
        id: "schema",
        title: "The object matches its versioned DX schema",
        kinds: DX_KINDS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "DX configuration is typed even though ConfigMap values are strings; the DX team's schemas say what each key holds.",
        fix: "correct the value as described; the schema file named in the first line lists every key",
        check: schema::matches,
    },
    Rule {
        id: "schema-unknown-key",
        title: "ConfigMaps carry only keys their schema declares",
        kinds: CONFIGMAP,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "A misspelt key is silently ignored by DX; the schema decides (dxUnknownKeys) whether unknown keys deny or warn.",
        fix: "remove the key or correct its spelling",
        check: schema::unknown_keys,
    },
    Rule {
        id: "schema-renamed-key",
        title: "ConfigMaps use the key names of their schema version",
        kinds: CONFIGMAP,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "A key renamed in a new schema version is no longer read under its old name.",
        fix: "rename the key; the value can stay",
        check: schema::renamed_keys,
    },
    Rule {
        id: "stateless-no-pvc",
        title: "Stateless applications mount no persistent volume claims",
        kinds: DEPLOYMENT,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "RingAPI, Content Composer and Image Processor must scale and reschedule freely; a claim pins them and shares state they must not hold.",
        fix: "remove the persistentVolumeClaim volume; keep state in Core, DAM or persistence",
        check: storage::stateless_no_pvc,
    },
    Rule {
        id: "resources-required",
        title: "Every container sets cpu and memory requests and limits",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "Without requests the scheduler cannot place DX pods sensibly; without limits one pod can starve its node.",
        fix: "set resources.requests and resources.limits for cpu and memory",
        check: resources::required,
    },
    Rule {
        id: "resources-quantity",
        title: "Resource quantities parse",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "A quantity such as 4GB is not Kubernetes syntax; the pod would never be created.",
        fix: "write quantities like 500m, 2, 512Mi or 4Gi",
        check: resources::quantities,
    },
    Rule {
        id: "resources-request-within-limit",
        title: "No request exceeds its limit",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "A request above its limit is refused when the pods are created, long after the apply succeeded.",
        fix: "lower the request or raise the limit",
        check: resources::request_within_limit,
    },
    Rule {
        id: "image-pinned",
        title: "Images are pinned to a release tag or a digest",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "latest (or no tag) changes under running pods; rollbacks and support need to know exactly what runs.",
        fix: "use a DX release tag (e.g. :95_CF225) or an @sha256 digest",
        check: images::pinned,
    },
    Rule {
        id: "readiness-probe",
        title: "Every container has a readiness probe",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "Rolling updates advance only on ready pods; without a probe a pod counts as ready before DX can serve.",
        fix: "add a readinessProbe (e.g. an httpGet on the application's health endpoint)",
        check: rollout::readiness_probe,
    },
    Rule {
        id: "liveness-probe",
        title: "Every container has a liveness probe",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Warn,
        rationale: "A hung DX JVM is only restarted when a liveness probe notices it.",
        fix: "add a livenessProbe with a generous initialDelaySeconds or a startupProbe",
        check: rollout::liveness_probe,
    },
    Rule {
        id: "statefulset-rolling-update",
        title: "StatefulSets roll updates automatically",
        kinds: STATEFULSET,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "updateStrategy OnDelete silently stops rolling updates: new config and images never reach running pods.",
        fix: "set spec.updateStrategy.type to RollingUpdate (or remove it)",
        check: rollout::statefulset_rolling_update,
    },
    Rule {
        id: "farm-shared-storage",
        title: "Core's profile and DAM's uploads come from one shared claim",
        kinds: STATEFULSET,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "Every Core pod must see the same profile and every DAM pod the same uploads; volumeClaimTemplates give each pod its own copy, which diverges.",
        fix: "mount a persistentVolumeClaim volume naming one ReadWriteMany claim shared by all pods",
        check: storage::farm_shared_storage,
    },
    Rule {
        id: "persistence-rwo",
        title: "Persistence claim templates are ReadWriteOnce",
        kinds: STATEFULSET,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "Each PostgreSQL pod owns its data directory; a shared-access volume invites two writers.",
        fix: "set accessModes to [ReadWriteOnce] in every volumeClaimTemplate",
        check: storage::persistence_rwo,
    },
    Rule {
        id: "persistence-no-shared-claim",
        title: "Persistence pods mount no shared claim",
        kinds: STATEFULSET,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "A claim named in the pod template is shared by every replica; PostgreSQL replicas must each have their own.",
        fix: "move the storage into volumeClaimTemplates",
        check: storage::persistence_no_shared_claim,
    },
    Rule {
        id: "template-labels",
        title: "Pod templates carry the DX labels",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Warn,
        rationale: "Services, dashboards and the rollout controller find DX pods by their part-of and component labels.",
        fix: "copy the part-of and component labels into spec.template.metadata.labels",
        check: identity::template_labels,
    },
    Rule {
        id: "version-label",
        title: "Workloads carry their application version",
        kinds: WORKLOADS,
        operations: WRITES,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Warn,
        rationale: "The version label lets dx-admission refuse accidental downgrades.",
        fix: "set label app.kubernetes.io/version to the DX release",
        check: identity::version_label,
    },
    Rule {
        id: "claim-templates-change",
        title: "Changes to volumeClaimTemplates are explained",
        kinds: STATEFULSET,
        operations: UPDATE,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "Kubernetes refuses any change to a StatefulSet's volumeClaimTemplates; the data must be migrated instead. \
                    On a real UPDATE the API server's own validation refuses it before any validating webhook runs \
                    (users see `spec: Forbidden: updates to statefulset spec for fields other than ...`); this rule \
                    explains it where dx-admission sees the change first: `check --old` and the Helm post-renderer.",
        fix: "keep the templates as they are and migrate the claims (see the hint)",
        check: upgrade::claim_templates_change,
    },
    Rule {
        id: "version-downgrade",
        title: "Versions only go up unless a downgrade is declared",
        kinds: DX_KINDS,
        operations: UPDATE,
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "DX updates migrate data; running an older release over migrated data corrupts it. A rollback needs the backup taken before the update. \
                    ConfigMaps are judged by the same label (Helm charts set it on every object), so a refused helm rollback changes nothing: Helm applies ConfigMaps first.",
        fix: "restore the backup taken before the update, then set annotation dx.hcl.com/allow-downgrade: \"true\"",
        check: upgrade::version_downgrade,
    },
    Rule {
        id: "backup-before-update",
        title: "Stateful updates that migrate data have a recent backup",
        kinds: STATEFULSET,
        operations: UPDATE,
        scope: Scope::Dx,
        facts: &[Fact::Backups],
        severity: Severity::Deny,
        rationale: "A new release (A) or persistence schema (P) of Core, DAM or persistence migrates their data; a rollback restores the backup taken before. \
                    Only changes of category C (config, the checksums dx-admission stamps) and first installs go ahead without one.",
        fix: "take a backup (a Job or VolumeSnapshot labelled dx.hcl.com/backup-of), wait for it to complete, and apply again",
        check: backup::before_update,
    },
    Rule {
        id: "config-in-use",
        title: "ConfigMaps and Secrets that workloads need are not deleted",
        kinds: SOURCES,
        operations: DELETE,
        scope: Scope::Any,
        facts: &[Fact::WorkloadsRequiring],
        severity: Severity::Deny,
        rationale: "Pods that reference a deleted ConfigMap or Secret fail to start on their next restart or rollout.",
        fix: "remove the reference from those workloads (or mark it optional: true) and apply them, then delete",
        check: config::in_use,
    },
];

/// Looks a rule up by id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}

/// Every rule id, in catalogue order.
pub fn ids() -> Vec<&'static str> {
    RULES.iter().map(|rule| rule.id).collect()
}

/// A container of the pod template, with its path.
pub struct ContainerAt<'a> {
    pub container: &'a Container,
    pub path: FieldPath,
    pub init: bool,
}

/// The path of a workload's pod spec.
pub fn pod_spec_path() -> FieldPath {
    FieldPath::root("spec").field("template").field("spec")
}

/// Containers, then init containers, each with its path.
pub fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerAt<'_>> {
    let base = pod_spec_path();
    let regular = spec.containers.iter().enumerate().map({
        let base = base.clone();
        move |(i, container)| ContainerAt { container, path: base.field("containers").index(i), init: false }
    });
    let init = spec.init_containers.iter().flatten().enumerate().map(move |(i, container)| ContainerAt {
        container,
        path: base.field("initContainers").index(i),
        init: true,
    });
    regular.chain(init)
}

#[cfg(test)]
mod tests;
