//! The report for people (one table per deployment, then what is wrong, object by object) and
//! for tools (JSON).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Report, Rollout, WorkloadState};
use crate::policy::{Component, Severity};

const HEADER: [&str; 8] = ["NAMESPACE", "COMPONENT", "VERSION", "SCHEMA", "FINDINGS", "CONFIG", "OLD PODS", "ROLLOUT"];

fn component_name(component: Option<Component>) -> &'static str {
    component.map_or("(unknown)", Component::as_str)
}

/// The worst rollout state of a component's workloads.
fn worst(workloads: &[&WorkloadState]) -> String {
    let rank = |r: &Rollout| match r {
        Rollout::NoPods => 0,
        Rollout::Complete => 1,
        Rollout::Progressing => 2,
        Rollout::Stuck { .. } => 3,
    };
    workloads.iter().map(|w| &w.drift.rollout).max_by_key(|r| rank(r)).map_or("-".to_owned(), |r| r.as_str().to_owned())
}

fn findings_cell(counts: [usize; 3]) -> String {
    let parts: Vec<String> = [(counts[0], "deny"), (counts[1], "warn"), (counts[2], "audit")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, s)| format!("{n} {s}"))
        .collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

fn severity_counts<'a>(findings: impl Iterator<Item = &'a crate::policy::Judged>) -> [usize; 3] {
    let mut counts = [0; 3];
    for finding in findings {
        let slot = match finding.severity {
            Severity::Deny => 0,
            Severity::Warn => 1,
            Severity::Audit => 2,
        };
        counts[slot] += 1;
    }
    counts
}

/// The table and the details, for a terminal.
pub fn render_text(report: &Report) -> String {
    let mut text = match &report.candidate {
        Some(version) => format!("DX deployment in {}, judged under candidate schema {version}\n\n", report.scope),
        None => format!("DX deployment in {}\n\n", report.scope),
    };
    let mut rows: Vec<[String; 8]> = Vec::new();
    for (namespace, component) in report.components().into_keys() {
        let objects: Vec<_> =
            report.objects.iter().filter(|o| o.namespace == namespace && o.component == component).collect();
        let workloads: Vec<&WorkloadState> = report
            .workloads
            .iter()
            .flatten()
            .filter(|w| w.namespace == namespace && w.component == component)
            .collect();
        let versions: BTreeSet<&str> = objects.iter().filter_map(|o| o.version.as_deref()).collect();
        let schemas: BTreeSet<&str> =
            objects.iter().map(|o| o.evaluation.schema_version.as_deref().unwrap_or("unknown")).collect();
        let counts = severity_counts(objects.iter().flat_map(|o| &o.evaluation.findings));
        let (config, old_pods) = match (&report.workloads, workloads.is_empty()) {
            (None, _) | (_, true) => ("-".to_owned(), "-".to_owned()),
            (Some(_), false) => {
                let stale = workloads.iter().any(|w| w.drift.stale.is_some());
                let old: usize = workloads.iter().map(|w| w.drift.pods_on_old_config).sum();
                let pods: usize = workloads.iter().map(|w| w.drift.pods).sum();
                ((if stale { "stale" } else { "current" }).to_owned(), format!("{old}/{pods}"))
            }
        };
        let join = |set: BTreeSet<&str>| {
            if set.is_empty() { "-".to_owned() } else { set.into_iter().collect::<Vec<_>>().join(",") }
        };
        rows.push([
            namespace,
            component_name(component).to_owned(),
            join(versions),
            join(schemas),
            findings_cell(counts),
            config,
            old_pods,
            if report.workloads.is_some() { worst(&workloads) } else { "-".to_owned() },
        ]);
    }
    let header: Vec<String> = HEADER.iter().map(|h| (*h).to_owned()).collect();
    let mut widths = [0usize; 8];
    for row in std::iter::once(header.as_slice()).chain(rows.iter().map(|r| r.as_slice())) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(header.as_slice()).chain(rows.iter().map(|r| r.as_slice())) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    let mut problems = Vec::new();
    for object in &report.objects {
        for finding in &object.evaluation.findings {
            problems.push(format!(
                "  {} {}/{}: {} {}\n",
                object.kind,
                object.namespace,
                object.name,
                finding.severity,
                finding.line().trim_start_matches("- ")
            ));
        }
    }
    if !problems.is_empty() {
        text.push_str("\nFindings:\n");
        problems.iter().for_each(|line| text.push_str(line));
    }
    let workloads: Vec<&WorkloadState> = report.workloads.iter().flatten().collect();
    let stale: Vec<&&WorkloadState> = workloads.iter().filter(|w| w.drift.stale.is_some()).collect();
    if !stale.is_empty() {
        text.push_str("\nStale config:\n");
        for w in &stale {
            let reason = w.drift.stale.as_ref().map(|s| s.reason()).unwrap_or_default();
            text.push_str(&format!("  {} {}/{}: {reason}\n", w.kind, w.namespace, w.name));
        }
    }
    let stuck: Vec<(&&WorkloadState, &str, i64)> = workloads
        .iter()
        .filter_map(|w| match &w.drift.rollout {
            Rollout::Stuck { pod, not_ready_seconds } => Some((w, pod.as_str(), *not_ready_seconds)),
            _ => None,
        })
        .collect();
    if !stuck.is_empty() {
        text.push_str("\nStuck rollouts:\n");
        for (w, pod, seconds) in &stuck {
            let age = crate::policy::rules::age(*seconds);
            text.push_str(&format!("  {} {}/{}: updated pod {pod} not Ready for {age}\n", w.kind, w.namespace, w.name));
        }
    }
    let denied = report.objects.iter().filter(|o| o.evaluation.denied()).count();
    let verdict = if report.unhealthy() { "Needs attention" } else { "Healthy" };
    let of = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    text.push_str(&format!(
        "\n{verdict}: {} of {} denied, {} on stale config, {} stuck\n",
        denied,
        of(report.objects.len(), "DX object", "DX objects"),
        of(stale.len(), "workload", "workloads"),
        of(stuck.len(), "rollout", "rollouts"),
    ));
    text
}

/// The report as JSON.
pub fn render_json(report: &Report) -> Value {
    let objects: Vec<Value> = report
        .objects
        .iter()
        .map(|o| {
            json!({
                "kind": o.kind.as_str(),
                "namespace": o.namespace,
                "name": o.name,
                "component": o.component.map(Component::as_str),
                "version": o.version,
                "schemaVersion": o.evaluation.schema_version,
                "verdict": o.evaluation.verdict().as_str(),
                "findings": o.evaluation.findings.iter().map(|j| json!({
                    "rule": j.finding.rule,
                    "severity": j.severity.as_str(),
                    "path": j.finding.path.to_string(),
                    "message": j.finding.message,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let workloads = report.workloads.as_ref().map(|workloads| {
        workloads
            .iter()
            .map(|w| {
                let (stuck_pod, not_ready) = match &w.drift.rollout {
                    Rollout::Stuck { pod, not_ready_seconds } => (Some(pod.clone()), Some(*not_ready_seconds)),
                    _ => (None, None),
                };
                json!({
                    "kind": w.kind.as_str(),
                    "namespace": w.namespace,
                    "name": w.name,
                    "component": w.component.map(Component::as_str),
                    "config": if w.drift.stale.is_some() { "stale" } else { "current" },
                    "staleBecause": w.drift.stale.as_ref().map(|s| s.reason()),
                    "pods": w.drift.pods,
                    "podsOnOldConfig": w.drift.pods_on_old_config,
                    "rollout": w.drift.rollout.as_str(),
                    "stuckPod": stuck_pod,
                    "notReadySeconds": not_ready,
                })
            })
            .collect::<Vec<_>>()
    });
    json!({
        "scope": report.scope,
        "schemaVersion": report.candidate,
        "healthy": !report.unhealthy(),
        "objects": objects,
        "workloads": workloads,
    })
}
