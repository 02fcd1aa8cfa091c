//! What one change of a DX object is: added, removed, changed or unchanged; its update
//! categories; what changed, in plain words; and what the API server refuses to change.
//!
//! The live path (every admitted review), `plan` and the tests call [`compare`].

use std::fmt;

use serde_json::Value;

use super::normal::{normalized, without_checksums};
use crate::policy::annotations::{PERSISTENCE_SCHEMA, VERSION_LABEL};
use crate::policy::values::Quantity;
use crate::policy::{Component, Object, ResourceKind};

/// The update categories of the DX update design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// A: a workload's image or application version changes.
    Application,
    /// C: a ConfigMap's or Secret's data changes, or a workload changes otherwise.
    Configuration,
    /// P: a stateful component declares a new persistence schema or changes its claim templates.
    Persistence,
    /// N: a workload of a component that was not there before is created.
    New,
    /// R: a DX workload or ConfigMap is removed.
    Removal,
}

impl Category {
    pub const ALL: [Self; 5] = [Self::Application, Self::Configuration, Self::Persistence, Self::New, Self::Removal];

    /// The letter the design gives it (and metrics and audit annotations carry).
    pub fn letter(self) -> &'static str {
        match self {
            Self::Application => "A",
            Self::Configuration => "C",
            Self::Persistence => "P",
            Self::New => "N",
            Self::Removal => "R",
        }
    }

    /// What the design calls changes of this category, in the plural.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Application => "application changes",
            Self::Configuration => "configuration changes",
            Self::Persistence => "persistence schema changes",
            Self::New => "new applications",
            Self::Removal => "removals",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of categories, shown as `A,C` in the design's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Categories(u8);

impl Categories {
    pub fn insert(&mut self, category: Category) {
        self.0 |= category.bit();
    }

    pub fn contains(self, category: Category) -> bool {
        self.0 & category.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// The categories among these that migrate data, so need a backup first (A and P), as `A,P`;
    /// `None` when there is none.
    pub fn needing_backup(self) -> Option<String> {
        let gated: Categories =
            self.iter().filter(|c| matches!(c, Category::Application | Category::Persistence)).collect();
        (!gated.is_empty()).then(|| gated.to_string())
    }
}

impl FromIterator<Category> for Categories {
    fn from_iter<I: IntoIterator<Item = Category>>(items: I) -> Self {
        let mut set = Self::default();
        items.into_iter().for_each(|c| set.insert(c));
        set
    }
}

impl fmt::Display for Categories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letters: Vec<&str> = self.iter().map(Category::letter).collect();
        f.write_str(&letters.join(","))
    }
}

/// How an object changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Changed,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One change of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compared {
    pub change: Change,
    pub categories: Categories,
    /// What changed, in plain words (Secret values never appear).
    pub summary: Vec<String>,
    /// Fields the API server refuses to update, with its reason.
    pub refused: Vec<String>,
    /// Whether the pod template changes (apart from dx-admission's checksum annotations).
    pub template_changed: bool,
}

/// Where the other workloads of a new workload's component stand, for category N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentBefore {
    /// Another workload of the component was there: a created one is not a new application.
    Present,
    /// None was there (or nothing is known: a first install is the common case).
    Absent,
}

/// Whether dx-admission's own checksum annotations on pod templates count as a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksums {
    /// The live path: a re-stamp is a configuration change (C).
    Counted,
    /// Rendered manifests against live objects: the manifests never carry them.
    Ignored,
}

/// Compares the stored object `old` with `new` (`None` on either side: added or removed).
/// `component` is the object's DX component; for Secrets, that of the workload using it.
pub fn compare(
    old: Option<&Object>,
    new: Option<&Object>,
    component: Option<Component>,
    before: ComponentBefore,
    checksums: Checksums,
) -> Compared {
    let kind = new.or(old).map(Object::kind);
    let workload = matches!(kind, Some(ResourceKind::StatefulSet | ResourceKind::Deployment));
    let mut compared = Compared {
        change: Change::Unchanged,
        categories: Categories::default(),
        summary: Vec::new(),
        refused: Vec::new(),
        template_changed: false,
    };
    let (Some(old), Some(new)) = (old, new) else {
        compared.change = if new.is_some() { Change::Added } else { Change::Removed };
        match (new.is_some(), kind) {
            (true, _) if workload && before == ComponentBefore::Absent => compared.categories.insert(Category::New),
            (true, _) => compared.categories.insert(Category::Configuration),
            (false, Some(ResourceKind::Secret)) => compared.categories.insert(Category::Configuration),
            (false, _) => compared.categories.insert(Category::Removal),
        }
        return compared;
    };
    let kind = new.kind();
    let semantic = |object: &Object| match checksums {
        Checksums::Counted => normalized(kind, &object.to_json()),
        Checksums::Ignored => without_checksums(normalized(kind, &object.to_json())),
    };
    let (old_form, new_form) = (semantic(old), semantic(new));
    let mut differences = Vec::new();
    diff(&mut Vec::new(), Some(&old_form), Some(&new_form), &mut differences);
    if differences.is_empty() {
        return compared;
    }
    compared.change = Change::Changed;
    let stateful = component.is_some_and(|c| c.workload_kind() == Some(ResourceKind::StatefulSet));
    for difference in &differences {
        let category = classify(kind, stateful, &difference.path);
        if let Some(category) = category {
            compared.categories.insert(category);
        }
        if let Some(reason) = refusal(kind, &difference.path) {
            let line = format!("{}: {reason}", render_path(&difference.path[..difference.path.len().min(2)]));
            if !compared.refused.contains(&line) {
                compared.refused.push(line);
            }
        }
    }
    if workload {
        let (old_template, new_template) = match checksums {
            Checksums::Counted => (without_checksums(old_form), without_checksums(new_form)),
            Checksums::Ignored => (old_form, new_form),
        };
        compared.template_changed = old_template.get("spec").and_then(|s| s.get("template"))
            != new_template.get("spec").and_then(|s| s.get("template"));
    }
    compared.summary = summarise(kind, &differences);
    compared
}

/// One step of a path into an object: a field, a list element by its `name`, or by index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Field(String),
    Named(String),
    Index(usize),
}

#[derive(Debug)]
struct Difference {
    path: Vec<Step>,
    old: Option<Value>,
    new: Option<Value>,
}

fn field(step: &Step) -> Option<&str> {
    match step {
        Step::Field(name) => Some(name),
        _ => None,
    }
}

/// Differences between two semantic forms, down to the first level where they differ in shape.
/// Lists of named elements (containers, env, volumes) are matched by name.
fn diff(path: &mut Vec<Step>, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Difference>) {
    if old == new || same_quantity(path, old, new) {
        return;
    }
    // Labels and annotations are compared key by key, also when one side has none.
    let empty = Value::Object(serde_json::Map::new());
    let in_metadata = path.first().and_then(field) == Some("metadata");
    let (old, new) = match (old, new) {
        (None, Some(Value::Object(_))) if in_metadata => (Some(&empty), new),
        (Some(Value::Object(_)), None) if in_metadata => (old, Some(&empty)),
        pair => pair,
    };
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                path.push(Step::Field(key.clone()));
                diff(path, a.get(key), b.get(key), out);
                path.pop();
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if named(a) && named(b) => {
            let name = |v: &Value| element_name(v).unwrap_or("").to_owned();
            let mut names: Vec<String> = a.iter().chain(b).map(name).collect();
            names.sort();
            names.dedup();
            for key in names {
                path.push(Step::Named(key.clone()));
                diff(path, a.iter().find(|v| name(v) == key), b.iter().find(|v| name(v) == key), out);
                path.pop();
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                path.push(Step::Index(index));
                diff(path, Some(x), Some(y), out);
                path.pop();
            }
        }
        _ => out.push(Difference { path: path.clone(), old: old.cloned(), new: new.cloned() }),
    }
}

/// Resource quantities compare by value: the API server stores `10240Mi` as `10Gi`.
fn same_quantity(path: &[Step], old: Option<&Value>, new: Option<&Value>) -> bool {
    let in_resources = path.iter().any(|step| matches!(step, Step::Field(f) if f == "resources"));
    let quantity = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|t| t.parse::<Quantity>().ok());
    in_resources && quantity(old).is_some_and(|a| quantity(new).is_some_and(|b| a == b))
}

/// A list element's name: its `name`, or `metadata.name` (claim templates).
fn element_name(value: &Value) -> Option<&str> {
    value.get("name").or_else(|| value.pointer("/metadata/name")).and_then(Value::as_str)
}

fn named(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|v| element_name(v).is_some())
}

fn is_container_image(path: &[Step]) -> bool {
    let fields: Vec<Option<&str>> = path.iter().map(field).collect();
    matches!(
        fields.as_slice(),
        [Some("spec"), Some("template"), Some("spec"), Some("containers" | "initContainers"), None, Some("image")]
    )
}

fn is_metadata(path: &[Step], map: &str, key: &str) -> bool {
    matches!(path, [Step::Field(m), Step::Field(f), Step::Field(k), ..] if m == "metadata" && f == map && k == key)
}

fn classify(kind: ResourceKind, stateful: bool, path: &[Step]) -> Option<Category> {
    use Category::*;
    let top = path.first().and_then(field);
    match kind {
        ResourceKind::ConfigMap | ResourceKind::Secret => {
            matches!(top, Some("data" | "binaryData")).then_some(Configuration)
        }
        ResourceKind::StatefulSet | ResourceKind::Deployment => {
            if is_container_image(path) || is_metadata(path, "labels", VERSION_LABEL) {
                Some(Application)
            } else if stateful
                && (is_metadata(path, "annotations", PERSISTENCE_SCHEMA)
                    || path.get(1).and_then(field) == Some("volumeClaimTemplates"))
            {
                Some(Persistence)
            } else {
                (top == Some("spec")).then_some(Configuration)
            }
        }
    }
}

const STATEFULSET_FORBIDDEN: &str = "Kubernetes refuses to update it (\"spec: Forbidden: updates to statefulset spec for \
     fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
     'minReadySeconds' are forbidden\")";
const IMMUTABLE: &str = "Kubernetes refuses to update it (\"field is immutable\")";

fn refusal(kind: ResourceKind, path: &[Step]) -> Option<&'static str> {
    let field = path.get(1).and_then(field);
    if path.first().and_then(self::field) != Some("spec") {
        return None;
    }
    match (kind, field) {
        (
            ResourceKind::StatefulSet,
            Some("volumeClaimTemplates" | "selector" | "serviceName" | "podManagementPolicy"),
        ) => Some(STATEFULSET_FORBIDDEN),
        (ResourceKind::Deployment, Some("selector")) => Some(IMMUTABLE),
        _ => None,
    }
}

fn render_path(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Field(name) if text.is_empty() => text.push_str(name),
            Step::Field(name) => {
                text.push('.');
                text.push_str(name);
            }
            Step::Named(name) => text.push_str(&format!("[{name}]")),
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// A value shown on one line, at most 60 characters.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let one_line = text.trim_end().replace('\n', "\\n");
    if one_line.chars().count() > 60 {
        format!("{}...", one_line.chars().take(57).collect::<String>())
    } else {
        one_line
    }
}

/// At most this many lines per object; the rest is counted.
const SUMMARY_LINES: usize = 12;

fn summarise(kind: ResourceKind, differences: &[Difference]) -> Vec<String> {
    let mut lines: Vec<String> = differences.iter().map(|d| describe(kind, d)).collect();
    if lines.len() > SUMMARY_LINES {
        let rest = lines.len() - (SUMMARY_LINES - 1);
        lines.truncate(SUMMARY_LINES - 1);
        lines.push(format!("and {rest} more changes"));
    }
    lines
}

fn describe(kind: ResourceKind, d: &Difference) -> String {
    let secret = kind == ResourceKind::Secret;
    let arrow = |what: String| match (&d.old, &d.new) {
        (None, Some(_)) if secret => format!("{what} added"),
        (Some(_), None) if secret => format!("{what} removed"),
        _ if secret => format!("{what} changed"),
        (None, Some(new)) if !new.is_object() && !new.is_array() => format!("{what} added: {}", shown(new)),
        (None, _) => format!("{what} added"),
        (Some(old), None) if !old.is_object() && !old.is_array() => format!("{what} removed (was {})", shown(old)),
        (Some(_), None) => format!("{what} removed"),
        (Some(old), Some(new)) if !old.is_object() && !new.is_object() => {
            format!("{what}: {} -> {}", shown(old), shown(new))
        }
        _ => format!("{what} changes"),
    };
    match d.path.as_slice() {
        [Step::Field(top), Step::Field(key)] if top == "data" || top == "binaryData" => arrow(format!("key {key}")),
        [Step::Field(m), Step::Field(f), Step::Field(k)] if m == "metadata" && f == "labels" && k == VERSION_LABEL => {
            arrow("version".to_owned())
        }
        [Step::Field(m), Step::Field(f), Step::Field(k)]
            if m == "metadata" && f == "annotations" && k == PERSISTENCE_SCHEMA =>
        {
            arrow("persistence schema".to_owned())
        }
        [Step::Field(m), Step::Field(f), Step::Field(k)] if m == "metadata" => {
            arrow(format!("{} {k}", &f[..f.len() - 1]))
        }
        path if is_container_image(path) => {
            let container = match &path[4] {
                Step::Named(name) => name.clone(),
                other => render_path(std::slice::from_ref(other)),
            };
            arrow(format!("image of container {container}"))
        }
        path => arrow(render_path(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn core(image: &str, version: &str) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "dx-core", "namespace": "dx", "labels": {
                "app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "core",
                "app.kubernetes.io/version": version}},
            "spec": {
                "serviceName": "dx-core", "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/component": "core"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/component": "core"}},
                    "spec": {"containers": [{"name": "core", "image": image,
                        "ports": [{"containerPort": 10039}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 10039}},
                        "env": [{"name": "LOG", "value": "info"}]}]}
                },
                "volumeClaimTemplates": [{"metadata": {"name": "log"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        })
    }

    fn object(value: serde_json::Value) -> Object {
        let kind = match value["kind"].as_str() {
            Some("StatefulSet") => ResourceKind::StatefulSet,
            Some("Deployment") => ResourceKind::Deployment,
            Some("Secret") => ResourceKind::Secret,
            _ => ResourceKind::ConfigMap,
        };
        Object::from_json(kind, value).unwrap()
    }

    /// What the API server returns for `core(...)`: defaults filled in, status and bookkeeping.
    fn stored(mut value: serde_json::Value) -> serde_json::Value {
        let metadata = value["metadata"].as_object_mut().unwrap();
        metadata.insert("uid".into(), json!("5d1c"));
        metadata.insert("resourceVersion".into(), json!("812"));
        metadata.insert("generation".into(), json!(3));
        metadata.insert("creationTimestamp".into(), json!("2026-12-01T10:00:00Z"));
        metadata.insert(
            "annotations".into(),
            json!({"meta.helm.sh/release-name": "dx", "meta.helm.sh/release-namespace": "dx"}),
        );
        metadata["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
        metadata.insert("managedFields".into(), json!([{"manager": "helm", "operation": "Update"}]));
        let spec = &mut value["spec"];
        spec["podManagementPolicy"] = json!("OrderedReady");
        spec["revisionHistoryLimit"] = json!(10);
        spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
        spec["persistentVolumeClaimRetentionPolicy"] = json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
        let template = &mut spec["template"];
        template["metadata"]["creationTimestamp"] = json!(null);
        template["metadata"]["annotations"] = json!({"dx.hcl.com/config-checksum": "sha256:00"});
        let pod = &mut template["spec"];
        for (key, value) in [
            ("restartPolicy", json!("Always")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("dnsPolicy", json!("ClusterFirst")),
            ("securityContext", json!({})),
            ("schedulerName", json!("default-scheduler")),
        ] {
            pod[key] = value;
        }
        let container = &mut pod["containers"][0];
        container["imagePullPolicy"] = json!("IfNotPresent");
        container["terminationMessagePath"] = json!("/dev/termination-log");
        container["terminationMessagePolicy"] = json!("File");
        container["resources"] = json!({});
        container["ports"][0]["protocol"] = json!("TCP");
        let probe = &mut container["readinessProbe"];
        probe["httpGet"]["scheme"] = json!("HTTP");
        for (key, value) in
            [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)]
        {
            probe[key] = json!(value);
        }
        let claim = &mut spec["volumeClaimTemplates"][0];
        claim["apiVersion"] = json!("v1");
        claim["kind"] = json!("PersistentVolumeClaim");
        claim["metadata"]["creationTimestamp"] = json!(null);
        claim["spec"]["volumeMode"] = json!("Filesystem");
        claim["status"] = json!({"phase": "Pending"});
        value["status"] = json!({"replicas": 2, "readyReplicas": 2});
        value
    }

    fn compared(old: serde_json::Value, new: serde_json::Value) -> Compared {
        compare(
            Some(&object(old)),
            Some(&object(new)),
            Some(Component::Core),
            ComponentBefore::Present,
            Checksums::Ignored,
        )
    }

    #[test]
    fn a_defaulted_stored_object_and_its_rendered_manifest_are_unchanged() {
        let rendered = core("hcl/dx/core:95_CF225", "95.225.0");
        let mut canonical = stored(rendered.clone());
        canonical["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = json!("1024Mi");
        let result = compared(canonical, rendered.clone());
        assert_eq!(result.change, Change::Unchanged, "quantities compare by value: {:?}", result.summary);
        let result = compared(stored(rendered.clone()), rendered);
        assert_eq!(result.change, Change::Unchanged, "{:?}", result.summary);
        assert_eq!(result.categories.to_string(), "");
        assert!(result.refused.is_empty() && !result.template_changed);
    }

    #[test]
    fn a_new_image_and_version_is_category_a_and_rolls() {
        let result =
            compared(stored(core("hcl/dx/core:95_CF225", "95.225.0")), core("hcl/dx/core:95_CF226", "95.226.0"));
        assert_eq!(result.change, Change::Changed);
        assert_eq!(result.categories.to_string(), "A");
        assert_eq!(
            result.summary,
            ["version: 95.225.0 -> 95.226.0", "image of container core: hcl/dx/core:95_CF225 -> hcl/dx/core:95_CF226"]
        );
        assert!(result.template_changed);
        assert!(result.refused.is_empty());
    }

    #[test]
    fn env_replicas_and_probes_are_category_c() {
        let mut new = core("hcl/dx/core:95_CF225", "95.225.0");
        new["spec"]["replicas"] = json!(3);
        new["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("debug");
        new["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = json!(5);
        let result = compared(stored(core("hcl/dx/core:95_CF225", "95.225.0")), new);
        assert_eq!(result.categories.to_string(), "C");
        assert_eq!(
            result.summary,
            [
                "spec.replicas: 2 -> 3",
                "spec.template.spec.containers[core].env[LOG].value: info -> debug",
                // 10 is the default, which the stored side does not show apart from "unset".
                "spec.template.spec.containers[core].readinessProbe.periodSeconds added: 5",
            ]
        );
    }

    #[test]
    fn image_and_config_together_are_a_and_c() {
        let mut new = core("hcl/dx/core:95_CF226", "95.225.0");
        new["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("debug");
        let result = compared(core("hcl/dx/core:95_CF225", "95.225.0"), new);
        assert_eq!(result.categories.to_string(), "A,C");
    }

    #[test]
    fn a_persistence_schema_or_claim_template_change_is_p_and_claim_templates_are_refused() {
        let mut schema = core("hcl/dx/core:95_CF225", "95.225.0");
        schema["metadata"]["annotations"] = json!({"dx.hcl.com/persistence-schema": "42"});
        let mut old = core("hcl/dx/core:95_CF225", "95.225.0");
        old["metadata"]["annotations"] = json!({"dx.hcl.com/persistence-schema": "41"});
        let result = compared(old, schema);
        assert_eq!(result.categories.to_string(), "P");
        assert_eq!(result.summary, ["persistence schema: 41 -> 42"]);
        assert!(result.refused.is_empty() && !result.template_changed);

        let mut grown = core("hcl/dx/core:95_CF225", "95.225.0");
        grown["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let result = compared(stored(core("hcl/dx/core:95_CF225", "95.225.0")), grown);
        assert_eq!(result.categories.to_string(), "P");
        assert_eq!(result.summary, ["spec.volumeClaimTemplates[log].spec.resources.requests.storage: 1Gi -> 2Gi"]);
        assert_eq!(result.refused.len(), 1);
        assert!(
            result.refused[0].starts_with("spec.volumeClaimTemplates: Kubernetes refuses to update it"),
            "{:?}",
            result.refused
        );
    }

    #[test]
    fn the_persistence_schema_of_a_stateless_component_is_no_category() {
        let deployment = |schema: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dx-ring-api",
                "annotations": {"dx.hcl.com/persistence-schema": schema}}, "spec": {"template": {}}})
        };
        let result = compare(
            Some(&object(deployment("1"))),
            Some(&object(deployment("2"))),
            Some(Component::RingApi),
            ComponentBefore::Present,
            Checksums::Counted,
        );
        assert_eq!((result.change, result.categories.to_string()), (Change::Changed, String::new()));
    }

    #[test]
    fn selector_service_name_and_pod_management_are_refused_on_statefulsets_and_selector_on_deployments() {
        let mut new = core("hcl/dx/core:95_CF225", "95.225.0");
        new["spec"]["serviceName"] = json!("dx-core-headless");
        new["spec"]["podManagementPolicy"] = json!("Parallel");
        new["spec"]["selector"]["matchLabels"]["app"] = json!("core");
        let result = compared(stored(core("hcl/dx/core:95_CF225", "95.225.0")), new);
        let fields: Vec<&str> = result.refused.iter().map(|r| r.split(':').next().unwrap()).collect();
        assert_eq!(fields, ["spec.podManagementPolicy", "spec.selector", "spec.serviceName"]);
        let deployment = |app: &str| {
            object(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": app}}, "template": {}}}))
        };
        let result = compare(
            Some(&deployment("a")),
            Some(&deployment("b")),
            Some(Component::RingApi),
            ComponentBefore::Present,
            Checksums::Counted,
        );
        assert_eq!(result.refused, ["spec.selector: Kubernetes refuses to update it (\"field is immutable\")"]);
    }

    #[test]
    fn config_map_keys_are_shown_with_values_and_secret_keys_by_name_only() {
        let map = |data: serde_json::Value| {
            object(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app.kubernetes.io/version": "1"}}, "data": data}),
            )
        };
        let old = map(json!({"log.level": "info", "gone": "x", "ldap.config": "host: a\nport: 636\n"}));
        let new = map(json!({"log.level": "debug", "added": "y", "ldap.config": "host: b\nport: 636\n"}));
        let result =
            compare(Some(&old), Some(&new), Some(Component::Core), ComponentBefore::Present, Checksums::Counted);
        assert_eq!(result.categories.to_string(), "C");
        assert_eq!(
            result.summary,
            [
                "key added added: y",
                "key gone removed (was x)",
                "key ldap.config: host: a\\nport: 636 -> host: b\\nport: 636",
                "key log.level: info -> debug"
            ]
        );
        let secret = |data: serde_json::Value| {
            object(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": data}))
        };
        let result = compare(
            Some(&secret(json!({"password": "aHVudGVyMg==", "old": "eA=="}))),
            Some(&secret(json!({"password": "c2VjcmV0", "new": "eQ=="}))),
            Some(Component::Persistence),
            ComponentBefore::Present,
            Checksums::Counted,
        );
        assert_eq!(result.categories.to_string(), "C");
        assert_eq!(result.summary, ["key new added", "key old removed", "key password changed"]);
        let text = format!("{result:?}");
        assert!(!text.contains("aHVudGVyMg") && !text.contains("c2VjcmV0") && !text.contains("hunter2"), "{text}");
        // A label-only change of a ConfigMap is a change of no category: nothing the pods see.
        let relabelled = object(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app.kubernetes.io/version": "2"}}, "data": {"log.level": "info", "gone": "x", "ldap.config": "host: a\nport: 636\n"}}),
        );
        let result =
            compare(Some(&old), Some(&relabelled), Some(Component::Core), ComponentBefore::Present, Checksums::Counted);
        assert_eq!((result.change, result.categories.to_string()), (Change::Changed, String::new()));
        assert_eq!(result.summary, ["version: 1 -> 2"]);
    }

    #[test]
    fn created_and_removed_objects_are_n_c_or_r() {
        let workload = object(core("hcl/dx/core:95_CF225", "95.225.0"));
        let map = object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
        let cases = [
            (None, Some(&workload), ComponentBefore::Absent, Change::Added, "N"),
            (None, Some(&workload), ComponentBefore::Present, Change::Added, "C"),
            (None, Some(&map), ComponentBefore::Absent, Change::Added, "C"),
            (Some(&workload), None, ComponentBefore::Present, Change::Removed, "R"),
            (Some(&map), None, ComponentBefore::Present, Change::Removed, "R"),
        ];
        let set = |letters: &[Category]| letters.iter().copied().collect::<Categories>();
        assert_eq!(set(&[Category::Application, Category::Configuration]).needing_backup().as_deref(), Some("A"));
        assert_eq!(set(&[Category::Persistence, Category::Application]).needing_backup().as_deref(), Some("A,P"));
        assert_eq!(set(&[Category::Configuration, Category::New]).needing_backup(), None);
        for (old, new, before, change, categories) in cases {
            let result = compare(old, new, Some(Component::Core), before, Checksums::Counted);
            assert_eq!((result.change, result.categories.to_string().as_str()), (change, categories));
        }
    }

    #[test]
    fn checksum_annotations_alone_change_the_template_only_as_c() {
        let mut old = core("hcl/dx/core:95_CF225", "95.225.0");
        old["spec"]["template"]["metadata"]["annotations"] = json!({"dx.hcl.com/config-checksum": "sha256:01"});
        let mut new = old.clone();
        new["spec"]["template"]["metadata"]["annotations"] = json!({"dx.hcl.com/config-checksum": "sha256:02"});
        let result = compare(
            Some(&object(old)),
            Some(&object(new)),
            Some(Component::Core),
            ComponentBefore::Present,
            Checksums::Counted,
        );
        assert_eq!(result.categories.to_string(), "C");
        assert!(!result.template_changed, "checksums are not the user's template");
        assert_eq!(
            result.summary,
            ["spec.template.metadata.annotations.dx.hcl.com/config-checksum: sha256:01 -> sha256:02"]
        );
    }
}
