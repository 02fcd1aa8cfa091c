//! HTTP errors: requests that cannot be reviewed get a 4xx/5xx with a JSON body naming why.
//! A policy denial is never one of these: it is a normal `allowed: false` answer.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admission::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("request body is larger than the {limit} byte limit")]
    TooLarge { limit: usize },
    #[error("content type {found:?} is not supported; send application/json")]
    MediaType { found: String },
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    #[error("request body did not arrive within {seconds:.1}s")]
    BodyTimeout { seconds: f64 },
    #[error("no evaluation slot became free within the review deadline; the server is overloaded")]
    Overloaded,
    #[error("no such endpoint {path}; use POST /validate or POST /mutate")]
    NotFound { path: String },
    #[error("method {method} is not allowed; use POST")]
    MethodNotAllowed { method: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Decode(_) | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A short, stable label for metrics and the JSON body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.reason(),
            Self::TooLarge { .. } => "too_large",
            Self::MediaType { .. } => "media_type",
            Self::BodyRead(_) => "body_read",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Overloaded => "overloaded",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.reason(), "message": self.to_string()});
        (self.status(), Json(body)).into_response()
    }
}
