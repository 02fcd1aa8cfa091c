//! A plan for people (text, in the words of the denials), for tools (JSON) and for a pull
//! request comment (Markdown).

use serde_json::{Value, json};

use super::{BackupState, Plan, Planned};
use crate::policy::rules::age;
use crate::policy::update::{Category, Change};

fn title(object: &Planned) -> String {
    format!("{} {}/{}", object.kind, object.namespace, object.name)
}

fn categories(object: &Planned) -> String {
    object.compared.categories.to_string()
}

fn counts(plan: &Plan) -> String {
    let parts: Vec<String> = Category::ALL.iter().map(|c| format!("{} {}", c.letter(), plan.count(*c))).collect();
    parts.join(", ")
}

fn rolling(plan: &Plan) -> Vec<String> {
    plan.objects.iter().filter(|o| o.rolls).map(title).collect()
}

fn verdict(plan: &Plan) -> &'static str {
    if plan.refused() {
        "part of this update would be refused: fix the objects above before helm upgrade"
    } else {
        "the update would be admitted"
    }
}

/// The terminal view: changed objects in full, unchanged ones on one line.
pub fn render_text(plan: &Plan) -> String {
    let mut text = format!("Plan against {}: {} DX objects\n", plan.against, plan.objects.len());
    let mut unchanged = Vec::new();
    for object in &plan.objects {
        if object.compared.change == Change::Unchanged && !object.rolls {
            unchanged.push(title(object));
            continue;
        }
        let mut head = format!("\n{}: {}", title(object), object.compared.change.as_str());
        if !object.compared.categories.is_empty() {
            head.push_str(&format!(" [{}]", categories(object)));
        }
        if object.rolls {
            head.push_str(", pods roll");
        }
        text.push_str(&head);
        text.push('\n');
        for line in &object.compared.summary {
            text.push_str(&format!("  {line}\n"));
        }
        for reason in &object.roll_reasons {
            text.push_str(&format!("  rolls: {reason}\n"));
        }
        for refusal in &object.compared.refused {
            text.push_str(&format!("  refused by Kubernetes: {refusal}\n"));
        }
        if let Some(evaluation) = &object.evaluation {
            if let Some(denial) = evaluation.denial_message() {
                text.push_str(&format!("  denied by dx-admission: {}\n", denial.replace('\n', "\n    ")));
            }
            for warning in evaluation.warnings() {
                text.push_str(&format!("  Warning: {warning}\n"));
            }
        }
        if let Some(why) = &object.backup_needed_because {
            text.push_str(&format!("  backup needed first: {why}; {}\n", backup_text(&object.backup)));
        }
    }
    if !unchanged.is_empty() {
        text.push_str(&format!("\nUnchanged, pods stay: {}\n", unchanged.join(", ")));
    }
    text.push('\n');
    if let Some(why) = &plan.removals_not_judged {
        text.push_str(&format!("Note: {why}\n"));
    }
    for category in Category::ALL {
        text.push_str(&format!(
            "{:<31}{}\n",
            format!("{} {}:", category.letter(), category.plural()),
            plan.count(category)
        ));
    }
    let rolls = rolling(plan);
    text.push_str(&format!("Pods roll in {} workloads{}\n", rolls.len(), list_after_colon(&rolls)));
    text.push_str(&format!("Verdict: {}\n", verdict(plan)));
    text
}

fn backup_text(backup: &BackupState) -> String {
    match backup {
        BackupState::NotJudged(why) => format!("whether there is one is not judged: {why}"),
        BackupState::Absent => "no completed backup found".to_owned(),
        BackupState::Found { name, age_seconds } => {
            format!("newest backup {name}, completed {} ago", age(*age_seconds))
        }
    }
}

fn list_after_colon(items: &[String]) -> String {
    if items.is_empty() { String::new() } else { format!(": {}", items.join(", ")) }
}

/// The machine view; field names are stable.
pub fn render_json(plan: &Plan) -> Value {
    let objects: Vec<Value> = plan
        .objects
        .iter()
        .map(|object| {
            let findings: Vec<Value> = object
                .evaluation
                .iter()
                .flat_map(|e| &e.findings)
                .map(|j| {
                    json!({
                        "rule": j.finding.rule,
                        "severity": j.severity.as_str(),
                        "path": j.finding.path.to_string(),
                        "message": j.finding.message,
                    })
                })
                .collect();
            json!({
                "kind": object.kind.as_str(),
                "namespace": object.namespace,
                "name": object.name,
                "component": object.component.map(|c| c.as_str()),
                "change": object.compared.change.as_str(),
                "categories": object.compared.categories.iter().map(Category::letter).collect::<Vec<_>>(),
                "summary": object.compared.summary,
                "rolls": object.rolls,
                "roll_reasons": object.roll_reasons,
                "refused_by_kubernetes": object.compared.refused,
                "denied": object.evaluation.as_ref().and_then(|e| e.denial_message()),
                "findings": findings,
                "backup_needed": object.backup_needed_because.is_some(),
                "backup_needed_because": object.backup_needed_because,
                "backup": match &object.backup {
                    BackupState::Found { name, age_seconds } => json!({"state": "found", "name": name, "age_seconds": age_seconds}),
                    other => json!({"state": other.as_str(), "name": null, "age_seconds": null}),
                },
            })
        })
        .collect();
    let categories: serde_json::Map<String, Value> =
        Category::ALL.iter().map(|c| (c.letter().to_owned(), json!(plan.count(*c)))).collect();
    json!({
        "against": plan.against,
        "objects": objects,
        "categories": categories,
        "rolls": rolling(plan),
        "removals_judged": plan.removals_not_judged.is_none(),
        "admitted": !plan.refused(),
    })
}

/// A pull request comment: one table row per object that changes or rolls, then the refusals.
pub fn render_markdown(plan: &Plan) -> String {
    let mut text = format!("### dx-admission plan against {}\n\n", plan.against);
    text.push_str("| object | change | categories | pods roll | what changes |\n|---|---|---|---|---|\n");
    let cell = |lines: &[String]| lines.join("<br>").replace('|', "\\|");
    let mut unchanged = 0;
    for object in &plan.objects {
        if object.compared.change == Change::Unchanged && !object.rolls {
            unchanged += 1;
            continue;
        }
        let rolls = if object.rolls { format!("yes: {}", cell(&object.roll_reasons)) } else { "no".to_owned() };
        text.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            title(object),
            object.compared.change.as_str(),
            categories(object),
            rolls,
            cell(&object.compared.summary)
        ));
    }
    text.push_str(&format!("\n{unchanged} DX objects unchanged. Categories: {}.\n", counts(plan)));
    let refusals: Vec<String> = plan
        .objects
        .iter()
        .flat_map(|o| {
            let denial = o.evaluation.as_ref().and_then(|e| e.denial_message()).map(|d| format!("```\n{d}\n```"));
            o.compared.refused.iter().map(move |r| format!("- `{}`: {r}", title(o))).chain(denial)
        })
        .collect();
    if !refusals.is_empty() {
        text.push_str("\n**Refused:**\n\n");
        text.push_str(&refusals.join("\n"));
        text.push('\n');
    }
    let backups: Vec<String> = plan
        .objects
        .iter()
        .filter_map(|o| {
            o.backup_needed_because.as_ref().map(|why| format!("- `{}`: {why}; {}", title(o), backup_text(&o.backup)))
        })
        .collect();
    if !backups.is_empty() {
        text.push_str("\n**Backup needed first:**\n\n");
        text.push_str(&backups.join("\n"));
        text.push('\n');
    }
    text.push_str(&format!("\n**Verdict:** {}.\n", verdict(plan)));
    text
}
