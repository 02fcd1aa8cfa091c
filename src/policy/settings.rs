//! Policy settings: which objects are DX objects, how severe each rule is where, and the
//! few facts about DX that operators may need to adjust. Read from the `--config` YAML file.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// What happens to a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Recorded only: allowed, with an audit annotation, a log line and a metric.
    Audit,
    /// Allowed, and the user sees a `Warning:` line.
    Warn,
    /// Rejected.
    Deny,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Warn => "warn",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "audit" => Ok(Self::Audit),
            "warn" => Ok(Self::Warn),
            "deny" => Ok(Self::Deny),
            other => Err(format!("unknown severity {other:?} (use deny, warn or audit)")),
        }
    }
}

/// How denials are enforced, globally or in a namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Findings take their rule's severity.
    #[default]
    Enforce,
    /// Every `deny` becomes `warn`: lets a new schema version roll out softly.
    Warn,
}

/// The labels that make an object a DX object and name its application.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Selector {
    pub part_of_label: String,
    pub part_of_value: String,
    pub component_label: String,
}

impl Selector {
    /// Whether an object's labels make it part of DX. The one test of "DX or not": evaluation,
    /// checksums and rollouts all ask it.
    pub fn selects(&self, metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
        metadata.labels.as_ref().and_then(|labels| labels.get(&self.part_of_label)) == Some(&self.part_of_value)
    }
}

impl Selector {
    /// The label selector of DX objects, for list and watch calls.
    pub fn label_selector(&self) -> String {
        format!("{}={}", self.part_of_label, self.part_of_value)
    }
}

impl Default for Selector {
    fn default() -> Self {
        Self {
            part_of_label: "app.kubernetes.io/part-of".into(),
            part_of_value: "dx".into(),
            component_label: "app.kubernetes.io/component".into(),
        }
    }
}

/// Where the farm's shared volumes are mounted.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Storage {
    /// DX Core's profile, shared by every Core pod.
    pub core_profile_mount_path: String,
    /// Digital Asset Management's uploads, shared by every DAM pod.
    pub dam_upload_mount_path: String,
}

impl Default for Storage {
    fn default() -> Self {
        Self { core_profile_mount_path: "/opt/HCL/wp_profile".into(), dam_upload_mount_path: "/opt/app/upload".into() }
    }
}

/// The backup gate (`backup-before-update`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Backup {
    /// How old the newest completed backup may be (Go syntax, e.g. `24h`).
    #[serde(deserialize_with = "seconds")]
    pub max_age: u64,
}

impl Default for Backup {
    fn default() -> Self {
        Self { max_age: 24 * 3600 }
    }
}

/// A Go-syntax duration, as whole seconds.
fn seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let text = String::deserialize(deserializer)?;
    let duration: super::values::Duration =
        text.parse().map_err(|e| serde::de::Error::custom(format!("{text:?} {e}")))?;
    u64::try_from(duration.as_nanos() / 1_000_000_000)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("{text:?} must be at least one second")))
}

/// Overrides that apply in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceSettings {
    pub mode: Option<Mode>,
    pub rules: BTreeMap<String, Severity>,
}

/// Everything the evaluation needs besides the schemas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub selector: Selector,
    pub mode: Mode,
    /// Severity per rule id, overriding the rule's default.
    pub rules: BTreeMap<String, Severity>,
    /// Overrides per namespace, applied over the global ones.
    pub namespaces: BTreeMap<String, NamespaceSettings>,
    pub storage: Storage,
    pub backup: Backup,
}

impl Settings {
    /// The severity a finding of `rule` gets in `namespace`.
    ///
    /// Precedence: the namespace's rule override, the global rule override, the severity the
    /// finding itself asks for (a schema may declare a check as `warn`), the rule's default; then
    /// a `warn` mode (the namespace's, else the global one) turns `deny` into `warn`.
    pub fn severity(&self, namespace: &str, rule: &str, requested: Severity) -> Severity {
        let scoped = self.namespaces.get(namespace);
        let severity =
            scoped.and_then(|ns| ns.rules.get(rule)).or_else(|| self.rules.get(rule)).copied().unwrap_or(requested);
        let mode = scoped.and_then(|ns| ns.mode).unwrap_or(self.mode);
        match (mode, severity) {
            (Mode::Warn, Severity::Deny) => Severity::Warn,
            _ => severity,
        }
    }

    /// Names the rule ids that are configured but unknown, so a typo fails at start-up.
    pub fn unknown_rule_ids<'a>(&'a self, known: &'a [&str]) -> Vec<&'a str> {
        self.rules
            .keys()
            .chain(self.namespaces.values().flat_map(|ns| ns.rules.keys()))
            .map(String::as_str)
            .filter(|id| !known.contains(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Settings {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn severity_precedence_is_namespace_then_global_then_finding() {
        let s = settings("rules: {image-pinned: warn}\nnamespaces:\n  staging:\n    rules: {image-pinned: audit}\n");
        assert_eq!(s.severity("prod", "image-pinned", Severity::Deny), Severity::Warn);
        assert_eq!(s.severity("staging", "image-pinned", Severity::Deny), Severity::Audit);
        assert_eq!(s.severity("prod", "readiness-probe", Severity::Deny), Severity::Deny);
        assert_eq!(s.severity("prod", "schema-unknown-key", Severity::Warn), Severity::Warn);
    }

    #[test]
    fn warn_mode_softens_denials_only() {
        let s = settings("mode: enforce\nnamespaces:\n  canary: {mode: warn}\n");
        assert_eq!(s.severity("canary", "schema", Severity::Deny), Severity::Warn);
        assert_eq!(s.severity("canary", "schema", Severity::Audit), Severity::Audit);
        assert_eq!(s.severity("prod", "schema", Severity::Deny), Severity::Deny);
        let global = settings("mode: warn\nnamespaces:\n  prod: {mode: enforce}\n");
        assert_eq!(global.severity("dev", "schema", Severity::Deny), Severity::Warn);
        assert_eq!(global.severity("prod", "schema", Severity::Deny), Severity::Deny);
    }

    #[test]
    fn unknown_fields_and_severities_are_refused() {
        let typo = serde_yaml_ng::from_str::<Settings>("rulez: {}").unwrap_err();
        assert!(typo.to_string().contains("unknown field `rulez`"), "{typo}");
        let bad = serde_yaml_ng::from_str::<Settings>("rules: {image-pinned: block}").unwrap_err();
        assert!(bad.to_string().contains("unknown variant `block`"), "{bad}");
    }

    #[test]
    fn backup_max_age_is_a_duration_of_at_least_a_second() {
        assert_eq!(Settings::default().backup.max_age, 86_400);
        assert_eq!(settings("backup: {maxAge: 90m}").backup.max_age, 5_400);
        for (yaml, expected) in [
            ("backup: {maxAge: 90}", "\"90\" "),
            ("backup: {maxAge: 500ms}", "\"500ms\" must be at least one second"),
            ("backup: {maxAge: -1h}", "\"-1h\" must be at least one second"),
        ] {
            let error = serde_yaml_ng::from_str::<Settings>(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn unknown_rule_ids_are_named() {
        let s = settings("rules: {image-pined: warn}\nnamespaces:\n  a:\n    rules: {schema: warn}\n");
        assert_eq!(s.unknown_rule_ids(&["schema", "image-pinned"]), vec!["image-pined"]);
    }
}
