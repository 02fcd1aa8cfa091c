//! The backup gate: an update that migrates data (a new application version, a new persistence
//! schema) of a stateful component needs a recent backup to roll back to.

use super::{Context, Findings};
use crate::lookup::Lookup;
use crate::policy::Component;
use crate::policy::annotations::{ALLOW_DOWNGRADE, BACKUP_OF, BACKUP_SKIP_REASON, VERSION_LABEL};
use crate::policy::facts::Backup;
use crate::policy::object::{Object, ResourceKind};
use crate::policy::path::FieldPath;
use crate::policy::settings::Severity;
use crate::policy::update::Category;
use crate::policy::values::version;

/// A duration in the largest units that matter: `26h3m`, `45m`, `12s`.
pub fn age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, _) => format!("{m}m"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// The claims a StatefulSet's pods use: the shared ones it names, and the prefixes of the
/// per-pod ones its claim templates make (`<template>-<statefulset>-<ordinal>`).
fn uses_claim(object: &Object, claim: &str) -> bool {
    let Object::StatefulSet(set) = object else { return false };
    let name = set.metadata.name.as_deref().unwrap_or("");
    let spec = set.spec.as_ref();
    let shared = spec
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .any(|c| c.claim_name == claim);
    let templated = spec.and_then(|s| s.volume_claim_templates.as_ref()).into_iter().flatten().any(|t| {
        let prefix = format!("{}-{name}-", t.metadata.name.as_deref().unwrap_or(""));
        claim
            .strip_prefix(&prefix)
            .is_some_and(|ordinal| !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()))
    });
    shared || templated
}

/// The newest completed backup that covers the workload: a Job, or a snapshot of one of its claims.
pub fn newest<'a>(object: &Object, backups: &'a [Backup]) -> Option<&'a Backup> {
    backups
        .iter()
        .filter(|b| b.claim.as_deref().is_none_or(|claim| uses_claim(object, claim)))
        .max_by_key(|b| b.completed)
}

pub fn before_update(ctx: &Context<'_>, out: &mut Findings<'_>) {
    let Some(component) = ctx.component.filter(|c| c.workload_kind() == Some(ResourceKind::StatefulSet)) else {
        return;
    };
    let Some(gated) = ctx.categories.needing_backup() else { return };
    let reason = ctx.object.annotation(BACKUP_SKIP_REASON).filter(|r| !r.trim().is_empty());
    let path = FieldPath::object(ctx.object.kind().as_str(), ctx.object_name);
    if let Some(reason) = reason
        && ctx.old.and_then(|old| old.annotation(BACKUP_SKIP_REASON)) != Some(reason)
    {
        let skipped = format!("updated without a backup: {reason}");
        out.add_requesting(path, skipped, None, Severity::Audit);
        return;
    }
    if declared_downgrade_across_p(ctx) {
        return restore_before(ctx, component, path, out);
    }
    let change = format!("a category {gated} change of {component}");
    let take = format!(
        "take one (e.g. kubectl create job --from=cronjob/dx-{component}-backup dx-{component}-backup-$(date +%s) -n {}), \
         wait for it to complete, then apply again; or set annotation {BACKUP_SKIP_REASON} to say why not",
        ctx.namespace
    );
    let max_age = ctx.settings.backup.max_age as i64;
    match ctx.facts.backups(ctx.namespace, component) {
        Lookup::Unreadable => out.not_judged(path, ctx.facts.unreadable_because()),
        found => {
            let backups = if let Lookup::Found(backups) = found { backups } else { Vec::new() };
            match newest(ctx.object, &backups) {
                None => out.add_with_hint(
                    path,
                    format!(
                        "{change} needs a backup first, and no completed backup of {component} was found in {} \
                         (a Job or VolumeSnapshot labelled {BACKUP_OF}: {component} or all)",
                        ctx.namespace
                    ),
                    take,
                ),
                Some(backup) if ctx.facts.now() - backup.completed > max_age => out.add_with_hint(
                    path,
                    format!(
                        "{change} needs a recent backup first; the newest, {}, completed {} ago, more than backup.maxAge {}",
                        backup.name,
                        age(ctx.facts.now() - backup.completed),
                        age(max_age)
                    ),
                    take,
                ),
                Some(_) => {}
            }
        }
    }
}

/// The field manager of the rollout controller's re-stamps, which revert nothing.
const ROLLOUT_MANAGER: &str = "dx-admission-rollout";

/// A declared downgrade (`dx.hcl.com/allow-downgrade: "true"`, the version going down) that
/// also changes the persistence schema: the data was migrated by the update it reverts.
fn declared_downgrade_across_p(ctx: &Context<'_>) -> bool {
    let Some(old) = ctx.old else { return false };
    let down = match (ctx.object.label(VERSION_LABEL), old.label(VERSION_LABEL)) {
        (Some(new), Some(old)) => version::compare(new, old) == std::cmp::Ordering::Less,
        _ => false,
    };
    down && ctx.object.annotation(ALLOW_DOWNGRADE) == Some("true") && ctx.categories.contains(Category::Persistence)
}

/// When the stored object was last written by anyone but the rollout controller: the update
/// a rollback reverts (Unix seconds), if its managed fields say.
fn last_written(object: &Object) -> Option<i64> {
    object
        .metadata()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() != Some(ROLLOUT_MANAGER))
        .filter_map(|entry| entry.time.as_ref().map(|t| t.0.as_second()))
        .max()
}

/// A downgrade across a persistence schema change needs the backup taken before the update it
/// reverts, and names it as the one to restore.
fn restore_before(ctx: &Context<'_>, component: Component, path: FieldPath, out: &mut Findings<'_>) {
    let backups = match ctx.facts.backups(ctx.namespace, component) {
        Lookup::Unreadable => return out.not_judged(path, ctx.facts.unreadable_because()),
        Lookup::Found(backups) => backups,
        Lookup::Absent => Vec::new(),
    };
    let reverted = ctx.old.and_then(last_written);
    let before: Vec<Backup> = backups.into_iter().filter(|b| reverted.is_none_or(|at| b.completed < at)).collect();
    match newest(ctx.object, &before) {
        Some(backup) => out.add_requesting(
            path,
            format!(
                "restore {} (completed {} ago, before the update this downgrade reverts) before {component} starts on the older release",
                backup.name,
                age(ctx.facts.now() - backup.completed)
            ),
            None,
            Severity::Warn,
        ),
        None => out.add_with_hint(
            path,
            format!(
                "a declared downgrade of {component} across a persistence schema change needs the backup taken before the \
                 update it reverts, and no completed backup of {component} from before it was found in {}",
                ctx.namespace
            ),
            "restore the data from a backup taken before that update by other means, then set annotation \
             dx.hcl.com/backup-skip-reason to say so",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::checksum::SourceRef;
    use crate::policy::facts::ClusterFacts;
    use crate::policy::schema::SchemaSet;
    use crate::policy::settings::Settings;
    use crate::policy::{Component, Operation, Policy, Review, evaluate};

    const NOW: i64 = 1_796_000_000;

    /// Backups as a test states them.
    struct Known(Lookup<Vec<Backup>>);

    impl ClusterFacts for Known {
        fn workloads_requiring(&self, _: &str, _: &SourceRef) -> Lookup<Vec<String>> {
            Lookup::Absent
        }
        fn dx_workloads(&self, _: &str, _: Component) -> Lookup<Vec<String>> {
            Lookup::Absent
        }
        fn backups(&self, namespace: &str, component: Component) -> Lookup<Vec<Backup>> {
            assert_eq!((namespace, component), ("dx", Component::Core));
            self.0.clone()
        }
        fn now(&self) -> i64 {
            NOW
        }
        fn unreadable_because(&self) -> &'static str {
            "the watches have not listed the cluster yet"
        }
    }

    fn job(name: &str, hours_ago: i64) -> Backup {
        Backup { name: format!("Job dx/{name}"), completed: NOW - hours_ago * 3600 - 120, claim: None }
    }

    fn snapshot(name: &str, hours_ago: i64, claim: &str) -> Backup {
        Backup {
            name: format!("VolumeSnapshot dx/{name}"),
            completed: NOW - hours_ago * 3600,
            claim: Some(claim.into()),
        }
    }

    fn core(image: &str, annotations: serde_json::Value) -> Object {
        let value = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "dx-core", "namespace": "dx", "annotations": annotations, "labels": {
                "app.kubernetes.io/part-of": "dx", "app.kubernetes.io/component": "core", "app.kubernetes.io/version": "95.225.0"}},
            "spec": {"serviceName": "dx-core", "selector": {"matchLabels": {"app": "core"}},
                "template": {"spec": {
                    "containers": [{"name": "core", "image": image}],
                    "volumes": [{"name": "profile", "persistentVolumeClaim": {"claimName": "dx-core-profile"}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}
        });
        Object::from_json(ResourceKind::StatefulSet, value).unwrap()
    }

    /// The backup gate's findings (severity, message) for an update of `old` to `new`.
    fn gate(facts: Lookup<Vec<Backup>>, operation: Operation, old: &Object, new: &Object) -> Vec<(Severity, String)> {
        let schemas = SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap();
        let settings = Settings::default();
        let facts = Known(facts);
        let old_object = (operation == Operation::Update).then_some(old);
        let review = Review { operation, namespace: "dx", object: Some(new), old_object };
        evaluate(Policy { settings: &settings, schemas: &schemas, facts: &facts }, review)
            .findings
            .into_iter()
            .filter(|j| j.finding.rule == "backup-before-update")
            .map(|j| (j.severity, j.finding.message))
            .collect()
    }

    #[test]
    fn a_new_release_of_core_needs_a_recent_backup() {
        let (old, new) = (core("hcl/dx/core:95_CF225", json!({})), core("hcl/dx/core:95_CF226", json!({})));
        let none = "a category A change of core needs a backup first, and no completed backup of core was found in dx \
                    (a Job or VolumeSnapshot labelled dx.hcl.com/backup-of: core or all)";
        let stale = "a category A change of core needs a recent backup first; the newest, Job dx/dx-core-backup-2, \
                     completed 30h2m ago, more than backup.maxAge 24h";
        type Case<'a> = (&'a str, Lookup<Vec<Backup>>, Vec<(Severity, &'a str)>);
        let cases: [Case; 6] = [
            ("no backup", Lookup::Absent, vec![(Severity::Deny, none)]),
            (
                "too old",
                Lookup::Found(vec![job("dx-core-backup-1", 50), job("dx-core-backup-2", 30)]),
                vec![(Severity::Deny, stale)],
            ),
            ("fresh", Lookup::Found(vec![job("dx-core-backup-1", 50), job("dx-core-backup-3", 2)]), vec![]),
            (
                "a fresh snapshot of its shared claim",
                Lookup::Found(vec![snapshot("profile", 1, "dx-core-profile")]),
                vec![],
            ),
            ("a fresh snapshot of a pod's claim", Lookup::Found(vec![snapshot("logs-0", 1, "logs-dx-core-0")]), vec![]),
            (
                "a snapshot of another claim does not count",
                Lookup::Found(vec![snapshot("other", 1, "dx-dam-upload")]),
                vec![(Severity::Deny, none)],
            ),
        ];
        for (case, facts, expected) in cases {
            let expected: Vec<(Severity, String)> = expected.into_iter().map(|(s, m)| (s, m.to_owned())).collect();
            assert_eq!(gate(facts, Operation::Update, &old, &new), expected, "{case}");
        }
        let unreadable = gate(Lookup::Unreadable, Operation::Update, &old, &new);
        assert_eq!(
            unreadable,
            [(Severity::Warn, "not judged: the watches have not listed the cluster yet".to_owned())]
        );
    }

    #[test]
    fn creates_config_only_changes_and_declared_skips_pass() {
        let old = core("hcl/dx/core:95_CF225", json!({}));
        // A first install is not gated.
        assert_eq!(gate(Lookup::Absent, Operation::Create, &old, &old), []);
        // A change of category C alone (env, or dx-admission's own checksum stamps) is not gated.
        let mut stamped = core("hcl/dx/core:95_CF225", json!({}));
        if let Object::StatefulSet(set) = &mut stamped {
            let template = &mut set.spec.as_mut().unwrap().template;
            template.metadata = Some(
                serde_json::from_value(json!({"annotations": {"dx.hcl.com/config-checksum": "sha256:01"}})).unwrap(),
            );
        }
        assert_eq!(gate(Lookup::Absent, Operation::Update, &old, &stamped), []);
        // A persistence schema change is gated like a new release.
        let migrating = core("hcl/dx/core:95_CF225", json!({"dx.hcl.com/persistence-schema": "2026.12"}));
        let found = gate(Lookup::Absent, Operation::Update, &old, &migrating);
        assert!(found[0].1.starts_with("a category P change of core needs a backup first"), "{found:?}");
        // A skip reason set (or changed) by this update passes, recorded as an audit finding.
        let skipping = core(
            "hcl/dx/core:95_CF226",
            json!({"dx.hcl.com/backup-skip-reason": "restored from the nightly snapshot"}),
        );
        assert_eq!(
            gate(Lookup::Absent, Operation::Update, &old, &skipping),
            [(Severity::Audit, "updated without a backup: restored from the nightly snapshot".to_owned())]
        );
        // The same reason left in a values file does not pass the next update.
        let next = core(
            "hcl/dx/core:95_CF227",
            json!({"dx.hcl.com/backup-skip-reason": "restored from the nightly snapshot"}),
        );
        let found = gate(Lookup::Absent, Operation::Update, &skipping, &next);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Severity::Deny, "{found:?}");
    }

    #[test]
    fn a_declared_downgrade_across_a_persistence_schema_change_names_the_backup_to_restore() {
        let mut upgraded = core("hcl/dx/core:95_CF226", json!({"dx.hcl.com/persistence-schema": "2026.12"}));
        if let Object::StatefulSet(set) = &mut upgraded {
            set.metadata.labels.as_mut().unwrap().insert(VERSION_LABEL.into(), "95.226.0".into());
            // Helm applied the update 10 hours ago; the controller re-stamped it an hour ago.
            set.metadata.managed_fields = Some(
                serde_json::from_value(json!([
                    {"manager": "helm", "operation": "Update", "time": "2026-11-29T14:53:20Z"},
                    {"manager": "dx-admission-rollout", "operation": "Update", "time": "2026-11-29T23:53:20Z"}
                ]))
                .unwrap(),
            );
        }
        let back = core(
            "hcl/dx/core:95_CF225",
            json!({"dx.hcl.com/persistence-schema": "2026.06", "dx.hcl.com/allow-downgrade": "true"}),
        );
        // NOW is 2026-11-30T00:53:20Z: the update was 10h ago.
        let backups = vec![job("before-the-update", 11), job("after-the-update", 3)];
        assert_eq!(
            gate(Lookup::Found(backups), Operation::Update, &upgraded, &back),
            [(Severity::Warn, "restore Job dx/before-the-update (completed 11h2m ago, before the update this downgrade reverts) before core starts on the older release".to_owned())]
        );
        let found = gate(Lookup::Found(vec![job("after-the-update", 3)]), Operation::Update, &upgraded, &back);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Severity::Deny);
        assert!(
            found[0].1.starts_with(
                "a declared downgrade of core across a persistence schema change needs the backup taken before"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn ages_read_in_the_largest_units() {
        assert_eq!(
            [age(12), age(45 * 60 + 3), age(3600), age(26 * 3600 + 180), age(-5)],
            ["12s", "45m", "1h", "26h3m", "0s"]
        );
    }
}
