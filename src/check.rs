//! `dx-admission check`: the server's evaluation, offline, over manifests on disk or stdin
//! (multi-document YAML or JSON, such as the output of `helm template`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::authoring::junit;
use crate::policy::schema::SchemaSet;
use crate::policy::{Evaluation, Object, Operation, Policy, ResourceKind, Review, Settings, Severity, evaluate};

/// What `check` is asked to do. The CLI's flags convert into it; the library knows no clap.
#[derive(Clone, Debug)]
pub struct Options {
    /// Manifests to check: files, directories, or `-` for stdin.
    pub files: Vec<PathBuf>,
    /// Previous manifests: the same object found there is checked as an UPDATE.
    pub old: Vec<PathBuf>,
    pub schemas: PathBuf,
    /// Namespace of objects that name none.
    pub namespace: String,
    pub format: Format,
}

/// How `check` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
    Sarif,
}

/// What `post-render` is given besides the rendered manifests on stdin.
#[derive(Clone, Debug)]
pub struct PostRenderOptions {
    pub schemas: PathBuf,
    /// Namespace of objects that name none (the release's).
    pub namespace: String,
}

/// Exit codes: clean, denied, usage or input error.
pub const EXIT_CLEAN: i32 = 0;
pub const EXIT_DENIED: i32 = 1;
pub const EXIT_INPUT: i32 = 2;

/// Why manifests could not be checked. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index}: not valid YAML or JSON: {message}")]
    Parse { path: String, index: usize, message: String },
    #[error("{path}: {kind} {name}: cannot be read as a {kind}: {source}")]
    Shape {
        path: String,
        kind: ResourceKind,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A manifest of a reviewed kind, with where it came from.
pub struct Manifest {
    pub source: String,
    pub namespace: String,
    pub object: Object,
}

impl Manifest {
    fn key(&self) -> (ResourceKind, String, String) {
        (self.object.kind(), self.namespace.clone(), self.object.name().to_owned())
    }
}

/// What `read_manifests` found: the reviewed manifests, the Secrets (which `check` judges not,
/// `plan` compares), and how many documents were of other kinds (Secrets among them).
#[derive(Default)]
pub struct Manifests {
    pub reviewed: Vec<Manifest>,
    pub secrets: Vec<Manifest>,
    pub other_kinds: usize,
}

/// Reads every manifest under `paths` (`-` is stdin). Directories are read for *.yaml, *.yml, *.json.
pub fn read_manifests(paths: &[PathBuf], default_namespace: &str) -> Result<Manifests, InputError> {
    let mut found = Manifests::default();
    for path in paths {
        for (source, text) in read_sources(path)? {
            parse_documents(&source, &text, default_namespace, &mut found)?;
        }
    }
    Ok(found)
}

fn read_sources(path: &Path) -> Result<Vec<(String, String)>, InputError> {
    let shown = path.display().to_string();
    let io = |source| InputError::Read { path: shown.clone(), source };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(io)?;
        return Ok(vec![("<stdin>".into(), text)]);
    }
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
            .collect();
        entries.sort();
        let mut sources = Vec::new();
        for entry in entries {
            sources.extend(read_sources(&entry)?);
        }
        return Ok(sources);
    }
    Ok(vec![(shown.clone(), std::fs::read_to_string(path).map_err(io)?)])
}

/// Reads the manifests in a text (multi-document YAML or JSON).
pub fn manifests_from_text(source: &str, text: &str, default_namespace: &str) -> Result<Manifests, InputError> {
    let mut found = Manifests::default();
    parse_documents(source, text, default_namespace, &mut found)?;
    Ok(found)
}

fn parse_documents(source: &str, text: &str, default_namespace: &str, out: &mut Manifests) -> Result<(), InputError> {
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| InputError::Parse {
            path: source.to_owned(),
            index: index + 1,
            message: e.to_string(),
        })?;
        collect(source, value, default_namespace, out)?;
    }
    Ok(())
}

fn collect(source: &str, value: Value, default_namespace: &str, out: &mut Manifests) -> Result<(), InputError> {
    let (api_version, kind) = (value["apiVersion"].as_str().unwrap_or(""), value["kind"].as_str().unwrap_or(""));
    if kind == "List" || kind.ends_with("List") && value["items"].is_array() {
        if let Value::Object(mut list) = value {
            for item in list
                .remove("items")
                .and_then(|v| if let Value::Array(a) = v { Some(a) } else { None })
                .unwrap_or_default()
            {
                collect(source, item, default_namespace, out)?;
            }
        }
        return Ok(());
    }
    if value.is_null() {
        return Ok(());
    }
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    // Secrets are read by no rule offline: `check` judges what it can see, DX kinds.
    let Some(resource_kind) = ResourceKind::from_group_kind(group, kind) else {
        out.other_kinds += 1;
        return Ok(());
    };
    if resource_kind == ResourceKind::Secret {
        out.other_kinds += 1;
    }
    let name = value["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let namespace = value["metadata"]["namespace"].as_str().unwrap_or(default_namespace).to_owned();
    let object = Object::from_json(resource_kind, value).map_err(|source_error| InputError::Shape {
        path: source.to_owned(),
        kind: resource_kind,
        name: name.clone(),
        source: source_error,
    })?;
    let manifest = Manifest { source: source.to_owned(), namespace, object };
    if resource_kind == ResourceKind::Secret {
        out.secrets.push(manifest)
    } else {
        out.reviewed.push(manifest)
    }
    Ok(())
}

/// One checked manifest.
pub struct Checked {
    pub source: String,
    pub namespace: String,
    pub evaluation: Evaluation,
}

/// Evaluates every manifest, as CREATE, or as UPDATE where `old` holds the same object.
pub fn check(policy: Policy<'_>, manifests: &Manifests, old: &Manifests) -> Vec<Checked> {
    let stored: HashMap<_, &Manifest> = old.reviewed.iter().map(|m| (m.key(), m)).collect();
    manifests
        .reviewed
        .iter()
        .map(|manifest| {
            let previous = stored.get(&manifest.key()).map(|m| &m.object);
            let review = Review {
                operation: if previous.is_some() { Operation::Update } else { Operation::Create },
                namespace: &manifest.namespace,
                object: Some(&manifest.object),
                old_object: previous,
            };
            Checked {
                source: manifest.source.clone(),
                namespace: manifest.namespace.clone(),
                evaluation: evaluate(policy, review),
            }
        })
        .collect()
}

/// Renders results for people: each object's verdict, denials as the server words them.
pub fn render_text(results: &[Checked], other_kinds: usize) -> String {
    let mut text = String::new();
    let (mut denied, mut warned, mut passed, mut foreign) = (0, 0, 0, 0);
    for checked in results {
        let e = &checked.evaluation;
        let kind = e.kind.map_or("object", ResourceKind::as_str);
        if !e.dx {
            foreign += 1;
            continue;
        }
        if let Some(message) = e.denial_message() {
            denied += 1;
            text.push_str(&format!("{}: {message}\n", checked.source));
        } else {
            passed += 1;
            text.push_str(&format!("{}: {kind} {} passed (DX schema {})\n", checked.source, e.object_name, version(e)));
        }
        let warnings = e.warnings();
        if !warnings.is_empty() {
            warned += 1;
        }
        for warning in warnings {
            text.push_str(&format!("  Warning: {warning}\n"));
        }
    }
    let checked = denied + passed;
    let objects = if checked == 1 { "object" } else { "objects" };
    text.push_str(&format!(
        "{checked} DX {objects} checked: {denied} denied, {passed} passed ({warned} with warnings); {foreign} not DX, {other_kinds} of other kinds\n"
    ));
    text
}

fn version(e: &Evaluation) -> &str {
    e.schema_version.as_deref().unwrap_or("unknown")
}

/// Renders results as JSON for tools.
pub fn render_json(results: &[Checked]) -> Value {
    let objects: Vec<Value> = results
        .iter()
        .map(|checked| {
            let e = &checked.evaluation;
            json!({
                "source": checked.source,
                "kind": e.kind.map(ResourceKind::as_str),
                "namespace": checked.namespace,
                "name": e.object_name.rsplit('/').next(),
                "dx": e.dx,
                "schemaVersion": e.schema_version,
                "verdict": e.verdict().as_str(),
                "message": e.denial_message(),
                "findings": e.findings.iter().map(|j| json!({
                    "rule": j.finding.rule,
                    "severity": j.severity.as_str(),
                    "path": j.finding.path.to_string(),
                    "message": j.finding.message,
                    "fix": j.fix(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "objects": objects })
}

/// JUnit XML: one test case per DX object, failed when denied.
pub fn render_junit(results: &[Checked]) -> String {
    let cases: Vec<junit::Case> = results
        .iter()
        .filter(|c| c.evaluation.dx)
        .map(|c| junit::Case {
            class: c.source.clone(),
            name: format!("{} {}", c.evaluation.kind.map_or("object", ResourceKind::as_str), c.evaluation.object_name),
            failure: c.evaluation.denial_message(),
        })
        .collect();
    junit::render("dx-admission check", &cases)
}

/// SARIF 2.1.0, the static-analysis format code-scanning tools read: one result per finding.
pub fn render_sarif(results: &[Checked]) -> Value {
    let rules: Vec<Value> = crate::policy::rules::RULES
        .iter()
        .map(|rule| json!({"id": rule.id, "shortDescription": {"text": rule.title}, "help": {"text": rule.fix}}))
        .collect();
    let findings: Vec<Value> = results
        .iter()
        .flat_map(|c| {
            let kind = c.evaluation.kind.map_or("object", ResourceKind::as_str);
            c.evaluation.findings.iter().map(move |j| {
                json!({
                    "ruleId": j.finding.rule,
                    "level": match j.severity { Severity::Deny => "error", Severity::Warn => "warning", Severity::Audit => "note" },
                    "message": {"text": format!("{kind} {}: {}", c.evaluation.object_name, j.line().trim_start_matches("- "))},
                    "locations": [{
                        "physicalLocation": {"artifactLocation": {"uri": c.source}},
                        "logicalLocations": [{"fullyQualifiedName": format!("{kind}/{}/{}", c.evaluation.object_name, j.finding.path), "kind": "object"}],
                    }],
                })
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "dx-admission", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
            "results": findings,
        }],
    })
}

/// `post-render`: a Helm post-renderer. Clean manifests pass through unchanged on stdout; when
/// anything is denied the report goes to stderr and the exit code fails the whole upgrade before
/// Helm applies anything.
pub fn post_render(args: &PostRenderOptions, settings: &Settings) -> i32 {
    let schemas = match SchemaSet::load(&args.schemas) {
        Ok(schemas) => schemas,
        Err(error) => {
            eprintln!("dx-admission: --schemas: {error}");
            return EXIT_INPUT;
        }
    };
    let mut text = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("dx-admission: reading the rendered manifests: {error}");
        return EXIT_INPUT;
    }
    let manifests = match manifests_from_text("rendered manifests", &text, &args.namespace) {
        Ok(manifests) => manifests,
        Err(error) => {
            eprintln!("dx-admission: {error}");
            return EXIT_INPUT;
        }
    };
    let none = Manifests::default();
    let results = check(Policy::offline(settings, &schemas), &manifests, &none);
    for checked in &results {
        for warning in checked.evaluation.warnings() {
            eprintln!("Warning: {warning}");
        }
    }
    let denials: Vec<String> = results.iter().filter_map(|c| c.evaluation.denial_message()).collect();
    if !denials.is_empty() {
        let report = format!("dx-admission refused the release before anything was applied:\n{}\n", denials.join("\n"));
        eprint!("{report}");
        // Helm 4 keeps a post-renderer plugin's stderr to itself; a person at a terminal still
        // sees the reasons this way.
        if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
            let _ = std::io::Write::write_all(&mut tty, report.as_bytes());
        }
        return EXIT_DENIED;
    }
    crate::cli::output(&text);
    EXIT_CLEAN
}

/// Runs `check` end to end and returns the exit code.
pub fn run(args: &Options, settings: &Settings) -> i32 {
    let schemas = match SchemaSet::load(&args.schemas) {
        Ok(schemas) => schemas,
        Err(error) => {
            eprintln!("error: --schemas: {error}");
            return EXIT_INPUT;
        }
    };
    let read = |paths: &[PathBuf]| read_manifests(paths, &args.namespace);
    let (manifests, old) = match (read(&args.files), read(&args.old)) {
        (Ok(manifests), Ok(old)) => (manifests, old),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("error: {error}");
            return EXIT_INPUT;
        }
    };
    let results = check(Policy::offline(settings, &schemas), &manifests, &old);
    match args.format {
        Format::Text => crate::cli::output(&render_text(&results, manifests.other_kinds)),
        Format::Json => crate::cli::output(&format!("{:#}\n", render_json(&results))),
        Format::Junit => crate::cli::output(&render_junit(&results)),
        Format::Sarif => crate::cli::output(&format!("{:#}\n", render_sarif(&results))),
    }
    if results.iter().any(|c| c.evaluation.denied()) { EXIT_DENIED } else { EXIT_CLEAN }
}
