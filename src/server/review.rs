//! The admission endpoints: read the body within limits, decode, evaluate, respond.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use kube::core::admission::AdmissionResponse;
use tracing::{Instrument, info, info_span, warn};

use super::error::ApiError;
use super::{AppState, body, mutate};
use crate::admission::respond::{encode, respond};
use crate::admission::{Decoded, decode};
use crate::metrics::{ChangeLabels, Endpoint, EndpointLabels, FindingLabels, ReviewLabels};
use crate::policy::facts::{ClusterFacts, NoCluster};
use crate::policy::{Evaluation, Policy, Review, Severity, Verdict, evaluate};

/// The facts of a server started without `--cluster`.
const NO_CLUSTER: NoCluster = NoCluster("dx-admission runs without --cluster");

pub async fn validate(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    review(Endpoint::Validate, state, headers, body).await
}

pub async fn mutate(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    review(Endpoint::Mutate, state, headers, body).await
}

async fn review(endpoint: Endpoint, state: Arc<AppState>, headers: HeaderMap, body: Body) -> Response {
    match answer(endpoint, &state, &headers, body).await {
        Ok(response) => ([(header::CONTENT_TYPE, "application/json")], encode(&response)).into_response(),
        Err(error) => refuse(&state, error),
    }
}

/// Logs and counts a request that cannot be reviewed, and answers it.
pub fn refuse(state: &AppState, error: ApiError) -> Response {
    warn!(%error, reason = error.reason(), "request refused");
    state.metrics.bad_requests.get_or_create(&crate::metrics::RejectLabels { reason: error.reason() }).inc();
    error.into_response()
}

async fn answer(
    endpoint: Endpoint,
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<AdmissionResponse, ApiError> {
    let limits = &state.limits;
    let deadline = tokio::time::Instant::now() + limits.review_timeout;
    // The body is read first, also when the content type is wrong: a refusal that leaves it
    // unread resets the client instead of telling it why.
    let bytes = body::read(body, headers, limits, deadline).await?;
    check_content_type(headers)?;
    let started = Instant::now();
    let decoded = decode(&bytes, limits.max_json_depth)?;
    let _permit = tokio::time::timeout_at(deadline, state.evaluations.acquire())
        .await
        .map_err(|_| ApiError::Overloaded)?
        .map_err(|_| ApiError::Overloaded)?;
    let _in_flight = state.metrics.in_flight();
    let response = match endpoint {
        // Judging logs nothing, so the span is made once the verdict is known: recording it into
        // a span made before would make the JSON formatter re-read and rewrite the span's fields.
        Endpoint::Validate => {
            let (response, evaluation) = evaluate_and_respond(state, &decoded);
            let verdict = verdict_of(&response);
            // Most of a cluster's objects are not DX's and pass untouched: they get no line, so no span.
            let span = if logs_line(&evaluation, verdict, &response) {
                review_span(&decoded, Some(verdict))
            } else {
                tracing::Span::none()
            };
            span.in_scope(|| record(endpoint, state, &decoded, &response, &evaluation, verdict));
            response
        }
        // Stamping reads the cluster and may log on the way: those lines carry the span too.
        Endpoint::Mutate => {
            async {
                let response = mutate::stamp(state, &decoded).await;
                let verdict = verdict_of(&response);
                tracing::Span::current().record("verdict", verdict.as_str());
                record(endpoint, state, &decoded, &response, &Evaluation::default(), verdict);
                response
            }
            .instrument(review_span(&decoded, None))
            .await
        }
    };
    state
        .metrics
        .review_duration
        .get_or_create(&EndpointLabels { endpoint: endpoint.as_str() })
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// The span every line about one review carries; `verdict` is recorded later where it is not
/// known yet.
fn review_span(decoded: &Decoded, verdict: Option<Verdict>) -> tracing::Span {
    let user = decoded.request.user_info.username.as_deref().unwrap_or("");
    info_span!(
        "review",
        uid = %decoded.request.uid,
        kind = %decoded.request.kind.kind,
        namespace = decoded.namespace(),
        // Not `name`: the JSON span object already uses that key for the span's own name.
        object = %decoded.request.name,
        operation = %decoded.operation,
        user,
        dry_run = decoded.request.dry_run,
        verdict = verdict.map(Verdict::as_str),
    )
}

fn verdict_of(response: &AdmissionResponse) -> Verdict {
    Verdict::of(!response.allowed, response.warnings.is_some())
}

fn evaluate_and_respond(state: &AppState, decoded: &Decoded) -> (AdmissionResponse, Evaluation) {
    let schemas = state.schemas.current();
    let facts: &dyn ClusterFacts = match &state.cluster {
        Some(cluster) => cluster.as_ref(),
        None => &NO_CLUSTER,
    };
    let evaluation = evaluate(
        Policy { settings: &state.settings, schemas: &schemas, facts },
        Review {
            operation: decoded.operation,
            namespace: decoded.namespace(),
            object: decoded.object.as_ref(),
            old_object: decoded.old_object.as_ref(),
        },
    );
    (respond(decoded, &evaluation), evaluation)
}

/// Metrics and the `reviewed` log line for one answer: every DX review, every denial, warning
/// and patch gets one (uid, user, kind, namespace/name and operation from the span; verdict and
/// rule ids on the line), so denials can be audited from the logs alone.
fn record(
    endpoint: Endpoint,
    state: &AppState,
    decoded: &Decoded,
    response: &AdmissionResponse,
    evaluation: &Evaluation,
    verdict: Verdict,
) {
    let metrics = &state.metrics;
    metrics
        .reviews
        .get_or_create(&ReviewLabels {
            endpoint: endpoint.as_str(),
            kind: decoded.request.kind.kind.clone(),
            operation: decoded.operation.as_str(),
            verdict: verdict.as_str(),
        })
        .inc();
    if response.allowed && !decoded.request.dry_run {
        let component = evaluation.component.map_or("unknown", |c| c.as_str());
        for category in evaluation.categories.iter() {
            metrics.changes.get_or_create(&ChangeLabels { component, category: category.letter() }).inc();
        }
    }
    for judged in &evaluation.findings {
        metrics
            .findings
            .get_or_create(&FindingLabels { rule: judged.finding.rule, severity: judged.severity.as_str() })
            .inc();
    }
    if logs_line(evaluation, verdict, response) {
        let rules: Vec<&str> = evaluation.findings.iter().map(|j| j.finding.rule).collect();
        let audited = evaluation.with_severity(Severity::Audit).count();
        info!(
            verdict = verdict.as_str(),
            schema_version = evaluation.schema_version.as_deref().unwrap_or(""),
            rules = %rules.join(","),
            categories = %evaluation.categories,
            audited,
            patched = response.patch.is_some(),
            "reviewed"
        );
    }
}

/// Whether a review gets a `reviewed` line: every DX object, and any object denied, warned
/// about or patched.
fn logs_line(evaluation: &Evaluation, verdict: Verdict, response: &AdmissionResponse) -> bool {
    evaluation.dx || verdict != Verdict::Allowed || response.patch.is_some()
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::MediaType { found: String::new() });
    };
    let text = value.to_str().unwrap_or("");
    let media = text.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::MediaType { found: text.to_owned() })
    }
}
