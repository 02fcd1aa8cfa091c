//! `dx-admission schema test`: test suites kept beside each schema version
//! (`schemas/<version>/tests/*.yaml`), run through the same evaluation as the server.
//!
//! ```yaml
//! cases:
//!   - name: an unknown log level is denied
//!     manifest: {apiVersion: v1, kind: ConfigMap, ...}
//!     old: {...}                # optional: the stored object, for UPDATE rules
//!     verdict: denied           # allowed | warned | denied
//!     findings:                 # every finding, in order: "path: message [rule]"
//!       - 'data[log.level]: "verbose" is not one of: error, warn, info, debug, trace [schema]'
//! ```
//!
//! A manifest without a `dx.hcl.com/schema-version` annotation is checked under the suite's version.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::junit;
use crate::policy::annotations::SCHEMA_VERSION;
use crate::policy::schema::SchemaSet;
use crate::policy::{Judged, Object, Operation, Policy, ResourceKind, Review, Settings, Verdict, evaluate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    manifest: Value,
    #[serde(default)]
    old: Option<Value>,
    verdict: Verdict,
    #[serde(default)]
    findings: Vec<String>,
}

/// The outcome of one case.
pub struct Outcome {
    pub suite: String,
    pub case: String,
    /// `None` when it passed; else what differed.
    pub failure: Option<String>,
}

/// Why suites could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// Every suite file, as (label like `v2/tests/core.yaml`, path, version).
fn suites(dir: &Path, schemas: &SchemaSet) -> Vec<(String, PathBuf, String)> {
    let mut found = Vec::new();
    for version in schemas.version_names() {
        let tests = dir.join(version).join("tests");
        let Ok(entries) = std::fs::read_dir(&tests) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for file in files {
            let label = format!("{version}/tests/{}", file.file_name().unwrap_or_default().to_string_lossy());
            found.push((label, file, version.to_owned()));
        }
    }
    found
}

fn kind_of(manifest: &Value) -> Option<ResourceKind> {
    let group = manifest["apiVersion"].as_str()?.rsplit_once('/').map_or("", |(g, _)| g);
    ResourceKind::from_group_kind(group, manifest["kind"].as_str()?).filter(|k| ResourceKind::DX.contains(k))
}

fn under_version(mut manifest: Value, version: &str) -> Value {
    if manifest["metadata"]["annotations"][SCHEMA_VERSION].is_null() && manifest["metadata"].is_object() {
        if !manifest["metadata"]["annotations"].is_object() {
            manifest["metadata"]["annotations"] = Value::Object(Default::default());
        }
        manifest["metadata"]["annotations"][SCHEMA_VERSION] = Value::String(version.to_owned());
    }
    manifest
}

fn run_case(case: &Case, version: &str, settings: &Settings, schemas: &SchemaSet) -> Result<(), String> {
    let kind = kind_of(&case.manifest).ok_or("the manifest is not a ConfigMap, StatefulSet or Deployment")?;
    let parse = |value: &Value| {
        Object::from_json(kind, under_version(value.clone(), version))
            .map_err(|e| format!("the manifest does not parse: {e}"))
    };
    let object = parse(&case.manifest)?;
    let old = case.old.as_ref().map(parse).transpose()?;
    let namespace = case.manifest["metadata"]["namespace"].as_str().unwrap_or("default");
    let review = Review {
        operation: if old.is_some() { Operation::Update } else { Operation::Create },
        namespace,
        object: Some(&object),
        old_object: old.as_ref(),
    };
    let evaluation = evaluate(Policy::offline(settings, schemas), review);
    let mut problems = Vec::new();
    let verdict = evaluation.verdict();
    if verdict != case.verdict {
        problems.push(format!("expected verdict {:?}, got {verdict:?}", case.verdict).to_lowercase());
    }
    let actual: Vec<String> = evaluation.findings.iter().map(Judged::summary).collect();
    for line in case.findings.iter().filter(|l| !actual.contains(l)) {
        problems.push(format!("missing finding: {line}"));
    }
    for line in actual.iter().filter(|l| !case.findings.contains(l)) {
        problems.push(format!("unexpected finding: {line}"));
    }
    if problems.is_empty() && actual != case.findings {
        problems.push(format!("findings in another order: {actual:?}"));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// Runs every suite under `dir`.
pub fn run(dir: &Path, settings: &Settings) -> Result<Vec<Outcome>, SuiteError> {
    let schemas =
        SchemaSet::load(dir).map_err(|e| SuiteError::Read { path: dir.to_owned(), message: e.to_string() })?;
    let mut outcomes = Vec::new();
    for (label, path, version) in suites(dir, &schemas) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| SuiteError::Read { path: path.clone(), message: e.to_string() })?;
        let suite: Suite = serde_yaml_ng::from_str(&text)
            .map_err(|e| SuiteError::Read { path: path.clone(), message: e.to_string() })?;
        for case in &suite.cases {
            let failure = run_case(case, &version, settings, &schemas).err();
            outcomes.push(Outcome { suite: label.clone(), case: case.name.clone(), failure });
        }
    }
    Ok(outcomes)
}

/// Test-runner style text, ending in `N passed, M failed`.
pub fn render(outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    for outcome in outcomes {
        match &outcome.failure {
            None => text.push_str(&format!("ok    {}: {}\n", outcome.suite, outcome.case)),
            Some(failure) => {
                text.push_str(&format!("FAIL  {}: {}\n", outcome.suite, outcome.case));
                for line in failure.lines() {
                    text.push_str(&format!("        {line}\n"));
                }
            }
        }
    }
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    text.push_str(&format!("{} passed, {failed} failed\n", outcomes.len() - failed));
    text
}

/// The outcomes as JUnit XML.
pub fn render_junit(outcomes: &[Outcome]) -> String {
    let cases: Vec<junit::Case> = outcomes
        .iter()
        .map(|o| junit::Case { class: o.suite.clone(), name: o.case.clone(), failure: o.failure.clone() })
        .collect();
    junit::render("dx-admission schema test", &cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_suites_pass() {
        let outcomes = run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"), &Settings::default()).unwrap();
        assert!(outcomes.len() >= 10, "suites hold cases for both versions");
        let report = render(&outcomes);
        assert!(outcomes.iter().all(|o| o.failure.is_none()), "{report}");
        assert!(
            outcomes.iter().any(|o| o.suite.starts_with("v1/")) && outcomes.iter().any(|o| o.suite.starts_with("v2/"))
        );
    }

    #[test]
    fn a_wrong_expectation_fails_and_says_what_differed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        std::fs::copy(root.join("index.yaml"), dir.path().join("index.yaml")).unwrap();
        for sub in ["common", "v1/configmap", "v2/configmap", "v2/tests"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::copy(root.join("common/definitions.json"), dir.path().join("common/definitions.json")).unwrap();
        std::fs::copy(root.join("v2/configmap/core.json"), dir.path().join("v2/configmap/core.json")).unwrap();
        std::fs::copy(root.join("v1/configmap/core.json"), dir.path().join("v1/configmap/core.json")).unwrap();
        std::fs::write(
            dir.path().join("v2/tests/wrong.yaml"),
            "cases:\n  - name: claims a valid config is denied\n    manifest:\n      apiVersion: v1\n      kind: ConfigMap\n      metadata:\n        name: c\n        labels: {app.kubernetes.io/part-of: dx, app.kubernetes.io/component: core}\n      data: {jvm.heap.max: 4Gi, log.level: loud}\n    verdict: allowed\n    findings: ['data[jvm.heap.max]: wrong [schema]']\n",
        )
        .unwrap();
        let outcomes = run(dir.path(), &Settings::default()).unwrap();
        assert_eq!(
            render(&outcomes),
            "FAIL  v2/tests/wrong.yaml: claims a valid config is denied\n\
             \x20       expected verdict allowed, got denied\n\
             \x20       missing finding: data[jvm.heap.max]: wrong [schema]\n\
             \x20       unexpected finding: data[log.level]: \"loud\" is not one of: error, warn, info, debug, trace [schema]\n\
             0 passed, 1 failed\n"
        );
        assert!(render_junit(&outcomes).contains("<failure message=\"expected verdict allowed, got denied\">"));
    }
}
