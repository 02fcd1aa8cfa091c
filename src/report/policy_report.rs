//! Existing objects' evaluations as PolicyReports (`wgpolicyk8s.io/v1alpha2`, the format
//! Kyverno, Kubewarden and Policy Reporter read): one result per object and rule, a summary, one
//! report per namespace split into several above [`REPORT_BYTES`]. A result keeps the time it
//! first had its outcome and message, so an unchanged deployment gives byte-identical reports and
//! nothing is written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::policy::rules::RULES;
use crate::policy::settings::Severity;
use crate::policy::{Evaluation, Operation};

pub const API_GROUP: &str = "wgpolicyk8s.io";
pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
pub const KIND: &str = "PolicyReport";
/// The `source` of every result, and the value of the managed-by label on every report.
pub const SOURCE: &str = "dx-admission";
/// The label that marks the reports this server owns (and may delete).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The first report of a namespace; the next are `dx-admission-2`, `dx-admission-3`, ...
pub const REPORT_NAME: &str = "dx-admission";
/// Results per report at most, serialised: well under the API server's 1.5 MiB object limit.
pub const REPORT_BYTES: usize = 1 << 20;

/// The object a result is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

/// One result: an object judged by one rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    pub source: String,
    pub policy: String,
    pub rule: String,
    /// pass, fail (denied), warn (warn or audit findings), skip (a fact could not be read).
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub scored: bool,
    pub timestamp: Timestamp,
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl ReportResult {
    /// What must stay the same for a result to keep its timestamp.
    fn identity(&self) -> (&[Resource], &str, &str, &str) {
        (&self.resources, &self.rule, &self.result, &self.message)
    }

    /// The DX severity of a failed or warned result (`deny`, `warn`, `audit`), for the metric.
    pub fn dx_severity(&self) -> Option<&str> {
        self.properties.get("severity").map(String::as_str)
    }
}

/// The results of one existing object, judged as a CREATE: every rule that applies to a CREATE
/// of its kind gives one result, `pass` when it found nothing.
pub fn results_of(resource: &Resource, evaluation: &Evaluation, now: i64) -> Vec<ReportResult> {
    let Some(kind) = evaluation.kind else { return Vec::new() };
    let version = evaluation.schema_version.clone();
    RULES
        .iter()
        .filter(|rule| rule.applies(kind, Operation::Create, evaluation.dx))
        .map(|rule| {
            let findings: Vec<_> = evaluation.findings.iter().filter(|j| j.finding.rule == rule.id).collect();
            let worst = findings.iter().map(|j| j.severity).max();
            let not_judged = !findings.is_empty() && findings.iter().all(|j| j.finding.not_judged);
            let (result, severity) = match worst {
                None => ("pass", None),
                Some(_) if not_judged => ("skip", None),
                Some(Severity::Deny) => ("fail", Some(("high", Severity::Deny))),
                Some(Severity::Warn) => ("warn", Some(("medium", Severity::Warn))),
                Some(Severity::Audit) => ("warn", Some(("info", Severity::Audit))),
            };
            let message = if findings.is_empty() {
                rule.title.to_owned()
            } else {
                findings.iter().map(|j| j.summary()).collect::<Vec<_>>().join("; ")
            };
            let mut properties = BTreeMap::new();
            if let Some(version) = &version {
                properties.insert("schemaVersion".to_owned(), version.clone());
            }
            if let Some((_, dx)) = severity {
                properties.insert("severity".to_owned(), dx.as_str().to_owned());
            }
            ReportResult {
                source: SOURCE.to_owned(),
                policy: rule.id.to_owned(),
                rule: rule.id.to_owned(),
                result: result.to_owned(),
                severity: severity.map(|(s, _)| s.to_owned()),
                message,
                category: Some("DX".to_owned()),
                scored: true,
                timestamp: Timestamp { seconds: now, nanos: 0 },
                resources: vec![resource.clone()],
                properties,
            }
        })
        .collect()
}

/// A namespace's reports as they should be: `results` (in any order) split into reports of at
/// most [`REPORT_BYTES`], each result keeping the timestamp `previous` gave it while its outcome
/// and message are unchanged.
pub fn reports(namespace: &str, mut results: Vec<ReportResult>, previous: &[Value]) -> Vec<Value> {
    let mut kept: BTreeMap<(Vec<Resource>, String, String, String), Timestamp> = BTreeMap::new();
    for report in previous {
        let old: Vec<ReportResult> = serde_json::from_value(report["results"].clone()).unwrap_or_default();
        for result in old {
            let (resources, rule, outcome, message) = result.identity();
            kept.insert(
                (resources.to_vec(), rule.to_owned(), outcome.to_owned(), message.to_owned()),
                result.timestamp,
            );
        }
    }
    for result in &mut results {
        let (resources, rule, outcome, message) = result.identity();
        let key = (resources.to_vec(), rule.to_owned(), outcome.to_owned(), message.to_owned());
        if let Some(timestamp) = kept.get(&key) {
            result.timestamp = *timestamp;
        }
    }
    let order = |r: &ReportResult| (r.resources.clone(), RULES.iter().position(|rule| rule.id == r.rule));
    results.sort_by_key(order);
    let mut chunks: Vec<Vec<Value>> = vec![Vec::new()];
    let mut size = 0;
    for result in results {
        let value = serde_json::to_value(&result).unwrap_or(Value::Null);
        let bytes = value.to_string().len();
        if size + bytes > REPORT_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(value);
        }
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, results)| {
            let count = |outcome: &str| results.iter().filter(|r| r["result"] == outcome).count();
            json!({
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": report_name(index), "namespace": namespace, "labels": {MANAGED_BY: SOURCE}},
                "summary": {"pass": count("pass"), "fail": count("fail"), "warn": count("warn"), "error": 0, "skip": count("skip")},
                "results": results,
            })
        })
        .collect()
}

/// The name of a namespace's `index`-th report (from 0).
pub fn report_name(index: usize) -> String {
    if index == 0 { REPORT_NAME.to_owned() } else { format!("{REPORT_NAME}-{}", index + 1) }
}

/// Whether a stored report already says what `desired` says (summary and results).
pub fn same_content(stored: &Value, desired: &Value) -> bool {
    stored["summary"] == desired["summary"] && stored["results"] == desired["results"]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::finding::{Finding, Judged};
    use crate::policy::path::FieldPath;
    use crate::policy::{ResourceKind, update::Categories};

    fn resource(name: &str) -> Resource {
        Resource {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "dx".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn evaluation(findings: Vec<Judged>) -> Evaluation {
        Evaluation {
            kind: Some(ResourceKind::Deployment),
            object_name: "dx/dx-ring-api".into(),
            operation: Operation::Create,
            dx: true,
            component: None,
            schema_version: Some("v2".into()),
            unknown_schema_version: None,
            findings,
            categories: Categories::default(),
        }
    }

    fn unpinned(severity: Severity) -> Judged {
        Judged {
            finding: Finding {
                rule: "image-pinned",
                path: FieldPath::root("spec").field("image"),
                message: "is :latest".into(),
                hint: None,
                requested: None,
                not_judged: false,
            },
            severity,
            fix: "",
        }
    }

    #[test]
    fn every_create_rule_of_the_kind_gives_one_result_and_findings_fail_or_warn() {
        let results = results_of(&resource("dx-ring-api"), &evaluation(vec![unpinned(Severity::Deny)]), 100);
        let outcomes: Vec<(String, String)> = results.iter().map(|r| (r.rule.clone(), r.result.clone())).collect();
        assert_eq!(
            outcomes.iter().map(|(rule, result)| format!("{rule}={result}")).collect::<Vec<_>>(),
            [
                "component-known=pass",
                "component-kind=pass",
                "schema-version-known=pass",
                "schema=pass",
                "stateless-no-pvc=pass",
                "resources-required=pass",
                "resources-quantity=pass",
                "resources-request-within-limit=pass",
                "image-pinned=fail",
                "readiness-probe=pass",
                "liveness-probe=pass",
                "template-labels=pass",
                "version-label=pass",
            ]
        );
        let failed = &results[8];
        assert_eq!(failed.message, "spec.image: is :latest [image-pinned]");
        assert_eq!((failed.severity.as_deref(), failed.dx_severity()), (Some("high"), Some("deny")));
        let audit = results_of(&resource("dx-ring-api"), &evaluation(vec![unpinned(Severity::Audit)]), 100);
        assert_eq!((audit[8].result.as_str(), audit[8].dx_severity()), ("warn", Some("audit")));
    }

    #[test]
    fn unchanged_results_keep_their_time_and_changed_ones_take_the_new_one() {
        let first = reports("dx", results_of(&resource("a"), &evaluation(vec![unpinned(Severity::Deny)]), 100), &[]);
        let again = reports("dx", results_of(&resource("a"), &evaluation(vec![unpinned(Severity::Deny)]), 200), &first);
        assert_eq!(again, first, "nothing changed: the same report, nothing to write");
        assert!(same_content(&first[0], &again[0]));
        let fixed = reports("dx", results_of(&resource("a"), &evaluation(vec![]), 300), &first);
        assert!(!same_content(&first[0], &fixed[0]));
        let pinned = fixed[0]["results"].as_array().unwrap().iter().find(|r| r["rule"] == "image-pinned").unwrap();
        assert_eq!((pinned["result"].as_str(), pinned["timestamp"]["seconds"].as_i64()), (Some("pass"), Some(300)));
        let other = fixed[0]["results"].as_array().unwrap().iter().find(|r| r["rule"] == "schema").unwrap();
        assert_eq!(other["timestamp"]["seconds"].as_i64(), Some(100), "still passing since the first scan");
        assert_eq!(fixed[0]["summary"], json!({"pass": 13, "fail": 0, "warn": 0, "error": 0, "skip": 0}));
        assert_eq!(first[0]["summary"], json!({"pass": 12, "fail": 1, "warn": 0, "error": 0, "skip": 0}));
    }

    #[test]
    fn a_namespace_with_many_results_is_split_under_the_size_limit() {
        let results: Vec<ReportResult> = (0..2_000)
            .flat_map(|i| results_of(&resource(&format!("dx-ring-api-{i:04}")), &evaluation(vec![]), 0))
            .collect();
        let total = results.len();
        let split = reports("dx", results, &[]);
        let names: Vec<&str> = split.iter().map(|r| r["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names[..3], ["dx-admission", "dx-admission-2", "dx-admission-3"]);
        let counted: usize = split.iter().map(|r| r["results"].as_array().unwrap().len()).sum();
        assert_eq!(counted, total, "no result lost in the split");
        for report in &split {
            assert!(report.to_string().len() < 1_100_000, "{}", report.to_string().len());
        }
    }
}
