//! Respond: evaluation → AdmissionResponse → the AdmissionReview body. Denials carry the
//! readable message and the same findings as `status.details.causes`; warnings and audit
//! findings ride on allowed answers.

use std::collections::HashMap;

use base64::Engine;
use kube::core::Status;
use kube::core::admission::AdmissionResponse;
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use serde::Serialize;

use super::Decoded;
use crate::policy::{Evaluation, Severity};

/// The audit annotation keys (the API server prefixes them with the webhook's name). Public API:
/// documented in `docs/annotations.md`.
pub const AUDIT_FINDINGS: &str = "findings";
/// On admitted changes of DX objects: their update categories, e.g. `A,C`.
pub const AUDIT_UPDATE_CATEGORY: &str = "update-category";

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
        if !evaluation.categories.is_empty() {
            response.audit_annotations.insert(AUDIT_UPDATE_CATEGORY.to_owned(), evaluation.categories.to_string());
        }
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

/// The AdmissionReview body answering with `response`. kube's own serialisation writes `patch`
/// as an array of numbers; the API server happens to accept that, but the documented form is
/// base64, which is also a quarter of the size.
pub fn encode(response: &AdmissionResponse) -> Vec<u8> {
    let review = WireReview {
        api_version: &response.types.api_version,
        kind: &response.types.kind,
        response: WireResponse {
            uid: &response.uid,
            allowed: response.allowed,
            status: &response.result,
            patch: response.patch.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            patch_type: response.patch.as_ref().map(|_| "JSONPatch"),
            audit_annotations: &response.audit_annotations,
            warnings: response.warnings.as_deref(),
        },
    };
    // Strings, numbers and maps of strings: serialising cannot fail.
    serde_json::to_vec(&review).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, Patch, PatchOperation};
    use serde_json::{Value, json};

    fn decoded() -> Decoded {
        let body = include_bytes!("../../tests/fixtures/admission-reviews/deployment-create.json");
        crate::admission::decode(body, 64).expect("a real request")
    }

    #[test]
    fn the_patch_is_base64_json_patch_as_the_api_documents() {
        let decoded = decoded();
        let add = PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: json!({"a": "b"}),
        });
        let response = AdmissionResponse::from(&decoded.request).with_patch(Patch(vec![add])).unwrap();
        let body: Value = serde_json::from_slice(&encode(&response)).unwrap();
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], decoded.request.uid.as_str());
        assert_eq!(body["response"]["allowed"], true);
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD.decode(body["response"]["patch"].as_str().unwrap());
        assert_eq!(
            serde_json::from_slice::<Value>(&patch.unwrap()).unwrap(),
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}])
        );
    }

    #[test]
    fn an_answer_without_a_patch_has_no_patch_fields_and_keeps_warnings_and_audit_annotations() {
        let decoded = decoded();
        let mut response = AdmissionResponse::from(&decoded.request);
        response.warnings = Some(vec!["careful".into()]);
        response.audit_annotations.insert(AUDIT_FINDINGS.into(), "rule /path".into());
        let body: Value = serde_json::from_slice(&encode(&response)).unwrap();
        let answer = body["response"].as_object().unwrap();
        assert!(!answer.contains_key("patch") && !answer.contains_key("patchType"), "{body}");
        assert_eq!(body["response"]["warnings"], json!(["careful"]));
        assert_eq!(body["response"]["auditAnnotations"], json!({"findings": "rule /path"}));
        assert_eq!(body["response"]["status"], json!({}));
    }
}
