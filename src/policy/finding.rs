//! Findings: one problem with one field, and the words a person needs to fix it.

use super::path::FieldPath;
use super::settings::Severity;

/// A problem found by a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The stable id of the rule that found it.
    pub rule: &'static str,
    pub path: FieldPath,
    /// What is wrong, in plain words (with the value, unless it is secret).
    pub message: String,
    /// How to fix this particular finding, when it says more than the rule's general fix.
    pub hint: Option<String>,
    /// A severity the finding asks for itself (a schema may declare a check as `warn`).
    pub requested: Option<Severity>,
    /// The rule could not judge: a cluster fact it needs is unreadable. Such a finding is a
    /// warning at most, whatever the rule's severity: it says what was not checked, never denies.
    pub not_judged: bool,
}

/// A finding with the severity it has where the object lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    pub finding: Finding,
    pub severity: Severity,
    /// The fix to print: the finding's own hint, else the rule's.
    pub fix: &'static str,
}

/// Warnings longer than this may be cut by the API server or clients.
pub const WARNING_LIMIT: usize = 120;

impl Judged {
    /// The finding in one phrase, `path: message [rule]`: the root of every text a person reads
    /// of it (denial lines, warnings, `check` reports, schema test suites).
    pub fn summary(&self) -> String {
        let f = &self.finding;
        format!("{}: {} [{}]", f.path, f.message, f.rule)
    }

    /// The fix to print: the finding's own hint, else the rule's.
    pub fn fix(&self) -> &str {
        self.finding.hint.as_deref().unwrap_or(self.fix)
    }

    /// The line a person reads in a denial: `- path: message [rule] fix: ...`.
    pub fn line(&self) -> String {
        let mut line = format!("- {}", self.summary());
        let fix = self.fix();
        if !fix.is_empty() {
            line.push_str(" fix: ");
            line.push_str(fix);
        }
        line
    }

    /// The same finding as a `Warning:` line, at most [`WARNING_LIMIT`] characters.
    pub fn warning(&self) -> String {
        truncate(&self.summary(), WARNING_LIMIT)
    }
}

/// Cuts `text` to at most `limit` characters, marking the cut with `...`.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let kept: String = text.chars().take(limit.saturating_sub(3)).collect();
    format!("{kept}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(message: &str, hint: Option<&str>) -> Judged {
        Judged {
            finding: Finding {
                rule: "image-pinned",
                path: FieldPath::root("spec").field("image"),
                message: message.into(),
                hint: hint.map(str::to_owned),
                requested: None,
                not_judged: false,
            },
            severity: Severity::Deny,
            fix: "pin it",
        }
    }

    #[test]
    fn lines_carry_path_message_rule_and_fix() {
        assert_eq!(judged("is latest", None).line(), "- spec.image: is latest [image-pinned] fix: pin it");
        assert_eq!(
            judged("is latest", Some("use :1.2")).line(),
            "- spec.image: is latest [image-pinned] fix: use :1.2"
        );
    }

    #[test]
    fn warnings_fit_the_limit() {
        let long = judged(&"x".repeat(300), None).warning();
        assert_eq!(long.chars().count(), WARNING_LIMIT);
        assert!(long.ends_with("..."));
        assert_eq!(judged("short", None).warning(), "spec.image: short [image-pinned]");
        assert_eq!(truncate("ééé", 3), "ééé");
    }
}
