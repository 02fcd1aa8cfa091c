//! The delete guard: deleting a ConfigMap or Secret that a workload still needs (a non-optional
//! reference) is denied, naming the workloads and how to remove the reference first.

use kube::core::admission::AdmissionResponse;
use kube::core::response::StatusCause;

use super::AppState;
use crate::admission::Decoded;
use crate::admission::respond::{AUDIT_FINDINGS, deny};
use crate::checksum::{SourceKind, SourceRef};
use crate::cluster::SourceKey;
use crate::policy::finding::{Finding, Judged, WARNING_LIMIT, truncate};
use crate::policy::path::FieldPath;
use crate::policy::{Operation, Severity};

/// The guard's rule id, as severities and metrics name it. Listed in `docs/rules.md`.
pub const CONFIG_IN_USE: &str = "config-in-use";
pub const TITLE: &str = "ConfigMaps and Secrets that workloads need are not deleted";
pub const RATIONALE: &str =
    "Pods that reference a deleted ConfigMap or Secret fail to start on their next restart or rollout.";
pub const FIX: &str =
    "remove the reference from those workloads (or mark it optional: true) and apply them, then delete";

/// `Some` answer (and the finding, for metrics and the audit log line) when the request deletes
/// a source still in use; `None` to carry on.
pub fn check(state: &AppState, decoded: &Decoded) -> Option<(AdmissionResponse, Judged)> {
    let cluster = state.cluster.as_ref()?;
    if decoded.operation != Operation::Delete || !decoded.request.kind.group.is_empty() {
        return None;
    }
    let kind = match decoded.request.kind.kind.as_str() {
        "ConfigMap" => SourceKind::ConfigMap,
        "Secret" => SourceKind::Secret,
        _ => return None,
    };
    let namespace = decoded.namespace();
    let name = &decoded.request.name;
    let users = cluster
        .index
        .required_by(&SourceKey { namespace: namespace.to_owned(), source: SourceRef { kind, name: name.clone() } });
    if users.is_empty() {
        return None;
    }
    let severity = state.settings.severity(namespace, CONFIG_IN_USE, Severity::Deny);
    let names: Vec<String> = users.iter().map(ToString::to_string).collect();
    let message = format!("still used by {}", names.join(", "));
    let response = AdmissionResponse::from(&decoded.request);
    let field = format!("{} {namespace}/{name}", kind.as_str());
    let finding = Finding {
        rule: CONFIG_IN_USE,
        path: FieldPath::default(),
        message: message.clone(),
        hint: None,
        requested: None,
    };
    let judged = Judged { finding, severity, fix: FIX };
    let response = match severity {
        Severity::Audit => {
            let mut response = response;
            response.audit_annotations.insert(AUDIT_FINDINGS.into(), format!("{CONFIG_IN_USE} {field}"));
            response
        }
        Severity::Warn => {
            let mut response = response;
            response.warnings = Some(vec![truncate(&format!("{field}: {message} [{CONFIG_IN_USE}]"), WARNING_LIMIT)]);
            response
        }
        Severity::Deny => {
            let text = format!(
                "{field} rejected: it is still in use (1 problem):\n- {field}: {message} [{CONFIG_IN_USE}] fix: {FIX}"
            );
            let causes = vec![StatusCause { reason: CONFIG_IN_USE.into(), message, field }];
            deny(response, decoded, text, causes)
        }
    };
    Some((response, judged))
}
