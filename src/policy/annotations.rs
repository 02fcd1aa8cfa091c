//! Annotation keys dx-admission reads. Public API: documented in `docs/annotations.md`.

/// On any DX object: the schema version it is written for. Without it, the default applies.
pub const SCHEMA_VERSION: &str = "dx.hcl.com/schema-version";
/// On a DX workload: `"true"` lets an UPDATE lower `app.kubernetes.io/version`.
pub const ALLOW_DOWNGRADE: &str = "dx.hcl.com/allow-downgrade";
/// The label that carries a workload's application version.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
