//! Rules on ConfigMaps and Secrets as sources of workloads.

use super::{Context, Findings};
use crate::lookup::Lookup;
use crate::policy::path::FieldPath;

/// `config-in-use`: deleting a source that a workload cannot start without.
pub fn in_use(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(source) = ctx.object.as_source() else { return };
    let path = FieldPath::object(ctx.object.kind().as_str(), ctx.object_name);
    match ctx.facts.workloads_requiring(ctx.namespace, &source) {
        Lookup::Found(users) if !users.is_empty() => out.add(path, format!("still used by {}", users.join(", "))),
        Lookup::Found(_) | Lookup::Absent => {}
        Lookup::Unreadable => out.not_judged(path, ctx.facts.unreadable_because()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use crate::checksum::{SourceKind, SourceRef};
    use crate::lookup::Lookup;
    use crate::policy::evaluate::{Policy, Review, evaluate};
    use crate::policy::facts::{ClusterFacts, NoCluster};
    use crate::policy::object::{Object, ResourceKind};
    use crate::policy::operation::Operation;
    use crate::policy::schema::SchemaSet;
    use crate::policy::settings::{Settings, Severity};

    /// Facts as a test states them: what each source is needed by.
    struct Known(Lookup<Vec<String>>);

    impl ClusterFacts for Known {
        fn workloads_requiring(&self, namespace: &str, source: &SourceRef) -> Lookup<Vec<String>> {
            assert_eq!(
                (namespace, source.kind, source.name.as_str()),
                ("e2e-roll", SourceKind::ConfigMap, "app-config")
            );
            self.0.clone()
        }
        fn dx_workloads(&self, _: &str, _: crate::policy::Component) -> Lookup<Vec<String>> {
            Lookup::Unreadable
        }
        fn backups(&self, _: &str, _: crate::policy::Component) -> Lookup<Vec<crate::policy::facts::Backup>> {
            Lookup::Unreadable
        }
        fn now(&self) -> i64 {
            0
        }
        fn unreadable_because(&self) -> &'static str {
            "the workload index has not listed the cluster yet"
        }
    }

    fn deleting(facts: &dyn ClusterFacts, settings: &Settings) -> crate::policy::Evaluation {
        let schemas = SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap();
        let stored = Object::from_json(
            ResourceKind::ConfigMap,
            json!({"metadata": {"name": "app-config", "namespace": "e2e-roll"}, "data": {"a": "1"}}),
        )
        .unwrap();
        let review =
            Review { operation: Operation::Delete, namespace: "e2e-roll", object: None, old_object: Some(&stored) };
        evaluate(Policy { settings, schemas: &schemas, facts }, review)
    }

    #[test]
    fn deleting_a_source_a_workload_needs_is_denied_naming_the_workloads() {
        let users = Known(Lookup::Found(vec!["Deployment e2e-roll/dx-ring-api".into()]));
        let evaluation = deleting(&users, &Settings::default());
        assert!(!evaluation.dx, "judged although it is not a DX object");
        assert_eq!(
            evaluation.denial_message().unwrap(),
            "ConfigMap e2e-roll/app-config rejected: it is still in use (1 problem):\n\
             - ConfigMap e2e-roll/app-config: still used by Deployment e2e-roll/dx-ring-api [config-in-use] \
             fix: remove the reference from those workloads (or mark it optional: true) and apply them, then delete"
        );
    }

    #[test]
    fn severity_settings_apply_as_to_every_rule() {
        let users = Known(Lookup::Found(vec!["Deployment e2e-roll/a".into(), "StatefulSet e2e-roll/b".into()]));
        let warn: Settings = serde_yaml_ng::from_str("rules: {config-in-use: warn}").unwrap();
        assert_eq!(
            deleting(&users, &warn).warnings(),
            [
                "ConfigMap e2e-roll/app-config: still used by Deployment e2e-roll/a, StatefulSet e2e-roll/b [config-in-use]"
            ]
        );
        let audit: Settings =
            serde_yaml_ng::from_str("namespaces: {e2e-roll: {rules: {config-in-use: audit}}}").unwrap();
        let evaluation = deleting(&users, &audit);
        assert_eq!(evaluation.findings[0].severity, Severity::Audit);
        assert!(evaluation.denial_message().is_none() && evaluation.warnings().is_empty());
    }

    #[test]
    fn a_source_nobody_needs_deletes_freely() {
        assert!(deleting(&Known(Lookup::Absent), &Settings::default()).findings.is_empty());
        assert!(deleting(&Known(Lookup::Found(Vec::new())), &Settings::default()).findings.is_empty());
    }

    #[test]
    fn without_the_fact_the_rule_says_it_could_not_judge_and_never_denies() {
        let deny: Settings = serde_yaml_ng::from_str("rules: {config-in-use: deny}").unwrap();
        let evaluation = deleting(&Known(Lookup::Unreadable), &deny);
        assert!(!evaluation.denied());
        assert_eq!(
            evaluation.warnings(),
            [
                "ConfigMap e2e-roll/app-config: not judged: the workload index has not listed the cluster yet [config-in-use]"
            ]
        );
        let evaluation = deleting(&NoCluster("dx-admission runs without --cluster"), &Settings::default());
        assert_eq!(
            evaluation.warnings(),
            ["ConfigMap e2e-roll/app-config: not judged: dx-admission runs without --cluster [config-in-use]"]
        );
        let audit: Settings = serde_yaml_ng::from_str("rules: {config-in-use: audit}").unwrap();
        assert_eq!(deleting(&Known(Lookup::Unreadable), &audit).findings[0].severity, Severity::Audit);
    }
}
