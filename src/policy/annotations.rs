//! Annotation keys dx-admission reads. Public API: documented in `docs/annotations.md`.

/// On any DX object: the schema version it is written for. Without it, the default applies.
pub const SCHEMA_VERSION: &str = "dx.hcl.com/schema-version";
/// On a DX workload: `"true"` lets an UPDATE lower `app.kubernetes.io/version`.
pub const ALLOW_DOWNGRADE: &str = "dx.hcl.com/allow-downgrade";
/// The label that carries a workload's application version.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// On a DX StatefulSet of core, dam or persistence: the database schema revision its image
/// migrates to. A change is a persistence schema change (update category P).
pub const PERSISTENCE_SCHEMA: &str = "dx.hcl.com/persistence-schema";
/// On a DX StatefulSet: why an update that needs a backup first goes ahead without one. An
/// UPDATE that sets or changes it passes `backup-before-update` (recorded as an audit finding).
pub const BACKUP_SKIP_REASON: &str = "dx.hcl.com/backup-skip-reason";
/// On a Job or VolumeSnapshot: the component it backs up (`core`, `dam`, `persistence`) or `all`.
pub const BACKUP_OF: &str = "dx.hcl.com/backup-of";
