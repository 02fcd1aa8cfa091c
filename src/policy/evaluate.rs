//! The one definition of valid: [`evaluate`] runs every applicable row of the rule table over one
//! review — CREATE, UPDATE and DELETE alike, DX objects and (for rules that say so) any object.

use super::annotations::SCHEMA_VERSION;
use super::facts::{ClusterFacts, OFFLINE};
use super::finding::{Finding, Judged};
use super::object::Component;
use super::object::{Identity, Object, ResourceKind};
use super::operation::Operation;
use super::rules::{Context, Findings, RULES, Rule};
use super::schema::{SchemaSet, VersionLookup};
use super::settings::{Settings, Severity};
use super::verdict::Verdict;
use crate::lookup::Lookup;
use crate::policy::update::{Categories, Checksums, ComponentBefore, compare};

/// What the evaluation is configured with and may know: settings, the current schema set, and
/// the cluster facts rules read.
#[derive(Clone, Copy)]
pub struct Policy<'a> {
    pub settings: &'a Settings,
    pub schemas: &'a SchemaSet,
    pub facts: &'a dyn ClusterFacts,
}

impl<'a> Policy<'a> {
    /// With no cluster: rules that need a cluster fact say they could not judge.
    pub fn offline(settings: &'a Settings, schemas: &'a SchemaSet) -> Self {
        Self { settings, schemas, facts: &OFFLINE }
    }
}

/// One review: the operation, where, and the new and stored objects.
#[derive(Clone, Copy)]
pub struct Review<'a> {
    pub operation: Operation,
    pub namespace: &'a str,
    /// The new object (CREATE, UPDATE); `None` on DELETE.
    pub object: Option<&'a Object>,
    /// The stored object (UPDATE, DELETE).
    pub old_object: Option<&'a Object>,
}

/// The outcome of an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The object's kind and `namespace/name`, for messages.
    pub kind: Option<ResourceKind>,
    pub object_name: String,
    pub operation: Operation,
    /// Whether the object is a DX object at all.
    pub dx: bool,
    /// The DX component it names, when it names a known one.
    pub component: Option<Component>,
    /// The schema version the object was checked under (`None` when it names an unknown one).
    pub schema_version: Option<String>,
    /// The version the object asked for, when it is not loaded.
    pub unknown_schema_version: Option<String>,
    /// Findings in catalogue order, each with its effective severity.
    pub findings: Vec<Judged>,
    /// The update categories of the change (DX objects only).
    pub categories: Categories,
}

impl Default for Evaluation {
    fn default() -> Self {
        Self {
            kind: None,
            object_name: String::new(),
            operation: Operation::Create,
            dx: false,
            component: None,
            schema_version: None,
            unknown_schema_version: None,
            findings: Vec::new(),
            categories: Categories::default(),
        }
    }
}

impl Evaluation {
    /// Whether any finding denies the request.
    pub fn denied(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Deny)
    }

    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.denied(), self.with_severity(Severity::Warn).next().is_some())
    }

    pub fn with_severity(&self, severity: Severity) -> impl Iterator<Item = &Judged> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// The denial text: a first line naming the object and what it was judged by, then one line
    /// per denying finding. `None` when nothing denies.
    pub fn denial_message(&self) -> Option<String> {
        let denials: Vec<&Judged> = self.with_severity(Severity::Deny).collect();
        if denials.is_empty() {
            return None;
        }
        let kind = self.kind.map_or("object", ResourceKind::as_str);
        let count = match denials.len() {
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        };
        // A delete is refused because something still needs the object; its schema is moot.
        let why = match (self.operation, &self.schema_version, &self.unknown_schema_version) {
            (Operation::Delete, _, _) => ": it is still in use".to_owned(),
            (_, Some(version), _) => format!(" under DX schema {version}"),
            (_, None, Some(requested)) => format!(" because DX schema {requested} is not loaded"),
            (_, None, None) => " by the DX rules".to_owned(),
        };
        let mut text = format!("{kind} {} rejected{why} ({count}):", self.object_name);
        for finding in denials {
            text.push('\n');
            text.push_str(&finding.line());
        }
        Some(text)
    }

    /// `Warning:` lines for findings at severity `warn`.
    pub fn warnings(&self) -> Vec<String> {
        self.with_severity(Severity::Warn).map(Judged::warning).collect()
    }
}

/// Evaluates one review against the rule table.
pub fn evaluate(policy: Policy<'_>, review: Review<'_>) -> Evaluation {
    evaluate_rules(RULES, policy, review)
}

/// Evaluates one review against `rules` (the table, or a test's own rows).
pub(crate) fn evaluate_rules(rules: &[Rule], policy: Policy<'_>, review: Review<'_>) -> Evaluation {
    // A DELETE judges the object being deleted; CREATE and UPDATE the object as it would be.
    let (subject, old) = match review.operation {
        Operation::Delete => (review.old_object, None),
        _ => (review.object, review.old_object),
    };
    let Some(object) = subject else {
        let kind = review.object.or(review.old_object).map(Object::kind);
        return Evaluation { kind, operation: review.operation, ..Evaluation::default() };
    };
    let object_name = qualified_name(review.namespace, object.name());
    let (dx, component_label, component) = match Identity::of(object, &policy.settings.selector) {
        Identity::Dx { component_label, component } => (true, component_label, component),
        Identity::Foreign => (false, None, None),
    };
    let version = policy.schemas.resolve(object.annotation(SCHEMA_VERSION));
    let (schema_version, unknown_schema_version) = match (dx, &version) {
        (false, _) => (None, None),
        (true, VersionLookup::Found(v)) => (Some(v.name.clone()), None),
        (true, VersionLookup::Unknown { requested }) => (None, Some((*requested).to_owned())),
    };
    let categories = if dx { categorise(policy.facts, review, object, component) } else { Categories::default() };
    let ctx = Context {
        object,
        old,
        categories,
        namespace: review.namespace,
        object_name: &object_name,
        component_label,
        component,
        schemas: policy.schemas,
        version,
        settings: policy.settings,
        facts: policy.facts,
    };
    let mut findings = Vec::new();
    let mut found: Vec<Finding> = Vec::new();
    for rule in rules.iter().filter(|rule| rule.applies(object.kind(), review.operation, dx)) {
        (rule.check)(&ctx, &mut Findings::new(rule.id, &mut found));
        findings.extend(found.drain(..).map(|finding| {
            let requested = finding.requested.unwrap_or(rule.severity);
            let mut severity = policy.settings.severity(review.namespace, rule.id, requested);
            if finding.not_judged {
                severity = severity.min(Severity::Warn);
            }
            Judged { finding, severity, fix: rule.fix }
        }));
    }
    Evaluation {
        kind: Some(object.kind()),
        object_name,
        operation: review.operation,
        dx,
        component,
        schema_version,
        unknown_schema_version,
        findings,
        categories,
    }
}

/// The categories of a reviewed change. A created workload is a new application (N) unless the
/// workload index knows another workload of its component in the namespace.
fn categorise(
    facts: &dyn ClusterFacts,
    review: Review<'_>,
    subject: &Object,
    component: Option<Component>,
) -> Categories {
    let before = match (review.operation, component) {
        (Operation::Create, Some(component)) => match facts.dx_workloads(review.namespace, component) {
            Lookup::Found(workloads) => {
                let this = format!("{} {}", subject.kind(), qualified_name(review.namespace, subject.name()));
                if workloads.iter().any(|w| *w != this) { ComponentBefore::Present } else { ComponentBefore::Absent }
            }
            Lookup::Absent | Lookup::Unreadable => ComponentBefore::Absent,
        },
        _ => ComponentBefore::Present,
    };
    let (old, new) = match review.operation {
        Operation::Create => (None, Some(subject)),
        Operation::Update => (review.old_object, Some(subject)),
        Operation::Delete => (Some(subject), None),
        Operation::Connect => return Categories::default(),
    };
    compare(old, new, component, before, Checksums::Counted).categories
}

fn qualified_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() { name.to_owned() } else { format!("{namespace}/{name}") }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::policy::path::FieldPath;
    use crate::policy::rules::{Findings, Scope};

    fn schemas() -> SchemaSet {
        SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    fn workload(labels: serde_json::Value) -> Object {
        Object::from_json(
            ResourceKind::Deployment,
            json!({"metadata": {"name": "dx-ring-api", "namespace": "dx", "labels": labels}}),
        )
        .unwrap()
    }

    fn refuse_removal(ctx: &Context<'_>, out: &mut Findings<'_>) {
        out.add(FieldPath::object(ctx.object.kind().as_str(), ctx.object_name), "is the last RingAPI");
    }

    const DELETE_RULE: Rule = Rule {
        id: "test-delete",
        title: "a DELETE rule",
        kinds: &[ResourceKind::Deployment],
        operations: &[Operation::Delete],
        scope: Scope::Dx,
        facts: &[],
        severity: Severity::Deny,
        rationale: "",
        fix: "keep it",
        check: refuse_removal,
    };

    #[test]
    fn a_delete_rule_added_to_the_table_judges_the_stored_object() {
        let (settings, schemas) = (Settings::default(), schemas());
        let stored = workload(json!({"app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "ring-api"}));
        let delete = Review { operation: Operation::Delete, namespace: "dx", object: None, old_object: Some(&stored) };
        let evaluation = evaluate_rules(&[DELETE_RULE], Policy::offline(&settings, &schemas), delete);
        assert_eq!(
            evaluation.denial_message().unwrap(),
            "Deployment dx/dx-ring-api rejected: it is still in use (1 problem):\n\
             - Deployment dx/dx-ring-api: is the last RingAPI [test-delete] fix: keep it"
        );
        // A rule for DELETE does not run on writes, and a DX-scoped one not on foreign objects.
        let create = Review { operation: Operation::Create, namespace: "dx", object: Some(&stored), old_object: None };
        assert!(evaluate_rules(&[DELETE_RULE], Policy::offline(&settings, &schemas), create).findings.is_empty());
        let foreign = workload(json!({"app": "web"}));
        let delete = Review { old_object: Some(&foreign), ..delete };
        assert!(evaluate_rules(&[DELETE_RULE], Policy::offline(&settings, &schemas), delete).findings.is_empty());
    }

    #[test]
    fn every_operation_a_rule_declares_is_one_the_engine_judges() {
        for rule in RULES {
            for operation in rule.operations {
                assert!(Operation::JUDGED.contains(operation), "{}: {operation} is never judged", rule.id);
            }
        }
    }
}
