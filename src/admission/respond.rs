//! Respond: evaluation → AdmissionResponse. Denials carry the readable message and the same
//! findings as `status.details.causes`; warnings and audit findings ride on allowed answers.

use kube::core::admission::AdmissionResponse;
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};

use super::Decoded;
use crate::policy::{Evaluation, Severity};

/// The audit annotation key (the API server prefixes it with the webhook's name).
pub const AUDIT_FINDINGS: &str = "findings";

/// The answer to a review.
pub fn respond(decoded: &Decoded, evaluation: &Evaluation) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(&decoded.request);
    let warnings = evaluation.warnings();
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    let audited: Vec<String> =
        evaluation.with_severity(Severity::Audit).map(|j| format!("{} {}", j.finding.rule, j.finding.path)).collect();
    if !audited.is_empty() {
        response.audit_annotations.insert(AUDIT_FINDINGS.to_owned(), audited.join("; "));
    }
    let Some(message) = evaluation.denial_message() else {
        return response;
    };
    let causes = evaluation
        .with_severity(Severity::Deny)
        .map(|j| StatusCause {
            reason: j.finding.rule.to_owned(),
            message: j.finding.message.clone(),
            field: j.finding.path.to_string(),
        })
        .collect();
    deny(response, decoded, message, causes)
}

/// Turns a response into a denial: 403 Forbidden, the readable message, and the findings as
/// `status.details.causes` (field, message, reason = rule id).
pub fn deny(
    response: AdmissionResponse,
    decoded: &Decoded,
    message: String,
    causes: Vec<StatusCause>,
) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.status = Some(StatusSummary::Failure);
    response.result.code = 403;
    response.result.reason = "Forbidden".to_owned();
    response.result.details = Some(StatusDetails {
        name: decoded.request.name.clone(),
        group: decoded.request.kind.group.clone(),
        kind: decoded.request.kind.kind.clone(),
        uid: String::new(),
        causes,
        retry_after_seconds: 0,
    });
    response
}
