//! The one definition of valid: [`evaluate`] runs every applicable rule over one review.

use std::fmt;

use super::annotations::SCHEMA_VERSION;
use super::finding::{Finding, Judged};
use super::object::{Identity, Object, ResourceKind};
use super::rules::{Context, Findings, RULES};
use super::schema::{SchemaSet, VersionLookup};
use super::settings::{Settings, Severity};

/// The admission operation, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the evaluation is configured with: settings and the current schema set.
#[derive(Clone, Copy)]
pub struct Policy<'a> {
    pub settings: &'a Settings,
    pub schemas: &'a SchemaSet,
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// The object's kind and `namespace/name`, for messages.
    pub kind: Option<ResourceKind>,
    pub object_name: String,
    /// Whether the object is a DX object at all.
    pub dx: bool,
    /// The schema version the object was checked under (`None` when it names an unknown one).
    pub schema_version: Option<String>,
    /// The version the object asked for, when it is not loaded.
    pub unknown_schema_version: Option<String>,
    /// Findings in catalogue order, each with its effective severity.
    pub findings: Vec<Judged>,
}

impl Evaluation {
    fn untouched(kind: Option<ResourceKind>, object_name: String) -> Self {
        Self { kind, object_name, ..Self::default() }
    }

    /// Whether any finding denies the request.
    pub fn denied(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Deny)
    }

    pub fn with_severity(&self, severity: Severity) -> impl Iterator<Item = &Judged> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// The denial text: a first line naming the object and schema version, then one line per
    /// denying finding. `None` when nothing denies.
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
        let under = match (&self.schema_version, &self.unknown_schema_version) {
            (Some(version), _) => format!("under DX schema {version}"),
            (None, Some(requested)) => format!("because DX schema {requested} is not loaded"),
            (None, None) => "by the DX rules".to_owned(),
        };
        let mut text = format!("{kind} {} rejected {under} ({count}):", self.object_name);
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

/// Evaluates one review. Foreign (non-DX) objects and deletions come back with no findings.
pub fn evaluate(policy: Policy<'_>, review: Review<'_>) -> Evaluation {
    let subject = review.object.or(review.old_object);
    let kind = subject.map(Object::kind);
    let object_name = subject.map_or_else(String::new, |o| qualified_name(review.namespace, o.name()));
    let Some(object) = review.object else {
        return Evaluation::untouched(kind, object_name);
    };
    let Identity::Dx { component_label, component } = Identity::of(object, &policy.settings.selector) else {
        return Evaluation::untouched(kind, object_name);
    };
    let version = policy.schemas.resolve(object.annotation(SCHEMA_VERSION));
    let (schema_version, unknown_schema_version) = match version {
        VersionLookup::Found(v) => (Some(v.name.clone()), None),
        VersionLookup::Unknown { requested } => (None, Some(requested.to_owned())),
    };
    let ctx = Context {
        object,
        old: review.old_object,
        component_label,
        component,
        schemas: policy.schemas,
        version,
        settings: policy.settings,
    };
    let mut findings = Vec::new();
    let mut found: Vec<Finding> = Vec::new();
    for rule in RULES {
        if !rule.kinds.contains(&object.kind()) || !rule.operations.contains(&review.operation) {
            continue;
        }
        (rule.check)(&ctx, &mut Findings::new(rule.id, &mut found));
        findings.extend(found.drain(..).map(|finding| {
            let requested = finding.requested.unwrap_or(rule.severity);
            let severity = policy.settings.severity(review.namespace, rule.id, requested);
            Judged { finding, severity, fix: rule.fix }
        }));
    }
    Evaluation { kind, object_name, dx: true, schema_version, unknown_schema_version, findings }
}

fn qualified_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() { name.to_owned() } else { format!("{namespace}/{name}") }
}
